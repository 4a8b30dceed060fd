"""Resuming a run: the saved config wins, and only schedule keys may change.

``fedrec simulate resume=RUN_DIR`` (or the same with the run's original overrides) continues the
run in ``RUN_DIR`` from its last checkpoint. A resumed run must be the same run, so its config is
the one saved in ``RUN_DIR/config.yaml``; overrides of keys in :data:`MAY_CHANGE` (more rounds,
timeouts, workers) are applied, and any other override that disagrees with the saved config is an
error that names the key.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from configs.schema import FedrecConfig, from_yaml
from server.rundir import RunDirError

MAY_CHANGE = ("simulation.rounds", "simulation.round_timeout", "simulation.connect_timeout",
              "simulation.workers", "simulation.min_nodes", "simulation.min_replies",
              "simulation.eval_every", "simulation.eval_max_users")  # fmt: skip
IGNORED = ("resume", "overwrite", "name", "runs_dir", "hydra")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~").strip()


def resume_config(cfg: FedrecConfig, overrides: list[str] | None) -> FedrecConfig:
    """The config of a resumed run: ``cfg.resume``'s saved config plus the allowed overrides.

    Raises
    ------
    RunDirError
        The run directory has no saved config, or an override changes a key that a resumed run
        cannot change.
    """
    run_dir = Path(str(cfg.resume))
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise RunDirError(f"{run_dir} has no config.yaml: it is not a fedrec run directory")
    saved = from_yaml(saved_path.read_text())
    new, old = OmegaConf.structured(cfg), OmegaConf.structured(saved)
    for override in overrides or []:
        key = _key(override)
        if not key or key.split(".")[0] in IGNORED:
            continue
        if any(key == k or k.startswith(key + ".") for k in MAY_CHANGE) or key in MAY_CHANGE:
            OmegaConf.update(old, key, OmegaConf.select(new, key), merge=True)
            continue
        if OmegaConf.select(new, key) != OmegaConf.select(old, key):
            raise RunDirError(
                f"resume: override {override!r} changes {key} from {OmegaConf.select(old, key)!r} "
                f"(saved in {saved_path}); a resumed run keeps its config except {', '.join(MAY_CHANGE)}")  # fmt: skip
    out: FedrecConfig = OmegaConf.to_object(old)
    out.resume = str(run_dir)
    out.overwrite = False
    out.validate()
    return out
