"""Activation-memory accounting with saved-tensor hooks: the bytes autograd keeps for the backward
pass during a forward, each storage counted once (views of one tensor share it)."""

import contextlib
from collections.abc import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def activation_bytes(fn: Callable[[], object], math_attention: bool = False) -> int:
    """Bytes of distinct tensor storages saved for backward while running ``fn()``.

    ``math_attention=True`` forces the math backend of ``scaled_dot_product_attention`` (which saves
    the attention matrix, as a plain implementation would); by default the fused kernel that would
    run is measured.

    Parameters (leaves that require grad) are excluded: they exist whether or not a forward runs. Tensors on the meta device
    are counted by their nominal size, so models built without real weights can be measured.
    """
    storages: dict[tuple, int] = {}

    def pack(tensor: torch.Tensor):
        if not (tensor.is_leaf and tensor.requires_grad):  # parameters are not activations
            storage = tensor.untyped_storage()
            key = storage._cdata  # the storage itself, shared by all its views, also on meta
            storages[key] = max(storages.get(key, 0), storage.nbytes())
        return tensor

    backend = sdpa_kernel([SDPBackend.MATH]) if math_attention else contextlib.nullcontext()
    with backend, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(storages.values())
