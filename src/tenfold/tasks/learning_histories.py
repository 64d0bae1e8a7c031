"""Learning histories for in-context RL (Algorithm Distillation, Laskin et al., 2022; RA-DT, Schmied
et al., arXiv 2410.07071): the full sequence of episodes a learning agent produced on each task,
from its first (random) episodes to its last (near-optimal) ones.

The paper uses a PPO agent per task; here a tabular epsilon-greedy Q-learner on the (x, y) state,
with optimistic initial values and epsilon decaying linearly from ``eps[0]`` to ``eps[1]``, runs on
all tasks at once in numpy (one Q table per task):

    Q(s, a) <- Q(s, a) + lr * (r + gamma * max_a' Q(s', a') - Q(s, a))

Models read histories as dicts of tensors ("steps") with a trailing time axis L:
``states (..., L, 2)`` long (x, y); ``actions``, ``rewards``, ``rtg``, ``timesteps`` ``(..., L)`` long;
``mask (..., L)`` bool (False = padding). :func:`episode_steps` builds them from whole episodes;
:func:`slice_steps` and :func:`right_padded` cut windows and contexts out of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tenfold.envs.dark_room import DarkRoomVecEnv

STEP_FIELDS = ("states", "actions", "rewards", "rtg", "timesteps", "mask")


def episode_steps(states, actions, rewards) -> dict:
    """Steps of whole episodes: states (E, H, 2), actions (E, H), rewards (E, H) -> steps dict with
    rtg_t = sum_{t' >= t} r_t' and timesteps 0..H-1 (all valid)."""
    states, actions = torch.as_tensor(states).long(), torch.as_tensor(actions).long()
    rewards = torch.as_tensor(rewards).round().long()
    rtg = rewards.flip(-1).cumsum(-1).flip(-1)
    timesteps = torch.arange(states.shape[-2]).expand_as(actions)
    return {"states": states, "actions": actions, "rewards": rewards, "rtg": rtg,
            "timesteps": timesteps.contiguous(), "mask": torch.ones_like(actions, dtype=torch.bool)}


def slice_steps(steps: dict, rows: torch.Tensor, ends: torch.Tensor, past: int, future: int = 0) -> dict:
    """Windows of steps ``end-past+1 .. end+future`` of episodes ``rows`` (steps shaped (E, H, ...)),
    padded (mask False, zeros) outside 0..H-1. rows, ends: (N,) -> fields (N, past+future, ...)."""
    horizon = steps["actions"].shape[-1]
    offsets = torch.arange(-past + 1, future + 1)  # (L,)
    times = ends[:, None] + offsets[None, :]  # (N, L)
    valid = (times >= 0) & (times < horizon)
    clamped = times.clamp(0, horizon - 1)
    out = {}
    for name in STEP_FIELDS:
        field = steps[name][rows[:, None], clamped]  # (N, L, ...)
        keep = valid if field.dim() == 2 else valid[..., None]
        out[name] = torch.where(keep, field, torch.zeros_like(field))
    out["mask"] = out["mask"] & valid
    return out


def cat_steps(items: list[dict], dim: int = 0) -> dict:
    return {name: torch.cat([it[name] for it in items], dim) for name in STEP_FIELDS}


def index_steps(steps: dict, index) -> dict:
    return {name: steps[name][index] for name in STEP_FIELDS}


def right_padded(steps: dict, rows: torch.Tensor, ends: torch.Tensor, length: int) -> dict:
    """Contexts of steps max(0, end-length+1)..end of rows, valid steps first, padding after."""
    starts = (ends - length + 1).clamp_min(0)
    window = slice_steps(steps, rows, starts + length - 1, length)  # steps start..start+length-1
    valid = torch.arange(length)[None, :] <= (ends - starts)[:, None]
    out = {n: torch.where(valid if v.dim() == 2 else valid[..., None], v, torch.zeros_like(v))
           for n, v in window.items()}
    out["mask"] = window["mask"] & valid
    return out


@dataclass
class Trajectories:
    """One learning history per task, all episodes of equal length ``horizon``.

    states (tasks, episodes, horizon, 2) int64 -- the observation *before* each action;
    actions (tasks, episodes, horizon) int64; rewards (tasks, episodes, horizon) float32;
    returns (tasks, episodes) float32; goals (tasks, 2) int64. The trajectory id of episode e of
    task i is ``i * episodes + e`` (:meth:`trajectory_ids`)."""

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    returns: np.ndarray
    goals: np.ndarray

    @property
    def num_tasks(self) -> int:
        return self.states.shape[0]

    @property
    def num_episodes(self) -> int:
        return self.states.shape[1]

    @property
    def horizon(self) -> int:
        return self.states.shape[2]

    def trajectory_ids(self) -> np.ndarray:
        """(tasks, episodes) int64 ids, one per episode."""
        return np.arange(self.num_tasks * self.num_episodes).reshape(self.num_tasks, self.num_episodes)

    def subsample(self, every: int) -> "Trajectories":
        """Keep every ``every``-th episode of each history (the last one always kept)."""
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        keep = np.arange(self.num_episodes)[::-1][::every][::-1]
        return Trajectories(self.states[:, keep], self.actions[:, keep], self.rewards[:, keep],
                            self.returns[:, keep], self.goals)


def q_learning_history(goals, *, size=10, horizon: int = 100, episodes: int = 150, eps=(1.0, 0.05),
                       eps_decay_fraction: float = 0.8, lr: float = 0.5, gamma: float = 0.9,
                       optimistic_init: float | None = None, start=(0, 0), seed: int = 0) -> Trajectories:
    """Run an epsilon-greedy tabular Q-learner on each Dark-Room goal for ``episodes`` episodes.

    Epsilon falls linearly from ``eps[0]`` to ``eps[1]`` over the first ``eps_decay_fraction`` of the
    episodes; Q starts at ``optimistic_init`` (default 1 / (1 - gamma)); greedy ties break at random."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if not (0.0 < lr <= 1.0):
        raise ValueError(f"lr must be in (0, 1], got {lr}")
    if not (0.0 <= gamma < 1.0):
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    if not (0.0 <= eps[1] <= eps[0] <= 1.0):
        raise ValueError(f"eps must satisfy 0 <= eps[1] <= eps[0] <= 1, got {eps}")
    if not (0.0 < eps_decay_fraction <= 1.0):
        raise ValueError(f"eps_decay_fraction must be in (0, 1], got {eps_decay_fraction}")
    rng = np.random.default_rng(seed)
    env = DarkRoomVecEnv(goals=goals, size=size, horizon=horizon, start=start)
    n = env.num_envs
    q0 = 1.0 / (1.0 - gamma) if optimistic_init is None else optimistic_init
    q = np.full((n, env.width, env.height, 5), q0, dtype=np.float64)  # (tasks, x, y, actions)
    states = np.zeros((n, episodes, horizon, 2), dtype=np.int64)
    actions = np.zeros((n, episodes, horizon), dtype=np.int64)
    rewards = np.zeros((n, episodes, horizon), dtype=np.float32)
    rows = np.arange(n)
    decay_episodes = max(1, int(round(eps_decay_fraction * episodes)) - 1)
    for episode in range(episodes):
        epsilon = eps[0] + (eps[1] - eps[0]) * min(1.0, episode / decay_episodes)
        obs, _ = env.reset()
        for t in range(horizon):
            values = q[rows, obs[:, 0], obs[:, 1]]  # (tasks, 5)
            noisy = values + 1e-9 * rng.random(values.shape)  # random tie-breaking
            act = np.where(rng.random(n) < epsilon, rng.integers(0, 5, n), noisy.argmax(axis=1))
            nxt, rew, _, _, _ = env.step(act)
            target = rew + gamma * q[rows, nxt[:, 0], nxt[:, 1]].max(axis=1)
            q[rows, obs[:, 0], obs[:, 1], act] += lr * (target - q[rows, obs[:, 0], obs[:, 1], act])
            states[:, episode, t], actions[:, episode, t], rewards[:, episode, t] = obs, act, rew
            obs = nxt
    return Trajectories(states, actions, rewards, rewards.sum(axis=2), np.asarray(goals, dtype=np.int64))
