"""Mixed precision for the experiments that train a transformer (``--set amp=bf16``).

``autocast(amp, device)`` is the context each training and evaluation forward runs in:

- ``"off"`` (every experiment's default): no autocast at all, so a run is bit-identical to one made
  before the option existed;
- ``"bf16"``: ``torch.autocast(device.type, dtype=torch.bfloat16)``. Matrix products and attention run in
  bfloat16; losses, norms, softmax and reductions stay in float32, as autocast's op lists decide. The
  parameters, the optimizer state and the backward pass (run outside the context, as PyTorch advises) stay
  in float32; bfloat16 has float32's exponent range, so no loss scaling is needed. CPU autocast supports
  bfloat16 too, so a bf16 run also works (slowly) without a GPU.

An experiment's config declares ``amp: Amp = "off"``; ``--set amp=...`` then refuses any other value with
a one-line error (the field's type lists the choices).
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

from tenfold.utils.checks import check_choice

Amp = Literal["off", "bf16"]
AMP_MODES: tuple[str, ...] = ("off", "bf16")


def autocast(amp: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context for a forward pass under the mixed-precision setting ``amp`` on ``device``."""
    check_choice("amp", amp, AMP_MODES)
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
