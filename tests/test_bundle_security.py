"""Loading a bundle from an untrusted folder: bounded, safe reads and a validated config.

One test per limit of docs/security.rst, then a Hypothesis strategy that tampers bundles
(bit flips, truncation, edited config.json values of any type, files replaced by links,
FIFOs or huge files, hashes recomputed to reach the parsers): loading raises a
`BundleError` or gives a bundle whose files all verify, quickly.
"""

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hf_server import make_bundle
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from astro_spt.bundle import (
    MAX_CONFIG_BYTES,
    EstimatorBundle,
    find_corrupt_files,
    read_bundle_config,
)
from astro_spt.bundle.storage import _sha256_bytes
from astro_spt.exceptions import BundleError, BundleIntegrityError
from astro_spt.hub import load_model, resolve_model

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX links and FIFOs")
FILES = ("config.json", "model.safetensors", "pca.safetensors", "README.md")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A small trained bundle, saved once; tests work on copies."""
    bundle, _ = make_bundle(seed=5)
    return bundle.save_pretrained(tmp_path_factory.mktemp("template") / "bundle")


@pytest.fixture
def saved(template, tmp_path):
    return Path(shutil.copytree(template, tmp_path / "bundle"))


def _edit_config(path: Path, edit) -> None:
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))


class _Bounded:
    """Asserts that a block used little CPU (the machine may be busy: wall time is only
    checked against a hang)."""

    def __init__(self, cpu_s: float):
        self.cpu_s = cpu_s

    def __enter__(self):
        self.start = time.process_time(), time.perf_counter()

    def __exit__(self, *exc):
        cpu, wall = time.process_time() - self.start[0], time.perf_counter() - self.start[1]
        assert cpu < self.cpu_s and wall < 30.0, (cpu, wall)


def _load_quickly(path: Path, cpu_s: float = 2.0):
    with _Bounded(cpu_s):
        return EstimatorBundle.from_pretrained(path)


# -- files: regular, inside the folder, bounded, hashed before parsing ---------------------


@POSIX
@pytest.mark.parametrize("name", FILES)
def test_link_to_dev_zero_is_refused_quickly(saved, name):
    (saved / name).unlink()
    (saved / name).symlink_to("/dev/zero")
    with pytest.raises(BundleError, match="symbolic link"):
        _load_quickly(saved, 1.0)


@POSIX
def test_link_to_a_file_outside_is_refused(saved, tmp_path):
    outside = tmp_path / "elsewhere.md"
    shutil.copy(saved / "README.md", outside)  # the very bytes that verify
    (saved / "README.md").unlink()
    (saved / "README.md").symlink_to(outside)
    with pytest.raises(BundleError, match="regular files inside its folder"):
        EstimatorBundle.from_pretrained(saved)
    assert find_corrupt_files(saved, read_bundle_config(saved)) == {
        "README.md": "not a regular file inside the bundle"
    }


@POSIX
def test_fifo_is_refused_without_blocking(saved):
    (saved / "pca.safetensors").unlink()
    os.mkfifo(saved / "pca.safetensors")  # nobody writes: opening it plainly would block
    with pytest.raises(BundleError, match="not a regular file"):
        _load_quickly(saved, 1.0)


def test_directory_in_place_of_a_file_is_refused(saved):
    (saved / "model.safetensors").unlink()
    (saved / "model.safetensors").mkdir()
    with pytest.raises(BundleError, match="not a regular file"):
        EstimatorBundle.from_pretrained(saved)


def test_file_larger_than_recorded_is_refused_unread(saved, monkeypatch):
    with open(saved / "model.safetensors", "r+b") as f:
        f.truncate(2**34)  # 16 GiB, sparse: reading it would take minutes and the memory
    read = []
    monkeypatch.setattr("astro_spt.bundle.storage._sha256_bytes", lambda data: read.append(data))
    with pytest.raises(BundleIntegrityError, match=r"more than the .* recorded") as info:
        _load_quickly(saved, 1.0)
    assert info.value.filename == "model.safetensors" and read == []
    config = read_bundle_config(saved)
    assert find_corrupt_files(saved, config) == {"model.safetensors": "larger than recorded"}


def test_config_json_is_bounded(saved):
    with open(saved / "config.json", "r+b") as f:
        f.truncate(MAX_CONFIG_BYTES + 1)
    with pytest.raises(BundleError):
        _load_quickly(saved, 1.0)


def test_recorded_size_is_bounded(saved):
    _edit_config(saved, lambda c: c["files"]["README.md"].update(size=2**60))
    with pytest.raises(BundleError, match=r"files\['README\.md'\]\.size"):
        EstimatorBundle.from_pretrained(saved)


def test_hash_is_checked_before_parsing(saved, monkeypatch):
    parsed = []
    monkeypatch.setattr("safetensors.torch.load", lambda data: parsed.append(data))
    data = bytearray((saved / "model.safetensors").read_bytes())
    data[10] ^= 0xFF
    (saved / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="sha256"):
        EstimatorBundle.from_pretrained(saved)
    assert parsed == []


def test_hub_cache_links_into_its_blobs_are_followed(saved, tmp_path):
    # The layout huggingface_hub writes: snapshot files are links to ../../blobs/<hash>.
    repo = tmp_path / "models--org--name"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for path in saved.iterdir():
        blob = repo / "blobs" / _sha256_bytes(path.read_bytes())
        shutil.copy(path, blob)
        try:
            (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
        except OSError:  # pragma: no cover - Windows without link rights
            pytest.skip("cannot create symbolic links here")
    assert EstimatorBundle.from_pretrained(snapshot).label_names == ("age", "mass")
    (repo / "blobs" / "evil").symlink_to("/dev/zero")
    (snapshot / "README.md").unlink()
    (snapshot / "README.md").symlink_to("../../blobs/evil")  # resolves outside the blobs
    with pytest.raises(BundleError, match="symbolic link"):
        _load_quickly(snapshot, 1.0)


# -- config.json: schema, bounds before allocation, units -------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("d_model", 10**9),
        ("n_blocks", 1e9),
        ("n_blocks", 10**9),
        ("n_heads", 0),
        ("n_heads", 3),  # 16 is not divisible by 3
        ("d_ff", -1),
        ("head_hidden", "64"),
        ("n_inputs", True),
        ("dropout", 1.5),
        ("aleatoric", "yes"),
        ("init_std", None),
        ("frobnicate", 1),
    ],
)
def test_hyperparameters_are_checked_before_allocation(saved, key, value):
    _edit_config(saved, lambda c: c["network"]["hparams"].update({key: value}))
    with pytest.raises(BundleError, match=r"network\.hparams") as info:
        _load_quickly(saved, 1.0)
    assert key in str(info.value) or key == "n_heads"


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda c: c["pca"].update(n_features=10**12), "pca.n_features"),
        (lambda c: c["pca"].update(n_components=0), "pca.n_components"),
        (lambda c: c["mc_dropout"].update(n_samples=10**9), "mc_dropout.n_samples"),
        (lambda c: c["mc_dropout"].update(tau=-1.0), "mc_dropout.tau"),
        (lambda c: c["labels"][0].update(scale=0), r"labels\[0\]\.scale"),
        (
            lambda c: c.update(labels=[*c["labels"], c["labels"][0]], label_covariance=None),
            "network.hparams.n_outputs",
        ),
        (lambda c: c["labels"][1].update(mean="1.2"), r"labels\[1\]\.mean"),
        (lambda c: c.update(label_covariance=[[1.0]]), "label_covariance"),
        (lambda c: c["files"]["README.md"].update(sha256="x" * 64), "sha256"),
        (lambda c: c.update(provenance=[]), "provenance"),
        (lambda c: c["network"].update(dtype="int8"), "network.dtype"),
    ],
)
def test_config_schema(saved, edit, field):
    _edit_config(saved, edit)
    with pytest.raises(BundleError, match=field):
        EstimatorBundle.from_pretrained(saved)


@pytest.mark.parametrize("text", ['{"schema_version": NaN}', "[" * 100_000, "\xff\xfe"])
def test_config_that_is_not_json(saved, text):
    (saved / "config.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(BundleError, match=r"cannot read|schema_version"):
        EstimatorBundle.from_pretrained(saved)


@pytest.mark.parametrize(
    ("unit", "match"),
    [("solMass", "is not a time"), ("", "is not a time"), ("bogons", "cannot parse"), (3, "str")],
)
def test_label_unit_must_be_of_the_labels_kind(saved, unit, match):
    _edit_config(saved, lambda c: c["labels"][0].update(unit=unit))
    with pytest.raises(BundleError, match=match):
        EstimatorBundle.from_pretrained(saved)


def test_changed_unit_contradicts_the_hashed_model_card(tmp_path):
    # Gyr -> Myr keeps the physical type: the model card, covered by its sha256, still
    # says Gyr, so the edit is caught rather than printing "4.79 Myr".
    path = Path(shutil.copytree(resolve_model(), tmp_path / "default"))
    _edit_config(path, lambda c: c["labels"][0].update(unit="Myr"))
    with pytest.raises(BundleIntegrityError, match=r"age \[Myr\].*model card") as info:
        load_model(path)
    assert info.value.filename == "config.json"


def test_a_model_card_that_contradicts_the_labels_is_refused_at_saving(tmp_path):
    bundle, _ = make_bundle(seed=5, trained=False)
    card = "## Labels\n\n| label | unit | scaling |\n|---|---|---|\n| age | Myr | log10 |\n"
    with pytest.raises(ValueError, match="contradicts the bundle's labels"):
        bundle.save_pretrained(tmp_path / "b", model_card=card)
    # a card without such a table is the author's own business
    bundle.save_pretrained(tmp_path / "c", model_card="# My model\n\n## Labels\n\nAge in Gyr.")
    assert EstimatorBundle.from_pretrained(tmp_path / "c").model_card.startswith("# My model")


def test_default_model_and_fresh_saves_still_load(saved):
    assert load_model().label_units == ("Gyr", "solMass")
    assert EstimatorBundle.from_pretrained(saved).label_units == ("Gyr", "solMass")


# -- Hypothesis: tampered bundles --------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)


def _leaf_paths(value, prefix=()):
    """Every key path of a JSON document, objects and lists alike."""
    yield prefix
    if isinstance(value, dict | list):
        for key, child in value.items() if isinstance(value, dict) else enumerate(value):
            yield from _leaf_paths(child, (*prefix, key))


@st.composite
def tampering(draw):
    """A list of operations on a bundle folder (applied by `_tamper`)."""
    kind = st.sampled_from(["flip", "truncate", "config", "link", "fifo", "huge", "extra"])
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(kind)
        name = draw(st.sampled_from(FILES))
        if op == "config":
            ops.append((op, draw(st.integers(0, 10**6)), draw(json_values), draw(st.booleans())))
        else:
            ops.append((op, name, draw(st.floats(0, 1)), draw(st.booleans())))
    return ops


def _tamper(path: Path, ops, outside: Path) -> None:
    config = json.loads((path / "config.json").read_text())

    def write_config():
        # Once config.json is a link or a FIFO, writing to it could block: leave it so.
        if (path / "config.json").is_file() and not (path / "config.json").is_symlink():
            (path / "config.json").write_text(json.dumps(config))

    for op, a, b, c in ops:
        if op == "config":
            paths = [p for p in _leaf_paths(config) if p]
            *parents, key = paths[a % len(paths)]
            node = config
            for part in parents:
                node = node[part]
            if c and isinstance(node, dict):
                del node[key]
            else:
                node[key] = b
            write_config()
            continue
        target = path / a
        if not target.is_file() or target.is_symlink() or target.stat().st_size > 2**24:
            continue
        data = target.read_bytes()
        if op == "flip" and data:
            i = min(int(b * len(data)), len(data) - 1)
            target.write_bytes(data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1 :])
        elif op == "truncate":
            target.write_bytes(data[: int(b * len(data))])
        elif op == "link":
            target.unlink()
            target.symlink_to("/dev/zero" if c else outside)
        elif op == "fifo":
            target.unlink()
            os.mkfifo(target)
        elif op == "huge":
            with open(target, "r+b") as f:
                f.truncate(2**33)
        elif op == "extra":
            extra = path / "extra.bin"
            with open(extra, "wb") as f:
                f.truncate(2**33)
            if isinstance(config.get("files"), dict):
                config["files"]["extra.bin"] = {"sha256": "0" * 64, "size": 2**31}
                write_config()
        # An attacker who recomputes the hash reaches the parsers.
        files = config.get("files") if isinstance(config, dict) else None
        if c and a != "config.json" and isinstance(files, dict) and a in files:
            if target.is_file() and not target.is_symlink() and target.stat().st_size < 2**24:
                data = target.read_bytes()
                config["files"][a] = {"sha256": _sha256_bytes(data), "size": len(data)}
                write_config()


def check_tampered(template: Path, ops) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(shutil.copytree(template, Path(tmp) / "bundle"))
        outside = Path(tmp) / "outside"
        outside.write_bytes((template / "README.md").read_bytes())
        _tamper(path, ops, outside)
        with _Bounded(cpu_s=2.0):
            try:
                bundle = EstimatorBundle.from_pretrained(path)
            except BundleError:
                return
        # Loaded: every file verifies, and the network fits the labels.
        assert find_corrupt_files(path, read_bundle_config(path)) == {}
        assert len(bundle.label_names) == bundle.network.hparams["n_outputs"]


TAMPER_SETTINGS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


@POSIX
@seed(20240110)
@settings(max_examples=100, **TAMPER_SETTINGS)
@given(ops=tampering())
def test_tampered_bundles_raise_bundle_errors_only(template, ops):
    check_tampered(template, ops)


@POSIX
@pytest.mark.fuzz
@settings(**TAMPER_SETTINGS)
@given(ops=tampering())
def test_tampered_bundles_raise_bundle_errors_only_long(template, ops):
    check_tampered(template, ops)
