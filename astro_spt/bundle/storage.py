"""How a bundle is stored on disk and verified when it is read.

The layout (``config.json``, ``model.safetensors``, ``pca.safetensors``/``pca.npz``,
``README.md``), its schema and version, the checks of ``config.json`` against the schema
and resource limits, the sha256 of every file, reads that verify before they parse
(never a pickle), atomic writes, and the loading of the network and the PCA basis from
verified bytes.
"""

import contextlib
import hashlib
import inspect
import io
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..exceptions import (
    BundleError,
    BundleIntegrityError,
    UnsupportedSchemaError,
)
from ..nn import SpectralTransformer
from ..pca import PCABasis
from .labels import LABEL_SCALINGS, UNCERTAINTY_SOURCES, _check_label_unit
from .reference import EmbeddingDensity

__all__ = [
    "CONFIG_NAME",
    "EMBEDDING_NAME",
    "HPARAM_LIMITS",
    "MAX_CONFIG_BYTES",
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_LABELS",
    "MODEL_CARD_NAME",
    "PCA_NAMES",
    "SCHEMA_VERSION",
    "WEIGHTS_NAME",
    "find_corrupt_files",
    "read_bundle_config",
]


SCHEMA_VERSION = 2
"""Version of the bundle layout written by this `astro_spt`; it reads this one and older.

Version 2 added the gappy PCA projection, the aleatoric head and the predictive
uncertainty weights (``pca.projection``, ``network.hparams.aleatoric``, ``uncertainty``);
within version 2, bundles may also hold the density of the network's embedding of the
training spectra and its distance percentiles (``embedding_density``,
``reference.safetensors``), which older readers ignore: nothing of it is in
``reference``.
"""

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_CARD_NAME = "README.md"
PCA_NAMES = {"safetensors": "pca.safetensors", "npz": "pca.npz"}
EMBEDDING_NAME = "reference.safetensors"
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}
PROJECTIONS = ("orthogonal", "gappy")
PCA_DTYPES = ("float64", "float32")


def _package_version() -> str:
    from .. import __version__

    return __version__


# ---------------------------------------------------------------------------------------
# Files and config
#
# A bundle may come from anywhere (a colleague's folder, a hub repository), so reading one
# must not be able to run code, read outside the folder or exhaust the machine. Files are
# opened only as regular files inside the folder, never beyond the size recorded for them
# in config.json, and hashed before they are parsed; config.json itself is read with a
# fixed bound and checked against a schema (types, ranges, units) before anything is
# built from it. docs/security.rst lists the limits and the tests of each.

#: Largest ``config.json`` read, in bytes (the default model's is 15 kB; a long training
#: history adds a few kB per hundred epochs).
MAX_CONFIG_BYTES = 16 * 2**20
#: Largest bundle file, in bytes, whatever ``config.json`` records (the default model's
#: weights are 9.7 MB; the paper's float32 network is about 80 MB).
MAX_FILE_BYTES = 4 * 2**30
#: Most files a bundle may list, and most labels it may predict.
MAX_FILES = 64
MAX_LABELS = 64
#: Bounds of the network's hyper-parameters, checked before the network is built: they
#: keep building its skeleton fast; its memory is bounded by the weights file's size.
HPARAM_LIMITS = {
    "n_inputs": (1, 2**16),
    "n_outputs": (1, MAX_LABELS),
    "d_model": (1, 2**14),
    "n_heads": (1, 2**10),
    "n_blocks": (1, 256),
    "d_ff": (1, 2**18),
    "head_hidden": (1, 2**16),
}
_SHA256_DIGITS = frozenset("0123456789abcdef")


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_file_name(name: str) -> None:
    # config.json may come from the network: its file names must not escape the bundle.
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 255
        or name != Path(name).name
        or name.startswith(".")
        or "\\" in name
        or "\0" in name
    ):
        raise BundleError(f"invalid file name {name!r} in {CONFIG_NAME}")


def _link_root(directory: Path) -> Path | None:
    """Where the files of a Hugging Face cache snapshot may point to, else None.

    A snapshot (``models--org--name/snapshots/<commit>``) holds symbolic links into the
    repository's ``blobs`` folder; they are the one kind of link a bundle may contain.
    """
    if directory.parent.name == "snapshots" and directory.parent.parent.name.startswith("models--"):
        return Path(os.path.realpath(directory.parent.parent / "blobs"))
    return None


@contextlib.contextmanager
def _open_bundle_file(directory: Path, name: str, max_size: int):
    """Open a bundle file for reading, if it is a regular file inside ``directory``.

    Symbolic links are refused (but those of a hub cache snapshot into its blobs), and so
    are FIFOs, devices and sockets, before they are opened, and again on the open file
    (``fstat``), so that a file swapped in between is caught. A file larger than
    ``max_size`` is refused before any of it is read.
    """
    path = directory / name
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise BundleIntegrityError(
            f"bundle file {name} is missing from {directory}", filename=name, path=path
        ) from None
    except OSError as err:
        raise BundleError(f"cannot read bundle file {name} in {directory}: {err}") from err
    target = path
    if stat.S_ISLNK(info.st_mode):
        real = Path(os.path.realpath(path))
        root = _link_root(directory)
        if root is None or not real.is_relative_to(root):
            raise BundleError(
                f"bundle file {name} in {directory} is a symbolic link to {real}: refused, "
                "a bundle's files must be regular files inside its folder"
            )
        target = real
        info = os.stat(real)
    elif Path(os.path.realpath(path)).parent != Path(os.path.realpath(directory)):
        raise BundleError(f"bundle file {name} is not inside {directory}")
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(
            f"bundle file {name} in {directory} is not a regular file (a FIFO, device, "
            "socket or folder): refused"
        )
    if info.st_size > max_size:
        raise BundleIntegrityError(
            f"bundle file {name} in {directory} holds {info.st_size} bytes, more than the "
            f"{max_size} recorded in {CONFIG_NAME}: refused without reading it",
            filename=name,
            path=path,
        )
    # O_NOFOLLOW: a link swapped in after the checks fails to open; O_NONBLOCK: so does
    # a FIFO, instead of waiting for a writer.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(target, flags | getattr(os, "O_BINARY", 0))
    except OSError as err:
        raise BundleError(f"cannot open bundle file {name} in {directory}: {err}") from err
    with open(fd, "rb", closefd=True) as f:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or opened.st_size > max_size:
            raise BundleError(f"bundle file {name} in {directory} changed while it was opened")
        yield f


def _recorded_size(entry: Mapping[str, Any]) -> int:
    # validated by read_bundle_config; find_corrupt_files may be given a config by hand
    size = entry.get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) else MAX_FILE_BYTES


def _read_verified(directory: Path, name: str, entry: Mapping[str, Any]) -> bytes:
    # Read once, hash and parse the same bytes, so nothing can change in between.
    size = _recorded_size(entry)
    with _open_bundle_file(directory, name, size) as f:
        data = f.read(size + 1)
    # The recorded size is a bound on what is read; the sha256 alone decides the match.
    if _sha256_bytes(data) != entry.get("sha256"):
        raise BundleIntegrityError(
            f"bundle file {name} in {directory} does not match the sha256 recorded in "
            f"{CONFIG_NAME}: it is corrupt or was modified. Re-download or re-save the bundle.",
            filename=name,
            path=directory / name,
        )
    return data


def _file_problem(directory: Path, name: str, entry: Mapping[str, Any]) -> str | None:
    """What is wrong with one bundle file (`find_corrupt_files`), or None."""
    if not os.path.lexists(directory / name):
        return "missing"
    size = _recorded_size(entry)
    try:
        with _open_bundle_file(directory, name, size) as f:
            digest, n_bytes = hashlib.sha256(), 0
            while chunk := f.read(min(2**20, size + 1 - n_bytes)):
                digest.update(chunk)
                n_bytes += len(chunk)
                if n_bytes > size:
                    break
    except BundleIntegrityError:
        return "larger than recorded"
    except BundleError:
        return "not a regular file inside the bundle"
    if digest.hexdigest() != entry.get("sha256"):
        return "sha256 mismatch"
    return None


def _parse_config(path: Path, directory: Path) -> Any:
    with _open_bundle_file(directory, CONFIG_NAME, MAX_CONFIG_BYTES) as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise BundleError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes: refused")

    def no_constants(name):
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        # ValueError: invalid JSON, NaN/Infinity, an integer of thousands of digits.
        raise BundleError(f"cannot read {path}: {err}") from err


class _Schema:
    """Checks of config.json values; each failure is a BundleError naming the field."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, field_name: str, problem: str):
        raise BundleError(f"invalid {field_name} in {self.path}: {problem}")

    def object(self, value, field_name: str, *, optional: bool = False) -> dict:
        if value is None and optional:
            return {}
        if not isinstance(value, dict):
            self.fail(field_name, f"expected a JSON object, got {_json_type(value)}")
        return value

    def integer(self, value, field_name: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field_name, f"expected an integer, got {_json_type(value)}")
        if not low <= value <= high:
            self.fail(field_name, f"{value} is outside [{low}, {high}]")
        return value

    def number(
        self,
        value,
        field_name: str,
        *,
        low=-math.inf,
        high=math.inf,
        open_low=False,
        optional=False,
    ) -> float | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(field_name, f"expected a number, got {_json_type(value)}")
        try:
            value = float(value)
        except OverflowError:
            self.fail(field_name, "number too large")
        if (
            not math.isfinite(value)
            or not (low < value if open_low else low <= value)
            or (value > high)
        ):
            bound = "(" if open_low else "["
            self.fail(field_name, f"{value!r} is outside {bound}{low}, {high}]")
        return value

    def choice(self, value, field_name: str, choices) -> str:
        if not isinstance(value, str) or value not in choices:
            self.fail(field_name, f"expected one of {sorted(choices)}, got {value!r}")
        return value

    def text(self, value, field_name: str, max_length: int = 2**16) -> str:
        if not isinstance(value, str) or len(value) > max_length:
            self.fail(field_name, f"expected a string of at most {max_length} characters")
        return value

    def numbers(self, value, field_name: str, length: int, **bounds) -> list:
        if not isinstance(value, list) or len(value) != length:
            self.fail(field_name, f"expected a list of {length} numbers")
        return [self.number(v, f"{field_name}[{i}]", **bounds) for i, v in enumerate(value)]


def _json_type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def _validate_config(config: dict, path: Path) -> None:
    """Check config.json against the bundle schema, before anything is built from it.

    Bounds the network's hyper-parameters (so that building it allocates nothing beyond
    the weights file), the file sizes, the label units (parsable, of the label's physical
    type) and every number that sizes an array.
    """
    from ..nn.attention import ATTENTION_ACTIVATIONS
    from ..nn.model import DROPOUT_POSITIONS

    schema = _Schema(path)
    schema.text(config.get("description", ""), "description")
    schema.text(config.get("astro_spt_version", ""), "astro_spt_version", 256)

    labels = config["labels"]
    if not isinstance(labels, list) or not 1 <= len(labels) <= MAX_LABELS:
        schema.fail("labels", f"expected a list of 1 to {MAX_LABELS} labels")
    for i, label in enumerate(labels):
        where = f"labels[{i}]"
        label = schema.object(label, where)
        unknown = set(label) - {"name", "unit", "scaling", "mean", "scale"}
        if unknown or "name" not in label or "unit" not in label:
            schema.fail(
                where, f"expected the keys name, unit, scaling, mean, scale, got {sorted(label)}"
            )
        name = schema.text(label["name"], f"{where}.name", 64)
        try:
            _check_label_unit(name, label["unit"])
        except ValueError as err:
            schema.fail(f"{where}.unit", str(err))
        schema.choice(label.get("scaling", "linear"), f"{where}.scaling", LABEL_SCALINGS)
        schema.number(label.get("mean", 0.0), f"{where}.mean")
        schema.number(label.get("scale", 1.0), f"{where}.scale", low=0.0, open_low=True)
    n_labels = len(labels)
    covariance = config.get("label_covariance")
    if covariance is not None:
        if not isinstance(covariance, list) or len(covariance) != n_labels:
            schema.fail("label_covariance", f"expected {n_labels} rows of {n_labels} numbers")
        for i, row in enumerate(covariance):
            schema.numbers(row, f"label_covariance[{i}]", n_labels)

    files = schema.object(config["files"], "files")
    if len(files) > MAX_FILES:
        schema.fail("files", f"more than {MAX_FILES} files")
    for name, entry in files.items():
        _check_file_name(name)
        entry = schema.object(entry, f"files[{name!r}]")
        digest = entry.get("sha256")
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= _SHA256_DIGITS):
            schema.fail(f"files[{name!r}].sha256", "expected 64 lower-case hex digits")
        schema.integer(entry.get("size"), f"files[{name!r}].size", 0, MAX_FILE_BYTES)

    network = schema.object(config["network"], "network")
    pca = schema.object(config["pca"], "pca")
    for section, value in (("network", network), ("pca", pca)):
        name = value.get("file")
        if not isinstance(name, str) or name not in files:
            raise BundleError(f"{path}: {section} file {name!r} is not listed with a sha256")
    schema.choice(network.get("class"), "network.class", {"SpectralTransformer"})
    schema.choice(network.get("dtype", "float32"), "network.dtype", WEIGHT_DTYPES)
    hparams = schema.object(network.get("hparams"), "network.hparams")
    allowed = set(inspect.signature(SpectralTransformer).parameters)
    if set(hparams) - allowed:
        schema.fail("network.hparams", f"unknown keys {sorted(set(hparams) - allowed)}")
    for key, (low, high) in HPARAM_LIMITS.items():
        if key in hparams and not (hparams[key] is None and key in ("d_ff", "head_hidden")):
            schema.integer(hparams[key], f"network.hparams.{key}", low, high)
    d_model = hparams.get("d_model", 512)
    if d_model % hparams.get("n_heads", 8):
        schema.fail("network.hparams.n_heads", f"d_model={d_model} is not divisible by it")
    schema.number(hparams.get("dropout", 0.1), "network.hparams.dropout", low=0.0, high=0.999)
    schema.choice(
        hparams.get("dropout_position", "head"),
        "network.hparams.dropout_position",
        DROPOUT_POSITIONS,
    )
    schema.number(
        hparams.get("attention_scale"),
        "network.hparams.attention_scale",
        low=0.0,
        open_low=True,
        optional=True,
    )
    schema.number(hparams.get("init_std", 0.02), "network.hparams.init_std", low=0.0)
    schema.number(
        hparams.get("bn_momentum", 0.1),
        "network.hparams.bn_momentum",
        low=0.0,
        high=1.0,
        optional=True,
    )
    schema.choice(
        hparams.get("attention_activation", "enhanced_softmax"),
        "network.hparams.attention_activation",
        ATTENTION_ACTIVATIONS,
    )
    for flag in ("aleatoric", "scatter_noise"):
        if not isinstance(hparams.get(flag, False), bool):
            schema.fail(f"network.hparams.{flag}", "expected true or false")
    if hparams.get("n_outputs", 2) != n_labels:
        schema.fail("network.hparams.n_outputs", f"the bundle has {n_labels} labels")

    n_features = schema.integer(pca.get("n_features"), "pca.n_features", 1, 2**20)
    n_components = schema.integer(pca.get("n_components"), "pca.n_components", 1, n_features)
    if hparams.get("n_inputs", 143) != n_components:
        schema.fail("network.hparams.n_inputs", f"the PCA basis has {n_components} components")
    schema.choice(pca.get("dtype", "float64"), "pca.dtype", PCA_DTYPES)
    schema.choice(pca.get("projection", "orthogonal"), "pca.projection", PROJECTIONS)
    schema.number(
        pca.get("explained_variance_ratio_total"),
        "pca.explained_variance_ratio_total",
        optional=True,
    )

    grid = schema.object(config.get("preprocess_config"), "preprocess_config", optional=True)
    grid = schema.object(grid.get("grid"), "preprocess_config.grid", optional=True)
    if "n_pixels" in grid and grid["n_pixels"] != n_features:
        schema.fail("preprocess_config.grid.n_pixels", f"the PCA basis has {n_features} pixels")

    mc = schema.object(config.get("mc_dropout"), "mc_dropout", optional=True)
    schema.integer(mc.get("n_samples", 100), "mc_dropout.n_samples", 1, 10**5)
    schema.number(mc.get("tau"), "mc_dropout.tau", low=0.0, open_low=True, optional=True)
    if mc.get("uncertainty_scale") is not None:
        schema.numbers(
            mc["uncertainty_scale"],
            "mc_dropout.uncertainty_scale",
            n_labels,
            low=0.0,
            open_low=True,
        )
    schema.object(config.get("uncertainty"), "uncertainty", optional=True)
    schema.object(config.get("reference"), "reference", optional=True)
    density = schema.object(config.get("embedding_density"), "embedding_density", optional=True)
    if density:
        name = density.get("file")
        if not isinstance(name, str) or name not in files:
            raise BundleError(
                f"{path}: embedding_density file {name!r} is not listed with a sha256"
            )
        if not name.endswith(".safetensors"):
            schema.fail("embedding_density.file", "expected a .safetensors file")
        percentiles = schema.object(
            density.get("distance_percentiles"),
            "embedding_density.distance_percentiles",
            optional=True,
        )
        for key, value in percentiles.items():
            schema.number(value, f"embedding_density.distance_percentiles[{key!r}]")
        # mean (d) and whitening (d x d) of float32, d = d_model
        schema.integer(
            files[name]["size"], f"files[{name!r}].size", 0, 4 * d_model * (d_model + 1) + 4096
        )
    schema.object(config.get("provenance"), "provenance", optional=True)


def read_bundle_config(directory) -> dict[str, Any]:
    """Read and check the ``config.json`` of a bundle directory, without loading anything else.

    Parameters
    ----------
    directory : path-like
        The bundle directory.

    Returns
    -------
    dict

    Raises
    ------
    BundleError
        If there is no readable ``config.json`` or it is not a bundle's.
    UnsupportedSchemaError
        If a newer `astro_spt` wrote the bundle; the message says which version to install.

    Examples
    --------
    >>> from astro_spt.bundle import read_bundle_config
    >>> from astro_spt.hub import resolve_model
    >>> config = read_bundle_config(resolve_model())  # the embedded default's folder
    >>> config["schema_version"], [label["name"] for label in config["labels"]]
    (2, ['age', 'mass'])
    >>> sorted(config["files"])  # each with its sha256 and size
    ['README.md', 'model.safetensors', 'pca.safetensors', 'reference.safetensors']
    """
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not os.path.lexists(path):
        raise BundleError(f"{directory} is not an estimator bundle: no {CONFIG_NAME}")
    config = _parse_config(path, directory)
    if not isinstance(config, dict) or type(config.get("schema_version")) is not int:
        raise BundleError(f"{path} is not an astro_spt bundle config: no integer schema_version")
    version = config["schema_version"]
    if version > SCHEMA_VERSION:
        writer = str(config.get("astro_spt_version", "unknown"))[:64]
        # Local version labels ("+g1234") are not allowed in pip requirement specifiers.
        needed = writer.split("+")[0]
        raise UnsupportedSchemaError(
            f"{directory} holds an estimator bundle of schema version {version}, "
            f"written by astro_spt {writer}; this astro_spt ({_package_version()}) reads "
            f"schema versions up to {SCHEMA_VERSION}. Upgrade astro_spt to load it: "
            f"pip install --upgrade 'astro-spt>={needed}'"
        )
    if version < 1:
        raise BundleError(f"{path}: invalid schema_version {version}")
    missing = [k for k in ("labels", "network", "pca", "files") if k not in config]
    if missing:
        raise BundleError(f"{path} lacks the entries {', '.join(missing)}")
    _validate_config(config, path)
    return config


def find_corrupt_files(directory, config: Mapping[str, Any]) -> dict[str, str]:
    """Files of a bundle that are missing or differ from their sha256 in ``config.json``.

    Parameters
    ----------
    directory : path-like
        The bundle directory.
    config : dict
        Its config (`read_bundle_config`).

    Returns
    -------
    dict of str to str
        File name to what is wrong with it; empty when every file checks out.

    Examples
    --------
    >>> import shutil
    >>> import tempfile
    >>> from pathlib import Path
    >>> from astro_spt.bundle import find_corrupt_files, read_bundle_config
    >>> from astro_spt.hub import resolve_model
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(shutil.copytree(resolve_model(), f"{tmp}/bundle"))
    ...     config = read_bundle_config(path)
    ...     intact = find_corrupt_files(path, config)
    ...     _ = (path / "README.md").write_text("edited by hand")
    ...     (path / "pca.safetensors").unlink()
    ...     damaged = find_corrupt_files(path, config)
    >>> intact
    {}
    >>> damaged
    {'pca.safetensors': 'missing', 'README.md': 'sha256 mismatch'}
    """
    problems = {}
    for name, entry in config["files"].items():
        problem = _file_problem(Path(directory), name, entry)
        if problem is not None:
            problems[name] = problem
    return problems


def _network_skeleton(section: Mapping[str, Any], recorded_size: int) -> SpectralTransformer:
    """The network of validated hyper-parameters, on the meta device (no memory)."""
    # Built on the meta device: no wasted random initialisation, and the global torch
    # generator is left untouched by loading.
    try:
        with torch.device("meta"):
            network = SpectralTransformer(**section["hparams"])
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"invalid network hyperparameters: {err}") from err
    itemsize = WEIGHT_DTYPES[section.get("dtype", "float32")].itemsize
    needed = sum(t.numel() for t in network.state_dict().values()) * itemsize
    if needed > recorded_size:
        raise BundleError(
            f"the weights in {section['file']} do not fit the network of network.hparams: "
            f"it needs {needed} bytes of {section.get('dtype', 'float32')} weights, the file "
            f"holds {recorded_size}"
        )
    return network


def _load_network(network: SpectralTransformer, data: bytes, name: str) -> SpectralTransformer:
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    try:
        state = load_tensors(data)
    except SafetensorError as err:
        raise BundleError(f"cannot read the weights in {name}: {err}") from err
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise BundleError(f"the weights in {name} hold NaN or infinite values ({key})")
        if not (value.is_floating_point() or value.dtype == torch.int64):
            raise BundleError(f"the weights in {name} hold a tensor of type {value.dtype} ({key})")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        network.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise BundleError(f"the weights in {name} do not fit the network: {err}") from err
    if any(t.is_meta for t in (*network.parameters(), *network.buffers())):
        raise BundleError(f"the weights in {name} leave parts of the network unset")
    return network.eval()


def _card_labels(card: str) -> list[tuple[str, str, str]] | None:
    """The rows of the "Labels" table of a rendered model card, or None if it has none."""
    lines = card.splitlines()
    if "## Labels" not in lines:
        return None
    rows = []
    for line in lines[lines.index("## Labels") + 1 :]:
        if line.startswith("#"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and cells[0] not in ("label", "---"):
            rows.append(tuple(cells))
    return rows or None


def _config_labels(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    return [(lab["name"], lab["unit"], lab.get("scaling", "linear")) for lab in config["labels"]]


def _check_against_card(config: Mapping[str, Any], card: str, path: Path) -> None:
    # config.json cannot hold its own hash, but the model card is covered by one and
    # states each label's unit and scaling: an edit of config.json that changes what the
    # numbers mean (Gyr to Myr) contradicts it.
    stated = _card_labels(card)
    labels = _config_labels(config)
    if stated is not None and stated != labels:
        show = "; ".join(f"{n} [{u}] {s}" for n, u, s in labels)
        raise BundleIntegrityError(
            f"the labels in {path} ({show}) differ from those of its model card "
            f"{MODEL_CARD_NAME}, which matches its sha256: {CONFIG_NAME} was edited after the "
            "bundle was saved. Re-download or re-save the bundle.",
            filename=CONFIG_NAME,
            path=path,
        )


def _load_arrays(name: str, data: bytes, what: str, build):
    """``build(arrays)`` of the arrays stored in ``name`` (``.npz`` or safetensors), read
    without unpickling; a file that cannot be read or built is a `BundleError` naming
    ``what``."""
    if name.endswith(".npz"):
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except (ValueError, OSError) as err:
            raise BundleError(f"cannot read the {what} in {name}: {err}") from err
    else:
        from safetensors import SafetensorError
        from safetensors.numpy import load as load_arrays

        try:
            arrays = load_arrays(data)
        except SafetensorError as err:
            raise BundleError(f"cannot read the {what} in {name}: {err}") from err
    try:
        return build(arrays)
    except ValueError as err:
        raise BundleError(f"invalid {what} in {name}: {err}") from err


def _load_pca(name: str, data: bytes) -> PCABasis:
    return _load_arrays(name, data, "PCA basis", PCABasis.from_arrays)


def _load_embedding_density(name: str, data: bytes) -> EmbeddingDensity:
    return _load_arrays(name, data, "embedding density", EmbeddingDensity.from_arrays)


def _check_uncertainty(uncertainty: Mapping[str, Any], n_labels: int) -> dict[str, Any]:
    weights = uncertainty.get("weights") if isinstance(uncertainty, Mapping) else None
    if not isinstance(weights, Mapping) or set(weights) != set(UNCERTAINTY_SOURCES):
        raise ValueError(
            f"uncertainty must be {{'weights': {{source: [...]}}}} for the sources "
            f"{UNCERTAINTY_SOURCES}, got {uncertainty!r}"
        )
    checked = {}
    for name, values in weights.items():
        values = [float(v) for v in values]
        if len(values) != n_labels or not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(
                f"uncertainty weights of {name!r} must be {n_labels} numbers >= 0, got {values}"
            )
        checked[name] = values
    return {**uncertainty, "weights": checked}


def _write_atomically(path: Path, write) -> None:
    """Have ``write(tmp_dir)`` fill a temporary directory beside ``path``, then swap it in."""
    if path.exists():
        if not path.is_dir():
            raise BundleError(f"cannot save a bundle to {path}: it is a file")
        if any(path.iterdir()) and not (path / CONFIG_NAME).is_file():
            raise BundleError(
                f"cannot save a bundle to {path}: the directory holds files and no bundle "
                "(refusing to replace it)"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        write(tmp)
        tmp.chmod(0o755)
        if path.exists():
            # A directory cannot be renamed over a non-empty one: move the old one aside,
            # put the new one in place, and only then delete the old one.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "bundle")
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old / "bundle", path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
