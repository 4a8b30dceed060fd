"""Clipping, noise calibration and the effective noise multiplier."""

import math

import pytest
import torch

from privacy import (
    PrivacyError,
    add_gaussian_noise,
    central_noise_std,
    clip_updates,
    effective_noise_multiplier,
    noise_std,
)

Z, C = 1.3, 0.7


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_clip_bounds_every_norm_and_keeps_short_rows():
    g = _gen(1)
    scales = torch.tensor([0.0, 0.1, 0.5, 0.99, 1.0, 1.5, 10.0, 1e4])
    x = torch.randn(len(scales), 64, generator=g)
    x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True) * scales[:, None] * C
    clipped, norms = clip_updates(x, C)

    assert clipped.shape == x.shape and clipped.dtype == torch.float32
    torch.testing.assert_close(norms, torch.linalg.vector_norm(x, dim=1))
    out_norms = torch.linalg.vector_norm(clipped, dim=1)
    assert bool((out_norms <= C * (1 + 1e-6)).all())
    short = norms <= C
    assert torch.equal(clipped[short], x[short])  # bit-for-bit unchanged
    long = ~short
    torch.testing.assert_close(out_norms[long], torch.full_like(out_norms[long], C))
    cos = torch.nn.functional.cosine_similarity(clipped[long], x[long], dim=1)
    torch.testing.assert_close(cos, torch.ones_like(cos))


def test_clip_rejects_bad_input():
    with pytest.raises(PrivacyError, match="clip_norm"):
        clip_updates(torch.ones(2, 3), 0.0)
    with pytest.raises(PrivacyError, match="2-D"):
        clip_updates(torch.ones(3), 1.0)
    bad = torch.ones(3, 4)
    bad[1, 2] = float("nan")
    with pytest.raises(PrivacyError, match=r"rows \[1\]"):
        clip_updates(bad, 1.0)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("off", 0.0),
        ("central", 0.0),
        ("local", Z * C),
        ("distributed", Z * C / math.sqrt(25)),
    ],
)
def test_noise_std_per_user(mode, expected):
    assert noise_std(mode, Z, C, 25) == pytest.approx(expected)


def test_noise_std_rejects_bad_mode_and_m_min():
    with pytest.raises(PrivacyError, match="privacy.mode"):
        noise_std("centrl", Z, C, 10)
    with pytest.raises(PrivacyError, match="min_survivors"):
        noise_std("distributed", Z, C, 0)


def test_central_aggregate_noise_std_matches_zc():
    trials, dim = 4000, 32
    total = add_gaussian_noise(torch.zeros(trials, dim), central_noise_std(Z, C), _gen(2))
    assert total.std().item() == pytest.approx(Z * C, rel=0.05)


def test_distributed_sum_of_m_min_users_has_std_zc():
    trials, m_min, dim = 2000, 20, 16
    per_user = noise_std("distributed", Z, C, m_min)
    noise = add_gaussian_noise(torch.zeros(trials * m_min, dim), per_user, _gen(3))
    total = noise.view(trials, m_min, dim).sum(dim=1)
    assert total.std().item() == pytest.approx(Z * C, rel=0.05)


def test_distributed_below_m_min_matches_effective_multiplier():
    trials, m_min, survivors, dim = 2000, 20, 5, 16
    per_user = noise_std("distributed", Z, C, m_min)
    noise = add_gaussian_noise(torch.zeros(trials * survivors, dim), per_user, _gen(4))
    total = noise.view(trials, survivors, dim).sum(dim=1)
    z_eff = effective_noise_multiplier("distributed", Z, survivors, m_min)
    assert z_eff == pytest.approx(Z * math.sqrt(survivors / m_min))
    assert total.std().item() == pytest.approx(z_eff * C, rel=0.05)


def test_effective_multiplier_cases():
    assert effective_noise_multiplier("distributed", Z, 30, 20) == Z  # extra noise not credited
    assert effective_noise_multiplier("distributed", Z, 20, 20) == Z
    assert effective_noise_multiplier("distributed", Z, 0, 20) == 0.0
    assert effective_noise_multiplier("central", Z, 1, 20) == Z
    assert effective_noise_multiplier("local", Z, 1, 20) == Z
    assert effective_noise_multiplier("off", Z, 1, 20) == 0.0


def test_add_gaussian_noise_is_reproducible_and_zero_std_copies():
    x = torch.arange(6.0).view(2, 3)
    a = add_gaussian_noise(x, 0.5, _gen(7))
    b = add_gaussian_noise(x, 0.5, _gen(7))
    assert torch.equal(a, b) and not torch.equal(a, x)
    same = add_gaussian_noise(x, 0.0, _gen(7))
    assert torch.equal(same, x) and same is not x
    with pytest.raises(PrivacyError):
        add_gaussian_noise(torch.zeros(2, dtype=torch.int64), 1.0, _gen(0))
