"""The max-retrieval network of Veličković et al. (2024), "softmax is not enough (for sharp
out-of-distribution)", arXiv 2410.01104, §3: one attention head with a learned query over a set of
items (the task: :mod:`tenfold.tasks.max_retrieval`; see docs/methods/adaptive-temperature.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MaxRetrievalNet"]


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class MaxRetrievalNet(nn.Module):
    """The paper's max-retrieval architecture: items pass an MLP phi, one attention head with a learned
    query reads them, and an MLP psi predicts the class of the max item from the attended value.

        h_i = phi(item_i);  s_i = q . W_K h_i / sqrt(d_k);  alpha = softmax(s);  y = psi(sum_i alpha_i W_V h_i)

    ``encode`` returns the scores and values once, so that several softmax variants can be compared
    on the same sets (``readout``).
    """

    def __init__(self, *, n_classes: int = 10, d_hidden: int = 64, d_k: int = 64, depth: int = 2):
        super().__init__()
        if n_classes < 2 or d_hidden < 1 or d_k < 1 or depth < 1:
            raise ValueError(f"need n_classes >= 2, d_hidden >= 1, d_k >= 1, depth >= 1; got n_classes={n_classes}, "
                             f"d_hidden={d_hidden}, d_k={d_k}, depth={depth}")
        self.n_classes, self.d_k = n_classes, d_k
        self.phi = nn.Sequential(_mlp([1 + n_classes] + [d_hidden] * depth), nn.GELU())
        self.key, self.value = nn.Linear(d_hidden, d_k), nn.Linear(d_hidden, d_hidden)
        self.query = nn.Parameter(torch.randn(d_k) / math.sqrt(d_k))
        self.psi = _mlp([d_hidden, d_hidden, n_classes])

    def encode(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (batch, n, 1 + n_classes) -> scores (batch, n) and values (batch, n, d_hidden)."""
        if feats.dim() != 3 or feats.shape[-1] != 1 + self.n_classes:
            raise ValueError(f"expected feats shaped (batch, n, {1 + self.n_classes}), got {tuple(feats.shape)}")
        h = self.phi(feats)
        return self.key(h) @ self.query / math.sqrt(self.d_k), self.value(h)

    def readout(self, weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """weights (batch, n), values (batch, n, d_hidden) -> class logits (batch, n_classes)."""
        return self.psi(torch.einsum("bn,bnd->bd", weights, values))

    def forward(self, feats: torch.Tensor, softmax_fn=None) -> torch.Tensor:
        """Class logits; ``softmax_fn(scores) -> weights`` over the items (default: softmax)."""
        scores, values = self.encode(feats)
        weights = torch.softmax(scores, -1) if softmax_fn is None else softmax_fn(scores)
        return self.readout(weights, values)
