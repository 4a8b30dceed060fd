import numpy as np
import torch

from recommender.ncf import (
    NeuMF,
    NeuMFShape,
    flatten_shared,
    init_shared,
    neumf_logits,
    unflatten_shared,
)


def test_shared_private_split_round_trips():
    shape = NeuMFShape(n_items=50, factors=8)
    shared = init_shared(shape, seed=1)
    vec = flatten_shared(shared)
    assert vec.dtype == torch.float32 and vec.numel() == shape.shared_dim
    back = unflatten_shared(vec, shape)
    for k, v in shared.items():
        assert torch.equal(back[k], v)
    model = NeuMF(shape, n_users=3)
    model.load_shared(vec)
    assert torch.equal(model.shared_vector(), vec)
    # private parameters are not part of the shared vector
    assert shape.private_dim == 24 and model.private.shape == (3, 24)


def test_shape_sizes_follow_neumf():
    shape = NeuMFShape(1682, 32)
    s = shape.shared_shapes()
    assert s["gmf_item"] == (1682, 32) and s["mlp_item"] == (1682, 64)
    assert s["w1"] == (64, 128) and s["w2"] == (32, 64) and s["wo"] == (1, 64)


def test_module_and_functional_forward_agree():
    shape = NeuMFShape(20, 4)
    model = NeuMF(shape, n_users=2)
    items = torch.arange(20)
    a = model(torch.ones(20, dtype=torch.long), items)
    b = neumf_logits(dict(model.shared), model.private[1], items)
    assert torch.allclose(a, b)
    assert np.isfinite(a.detach().numpy()).all()
