"""Models built from ``tenfold.nn``: GPT, TRecViT and ViViT, hypernetworks, decision transformers,
normalized MLP/CNN (NaP), the max-retrieval network."""

from tenfold._lazy import lazy_exports

_EXPORTS = {
    "GPT": "gpt", "GPTConfig": "gpt",
    "InContextTransformer": "hypernet", "HypernetBottleneck": "hypernet", "HypernetOracle": "hypernet", "LinearHypernetMLP": "hypernet", "ContextEncoder": "hypernet", "SetEncoder": "hypernet", "BilinearSetEncoder": "hypernet",
    "TRecViT": "trecvit", "TRecViTConfig": "trecvit", "ViViTJoint": "vivit", "ViViTFactorised": "vivit", "PerFrameViT": "vivit",
    "RADT": "radt", "AlgorithmDistillation": "radt",
    "ExactIndex": "retrieval", "FrozenHopfield": "retrieval", "HopfieldEmbedder": "retrieval", "EpisodicMemory": "retrieval",
    "TrajectoryMemory": "retrieval",
    "NormMLP": "normalized", "NormCNN": "normalized", "MaxRetrievalNet": "max_retrieval",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
