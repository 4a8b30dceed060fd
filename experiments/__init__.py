"""fedrec entry points: the CLI, Hydra mains, sweeps, benchmarks, reports."""

from experiments.scoring import load_run

__all__ = ["load_run"]
