"""Layers: attention with softmax choices, rotary embeddings, structured linears, RG-LRU, xLSTM."""

from tenfold._lazy import lazy_dir, lazy_exports

_EXPORTS = {
    "Attention": "attention", "KVCache": "attention",
    "RotaryEmbedding": "rope",
    "adaptive_temperature_softmax": "adaptive_temperature", "AdaptiveSoftmax": "adaptive_temperature",
    "two_pass_attention": "adaptive_temperature",
    "BlockDiagonalLinear": "blockdiag",
    "LowRankLinear": "structured", "BlockDenseLinear": "structured", "BlockShuffleLinear": "structured",
    "RGLRU": "rglru",
    "XLSTMStack": "xlstm", "XLSTMStepper": "xlstm", "MLSTMBlock": "xlstm", "SLSTMBlock": "xlstm", "SLSTMCell": "xlstm",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
__dir__ = lazy_dir(__name__, _EXPORTS)
