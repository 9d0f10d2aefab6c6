"""Tests of astro_spt.hub against a local Hugging Face-compatible server on 127.0.0.1.

The real ``huggingface_hub`` client does the HTTP and the caching; see ``hf_server.py``.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_server import LocalHub, isolate_huggingface_hub, make_bundle

from astro_spt import conf
from astro_spt.bundle import EstimatorBundle
from astro_spt.exceptions import (
    BundleIntegrityError,
    HubConnectionError,
    HubEntryNotFoundError,
    HubError,
    HubIntegrityError,
    HubRepositoryNotFoundError,
    HubRevisionNotFoundError,
    ModelNotFoundError,
    OfflineCacheMissError,
    UnsupportedSchemaError,
)
from astro_spt.hub import download_model, load_model, resolve_model

REPO = "astro-spt-tests/tiny"


@pytest.fixture(autouse=True)
def backoff(monkeypatch):
    """huggingface_hub isolated from the environment; its retry sleeps recorded."""
    return isolate_huggingface_hub(monkeypatch)


@pytest.fixture(scope="module")
def trained():
    return make_bundle(seed=1)


@pytest.fixture
def bundle_dir(trained, tmp_path):
    return trained[0].save_pretrained(tmp_path / "bundle")


@pytest.fixture
def hub(bundle_dir):
    with LocalHub() as server:
        server.first_commit = server.commit_folder(REPO, bundle_dir)
        server.tag(REPO, "v1", "main")
        yield server


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def _snapshot_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob("models--*/snapshots/*/*"))


def _predict(bundle, flux):
    return bundle.predict_scaled(bundle.features(flux[:6]), seed=11, return_samples=True)


def test_download_pinned_revision_then_offline_and_server_stopped(hub, cache, trained, monkeypatch):
    original, flux = trained
    model = load_model(REPO, revision=hub.first_commit, cache_dir=cache, endpoint=hub.url)
    assert isinstance(model, EstimatorBundle)
    assert Path(model.source).name == hub.first_commit
    assert _snapshot_files(cache) == sorted(
        ["config.json", "model.safetensors", "pca.safetensors", "README.md"]
    )
    expected = _predict(original, flux)
    assert torch.equal(_predict(model, flux).samples, expected.samples)

    # A newer commit on main does not change what the pinned revision loads.
    hub.commit(REPO, {"notes.txt": b"new commit"})
    again = load_model(REPO, revision=hub.first_commit, cache_dir=cache, endpoint=hub.url)
    assert Path(again.source).name == hub.first_commit

    # A cached commit hash is a cache hit: no request at all.
    hub.requests.clear()
    load_model(REPO, revision=hub.first_commit, cache_dir=cache, endpoint=hub.url)
    assert hub.requests == []

    # With the server gone, the cache still serves the pinned revision and the tag.
    load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)
    hub.stop()
    model = load_model(REPO, revision=hub.first_commit, cache_dir=cache, endpoint=hub.url)
    assert torch.equal(_predict(model, flux).samples, expected.samples)
    assert load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url).source == model.source

    # Offline mode, by argument, by the environment, or by huggingface_hub's constant.
    load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url, local_files_only=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)


def test_branch_resolves_to_its_current_commit(hub, cache):
    first = download_model(REPO, cache_dir=cache, endpoint=hub.url)  # default revision: main
    assert first.name == hub.first_commit
    newer = hub.commit(REPO, {"notes.txt": b"new commit"})
    hub.requests.clear()
    second = download_model(REPO, revision="main", cache_dir=cache, endpoint=hub.url)
    assert second.name == newer
    # Unchanged files are linked from the existing blobs, not downloaded again.
    assert hub.count("GET") == 0


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_offline_with_empty_cache_says_how_to_predownload(hub, cache, monkeypatch, how):
    kwargs = {"local_files_only": True} if how == "argument" else {}
    if how == "environment":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineCacheMissError) as info:
        load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url, **kwargs)
    message = str(info.value)
    assert f"astro-spt download {REPO} --revision v1 --cache-dir {cache.resolve()}" in message
    assert ("local_files_only" if how == "argument" else "HF_HUB_OFFLINE") in message
    assert hub.requests == []


def test_unreachable_hub_with_empty_cache(hub, cache, backoff):
    hub.stop()
    with pytest.raises(HubConnectionError, match=r"could not fetch config\.json") as info:
        load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)
    assert "cannot be reached (Connection refused)" in str(info.value)
    assert "astro-spt download" in str(info.value)
    assert _snapshot_files(cache) == []
    assert not backoff  # asked once, briefly: no half a minute of huggingface_hub's retries


def test_tampered_file_on_the_server(hub, cache, bundle_dir):
    good = hub.files(REPO)["model.safetensors"]
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    hub.tamper(REPO, "model.safetensors", bytes(bad))
    with pytest.raises(HubIntegrityError, match=r"model\.safetensors \(sha256 mismatch\)") as info:
        load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)
    assert isinstance(info.value, BundleIntegrityError)
    assert info.value.filename == "model.safetensors"
    # Nothing of the failed download is left to be picked up later, offline or not.
    assert _snapshot_files(cache) == []
    assert not any(
        p.read_bytes() == bytes(bad) for p in cache.glob("models--*/blobs/*") if p.is_file()
    )
    with pytest.raises(OfflineCacheMissError):
        load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url, local_files_only=True)
    # Once the server is fixed, a retry fetches the file anew and succeeds.
    hub.tamper(REPO, "model.safetensors", good)
    load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)


def test_a_file_of_another_size_is_refused_before_it_is_fetched(hub, cache):
    good = hub.files(REPO)["model.safetensors"]
    hub.tamper(REPO, "model.safetensors", good + bytes(2**20))  # a MiB more than recorded
    hub.requests.clear()
    with pytest.raises(
        HubIntegrityError, match=r"holds model\.safetensors of [0-9,]+ bytes, but .* records"
    ) as info:
        load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)
    assert info.value.filename == "model.safetensors"
    fetched = [path for method, path in hub.requests if method == "GET"]
    assert not any(path.endswith("/model.safetensors") for path in fetched), fetched
    assert _snapshot_files(cache) == []
    hub.tamper(REPO, "model.safetensors", good)
    load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)


def test_corrupted_cache_entry_is_removed_and_refetched(hub, cache):
    snapshot = download_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)
    blob = (snapshot / "pca.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")
    with pytest.raises(HubIntegrityError, match=r"pca\.safetensors"):
        load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)
    assert not blob.exists()
    hub.requests.clear()
    load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)
    assert hub.count("GET") == 1  # only the removed file


def test_incomplete_snapshot_is_completed_not_discarded(hub, cache):
    snapshot = download_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)
    (snapshot / "README.md").unlink()
    with pytest.raises(OfflineCacheMissError):
        download_model(
            REPO, revision="v1", cache_dir=cache, endpoint=hub.url, local_files_only=True
        )
    assert (snapshot / "config.json").exists()  # what was there before the call stays
    hub.requests.clear()
    download_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)
    assert (snapshot / "README.md").exists()
    assert hub.count("GET") == 0  # relinked from its blob


def test_missing_repository_revision_and_file(hub, cache):
    with pytest.raises(HubRepositoryNotFoundError, match="astro-spt-tests/nothing was not found"):
        load_model("astro-spt-tests/nothing", cache_dir=cache, endpoint=hub.url)
    with pytest.raises(HubRevisionNotFoundError, match="revision 'v9'"):
        load_model(REPO, revision="v9", cache_dir=cache, endpoint=hub.url)
    # A file listed in config.json is missing from the repository.
    files = dict(hub.files(REPO))
    del files["pca.safetensors"]
    hub.repos[REPO].commits[hub.repos[REPO].refs["main"]] = files
    with pytest.raises(HubEntryNotFoundError, match=r"pca\.safetensors is missing"):
        load_model(REPO, cache_dir=cache, endpoint=hub.url)
    assert _snapshot_files(cache) == []


def test_server_errors(hub, cache, backoff):
    hub.failures[""] = 500
    with pytest.raises(HubConnectionError, match="HTTP 500"):
        load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)
    assert _snapshot_files(cache) == []
    assert backoff == [1, 2, 4, 8, 8]  # huggingface_hub's back-off, not slept here

    # A failure in the middle of a bundle leaves no partial snapshot behind.
    hub.failures.clear()
    hub.failures["model.safetensors"] = 503
    with pytest.raises(HubConnectionError, match=r"model\.safetensors"):
        load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)
    assert _snapshot_files(cache) == []

    # The metadata request succeeds, the download itself fails: no retry, same clean-up.
    hub.failures.clear()
    hub.failures["GET /astro-spt-tests/tiny/resolve/" + hub.first_commit + "/pca"] = 500
    with pytest.raises(
        HubConnectionError, match=r"answered HTTP 500 server error for pca\.safetensors"
    ):
        load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)
    assert _snapshot_files(cache) == []
    assert not list(cache.glob("models--*/blobs/*.incomplete"))

    # Once cached, a failing hub falls back to the cache.
    hub.failures.clear()
    load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)
    hub.failures[""] = 500
    load_model(REPO, revision="v1", cache_dir=cache, endpoint=hub.url)


def test_newer_schema_on_the_hub(hub, cache):
    config = json.loads(hub.files(REPO)["config.json"])
    config.update(schema_version=99, astro_spt_version="9.0")
    hub.commit(REPO, {"config.json": json.dumps(config).encode()})
    with pytest.raises(UnsupportedSchemaError, match=r"astro-spt>=9\.0"):
        load_model(REPO, cache_dir=cache, endpoint=hub.url)
    assert _snapshot_files(cache) == []


def test_defaults_from_astropy_config(hub, cache, trained):
    with (
        conf.set_temp("hub_repo", REPO),
        conf.set_temp("hub_revision", "v1"),
        conf.set_temp("hub_endpoint", hub.url),
        conf.set_temp("cache_dir", str(cache)),
    ):
        model = load_model()
    assert Path(model.source).name == hub.first_commit
    assert str(cache.resolve()) in model.source


def test_missing_embedded_model_is_a_clear_error(monkeypatch):
    import astro_spt.hub

    monkeypatch.setattr(astro_spt.hub, "EMBEDDED_MODEL", ("data", "no_such_model"))
    with pytest.raises(ModelNotFoundError, match="No embedded default model is installed") as info:
        load_model()
    assert "load_model('path/to/bundle')" in str(info.value)
    with pytest.raises(ValueError, match="revision"):
        load_model(revision="v1")


def test_embedded_model_is_found_with_importlib_resources(bundle_dir, monkeypatch, tmp_path):
    package = tmp_path / "astro_spt"
    bundle_dir.rename(package)  # stands in for astro_spt/ with data/default_model inside
    (package / "data").mkdir()
    for name in ("config.json", "model.safetensors", "pca.safetensors", "README.md"):
        (package / "data" / "default_model").mkdir(exist_ok=True)
        (package / name).rename(package / "data" / "default_model" / name)
    monkeypatch.setattr("astro_spt.hub.resources.files", lambda name: package)
    model = load_model()
    assert model.source == str(package / "data" / "default_model")


def test_local_directories(bundle_dir, trained):
    model = load_model(bundle_dir)
    assert model.labels == trained[0].labels
    assert load_model(str(bundle_dir)).source == str(bundle_dir)
    with pytest.raises(ValueError, match="not to the directory"):
        load_model(bundle_dir, revision="v1")
    with pytest.raises(ModelNotFoundError, match="neither a bundle directory nor a hub"):
        load_model(bundle_dir.parent / "missing")
    with pytest.raises(ModelNotFoundError, match="neither"):
        resolve_model("./relative/missing")
    with pytest.raises(ValueError, match="not a hub repository id"):
        download_model("a/b/c")


def test_push_to_hub_and_load_back(hub, cache, trained):
    original, flux = trained
    commit = original.push_to_hub("astro-spt-tests/published", endpoint=hub.url, token="hf_test")
    assert hub.repos["astro-spt-tests/published"].refs["main"] == commit
    card = hub.files("astro-spt-tests/published")["README.md"].decode()
    assert 'load_model("astro-spt-tests/published"' in card
    model = load_model(
        "astro-spt-tests/published", revision=commit, cache_dir=cache, endpoint=hub.url
    )
    assert torch.equal(_predict(model, flux).samples, _predict(original, flux).samples)

    # To a branch, as float16, into the existing repository.
    branch_commit = model.push_to_hub(
        "astro-spt-tests/published",
        revision="half",
        endpoint=hub.url,
        token="hf_test",
        dtype="float16",
    )
    half = load_model(
        "astro-spt-tests/published", revision="half", cache_dir=cache, endpoint=hub.url
    )
    assert Path(half.source).name == branch_commit != commit
    np.testing.assert_allclose(
        half.predict_scaled(half.features(flux[:4]), seed=1).mean,
        model.predict_scaled(model.features(flux[:4]), seed=1).mean,
        atol=5e-2,
    )
    assert hub.repos["astro-spt-tests/published"].refs["main"] == commit


def test_push_errors(hub, trained, monkeypatch):
    hub.failures["/api/repos/create"] = 500
    with pytest.raises(HubConnectionError, match="HTTP 500"):
        trained[0].push_to_hub("astro-spt-tests/new", endpoint=hub.url, token="hf_test")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        trained[0].push_to_hub("astro-spt-tests/new", endpoint=hub.url, token="hf_test")


@pytest.mark.remote_data
def test_real_hub_missing_repository(tmp_path):
    with pytest.raises(HubRepositoryNotFoundError):
        download_model(
            "astro-spt-tests/this-repository-does-not-exist",
            cache_dir=tmp_path,
            endpoint="https://huggingface.co",
        )
