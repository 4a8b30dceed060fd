"""The aggregation's own memory does not grow with users per round (measured on two sizes)."""

import tracemalloc

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from strategies.trust import ConstantTrust
from strategies.trust_fedavg import TrustWeightedFedAvg

D = 200_000


@pytest.fixture(autouse=True)
def _run_identity():
    old = TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = old


def _replies(n, rng):
    """A generator: one reply exists at a time, as when replies are pulled and dropped in turn."""
    for _ in range(n):
        content = RecordDict({
            "update": ArrayRecord({"sum": Array(rng.normal(size=D).astype(np.float32))}),
            "metrics": MetricRecord({"num-examples": 5, "weight-sum": 1.0, "users": 1, "train-loss": 0.1}),
            "report": ArrayRecord({"users": Array(np.arange(1))}),
        })
        yield Message(content, dst_node_id=0, message_type="train")


def _peak(n):
    strat = TrustWeightedFedAvg(ConstantTrust(), threshold=0.0)
    strat._theta = np.zeros(D, np.float32)
    rng = np.random.default_rng(0)
    tracemalloc.start()
    strat.aggregate_train(1, _replies(n, rng))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_aggregation_memory_is_flat_in_users():
    small, large = _peak(5), _peak(100)
    # O(d): a float64 accumulator plus one reply in flight, whatever the count (20x more users).
    assert large < 1.3 * small, (small, large)
    assert large < 12 * D * 4
