"""Scripted and heuristic experts for offline datasets, with a noise wrapper.

- Meta-World: the package's scripted policies (``metaworld.policies.ENV_POLICY_MAP``).
- CartPole-v1: a linear sign controller on (x, x', theta, theta').
- MountainCar-v0: push in the direction of the velocity.
- Acrobot-v1: torque with the sign of the second joint's velocity.
- GridNav: the shortest path.
Each expert is a callable ``obs -> action``; :class:`Noisy` adds Gaussian noise (continuous, clipped
to [-1, 1]) or epsilon-random actions (discrete) from its own seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tenfold.envs.grid_nav import grid_expert_action


def cartpole_expert(obs) -> int:
    x, x_dot, theta, theta_dot = obs
    return int(10.0 * theta + 2.0 * theta_dot + 0.1 * x + 0.5 * x_dot > 0)


def mountain_car_expert(obs) -> int:
    return 2 if obs[1] >= 0 else 0


def acrobot_expert(obs) -> int:
    return 2 if obs[5] > 0 else 0


def metaworld_expert(task: str) -> Callable:
    from metaworld.policies import ENV_POLICY_MAP

    if task not in ENV_POLICY_MAP:
        raise ValueError(f"no scripted Meta-World policy for {task!r}")
    policy = ENV_POLICY_MAP[task]()
    return lambda obs: np.clip(policy.get_action(obs), -1.0, 1.0)


def grid_expert(size: int) -> Callable:
    return lambda obs: grid_expert_action(obs, size)


class Noisy:
    """``expert`` with Gaussian noise of std ``sigma`` (continuous, clipped to [-1, 1]) or, for
    discrete actions, a uniformly random action with probability ``epsilon``."""

    def __init__(self, expert: Callable, *, discrete: bool, n_actions: int = 0, sigma: float = 0.0,
                 epsilon: float = 0.0, seed: int = 0):
        if sigma < 0 or not 0 <= epsilon <= 1:
            raise ValueError(f"need sigma >= 0 and epsilon in [0, 1], got {sigma}, {epsilon}")
        self.expert, self.discrete, self.n_actions = expert, discrete, n_actions
        self.sigma, self.epsilon = sigma, epsilon
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs):
        action = self.expert(obs)
        if self.discrete:
            return int(self.rng.integers(self.n_actions)) if self.rng.random() < self.epsilon else int(action)
        noisy = np.asarray(action, dtype=np.float64) + self.sigma * self.rng.standard_normal(np.shape(action))
        return np.clip(noisy, -1.0, 1.0).astype(np.float32)
