"""Hydra wiring: the config directory and the structured schema in Hydra's ConfigStore."""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore

from configs.schema import FedrecConfig

CONFIG_DIR = Path(__file__).resolve().parent
_registered = False


def register_configs() -> None:
    """Register ``FedrecConfig`` as ``fedrec_schema`` (the base of configs/config.yaml), once."""
    global _registered
    if not _registered:
        ConfigStore.instance().store(name="fedrec_schema", node=FedrecConfig)
        _registered = True


def compose_config(overrides: list[str]):
    """Compose ``configs/config.yaml`` with Hydra overrides outside a Hydra main; validated."""
    from hydra import compose, initialize_config_dir

    from configs.schema import from_container

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return from_container(compose("config", overrides=overrides))
