"""Character-level text corpora that need no download.

- ``CharCorpus.pydoc()``: the help topics of ``pydoc_data.topics`` (about 465K characters, 103
  distinct in Python 3.11), joined in sorted-key order; first 90% train, last 10% validation.
- ``CharCorpus.torch_source()``: the Python source of the installed ``torch`` package (pinned in
  ``pyproject.toml``), about 46M characters of code, docstrings and comments, built deterministically
  (files in sorted path order, every 20th file held out for validation, characters outside printable
  ASCII mapped to one unknown symbol) and checked against a recorded SHA-256.

    corpus = CharCorpus.pydoc()
    x, y = corpus.batch("train", 32, 128, generator)  # (32, 128) inputs and next-character targets
    for x, y in corpus.windows("val", 128): ...       # every non-overlapping validation window
"""

from __future__ import annotations

import functools
import hashlib
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

UNKNOWN = "\x00"  # stands for every character outside printable ASCII and newline in the torch corpus
TORCH_SOURCE_VAL_EVERY = 20  # every 20th file (sorted by path) is validation text
# SHA-256 of the mapped torch-source text (train files, then validation files) for torch 2.13.0
TORCH_SOURCE_SHA256 = "6ac1337f78f205c79719bae75d28a6405436b13ac71d937f9e00afecea527b57"
_NOT_PRINTABLE = re.compile(r"[^\n -~]")


def pydoc_text() -> str:
    """The values of ``pydoc_data.topics.topics`` in sorted-key order, joined with blank lines."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def torch_source_files(root: Path | None = None) -> list[Path]:
    """Every ``.py`` file of the installed torch package (or under ``root``), sorted by path relative to
    the package, without ``version.py`` (it names the build, e.g. CPU or CUDA)."""
    if root is None:
        root = Path(torch.__file__).parent
    files = [f for f in root.rglob("*.py") if f.relative_to(root).as_posix() != "version.py"]
    return sorted(files, key=lambda f: f.relative_to(root).as_posix())


def torch_source_text(root: Path | None = None) -> tuple[bytes, bytes]:
    """(train, validation) ASCII bytes of the torch-source corpus: each file's text (UTF-8, characters
    outside printable ASCII and newline replaced by ``UNKNOWN``) followed by a blank line; every
    ``TORCH_SOURCE_VAL_EVERY``-th file (sorted order) goes to validation."""
    parts: dict[str, list[bytes]] = {"train": [], "val": []}
    for i, path in enumerate(torch_source_files(root)):
        text = _NOT_PRINTABLE.sub(UNKNOWN, path.read_bytes().decode("utf-8", errors="replace"))
        split = "val" if i % TORCH_SOURCE_VAL_EVERY == TORCH_SOURCE_VAL_EVERY - 1 else "train"
        parts[split].append(text.encode("ascii") + b"\n\n")
    return b"".join(parts["train"]), b"".join(parts["val"])


def text_sha256(*texts: bytes) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text)
    return digest.hexdigest()


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
        self.source = {"source": "text"}

    @classmethod
    def from_splits(cls, train: str | bytes, val: str | bytes, source: dict | None = None) -> CharCorpus:
        """A corpus of ASCII ``train`` and ``val`` text given apart (vocabulary: their distinct
        characters); the ids are stored as uint8 (cast to int64 when drawn)."""
        if len(train) < 2 or len(val) < 2:
            raise ValueError(f"train and val must have at least 2 characters, got {len(train)} and {len(val)}")
        if not all(text.isascii() for text in (train, val)):
            raise ValueError("train and val must be ASCII text")
        codes = {name: np.frombuffer(text.encode("ascii") if isinstance(text, str) else text, dtype=np.uint8)
                 for name, text in (("train", train), ("val", val))}
        present = np.zeros(128, dtype=bool)
        for array in codes.values():
            present[np.unique(array)] = True
        corpus = cls.__new__(cls)
        corpus.chars = [chr(c) for c in np.flatnonzero(present)]
        corpus.index = {c: i for i, c in enumerate(corpus.chars)}
        lookup = (np.cumsum(present) - 1).astype(np.uint8)  # (128,): character code -> id
        corpus.splits = {name: torch.from_numpy(lookup[array]) for name, array in codes.items()}
        corpus.source = dict(source or {"source": "text"})
        return corpus

    @classmethod
    def torch_source(cls) -> CharCorpus:
        """The torch-source corpus (built once per process and shared; treat it as read-only). Warns
        when its SHA-256 differs from ``TORCH_SOURCE_SHA256`` (another torch build or version)."""
        return _torch_source_corpus()

    @classmethod
    def pydoc(cls, val_fraction: float = 0.1) -> CharCorpus:
        """The pydoc-topics corpus (built once per process and shared; treat it as read-only)."""
        return _pydoc_corpus(val_fraction)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def info(self) -> dict:
        return {**self.source, "vocab": self.vocab_size,
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
        window = data[offsets].long()  # (batch, context + 1)
        return window[:, :-1], window[:, 1:]

    def windows(self, split: str, context: int, batch_size: int = 64) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every non-overlapping window of ``context`` characters (with its shifted target), in order,
        in batches of up to ``batch_size``."""
        data = self._split(split)
        count = (len(data) - 1) // context
        inputs = data[: count * context].reshape(count, context)  # (windows, context)
        targets = data[1: count * context + 1].reshape(count, context)  # (windows, context)
        for start in range(0, count, batch_size):
            yield inputs[start: start + batch_size].long(), targets[start: start + batch_size].long()

    def num_windows(self, split: str, context: int) -> int:
        return (len(self._split(split)) - 1) // context


@functools.lru_cache(maxsize=2)
def _pydoc_corpus(val_fraction: float) -> CharCorpus:
    corpus = CharCorpus(pydoc_text(), val_fraction)
    corpus.source = {"source": "pydoc_data.topics", "python": sys.version.split()[0]}
    return corpus


@functools.lru_cache(maxsize=1)
def _torch_source_corpus() -> CharCorpus:
    train, val = torch_source_text()
    digest = text_sha256(train, val)
    if digest != TORCH_SOURCE_SHA256:
        warnings.warn(f"torch-source corpus differs from the recorded one (torch {torch.__version__}): "
                      f"sha256 {digest}, recorded {TORCH_SOURCE_SHA256}", stacklevel=2)
    return CharCorpus.from_splits(train, val, {"source": "torch-source", "torch": torch.__version__,
                                               "sha256": digest, "files": len(torch_source_files())})
