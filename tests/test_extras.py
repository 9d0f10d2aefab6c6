"""The optional extras of pyproject.toml: one XGBoost build per platform."""

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
PLATFORMS = [
    ("linux", "x86_64", "xgboost-cpu"),
    ("linux", "aarch64", "xgboost-cpu"),
    ("linux", "ppc64le", "xgboost"),
    ("darwin", "arm64", "xgboost"),
    ("win32", "AMD64", "xgboost"),
]


@pytest.mark.parametrize("extra", ["test", "baselines"])
@pytest.mark.parametrize(("system", "machine", "expected"), PLATFORMS)
def test_one_xgboost_build_per_platform(extra, system, machine, expected):
    if not PYPROJECT.is_file():
        pytest.skip("not a source checkout")
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    environment = {"sys_platform": system, "platform_machine": machine}
    chosen = [
        req.name
        for req in map(Requirement, extras[extra])
        if req.name.startswith("xgboost") and req.marker.evaluate(environment)
    ]
    # xgboost-cpu installs the same ``xgboost`` package without the CUDA NCCL library
    assert chosen == [expected]
