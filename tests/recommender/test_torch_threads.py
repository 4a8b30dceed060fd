import pytest
import torch

from recommender.torch_threads import torch_threads


def test_sets_and_restores_even_on_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_rejects_zero_threads():
    with pytest.raises(ValueError, match="n >= 1"), torch_threads(0):
        pass
