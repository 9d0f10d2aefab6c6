"""Tests of the configuration, `astro_spt.Conf`: read from ``astro_spt.cfg`` as documented.

Each test writes the file into a temporary astropy config directory
(``$XDG_CONFIG_HOME/astropy``) and makes astropy read it again with ``conf.reload()``.
"""

import os
from pathlib import Path

import pytest
from astropy.config import get_config_dir
from hf_server import LocalHub, isolate_huggingface_hub, make_bundle

import astro_spt
from astro_spt import conf
from astro_spt.io import example_files

REPO = "astro-spt-tests/from-config"


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    """A function writing ``astro_spt.cfg`` into a fresh config directory and reloading."""
    folder = tmp_path / "xdg" / "astropy"
    folder.mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(folder.parent))

    def write(text):
        (folder / "astro_spt.cfg").write_text(text, encoding="utf-8")
        conf.reload()

    yield write
    monkeypatch.undo()
    conf.reload()  # back to the user's own file, or the defaults


def test_conf_is_the_package_namespace():
    from astro_spt.conf import conf as legacy

    assert legacy is conf
    assert isinstance(astro_spt.conf, astro_spt.Conf)
    # astropy maps a ConfigNamespace to the section named after its module, less the
    # package: the package's own module means the top of astro_spt.cfg, no section.
    assert {item.module for item in conf.values()} == {"astro_spt"}


def test_items_are_read_from_the_top_of_the_file(config_file):
    config_file(
        "hub_repo = someone/model\n"
        "hub_revision = v3\n"
        "hub_endpoint = http://127.0.0.1:1\n"
        "cache_dir = /data/models\n"
        "default_batch_size = 32\n"
    )
    assert conf.hub_repo == "someone/model"
    assert conf.hub_revision == "v3"
    assert conf.hub_endpoint == "http://127.0.0.1:1"
    assert conf.cache_dir == "/data/models"
    assert conf.default_batch_size == 32
    # the directory the docs name
    assert Path(get_config_dir()) == Path(os.environ["XDG_CONFIG_HOME"]) / "astropy"


def test_a_section_is_not_the_package_configuration(config_file):
    config_file("[astro_spt]\nhub_repo = someone/model\n[conf]\nhub_repo = other/model\n")
    assert conf.hub_repo == ""


def test_hub_repo_from_the_file_is_the_default_model(config_file, tmp_path, monkeypatch):
    isolate_huggingface_hub(monkeypatch)
    bundle, *_ = make_bundle(seed=2)
    folder = bundle.save_pretrained(tmp_path / "bundle")
    cache = tmp_path / "cache"
    with LocalHub() as hub:
        commit = hub.commit_folder(REPO, folder)
        hub.tag(REPO, "v1", "main")
        hub.commit(REPO, {"README.md": b"a later commit on main"})
        config_file(
            f"hub_repo = {REPO}\nhub_revision = v1\nhub_endpoint = {hub.url}\ncache_dir = {cache}\n"
        )
        model = astro_spt.load_model()
    assert Path(model.source).name == commit  # the tag, not main
    assert Path(model.source).is_relative_to(cache.resolve())


def test_default_batch_size_is_read_by_estimate(config_file, monkeypatch, untrained_bundle):
    import astro_spt.estimation as estimation

    sizes = []
    original = estimation.workers.iter_preprocessed

    def spy(*args, **kwargs):
        sizes.append(kwargs["batch_size"])
        return original(*args, **kwargs)

    monkeypatch.setattr(estimation.workers, "iter_preprocessed", spy)
    config_file("default_batch_size = 2\n")
    astro_spt.estimate(example_files()[:3], untrained_bundle, n_samples=2)
    assert sizes == [2]
    astro_spt.estimate(example_files()[:3], untrained_bundle, n_samples=2, batch_size=5)
    assert sizes == [2, 5]
