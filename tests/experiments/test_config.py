import pytest
from hydra.errors import ConfigCompositionException

from configs.store import compose_config


def test_default_config_composes():
    cfg = compose_config([])
    assert cfg.data.name == "ml-100k" and cfg.model.factors == 32 and cfg.strategy.name == "trust"


def test_unknown_key_fails_naming_it():
    with pytest.raises(ConfigCompositionException, match="factorz"):
        compose_config(["model.factorz=3"])


def test_wrong_type_fails_naming_key():
    with pytest.raises(ConfigCompositionException, match="factors"):
        compose_config(["model.factors=abc"])


def test_bad_value_names_key():
    with pytest.raises(ValueError, match="simulation.nodes"):
        compose_config(["simulation.nodes=0"])
