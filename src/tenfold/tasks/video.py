"""Synthetic video classification tasks generated in code (for TRecViT and its ViViT baselines).

Videos are float tensors (n, T, 3, size, size) in [0, 1] with Gaussian pixel noise; labels are int64 (n,).

* ``direction`` (4 classes: +x, -x, +y, -y; or 2: +x, -x): a square of random colour moves 1-2 px per frame on a
  torus, beside two static distractor squares of the same colour. No single frame reveals the label,
  and an unordered bag of frames can recover the axis but not the sign (its ceiling is 0.5, chance 0.25;
  with 2 directions it is at chance).
* ``count`` (5 classes: 0-4): a white square (2x2 by default) flashes in k random frames (at most one per frame, random
  places); the label is k. Order-invariant: it tests accumulation over time, not order.
* ``memory`` (4 classes): frame 0 is filled with one of 4 colours, the other frames are noise only;
  the label is the colour, to be remembered until the last frame.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

MEMORY_COLOURS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0], [1.0, 1.0, 0.1]])  # (4, 3)


def _check(n: int, frames: int, size: int, min_frames: int = 2) -> None:
    if n < 1 or frames < min_frames or size < 8:
        raise ValueError(f"need n >= 1, frames >= {min_frames} and size >= 8, got n={n}, frames={frames}, size={size}")


def _torus_squares(pos: torch.Tensor, side: int, size: int) -> torch.Tensor:
    """Masks (..., size, size) of side x side squares with top-left corner ``pos`` (..., 2) on a torus."""
    grid = torch.arange(size)
    rows = (grid - pos[..., 0:1]) % size < side  # (..., size)
    cols = (grid - pos[..., 1:2]) % size < side  # (..., size)
    return rows.unsqueeze(-1) & cols.unsqueeze(-2)  # (..., size, size)


def _add_noise(video: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
    return (video + noise * torch.randn(video.shape, generator=generator)).clamp_(0.0, 1.0)


def direction(n: int, frames: int = 8, size: int = 16, *, generator: torch.Generator, side: int = 4,
              distractors: int = 2, directions: int = 4, noise: float = 0.1, max_speed: int = 2,
              min_speed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A square moving along +x, -x, +y or -y (label 0-3; ``directions=2``: +x or -x only) at ``min_speed`` to
    ``max_speed`` px/frame (default 1-2), with static distractor squares of the same colour."""
    _check(n, frames, size)
    if directions not in (2, 4):
        raise ValueError(f"directions must be 2 or 4, got {directions}")
    if not 1 <= min_speed <= max_speed < size:
        raise ValueError(f"need 1 <= min_speed <= max_speed < size, got min_speed={min_speed}, max_speed={max_speed}")
    labels = torch.randint(0, directions, (n,), generator=generator)
    speed = torch.randint(min_speed, max_speed + 1, (n,), generator=generator)
    unit = torch.tensor([[0, 1], [0, -1], [1, 0], [-1, 0]])  # (row, col) step per label
    velocity = unit[labels] * speed[:, None]  # (n, 2)
    start = torch.randint(0, size, (n, 2), generator=generator)
    t = torch.arange(frames)
    moving = (start[:, None] + t[None, :, None] * velocity[:, None]) % size  # (n, T, 2)
    mask = _torus_squares(moving, side, size)  # (n, T, size, size)
    static = torch.randint(0, size, (n, distractors, 2), generator=generator)
    mask = mask | _torus_squares(static, side, size).any(1, keepdim=True)  # (n, T, size, size)
    colour = 0.4 + 0.6 * torch.rand(n, 3, generator=generator)  # (n, 3)
    video = mask[:, :, None].float() * colour[:, None, :, None, None]  # (n, T, 3, size, size)
    return _add_noise(video, noise, generator), labels


def count(n: int, frames: int = 8, size: int = 16, *, generator: torch.Generator, max_count: int = 4,
          side: int = 2, noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """A white side x side square flashes in k in {0..max_count} random frames (at most one per frame,
    random places, no wrap-around); label k."""
    _check(n, frames, size)
    if not 1 <= max_count <= frames:
        raise ValueError(f"max_count must be in [1, frames={frames}], got {max_count}")
    labels = torch.randint(0, max_count + 1, (n,), generator=generator)
    rank = torch.rand(n, frames, generator=generator).argsort(1).argsort(1)  # (n, T): a random permutation
    flash = rank < labels[:, None]  # (n, T): k distinct frames
    if not 1 <= side <= size:
        raise ValueError(f"side must be in [1, size={size}], got {side}")
    where = torch.randint(0, size - side + 1, (n, frames, 2), generator=generator)
    dots = _torus_squares(where, side, size) & flash[..., None, None]  # (n, T, size, size)
    video = dots[:, :, None].float().expand(n, frames, 3, size, size)  # (n, T, 3, size, size)
    return _add_noise(video, noise, generator), labels


def memory(n: int, frames: int = 8, size: int = 16, *, generator: torch.Generator,
           noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame 0 shows one of 4 colours over the whole frame, frames 1..T-1 are grey noise; label = colour."""
    _check(n, frames, size)
    labels = torch.randint(0, len(MEMORY_COLOURS), (n,), generator=generator)
    video = torch.full((n, frames, 3, size, size), 0.5)
    video[:, 0] = MEMORY_COLOURS[labels][:, :, None, None]
    return _add_noise(video, noise, generator), labels


TASKS: dict[str, tuple[Callable[..., tuple[torch.Tensor, torch.Tensor]], int]] = {
    "direction": (direction, 4),
    "count": (count, 5),
    "memory": (memory, 4),
}


def make_task(name: str, *, n: int, frames: int, size: int = 16, seed: int | None = None,
              generator: torch.Generator | None = None, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``n`` clips of task ``name`` ("direction", "count", "memory") from ``seed`` or ``generator``."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    if (seed is None) == (generator is None):
        raise ValueError("pass exactly one of seed and generator")
    generator = generator if generator is not None else torch.Generator().manual_seed(seed)
    return TASKS[name][0](n, frames, size, generator=generator, **kwargs)


def num_classes(name: str) -> int:
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name][1]
