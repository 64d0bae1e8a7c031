"""Synthetic video tasks: shapes, ranges, determinism, and that each label means what it says."""

import pytest
import torch

from tenfold.tasks.video import MEMORY_COLOURS, count, direction, make_task, memory, num_classes


@pytest.mark.parametrize("name", ["direction", "count", "memory"])
def test_shapes_ranges_and_determinism(name):
    video, labels = make_task(name, n=16, frames=6, size=16, seed=0)
    assert video.shape == (16, 6, 3, 16, 16) and labels.shape == (16,)
    assert video.min() >= 0 and video.max() <= 1
    assert labels.min() >= 0 and labels.max() < num_classes(name)
    again, labels_again = make_task(name, n=16, frames=6, size=16, seed=0)
    assert torch.equal(video, again) and torch.equal(labels, labels_again)
    other, _ = make_task(name, n=16, frames=6, size=16, seed=1)
    assert not torch.equal(video, other)


def _centre_of_mass(frame: torch.Tensor) -> torch.Tensor:
    """Circular mean position (row, col) of the lit pixels of a (size, size) frame, in pixels."""
    size = frame.shape[-1]
    angles = torch.arange(size) * 2 * torch.pi / size
    weights = (frame.sum(1), frame.sum(0))
    return torch.stack([torch.atan2((w * angles.sin()).sum(), (w * angles.cos()).sum()) for w in weights])


def test_direction_moves_as_labelled():
    g = torch.Generator().manual_seed(0)
    video, labels = direction(32, 4, 16, generator=g, distractors=0, noise=0.0)
    expected = {0: (0, 1), 1: (0, -1), 2: (1, 0), 3: (-1, 0)}  # (row, col) sign per label
    for clip, label in zip(video, labels):
        step = _centre_of_mass(clip[1, 0]) - _centre_of_mass(clip[0, 0])
        step = torch.remainder(step + torch.pi, 2 * torch.pi) - torch.pi  # wrap to (-pi, pi]
        sign = tuple(int(s) for s in torch.sign(torch.where(step.abs() < 1e-4, 0.0, step)))
        assert sign == expected[int(label)]
    two, labels2 = direction(64, 4, 16, generator=g, directions=2)
    assert set(labels2.tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="directions"):
        direction(4, 4, 16, generator=g, directions=3)


def test_direction_distractors_are_static_and_same_colour():
    g = torch.Generator().manual_seed(2)
    video, _ = direction(8, 5, 16, generator=g, distractors=2, noise=0.0)
    lit = video[:, :, 0] > 0  # (n, T, size, size)
    always = lit.all(1).sum((1, 2))
    assert (always >= 16).all()  # at least one 4x4 distractor never moves
    colours = video.amax((1, 3, 4))  # (n, 3): one colour per clip
    assert torch.allclose(video.permute(0, 1, 3, 4, 2)[lit], colours.repeat_interleave(lit.sum((1, 2, 3)), 0))


def test_count_flashes_one_per_frame():
    g = torch.Generator().manual_seed(0)
    video, labels = count(64, 8, 16, generator=g, noise=0.0, side=2)
    lit = (video[:, :, 0] > 0).sum((2, 3))  # (n, T) lit pixels per frame
    assert torch.equal((lit > 0).sum(1), labels)
    assert set(lit.unique().tolist()) <= {0, 4}
    with pytest.raises(ValueError, match="max_count"):
        count(4, 3, 16, generator=g, max_count=4)


def test_memory_cue_only_in_frame_zero():
    video, labels = memory(16, 5, 16, generator=torch.Generator().manual_seed(0), noise=0.0)
    assert torch.allclose(video[:, 0, :, 0, 0], MEMORY_COLOURS[labels])
    assert torch.all(video[:, 1:] == 0.5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="task must be"):
        make_task("jump", n=2, frames=4, seed=0)
    with pytest.raises(ValueError, match="exactly one"):
        make_task("count", n=2, frames=4)
    with pytest.raises(ValueError, match="frames"):
        make_task("count", n=2, frames=1, seed=0)


def test_direction_speed_range():
    g = torch.Generator().manual_seed(3)
    video, labels = direction(16, 3, 16, generator=g, distractors=0, noise=0.0, min_speed=3, max_speed=3)
    shift = {0: (0, 3), 1: (0, -3), 2: (3, 0), 3: (-3, 0)}  # (row, col) pixels per frame
    for clip, label in zip(video, labels):
        assert torch.equal(clip[1], torch.roll(clip[0], shift[int(label)], dims=(1, 2)))
    with pytest.raises(ValueError, match="min_speed"):
        direction(4, 4, 16, generator=g, min_speed=3, max_speed=2)
