"""Optimizers and optimizer-side methods: TAM/AdaTAM/AdaTAMW, Normalize-and-Project, soft parameter resets."""

from tenfold._lazy import lazy_dir, lazy_exports

_EXPORTS = {
    "TAM": "tam", "AdaTAM": "tam", "AdaTAMW": "tam",
    "NaP": "nap",
    "SoftReset": "soft_reset",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
__dir__ = lazy_dir(__name__, _EXPORTS)
