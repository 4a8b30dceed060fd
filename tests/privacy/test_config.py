"""PrivacyConfig defaults, validation and Hydra/OmegaConf compatibility."""

import pytest
from omegaconf import OmegaConf

from privacy import PrivacyConfig, PrivacyError


def test_defaults_validate():
    cfg = PrivacyConfig()
    cfg.validate(1000)
    assert not cfg.enabled
    assert cfg.resolved_delta(1000) == pytest.approx(1000**-1.1)
    assert PrivacyConfig(delta=1e-6).resolved_delta(1000) == 1e-6
    assert cfg.resolved_min_survivors(1000) == 100
    assert PrivacyConfig(min_survivors=7).resolved_min_survivors(1000) == 7
    assert PrivacyConfig(sample_rate=0.0001).resolved_min_survivors(1000) == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mode": "centrl"}, "privacy.mode"),
        ({"accountant": "gdp"}, "privacy.accountant"),
        ({"unit": "item"}, "privacy.unit"),
        ({"noise_multiplier": -1.0}, "privacy.noise_multiplier"),
        ({"unit": "example", "example_noise_multiplier": 0.0}, "privacy.example_noise_multiplier"),
        ({"unit": "example", "example_clip_norm": -1.0}, "privacy.example_clip_norm"),
        ({"clip_norm": 0.0}, "privacy.clip_norm"),
        ({"sample_rate": 0.0}, "privacy.sample_rate"),
        ({"sample_rate": 1.5}, "privacy.sample_rate"),
        ({"min_survivors": -1}, "privacy.min_survivors"),
        ({"min_survivors": 2000}, "privacy.min_survivors"),
        ({"target_epsilon": 0.0}, "privacy.target_epsilon"),
        ({"delta": 1.0}, "privacy.delta"),
        ({"max_participations": 0}, "privacy.max_participations"),
    ],
)
def test_validate_names_the_bad_field(kwargs, field):
    with pytest.raises(PrivacyError, match=field):
        PrivacyConfig(**kwargs).validate(1000)


def test_structured_config():
    cfg = OmegaConf.structured(PrivacyConfig)
    merged = OmegaConf.merge(cfg, {"mode": "distributed", "target_epsilon": 8})
    obj = OmegaConf.to_object(merged)
    assert isinstance(obj, PrivacyConfig) and obj.target_epsilon == 8.0
    with pytest.raises(Exception, match="noise_multipler"):
        OmegaConf.merge(cfg, {"noise_multipler": 2.0})


def test_zero_noise_is_allowed_with_a_warning(caplog):
    # z = 0 is the no-noise end of a privacy-utility sweep: it validates, warns, and is accounted as inf.
    with caplog.at_level("WARNING", logger="privacy.config"):
        PrivacyConfig(mode="distributed", noise_multiplier=0.0).validate(1000)
    assert "epsilon = inf" in caplog.text
