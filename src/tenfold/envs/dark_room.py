"""Dark-Room and Dark Key-Door grid worlds (the in-context RL benchmarks of Algorithm Distillation,
Laskin et al., 2022, and RA-DT, Schmied et al., arXiv 2410.07071), with the gymnasium API.

The agent observes only its own position ``(x, y)``; the goal (or key and door) is invisible.
Actions ``0..4`` = N (y - 1), E (x + 1), S (y + 1), W (x - 1), no-op; moves are clipped at the walls.
Dark-Room pays +1 for every step that *ends* on the goal and never terminates at it; an episode is
truncated after ``horizon`` steps.  Dark Key-Door pays +1 once when the agent first steps on the key
(automatic pick-up), then +1 for every step ending on the door while holding the key.

Optimal returns (reward on the post-move position, d = Manhattan distance, assumed d <= horizon):
Dark-Room R* = H - d + 1 for d >= 1 (R* = H when the goal is the start); Key-Door
R* = 1 + (H - d_key - d_key_door + 1) for a key away from the start and a door away from the key.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

MOVES = np.array([[0, -1], [1, 0], [0, 1], [-1, 0], [0, 0]], dtype=np.int64)  # N, E, S, W, no-op


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    width, height = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if width < 2 or height < 2:
        raise ValueError(f"size must be >= 2 in each dimension, got {size}")
    return int(width), int(height)


def _check_cell(name: str, cell, width: int, height: int) -> tuple[int, int]:
    x, y = (int(c) for c in cell)
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"{name} must lie in [0, {width}) x [0, {height}), got {tuple(cell)}")
    return x, y


def _distance(a, b) -> int:
    return int(abs(int(a[0]) - int(b[0])) + abs(int(a[1]) - int(b[1])))


def optimal_return(size, horizon: int, goal, start=(0, 0)) -> int:
    """Dark-Room optimal return: H - d + 1 (d >= 1), H when the goal is the start, 0 when d > H."""
    del size
    d = _distance(goal, start)
    if d == 0:
        return int(horizon)
    return max(0, int(horizon) - d + 1)


def optimal_return_keydoor(size, horizon: int, key, door, start=(0, 0)) -> int:
    """Key-Door optimal return: 1 for the key plus H - d_key - d_key_door + 1 steps on the door."""
    del size
    d_key, d_door = _distance(start, key), _distance(key, door)
    t_key = max(d_key, 1)  # the key is picked up by a step onto it (a no-op when it is the start)
    if t_key > horizon:
        return 0
    on_door = int(horizon) - t_key - d_door + 1 if d_door > 0 else int(horizon) - t_key
    return 1 + max(0, on_door)


def goal_split(size, n_eval: int, seed: int, start=(0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """All cells of the room in a seeded permutation, split into (train goals, held-out goals).

    Returns int64 arrays shaped (n_train, 2) and (n_eval, 2) of (x, y); disjoint, covering every cell."""
    width, height = _size(size)
    cells = np.array([(x, y) for y in range(height) for x in range(width)], dtype=np.int64)  # (W*H, 2)
    if not 1 <= n_eval < len(cells):
        raise ValueError(f"n_eval must be in [1, {len(cells) - 1}], got {n_eval}")
    order = np.random.default_rng(seed).permutation(len(cells))
    return cells[order[n_eval:]], cells[order[:n_eval]]


class DarkRoomEnv(gymnasium.Env):
    """Dark-Room: find an invisible goal from (x, y) observations only; +1 per step on the goal.

    Args: ``size`` (int or (width, height)), ``horizon`` (steps per episode), ``goal`` (fixed goal,
    else sampled per reset with ``self.np_random`` unless given in ``reset(options={"goal": ...})``),
    ``start`` (start cell), ``render_mode`` (None or "ansi").
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, *, size: int | tuple[int, int] = 10, horizon: int = 100, goal=None, start=(0, 0),
                 render_mode: str | None = None):
        self.width, self.height = _size(size)
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.horizon, self.render_mode = int(horizon), render_mode
        self.start = _check_cell("start", start, self.width, self.height)
        self.fixed_goal = None if goal is None else _check_cell("goal", goal, self.width, self.height)
        self.observation_space = spaces.MultiDiscrete([self.width, self.height], dtype=np.int64)
        self.action_space = spaces.Discrete(5)
        self.pos = np.array(self.start, dtype=np.int64)
        self.goal = self.fixed_goal or self.start
        self.t = 0

    def _sample_cell(self) -> tuple[int, int]:
        return int(self.np_random.integers(self.width)), int(self.np_random.integers(self.height))

    def _obs(self) -> np.ndarray:
        return self.pos.copy()

    def _info(self) -> dict:
        return {"goal": tuple(self.goal), "t": self.t}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        if "goal" in options:
            self.goal = _check_cell("goal", options["goal"], self.width, self.height)
        else:
            self.goal = self.fixed_goal if self.fixed_goal is not None else self._sample_cell()
        self.pos = np.array(self.start, dtype=np.int64)
        self.t = 0
        return self._obs(), self._info()

    def _move(self, action) -> None:
        if not self.action_space.contains(action):
            raise ValueError(f"action must be in 0..4, got {action!r}")
        self.pos = np.clip(self.pos + MOVES[int(action)], 0, [self.width - 1, self.height - 1])
        self.t += 1

    def _reward(self) -> float:
        return float(tuple(int(v) for v in self.pos) == tuple(self.goal))

    def step(self, action):
        self._move(action)
        reward = self._reward()
        return self._obs(), reward, False, self.t >= self.horizon, self._info()

    def render(self):
        if self.render_mode != "ansi":
            return None
        rows = [["." for _ in range(self.width)] for _ in range(self.height)]
        rows[self.goal[1]][self.goal[0]] = "G"
        rows[int(self.pos[1])][int(self.pos[0])] = "A"
        return "\n".join("".join(r) for r in rows) + "\n"


class DarkKeyDoorEnv(DarkRoomEnv):
    """Dark Key-Door: +1 once on first reaching the invisible key, then +1 per step on the invisible
    door while holding the key. Observations are (x, y) only (no has-key flag; see the method card).

    ``key`` and ``door`` fix the cells, else they are sampled per reset (or taken from
    ``options["key"]``, ``options["door"]``)."""

    def __init__(self, *, size: int | tuple[int, int] = 10, horizon: int = 100, key=None, door=None,
                 start=(0, 0), render_mode: str | None = None):
        super().__init__(size=size, horizon=horizon, goal=None, start=start, render_mode=render_mode)
        self.fixed_key = None if key is None else _check_cell("key", key, self.width, self.height)
        self.fixed_door = None if door is None else _check_cell("door", door, self.width, self.height)
        self.key, self.door, self.has_key = self.start, self.start, False

    def _info(self) -> dict:
        return {"key": tuple(self.key), "door": tuple(self.door), "has_key": self.has_key, "t": self.t}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        gymnasium.Env.reset(self, seed=seed)
        options = options or {}
        self.key = _check_cell("key", options["key"], self.width, self.height) if "key" in options else (
            self.fixed_key if self.fixed_key is not None else self._sample_cell())
        self.door = _check_cell("door", options["door"], self.width, self.height) if "door" in options else (
            self.fixed_door if self.fixed_door is not None else self._sample_cell())
        self.goal = self.door
        self.pos = np.array(self.start, dtype=np.int64)
        self.t, self.has_key = 0, False
        return self._obs(), self._info()

    def _reward(self) -> float:
        here = tuple(int(v) for v in self.pos)
        if not self.has_key:
            if here == tuple(self.key):
                self.has_key = True
                return 1.0
            return 0.0
        return float(here == tuple(self.door))


class DarkRoomVecEnv(gymnasium.vector.VectorEnv):
    """N Dark-Rooms stepped together in numpy, one goal per sub-environment; identical dynamics to N
    :class:`DarkRoomEnv`. Episodes all last ``horizon`` steps: there is no autoreset, call ``reset``
    after ``truncated`` (stepping past the horizon raises)."""

    def __init__(self, *, goals, size: int | tuple[int, int] = 10, horizon: int = 100, start=(0, 0)):
        self.width, self.height = _size(size)
        goals = np.asarray(goals, dtype=np.int64).reshape(-1, 2)  # (N, 2)
        for g in goals:
            _check_cell("goals", g, self.width, self.height)
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.goals, self.horizon = goals, int(horizon)
        self.start = np.array(_check_cell("start", start, self.width, self.height), dtype=np.int64)
        self.num_envs = len(goals)
        self.single_observation_space = spaces.MultiDiscrete([self.width, self.height], dtype=np.int64)
        self.single_action_space = spaces.Discrete(5)
        self.observation_space = spaces.MultiDiscrete(np.tile([self.width, self.height], (self.num_envs, 1)),
                                                      dtype=np.int64)
        self.action_space = spaces.MultiDiscrete(np.full(self.num_envs, 5), dtype=np.int64)
        self.pos = np.tile(self.start, (self.num_envs, 1))
        self.t = 0

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._np_random, _ = gymnasium.utils.seeding.np_random(seed if isinstance(seed, int) else seed[0])
        self.pos = np.tile(self.start, (self.num_envs, 1))  # (N, 2)
        self.t = 0
        return self.pos.copy(), {"t": self.t}

    def step(self, actions):
        if self.t >= self.horizon:
            raise RuntimeError("episode over: call reset() (no autoreset)")
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        if actions.min() < 0 or actions.max() > 4:
            raise ValueError("actions must be in 0..4")
        self.pos = np.clip(self.pos + MOVES[actions], 0, [self.width - 1, self.height - 1])
        self.t += 1
        reward = (self.pos == self.goals).all(axis=1).astype(np.float64)
        done = np.full(self.num_envs, self.t >= self.horizon)
        return self.pos.copy(), reward, np.zeros(self.num_envs, dtype=bool), done, {"t": self.t}
