"""FLOP counting built on ``torch.utils.flop_counter.FlopCounterMode``.

On CPU, ``scaled_dot_product_attention`` dispatches to fused kernels that the counter does not see
(it reports 0 for them), so attention is counted with the math backend forced: SDPA then decomposes
into matmuls that are counted. One multiply-add counts as 2 FLOPs (the counter's convention).
"""

from collections.abc import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable[[], object], backward: bool = False) -> int:
    """Total FLOPs of calling ``fn()`` (and of ``out.sum().backward()`` when ``backward``)."""
    with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        out = fn()
        if backward:
            _as_tensor(out).sum().backward()
    return int(counter.get_total_flops())


def _as_tensor(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError("backward=True needs fn to return a tensor or a tuple starting with one")
