"""The budget check refuses exactly the first round that would exceed the target."""

import math

import numpy as np
import pytest
from opacus.accountants.analysis import rdp as opacus_rdp
from opacus.accountants.rdp import RDPAccountant

from privacy import PrivacyAccountant, PrivacyBudgetExceeded, check_budget

DELTA = 1e-5


def _first_round_over(z: float, q: float, target: float, horizon: int) -> int:
    """Independent reference: Opacus RDP maths on ``[(z, q, t)]`` for t = 1, 2, ..."""
    orders = RDPAccountant.DEFAULT_ALPHAS
    one = np.asarray(opacus_rdp.compute_rdp(q=q, noise_multiplier=z, steps=1, orders=orders))
    for t in range(1, horizon + 1):
        eps, _ = opacus_rdp.get_privacy_spent(orders=orders, rdp=one * t, delta=DELTA)
        if eps > target:
            return t
    raise AssertionError("target never exceeded within the horizon")


@pytest.mark.parametrize(("z", "q", "target"), [(1.0, 0.1, 4.0), (0.8, 0.05, 2.5)])
def test_budget_fires_in_exactly_the_right_round(z, q, target):
    expected = _first_round_over(z, q, target, horizon=500)
    acc = PrivacyAccountant("rdp")
    fired = None
    for rnd in range(1, 501):
        try:
            check_budget(acc, z, q, DELTA, target, rnd)
        except PrivacyBudgetExceeded as err:
            fired = err
            break
        acc.step(z, q)
    assert fired is not None
    assert fired.round_num == expected
    assert acc.num_steps == expected - 1  # the refused round was not accounted
    assert acc.get_epsilon(DELTA) <= target < fired.epsilon
    msg = str(fired)
    assert f"after round {expected}" in msg and f"> target {target:g}" in msg
    assert "raise privacy.target_epsilon or lower rounds" in msg
    assert "raise privacy.noise_multiplier" in msg


def test_budget_disabled_and_zero_noise():
    acc = PrivacyAccountant()
    check_budget(acc, 0.0, 0.1, DELTA, None, 1)  # no target: never raises
    with pytest.raises(PrivacyBudgetExceeded) as info:
        check_budget(acc, 0.0, 0.1, DELTA, 100.0, 1)
    assert math.isinf(info.value.epsilon)
    assert str(info.value).startswith("epsilon inf > target 100")
