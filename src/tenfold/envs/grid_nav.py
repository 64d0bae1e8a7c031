"""GridNav: a small grid world with a visible goal (gymnasium API), and its shortest-path expert.

The agent starts at a fixed corner of an ``size x size`` grid and must reach the goal; the
observation is (x, y, goal_x, goal_y) scaled to [0, 1]; actions are 0 stay, 1 up, 2 down, 3 left,
4 right; reward 1 on every step spent at the goal (the episode continues until ``max_steps``), so
the optimal return is ``max_steps - shortest path length``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

MOVES = np.array([[0, 0], [0, 1], [0, -1], [-1, 0], [1, 0]])


class GridNavEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, size: int = 9, goal: tuple[int, int] = (8, 8), max_steps: int = 30,
                 start: tuple[int, int] = (0, 0)):
        if size < 2 or max_steps < 1:
            raise ValueError(f"size must be >= 2 and max_steps >= 1, got {size}, {max_steps}")
        if not all(0 <= c < size for c in (*goal, *start)):
            raise ValueError(f"goal {goal} and start {start} must lie on the {size}x{size} grid")
        self.size, self.goal, self.start, self.max_steps = size, np.array(goal), np.array(start), max_steps
        self.observation_space = gym.spaces.Box(0.0, 1.0, (4,), np.float32)
        self.action_space = gym.spaces.Discrete(5)
        self.pos, self.t = self.start.copy(), 0

    def _obs(self) -> np.ndarray:
        return (np.concatenate([self.pos, self.goal]) / (self.size - 1)).astype(np.float32)

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = self.start.copy(), 0
        return self._obs(), {}

    def step(self, action):
        if not self.action_space.contains(int(action)):
            raise ValueError(f"action must be in 0..4, got {action!r}")
        self.pos = np.clip(self.pos + MOVES[int(action)], 0, self.size - 1)
        self.t += 1
        reward = float(np.array_equal(self.pos, self.goal))
        return self._obs(), reward, False, self.t >= self.max_steps, {}

    def optimal_return(self) -> float:
        return float(self.max_steps - np.abs(self.goal - self.start).sum() + 1)


def grid_expert_action(obs: np.ndarray, size: int) -> int:
    """Shortest-path action from a GridNav observation: move along x first, then y; stay at the goal."""
    pos, goal = np.rint(obs[:2] * (size - 1)), np.rint(obs[2:] * (size - 1))
    dx, dy = goal - pos
    if dx > 0:
        return 4
    if dx < 0:
        return 3
    if dy > 0:
        return 1
    if dy < 0:
        return 2
    return 0
