import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from strategies.aggregation import StreamingWeightedSum, weighted_mean_reference
from strategies.trust import ConstantTrust
from strategies.trust_fedavg import TrustWeightedFedAvg


def test_streaming_sum_equals_reference_mean():
    rng = np.random.default_rng(0)
    updates = rng.normal(size=(50, 17)).astype(np.float32)
    weights = rng.random(50)
    agg = StreamingWeightedSum(17)
    for x, w in zip(updates, weights, strict=True):
        agg.add(w * x.astype(np.float64), w)
    assert np.allclose(agg.mean(), weighted_mean_reference(updates, weights), atol=1e-6)


def test_presummed_node_contributions_are_exact():
    rng = np.random.default_rng(1)
    updates = rng.normal(size=(30, 5))
    weights = rng.random(30)
    agg = StreamingWeightedSum(5)
    for block in np.array_split(np.arange(30), 4):  # four nodes
        agg.add((weights[block, None] * updates[block]).sum(0), weights[block].sum(), len(block))
    assert agg.count == 30
    assert np.allclose(agg.mean(), weighted_mean_reference(updates, weights))


@pytest.fixture(autouse=True)
def _run_identity():
    """Messages are created inside a ServerApp run; stand in for one."""
    old = TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = old


def _reply(weighted_sum, weight, users):
    content = RecordDict({
        "update": ArrayRecord({"sum": Array(weighted_sum.astype(np.float32))}),
        "metrics": MetricRecord({"num-examples": 10, "weight-sum": weight, "users": users, "train-loss": 0.5}),
        "report": ArrayRecord({"users": Array(np.arange(users))}),
    })
    return Message(content, dst_node_id=0, message_type="train")  # stands in for a node's reply


def test_trust_fedavg_applies_server_lr_and_item_sum():
    d, block = 6, 4
    strat = TrustWeightedFedAvg(ConstantTrust(), threshold=0.0, server_lr=0.5, item_block=block,
                                item_aggregation="sum", item_lr=2.0)
    theta = np.ones(d, np.float32)
    strat.plan_round({1: np.arange(2), 2: np.arange(2, 5)})
    list(strat.configure_train(1, ArrayRecord({"shared": Array(theta)}), ConfigRecord({}), grid=None))
    a, b = np.arange(d, dtype=np.float64), np.full(d, 2.0)
    arrays, metrics = strat.aggregate_train(1, [_reply(a, 1.0, 2), _reply(b, 3.0, 3)])
    mean = (a + b) / 4.0
    expected = theta + 0.5 * mean
    expected[:block] = theta[:block] + 2.0 * (a + b)[:block]  # item rows: item_lr * weighted sum
    assert np.allclose(arrays["shared"].numpy(), expected)
    assert metrics["users"] == 5


def test_threshold_zeroes_low_trust():
    strat = TrustWeightedFedAvg(ConstantTrust(0.5), threshold=0.6)
    plan = strat.plan_round({7: np.arange(4)})
    assert (plan[7][1] == 0).all() and strat.last_excluded == 4
