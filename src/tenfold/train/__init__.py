"""Training loops shared by experiments: the language-model loop (single process or DDP via torchrun)."""

from tenfold._lazy import lazy_exports

_EXPORTS = {
    "LMTrainConfig": "lm", "train_lm": "lm", "evaluate_lm": "lm", "count_loss_spikes": "lm", "lr_at": "lm",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
