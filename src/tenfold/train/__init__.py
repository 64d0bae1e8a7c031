"""Training loops shared by experiments: ``fit`` and ``warmup_cosine`` (every experiment), and the
language-model loop (single process or DDP via torchrun)."""

from tenfold._lazy import lazy_exports

_EXPORTS = {
    "LMTrainConfig": "lm", "train_lm": "lm", "evaluate_lm": "lm", "count_loss_spikes": "lm", "lr_at": "lm",
    "fit": "loop", "warmup_cosine": "loop",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
