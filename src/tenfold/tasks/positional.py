"""The dual positional / semantic task of the p-RoPE reproduction (Barbero et al., 2025, "Round and
Round We Go!"): one task that needs a sharp positional head, one that needs a semantic channel robust
over distance.

Task P (:class:`PositionalTask`): uniform random tokens from a vocabulary of V; the target at position
i is the token at i - offset (offset 1: previous-token head). Loss on positions i >= offset. A single
NoPE head cannot do it (Prop. 5.2); RoPE can (Thm. 5.3).

Task S (:class:`SemanticTask`): tokens fuse a key and a value, id = key * num_values + value. The last
token is a query for one key (id num_keys * num_values + key) that occurs exactly once earlier (the
needle); the fillers use the other keys. The target is the needle token itself (copy its value).
Matching query and needle is semantic (by content), at any distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100  # targets that carry no loss (cross_entropy's default ignore_index)


@dataclass(frozen=True)
class PositionalTask:
    """Copy the token ``offset`` positions back; chance accuracy is 1 / vocab_size."""

    vocab_size: int = 32
    offset: int = 1

    def __post_init__(self) -> None:
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {self.vocab_size}")
        if self.offset < 1:
            raise ValueError(f"offset must be >= 1, got {self.offset}")

    @property
    def chance(self) -> float:
        return 1.0 / self.vocab_size

    def sample(self, batch: int, seq_len: int, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (batch, seq_len) and targets (batch, seq_len), IGNORE_INDEX where i < offset."""
        if seq_len <= self.offset:
            raise ValueError(f"seq_len must be > offset={self.offset}, got {seq_len}")
        tokens = torch.randint(0, self.vocab_size, (batch, seq_len), generator=generator)
        targets = torch.full_like(tokens, IGNORE_INDEX)
        targets[:, self.offset:] = tokens[:, :-self.offset]
        return tokens, targets


@dataclass(frozen=True)
class SemanticTask:
    """Retrieve the one earlier token whose key matches the final query token."""

    num_keys: int = 16
    num_values: int = 8

    def __post_init__(self) -> None:
        if self.num_keys < 2 or self.num_values < 1:
            raise ValueError(f"need num_keys >= 2 and num_values >= 1, got {self.num_keys}, {self.num_values}")

    @property
    def vocab_size(self) -> int:
        return self.num_keys * self.num_values + self.num_keys  # fused tokens, then query tokens

    @property
    def chance(self) -> float:
        """Accuracy of guessing the value right when the key is known."""
        return 1.0 / self.num_values

    def sample(self, batch: int, seq_len: int, generator: torch.Generator | None = None,
               distance: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (batch, seq_len), targets (batch,) = the needle token, and the needle's distance to the
        query (batch,). ``distance`` in [1, seq_len - 1] fixes it; None draws the needle position uniformly."""
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        if distance is not None and not 1 <= distance <= seq_len - 1:
            raise ValueError(f"distance must be in [1, {seq_len - 1}], got {distance}")
        k, v = self.num_keys, self.num_values
        key = torch.randint(0, k, (batch,), generator=generator)
        # fillers: any key but the queried one (shift a draw from the other k - 1 keys past it)
        other = torch.randint(0, k - 1, (batch, seq_len - 1), generator=generator)
        filler_keys = other + (other >= key[:, None]).long()
        values = torch.randint(0, v, (batch, seq_len - 1), generator=generator)
        tokens = filler_keys * v + values  # (batch, seq_len - 1)
        if distance is None:
            needle = torch.randint(0, seq_len - 1, (batch,), generator=generator)
        else:
            needle = torch.full((batch,), seq_len - 1 - distance)
        rows = torch.arange(batch)
        tokens[rows, needle] = key * v + values[rows, needle]
        query = (k * v + key)[:, None]
        return torch.cat([tokens, query], dim=1), tokens[rows, needle], seq_len - 1 - needle
