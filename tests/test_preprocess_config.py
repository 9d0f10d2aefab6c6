"""Tests of `astro_spt.preprocess.config`."""

import dataclasses
import json

import pytest

from astro_spt.exceptions import AstroSPTError, InvalidConfigError
from astro_spt.preprocess import (
    AnomalyConfig,
    DenoiseConfig,
    GridConfig,
    NormalizeConfig,
    PreprocessConfig,
)


def test_defaults_follow_the_paper():
    config = PreprocessConfig()
    assert (config.grid.wavelength_min_aa, config.grid.wavelength_max_aa) == (3800.0, 9100.0)
    assert config.grid.n_pixels == 4096
    assert config.denoise.wavelet == "haar"
    # open in the paper; settled by the real-data benchmark (docs/benchmarks.rst)
    assert config.normalize.method == "standardize"
    assert config.denoise.level == 2
    assert config.pixel_scale_aa == pytest.approx(5300 / 4095)


def test_json_round_trip():
    config = PreprocessConfig(
        grid=GridConfig(spacing="log"),
        anomalies=AnomalyConfig(min_snr=5.0),
        denoise=DenoiseConfig(level=6, threshold="level", mode="hard"),
        normalize=NormalizeConfig(method="median"),
    )
    text = json.dumps(config.to_dict())
    assert PreprocessConfig.from_dict(json.loads(text)) == config
    assert PreprocessConfig.from_dict(PreprocessConfig().to_dict()) == PreprocessConfig()


def test_standard_mask_windows_round_trip():
    config = PreprocessConfig(
        anomalies=AnomalyConfig(standard_mask_windows_aa=[[3700, 3950], (6860.0, 6960.0)])
    )
    windows = config.anomalies.standard_mask_windows_aa
    assert windows == ((3700.0, 3950.0), (6860.0, 6960.0))
    assert all(type(x) is float for window in windows for x in window)
    hash(config)  # still a hashable, frozen dataclass
    data = config.to_dict()
    assert data["anomalies"]["standard_mask_windows_aa"] == [[3700.0, 3950.0], [6860.0, 6960.0]]
    again = json.loads(json.dumps(data))
    assert again == data  # plain JSON types: what a bundle saves is what it loads
    assert PreprocessConfig.from_dict(again) == config
    no_windows = PreprocessConfig(anomalies=AnomalyConfig(standard_mask_windows_aa=()))
    assert PreprocessConfig.from_dict(json.loads(json.dumps(no_windows.to_dict()))) == no_windows


def test_configs_saved_before_the_windows_load_with_the_defaults():
    # a bundle's config.json from before issue 14 has no window settings
    data = PreprocessConfig().to_dict()
    del data["anomalies"]["standard_mask_windows_aa"]
    del data["anomalies"]["standard_mask_min_fraction"]
    assert PreprocessConfig.from_dict(data) == PreprocessConfig()
    assert PreprocessConfig.from_dict(data).anomalies.standard_mask_windows_aa == (
        (3600.0, 4000.0),
        (7550.0, 7700.0),
        (9000.0, 9300.0),
    )


def test_partial_dict_takes_defaults():
    config = PreprocessConfig.from_dict({"denoise": {"enabled": False}})
    assert config.denoise.enabled is False
    assert config.grid == GridConfig()
    assert PreprocessConfig.from_dict({}) == PreprocessConfig()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"denoise": {"levels": 3}}, "unknown key.*'denoise'.*levels"),
        ({"denoising": {}}, "unknown section"),
        ({"grid": 4096}, "section 'grid' must be a dict"),
        ([], "expected a dict"),
    ],
)
def test_from_dict_rejects_unknown_keys(data, message):
    with pytest.raises(InvalidConfigError, match=message):
        PreprocessConfig.from_dict(data)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: GridConfig(wavelength_min_aa=9000, wavelength_max_aa=4000), "wavelength_min"),
        (lambda: GridConfig(n_pixels=4096.0), "n_pixels"),
        (lambda: GridConfig(spacing="quadratic"), "spacing"),
        (lambda: DenoiseConfig(level=13), "level"),
        (lambda: DenoiseConfig(threshold="sure"), "threshold"),
        (lambda: DenoiseConfig(mode="garrote"), "mode"),
        (lambda: NormalizeConfig(method="max"), "method"),
        (lambda: NormalizeConfig(continuum_sigma_aa=0), "continuum_sigma_aa"),
        (lambda: AnomalyConfig(spike_window=6), "spike_window"),
        (lambda: AnomalyConfig(max_missing_fraction=2), "max_missing_fraction"),
        (lambda: AnomalyConfig(min_snr=-1), "min_snr"),
        (lambda: AnomalyConfig(spike_threshold=0), "spike_threshold"),
        (lambda: AnomalyConfig(standard_mask_windows_aa=((4000, 3800),)), "0 < low < high"),
        (lambda: AnomalyConfig(standard_mask_windows_aa=((0, 4000),)), "0 < low < high"),
        (lambda: AnomalyConfig(standard_mask_windows_aa=((9000, float("inf")),)), "finite"),
        (lambda: AnomalyConfig(standard_mask_windows_aa=((float("nan"), 10),)), "finite"),
        (lambda: AnomalyConfig(standard_mask_windows_aa=(("7550", 7700),)), "finite"),
        (lambda: AnomalyConfig(standard_mask_windows_aa=((True, 7700),)), "finite"),
        (lambda: AnomalyConfig(standard_mask_windows_aa=((7550, 7600, 7700),)), "pairs"),
        (lambda: AnomalyConfig(standard_mask_windows_aa=(7550, 7700)), "pairs"),
        (lambda: AnomalyConfig(standard_mask_windows_aa="7550-7700"), "pairs"),
        (lambda: AnomalyConfig(standard_mask_min_fraction=1.5), "standard_mask_min_fraction"),
        (
            lambda: AnomalyConfig(oscillation_min_period_aa=50, oscillation_max_period_aa=20),
            "oscillation",
        ),
        (
            lambda: PreprocessConfig(grid=GridConfig(n_pixels=64), denoise=DenoiseConfig(level=8)),
            "at least 256",
        ),
        (lambda: PreprocessConfig(grid={"n_pixels": 64}), "GridConfig"),
    ],
)
def test_invalid_values(factory, message):
    with pytest.raises(InvalidConfigError, match=message) as info:
        factory()
    assert isinstance(info.value, AstroSPTError)
    assert isinstance(info.value, ValueError)


def test_config_is_frozen():
    config = PreprocessConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.grid = GridConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.denoise.level = 2
    changed = dataclasses.replace(config, denoise=DenoiseConfig(level=3))
    assert changed.denoise.level == 3
    assert hash(changed) != hash(config)
