"""A character-level text corpus that ships with Python: the help topics of ``pydoc_data.topics``
(about 465K characters, 103 distinct in Python 3.11), joined in sorted-key order. No download.

    corpus = CharCorpus.pydoc()                       # first 90% train, last 10% validation
    x, y = corpus.batch("train", 32, 128, generator)  # (32, 128) inputs and next-character targets
    for x, y in corpus.windows("val", 128): ...       # every non-overlapping validation window
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator

import torch


def pydoc_text() -> str:
    """The values of ``pydoc_data.topics.topics`` in sorted-key order, joined with blank lines."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


class CharCorpus:
    """Characters of ``text`` as integer ids (vocabulary: the sorted distinct characters of the whole
    text), split into the first ``1 - val_fraction`` for training and the rest for validation."""

    def __init__(self, text: str, val_fraction: float = 0.1):
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if len(text) < 4:
            raise ValueError(f"text must have at least 4 characters, got {len(text)}")
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}
        data = torch.tensor([self.index[c] for c in text], dtype=torch.long)
        cut = int(len(data) * (1 - val_fraction))
        self.splits = {"train": data[:cut], "val": data[cut:]}

    @classmethod
    def pydoc(cls, val_fraction: float = 0.1) -> CharCorpus:
        """The pydoc-topics corpus (built once per process and shared; treat it as read-only)."""
        return _pydoc_corpus(val_fraction)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def info(self) -> dict:
        return {"source": "pydoc_data.topics", "python": sys.version.split()[0], "vocab": self.vocab_size,
                "train_chars": len(self.splits["train"]), "val_chars": len(self.splits["val"])}

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor([self.index[c] for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def _split(self, split: str) -> torch.Tensor:
        if split not in self.splits:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self.splits[split]

    def batch(self, split: str, batch_size: int, context: int,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` windows at uniformly drawn offsets: inputs and targets shaped (batch, context)."""
        data = self._split(split)
        if context < 1 or context + 1 > len(data):
            raise ValueError(f"context must be in [1, {len(data) - 1}], got {context}")
        starts = torch.randint(0, len(data) - context, (batch_size,), generator=generator)
        offsets = starts[:, None] + torch.arange(context + 1)  # (batch, context + 1)
        window = data[offsets]
        return window[:, :-1], window[:, 1:]

    def windows(self, split: str, context: int, batch_size: int = 64) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every non-overlapping window of ``context`` characters (with its shifted target), in order,
        in batches of up to ``batch_size``."""
        data = self._split(split)
        count = (len(data) - 1) // context
        inputs = data[: count * context].reshape(count, context)  # (windows, context)
        targets = data[1: count * context + 1].reshape(count, context)  # (windows, context)
        for start in range(0, count, batch_size):
            yield inputs[start: start + batch_size], targets[start: start + batch_size]

    def num_windows(self, split: str, context: int) -> int:
        return (len(self._split(split)) - 1) // context


@functools.lru_cache(maxsize=2)
def _pydoc_corpus(val_fraction: float) -> CharCorpus:
    return CharCorpus(pydoc_text(), val_fraction)
