"""Training loops shared by experiments: ``fit`` and ``warmup_cosine`` (every experiment),
``autocast`` (mixed precision, ``--set amp=bf16``, for the experiments that train a transformer), and
the convergence checks of comparison claims (``loss_convergence``, ``compare_convergence``). The
character-LM loop of the structured-ffn experiment is ``tenfold.experiments.structured_ffn_lm``."""

from tenfold._lazy import lazy_exports

_EXPORTS = {"fit": "loop", "warmup_cosine": "loop", "autocast": "amp", "loss_convergence": "loop",
            "compare_convergence": "loop"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
