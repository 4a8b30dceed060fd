"""The SA + DP per-round floor: its counts follow the protocol, its rates are measured."""

import pytest

from experiments.sadp_floor import PipelineRates, measure_pipeline_rates, sadp_floor

RATES = PipelineRates(aes_ctr_bytes_per_s=4e9, x25519_per_s=2e4, gaussians_per_s=2e8, rounding_words_per_s=3e8)


def test_one_node_masks_only_with_self_masks():
    f = sadp_floor(100, 1001, 20, 1, RATES, cores=2)
    assert f["k"] == 20 and f["k_other_nodes"] == 0  # every neighbour is on the same node
    assert f["client_keystream_bytes"] == 100 * 4 * 1001  # self masks only
    assert f["key_agreements"] == 100 * 20 / 2  # one share-key agreement per in-node pair
    assert f["wall_seconds"] == pytest.approx(f["client_cpu_seconds"] + f["server_cpu_seconds"])


def test_two_nodes_mask_across_and_run_in_parallel():
    users, d = 1000, 171_874
    f = sadp_floor(users, d, 20, 2, RATES, cores=2)
    cross = 20 * 500 / 999
    assert f["k_other_nodes"] == pytest.approx(cross)
    assert f["client_keystream_bytes"] == pytest.approx(users * (1 + cross) * 4 * d)
    assert f["server_keystream_bytes"] == users * 4 * d
    assert f["key_agreements"] == pytest.approx(users * (2 * cross + (20 - cross) / 2))
    assert f["gaussians"] == users * (d - 1) and f["rounding_words"] == users * d / 2
    client = (f["client_keystream_bytes"] / 4e9 + f["key_agreements"] / 2e4 + f["gaussians"] / 2e8
              + f["rounding_words"] / 3e8)  # fmt: skip
    assert f["client_cpu_seconds"] == pytest.approx(client)
    assert f["wall_seconds"] == pytest.approx(client / 2 + users * 4 * d / 4e9)
    # a third node on two cores does not run faster than two
    assert sadp_floor(users, d, 20, 3, RATES, cores=2)["parallel"] == 2


def test_small_round_uses_the_complete_graph_and_rejects_nonsense():
    assert sadp_floor(5, 10, 20, 1, RATES, cores=1)["k"] == 4
    with pytest.raises(ValueError, match="users >= 2"):
        sadp_floor(1, 10, 20, 1, RATES, cores=1)


def test_rates_are_measured():
    r = measure_pipeline_rates(0.08, d=4096)
    assert all(v > 0 for v in r.as_dict().values())
