"""Run a block of torch work on a fixed number of intra-op threads, restoring the caller's setting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """``with torch_threads(1): ...`` runs the block on ``n`` torch threads and restores the old count.

    Parameters
    ----------
    n : int
        Intra-op threads inside the block (>= 1).
    """
    if n < 1:
        raise ValueError(f"torch_threads needs n >= 1, got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
