"""Multi-domain offline RL datasets made here from real environments and scripted or heuristic experts
with noise, cached on disk with a manifest, and loaded by code that accepts any folder in the same
format.

On-disk format ``tenfold-offline-rl/1``: a folder with ``manifest.json`` and one ``.npz`` per task.
The manifest lists domains (``state_dim``, ``act_dim``, ``discrete``, ``n_actions``,
``reward_scale``) and per task its file, number of episodes, and the reference returns used for
normalisation (``expert_return``: the clean expert; ``random_return``: uniform random actions, both
on the evaluation reset seeds) and ``target_return`` (the best return in the data). Each ``.npz`` holds
``observations`` (N, state_dim) float32, ``actions`` (N, act_dim) float32 (discrete: the action id in
column 0), ``rewards`` (N,) float32, ``episode_starts`` and ``episode_lengths`` (E,) int64.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tenfold.utils.checkpoint import atomic_write_json

FORMAT = "tenfold-offline-rl/1"
STATE_STD_FLOOR = 1e-2
EVAL_SEED_BASE = 10_000  # evaluation resets use seeds EVAL_SEED_BASE + i; data collection uses others


@dataclass(frozen=True)
class TaskSpec:
    """One task: which environment, which expert, and its domain's action space."""

    domain: str
    name: str
    env_id: str  # "metaworld:<task>", "gym:<id>" or "gridnav:<gx>,<gy>"
    discrete: bool
    n_actions: int  # discrete only
    act_dim: int
    state_dim: int
    max_steps: int
    reward_scale: float


def make_env(spec: TaskSpec):
    """The gymnasium environment of ``spec``, capped at ``spec.max_steps`` steps."""
    import gymnasium as gym

    kind, _, arg = spec.env_id.partition(":")
    if kind == "metaworld":
        import metaworld  # noqa: F401  (registers Meta-World/MT1)

        return gym.make("Meta-World/MT1", env_name=arg, seed=0, max_episode_steps=spec.max_steps)
    if kind == "gym":
        return gym.make(arg, max_episode_steps=spec.max_steps)
    if kind == "gridnav":
        from tenfold.envs.grid_nav import GridNavEnv

        goal = tuple(int(c) for c in arg.split(","))
        return GridNavEnv(goal=goal, max_steps=spec.max_steps)
    raise ValueError(f"unknown env kind in {spec.env_id!r}")


def make_expert(spec: TaskSpec) -> Callable:
    from tenfold.envs import experts

    kind, _, arg = spec.env_id.partition(":")
    if kind == "metaworld":
        return experts.metaworld_expert(arg)
    if kind == "gridnav":
        return experts.grid_expert(9)
    return {"CartPole-v1": experts.cartpole_expert, "MountainCar-v0": experts.mountain_car_expert,
            "Acrobot-v1": experts.acrobot_expert}[arg]


def default_suite(metaworld_tasks=("reach-v3", "push-v3", "button-press-topdown-v3", "drawer-close-v3"),
                  classic=("CartPole-v1", "MountainCar-v0", "Acrobot-v1"),
                  grid_goals=((8, 8), (8, 2), (2, 8), (5, 5)), metaworld_steps: int = 100,
                  classic_steps: int = 200, grid_steps: int = 30) -> list[TaskSpec]:
    """Meta-World (continuous, 39-d states, 4-d actions), classic control and GridNav (discrete)."""
    classic_actions = {"CartPole-v1": (2, 4), "MountainCar-v0": (3, 2), "Acrobot-v1": (3, 6)}
    suite = [TaskSpec("metaworld", t, f"metaworld:{t}", False, 0, 4, 39, metaworld_steps, 200.0)
             for t in metaworld_tasks]
    suite += [TaskSpec("classic", c, f"gym:{c}", True, classic_actions[c][0], 1, classic_actions[c][1],
                       classic_steps, 100.0) for c in classic]
    suite += [TaskSpec("grid", f"goal-{gx}-{gy}", f"gridnav:{gx},{gy}", True, 5, 1, 4, grid_steps, 10.0)
              for gx, gy in grid_goals]
    return suite


def noise_levels(spec: TaskSpec) -> tuple[float, ...]:
    """Per-episode noise, cycled over episodes so returns vary and the return-to-go carries information."""
    return (0.0, 0.1, 0.3) if spec.discrete else (0.0, 0.1, 0.2, 0.3)


def rollout(env, policy: Callable, seed: int, max_steps: int) -> dict:
    """One episode; returns observations, actions, rewards as arrays and the return."""
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards = [], [], []
    for _ in range(max_steps):
        action = policy(obs)
        observations.append(np.asarray(obs, dtype=np.float32))
        actions.append(np.atleast_1d(np.asarray(action, dtype=np.float32)))
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(float(reward))
        if terminated or truncated:
            break
    return {"observations": np.stack(observations), "actions": np.stack(actions),
            "rewards": np.asarray(rewards, dtype=np.float32), "return": float(np.sum(rewards))}


def _random_policy(env, seed: int) -> Callable:
    env.action_space.seed(seed)
    return lambda obs: env.action_space.sample()


def collect_task(spec: TaskSpec, episodes: int, reference_episodes: int, seed: int) -> tuple[dict, dict]:
    """Noisy-expert episodes of one task, and its reference returns on the evaluation seeds."""
    from tenfold.envs.experts import Noisy

    import warnings

    warnings.filterwarnings("ignore", message=".*Constant.*may be too high.*")  # Meta-World policies' notice
    env, expert = make_env(spec), make_expert(spec)
    levels = noise_levels(spec)
    runs = []
    for episode in range(episodes):
        level = levels[episode % len(levels)]
        noisy = Noisy(expert, discrete=spec.discrete, n_actions=spec.n_actions, sigma=0.0 if spec.discrete else level,
                      epsilon=level if spec.discrete else 0.0, seed=seed * 100_003 + episode)
        runs.append(rollout(env, noisy, seed * 100_003 + episode, spec.max_steps))
    eval_seeds = [EVAL_SEED_BASE + i for i in range(reference_episodes)]
    expert_returns = [rollout(env, expert, s, spec.max_steps)["return"] for s in eval_seeds]
    random_returns = [rollout(env, _random_policy(env, s), s, spec.max_steps)["return"] for s in eval_seeds]
    env.close()
    lengths = np.array([len(r["rewards"]) for r in runs], dtype=np.int64)
    arrays = {
        "observations": np.concatenate([r["observations"] for r in runs]),
        "actions": np.concatenate([r["actions"] for r in runs]),
        "rewards": np.concatenate([r["rewards"] for r in runs]),
        "episode_starts": np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        "episode_lengths": lengths,
    }
    info = {"episodes": episodes, "expert_return": float(np.mean(expert_returns)),
            "random_return": float(np.mean(random_returns)),
            "target_return": float(max(r["return"] for r in runs)),
            "data_return_mean": float(np.mean([r["return"] for r in runs]))}
    return arrays, info


def dataset_key(suite: list[TaskSpec], episodes: int, reference_episodes: int, seed: int) -> str:
    blob = json.dumps([[asdict(s) for s in suite], episodes, reference_episodes, seed, FORMAT], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    return Path(os.environ.get("TENFOLD_CACHE", Path.home() / ".cache" / "tenfold"))


def build_dataset(suite: list[TaskSpec], *, episodes: int, reference_episodes: int = 5, seed: int = 0,
                  cache_dir: Path | None = None, log=lambda message: None) -> Path:
    """Generate the dataset once (under a file lock, so parallel workers build it once) and return its
    folder; a folder whose manifest is complete is reused as it is."""
    root = Path(cache_dir or default_cache_dir()) / f"offline-rl-{dataset_key(suite, episodes, reference_episodes, seed)}"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "manifest.json").exists():
            return root
        manifest = {"format": FORMAT, "seed": seed, "domains": {}}
        for spec in suite:
            log(f"collecting {spec.domain}/{spec.name}")
            arrays, info = collect_task(spec, episodes, reference_episodes, seed)
            file = f"{spec.domain}__{spec.name}.npz"
            np.savez(root / file, **arrays)
            domain = manifest["domains"].setdefault(spec.domain, {
                "state_dim": spec.state_dim, "act_dim": spec.act_dim, "discrete": spec.discrete,
                "reward_scale": spec.reward_scale, "tasks": {}})
            domain["state_dim"] = max(domain["state_dim"], spec.state_dim)
            domain["tasks"][spec.name] = {"file": file, "env_id": spec.env_id, "n_actions": spec.n_actions,
                                          "state_dim": spec.state_dim, "max_steps": spec.max_steps, **info}
        atomic_write_json(root / "manifest.json", manifest)  # written last: its presence marks completion
    return root


@dataclass
class Episode:
    observations: np.ndarray  # (T, state_dim)
    actions: np.ndarray  # (T, act_dim)
    rewards: np.ndarray  # (T,)

    @property
    def returns_to_go(self) -> np.ndarray:
        return np.cumsum(self.rewards[::-1])[::-1].copy()


class OfflineDataset:
    """A loaded dataset: ``domains[name]`` (the manifest entry) and ``episodes[(domain, task)]``."""

    def __init__(self, root: Path):
        root = Path(root)
        manifest_path = root / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(f"{root} has no manifest.json (expected format {FORMAT})")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{manifest_path}: format {self.manifest.get('format')!r}, expected {FORMAT!r}")
        self.root, self.domains = root, self.manifest["domains"]
        self.episodes: dict[tuple[str, str], list[Episode]] = {}
        self._stats: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        for domain, entry in self.domains.items():
            for task, info in entry["tasks"].items():
                with np.load(root / info["file"]) as data:
                    self.episodes[(domain, task)] = [
                        Episode(data["observations"][s:s + n], data["actions"][s:s + n], data["rewards"][s:s + n])
                        for s, n in zip(data["episode_starts"], data["episode_lengths"])]

    def task_info(self, domain: str, task: str) -> dict:
        return self.domains[domain]["tasks"][task]

    def state_stats(self, domain: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the task's observations over its episodes, per state
        dimension (the std floored at ``STATE_STD_FLOOR`` so constant dimensions stay finite)."""
        key = (domain, task)
        if key not in self._stats:
            observations = np.concatenate([ep.observations for ep in self.episodes[key]])  # (steps, state_dim)
            self._stats[key] = (observations.mean(0), np.maximum(observations.std(0), STATE_STD_FLOOR))
        return self._stats[key]

    def standardize(self, domain: str, task: str, observations: np.ndarray) -> np.ndarray:
        """(..., state_dim) observations of ``task`` -> standardised with the task's data statistics."""
        mean, std = self.state_stats(domain, task)
        return ((observations - mean) / std).astype(np.float32)

    def sample(self, domain: str, batch_size: int, context: int, tokenizer, max_act_dim: int,
               generator: torch.Generator, standardize_states: bool = False) -> dict:
        """A single-domain micro-batch of ``context``-timestep windows; episodes are drawn with
        probability proportional to their length, windows uniformly inside them (padded at the end
        when an episode is shorter than the context, with the padding masked out).
        ``standardize_states``: states standardised with their task's statistics (``state_stats``)."""
        entry = self.domains[domain]
        keyed = [(task, ep) for (d, task), eps in self.episodes.items() if d == domain for ep in eps]
        pool = [ep for _, ep in keyed]
        lengths = torch.tensor([len(ep.rewards) for ep in pool], dtype=torch.float64)
        picks = torch.multinomial(lengths, batch_size, replacement=True, generator=generator).tolist()
        state_dim = max(ep.observations.shape[1] for ep in pool)
        states = np.zeros((batch_size, context, state_dim), np.float32)
        returns = np.zeros((batch_size, context), np.float32)
        rewards = np.zeros((batch_size, context), np.float32)
        actions = np.zeros((batch_size, context, max_act_dim), np.float32)
        valid = np.zeros((batch_size, context), bool)
        timesteps = np.zeros((batch_size, context), np.int64)
        for row, index in enumerate(picks):
            ep = pool[index]
            length = len(ep.rewards)
            start = int(torch.randint(0, max(length - context, 0) + 1, (1,), generator=generator))
            n = min(context, length - start)
            window = slice(start, start + n)
            observations = ep.observations[window]
            if standardize_states:
                observations = self.standardize(domain, keyed[index][0], observations)
            states[row, :n, : ep.observations.shape[1]] = observations
            returns[row, :n] = ep.returns_to_go[window]
            rewards[row, :n] = ep.rewards[window]
            actions[row, :n, : ep.actions.shape[1]] = ep.actions[window]
            valid[row, :n] = True
            timesteps[row, :n] = np.arange(start, start + n)
        act_dim = entry["act_dim"]
        action_tensor = torch.from_numpy(actions)
        ids = action_tensor.long() if entry["discrete"] else tokenizer.encode_continuous(action_tensor)
        dim_mask = torch.zeros(max_act_dim, dtype=torch.bool)
        dim_mask[:act_dim] = True
        action_mask = torch.from_numpy(valid).unsqueeze(-1) & dim_mask  # (batch, context, max_act_dim)
        return {"states": torch.from_numpy(states), "returns": torch.from_numpy(returns),
                "rewards": torch.from_numpy(rewards), "actions": ids, "action_mask": action_mask,
                "timesteps": torch.from_numpy(timesteps), "scale": float(entry["reward_scale"])}
