import json

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from tenfold.envs.experts import Noisy, acrobot_expert, cartpole_expert, mountain_car_expert
from tenfold.envs.grid_nav import GridNavEnv, grid_expert_action
from tenfold.models.lram import ActionTokenizer
from tenfold.tasks.offline_rl import OfflineDataset, build_dataset, default_suite, make_env, rollout


def test_gridnav_passes_the_env_checker_and_the_expert_is_optimal():
    env = GridNavEnv(goal=(6, 3), max_steps=20)
    check_env(env, skip_render_check=True)
    result = rollout(env, lambda obs: grid_expert_action(obs, 9), seed=0, max_steps=20)
    assert result["return"] == env.optimal_return() == 20 - 9 + 1
    with pytest.raises(ValueError, match="goal"):
        GridNavEnv(goal=(9, 0))


@pytest.mark.parametrize("env_id, expert, expert_min, random_max", [
    ("CartPole-v1", cartpole_expert, 475, 100),
    ("MountainCar-v0", mountain_car_expert, -150, -190),
    ("Acrobot-v1", acrobot_expert, -120, -180),
])
def test_classic_heuristics_clearly_beat_random(env_id, expert, expert_min, random_max):
    import gymnasium as gym

    env = gym.make(env_id, max_episode_steps=500 if env_id == "CartPole-v1" else 200)
    expert_returns = [rollout(env, expert, s, 500)["return"] for s in range(3)]
    env.action_space.seed(0)
    random_returns = [rollout(env, lambda o: env.action_space.sample(), s, 500)["return"] for s in range(3)]
    assert np.mean(expert_returns) >= expert_min and np.mean(random_returns) <= random_max


def test_noisy_expert_is_seeded_and_clipped():
    noisy = Noisy(lambda obs: np.array([0.99, -0.99]), discrete=False, sigma=0.5, seed=3)
    first = [noisy(None) for _ in range(20)]
    again = Noisy(lambda obs: np.array([0.99, -0.99]), discrete=False, sigma=0.5, seed=3)
    assert all(np.array_equal(a, again(None)) for a in first)
    assert all(np.all(np.abs(a) <= 1) for a in first)
    greedy = Noisy(lambda obs: 1, discrete=True, n_actions=5, epsilon=0.0)
    assert {greedy(None) for _ in range(10)} == {1}


def small_suite():
    return default_suite(metaworld_tasks=(), classic=("CartPole-v1",), grid_goals=((8, 8), (2, 5)),
                         classic_steps=30, grid_steps=20)


def test_dataset_is_built_once_deterministically_and_reloads(tmp_path):
    root_a = build_dataset(small_suite(), episodes=3, reference_episodes=2, seed=1, cache_dir=tmp_path / "a")
    root_b = build_dataset(small_suite(), episodes=3, reference_episodes=2, seed=1, cache_dir=tmp_path / "b")
    manifest = json.loads((root_a / "manifest.json").read_text())
    assert manifest == json.loads((root_b / "manifest.json").read_text())
    assert set(manifest["domains"]) == {"classic", "grid"}
    grid = manifest["domains"]["grid"]["tasks"]["goal-8-8"]
    assert grid["expert_return"] == GridNavEnv(goal=(8, 8), max_steps=20).optimal_return()
    assert grid["target_return"] <= grid["expert_return"]
    mtime = (root_a / "manifest.json").stat().st_mtime_ns
    assert build_dataset(small_suite(), episodes=3, reference_episodes=2, seed=1, cache_dir=tmp_path / "a") == root_a
    assert (root_a / "manifest.json").stat().st_mtime_ns == mtime  # reused, not rebuilt
    data = OfflineDataset(root_a)
    assert len(data.episodes[("grid", "goal-8-8")]) == 3


def test_a_folder_without_the_format_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest"):
        OfflineDataset(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other/9", "domains": {}}))
    with pytest.raises(ValueError, match="format"):
        OfflineDataset(tmp_path)


def test_micro_batches_are_single_domain_with_returns_to_go_and_masks(tmp_path):
    data = OfflineDataset(build_dataset(small_suite(), episodes=3, reference_episodes=1, seed=0, cache_dir=tmp_path))
    tok = ActionTokenizer()
    batch = data.sample("grid", 6, 25, tok, 4, torch.Generator().manual_seed(0))  # context longer than episodes
    assert batch["states"].shape == (6, 25, 4) and batch["scale"] == 10.0
    valid = batch["action_mask"][..., 0]
    assert valid.sum(1).max() <= 20 and not batch["action_mask"][..., 1:].any()
    assert batch["actions"][valid].max() < 5  # discrete ids untouched
    for row in range(6):  # return-to-go: R^_t - R^_{t+1} = r_t
        n = int(valid[row].sum())
        diffs = batch["returns"][row, : n - 1] - batch["returns"][row, 1:n]
        assert torch.allclose(diffs, batch["rewards"][row, : n - 1])



def test_standardized_states_use_each_tasks_own_statistics(tmp_path):
    data = OfflineDataset(build_dataset(small_suite(), episodes=3, reference_episodes=1, seed=0, cache_dir=tmp_path))
    for task in ("goal-8-8", "goal-2-5"):
        observations = np.concatenate([ep.observations for ep in data.episodes[("grid", task)]])
        standardized = data.standardize("grid", task, observations)
        mean, std = data.state_stats("grid", task)
        assert np.allclose(standardized * std + mean, observations, atol=1e-5)
        varying = observations.std(0) > 0.1
        assert np.allclose(standardized.mean(0), 0, atol=1e-5) and np.allclose(standardized.std(0)[varying], 1, atol=1e-4)
    raw = data.sample("grid", 8, 5, ActionTokenizer(), 4, torch.Generator().manual_seed(0))
    standardized = data.sample("grid", 8, 5, ActionTokenizer(), 4, torch.Generator().manual_seed(0),
                               standardize_states=True)
    assert torch.equal(raw["actions"], standardized["actions"])  # the same windows, only the states differ
    assert not torch.allclose(raw["states"], standardized["states"])
    assert standardized["states"][raw["action_mask"][..., 0]].abs().mean() < raw["states"][raw["action_mask"][..., 0]].abs().mean()

@pytest.mark.slow
def test_metaworld_task_and_expert():
    spec = default_suite(metaworld_tasks=("reach-v3",), classic=(), grid_goals=(), metaworld_steps=100)[0]
    from tenfold.envs.experts import metaworld_expert

    env = make_env(spec)
    result = rollout(env, metaworld_expert("reach-v3"), seed=0, max_steps=100)
    assert result["observations"].shape == (100, 39) and result["actions"].shape == (100, 4)
    assert result["return"] > 500
