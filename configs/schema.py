"""The structured config of a fedrec run: one dataclass per package, composed here.

Registered in Hydra's ConfigStore, so a misspelled key or a wrong type fails at start-up with the
key's name; the YAML files under ``configs/<group>/`` pick values for each group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from privacy.config import PrivacyConfig
from recommender.config import DataConfig, ModelConfig
from recommender.local_training import LocalTrainConfig
from secure_agg.config import SecAggConfig
from strategies.config import StrategyConfig


@dataclass
class SimulationConfig:
    """Placement and round schedule.

    Parameters
    ----------
    nodes : int
        Flower SuperNodes; each hosts a stable block of users (a cohort).
    users_per_round : int
        Users sampled per round without DP (fixed size); with DP on, Poisson sampling with
        ``privacy.sample_rate`` is used instead. 0 means every user.
    rounds : int
    eval_every : int
        Federated evaluation every k rounds and after the last (0: never, for benchmarks).
    eval_max_users : int
        Evaluate at most this many users per node (0 = all).
    workers : int
        Client workers of the simulation engine (0 = one per core).
    round_timeout : float
        Seconds to wait for replies in one round.
    min_nodes : int
        Nodes that must be connected before the first round (0 = all ``nodes``).
    connect_timeout : float
        Seconds to wait for them.
    dropout : float
        Fraction of sampled users that vanish before replying (testing dropout handling).
    min_replies : int
        Node replies a round needs: before each round the loop waits (up to ``connect_timeout``)
        for this many connected nodes, and a round with fewer replies is recorded as skipped
        (model unchanged) instead of failing the run.
    """

    nodes: int = 2
    users_per_round: int = 0
    rounds: int = 30
    eval_every: int = 5
    eval_max_users: int = 0
    workers: int = 0
    round_timeout: float = 3600.0
    min_nodes: int = 0
    connect_timeout: float = 120.0
    dropout: float = 0.0
    min_replies: int = 1


@dataclass
class AttackConfig:
    """Malicious users: attack name (configs/attack/), malicious fraction f, start round, parameters."""

    name: str = "none"
    fraction: float = 0.0
    start_round: int = 1
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class FedrecConfig:
    """A whole fedrec run.

    Parameters
    ----------
    name : str
        Run name: the run lives in ``<runs_dir>/<name>/``.
    runs_dir : str
    seed : int
        Seed of sampling, local training schedules and evaluation tie-breaks.
    overwrite : bool
        Replace a finished run of the same name.
    resume : str or None
        Run directory to continue from its last saved round.
    """

    name: str = "default"
    runs_dir: str = "runs"
    seed: int = 0
    overwrite: bool = False
    resume: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    client: LocalTrainConfig = field(default_factory=LocalTrainConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    secure_agg: SecAggConfig = field(default_factory=SecAggConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)

    def validate(self) -> None:
        """Check every group; errors name the offending key and value."""
        self.data.validate()
        self.model.validate()
        self.client.validate()
        self.strategy.validate()
        self.privacy.validate(self.data.population)
        self.secure_agg.validate()
        sim = self.simulation
        if sim.nodes < 1 or sim.nodes > self.data.population:
            raise ValueError(f"simulation.nodes={sim.nodes} must be in [1, {self.data.population}]")
        if sim.rounds < 1 or sim.eval_every < 0:
            raise ValueError(f"simulation.rounds={sim.rounds} must be >= 1 and eval_every={sim.eval_every} >= 0")
        if not 0 <= sim.users_per_round <= self.data.population:
            raise ValueError(f"simulation.users_per_round={sim.users_per_round} must be in [0, {self.data.population}]")
        if sim.min_replies < 1:
            raise ValueError(f"simulation.min_replies={sim.min_replies} must be >= 1")
        if not 0 <= sim.dropout < 1:
            raise ValueError(f"simulation.dropout={sim.dropout} must be in [0, 1)")


def to_yaml(cfg: FedrecConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def from_yaml(text: str) -> FedrecConfig:
    """Parse a resolved config (as sent to nodes or saved in ``config.yaml``), strictly."""
    merged = OmegaConf.merge(OmegaConf.structured(FedrecConfig), OmegaConf.create(text))
    return OmegaConf.to_object(merged)


def from_container(cfg: Any) -> FedrecConfig:
    """Turn a Hydra DictConfig into a validated FedrecConfig."""
    merged = OmegaConf.merge(OmegaConf.structured(FedrecConfig), cfg)
    out = OmegaConf.to_object(merged)
    out.validate()
    return out
