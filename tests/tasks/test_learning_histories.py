import numpy as np
import pytest
import torch

from tenfold.envs.dark_room import DarkRoomEnv, goal_split, optimal_return
from tenfold.tasks.learning_histories import episode_steps, q_learning_history, right_padded


def test_returns_rise_from_random_to_near_optimal():
    train, _ = goal_split(7, 9, seed=0)
    hist = q_learning_history(train[:12], size=7, horizon=20, episodes=120, lr=1.0, seed=1)
    opt = np.array([optimal_return(7, 20, g) for g in hist.goals], dtype=float)
    norm = hist.returns / opt[:, None]
    assert norm[:, :10].mean() < 0.2
    assert norm[:, -10:].mean() > 0.7
    assert norm[:, -10:].mean() > norm[:, :10].mean() + 0.5


def test_history_replays_in_the_env():
    goals = np.array([[3, 2], [0, 4]])
    hist = q_learning_history(goals, size=5, horizon=8, episodes=6, seed=0)
    assert hist.states.shape == (2, 6, 8, 2) and hist.actions.shape == (2, 6, 8)
    for task in range(2):
        env = DarkRoomEnv(size=5, horizon=8, goal=tuple(goals[task]))
        for ep in range(6):
            obs, _ = env.reset()
            for t in range(8):
                assert np.array_equal(obs, hist.states[task, ep, t])
                obs, r, _, _, _ = env.step(int(hist.actions[task, ep, t]))
                assert r == hist.rewards[task, ep, t]
    assert np.allclose(hist.returns, hist.rewards.sum(-1))
    assert np.array_equal(hist.trajectory_ids(), np.arange(12).reshape(2, 6))
    sub = hist.subsample(4)
    assert sub.num_episodes == 2 and np.array_equal(sub.actions[:, -1], hist.actions[:, -1])


def test_seeded_and_validated():
    goals = np.array([[1, 1]])
    a = q_learning_history(goals, size=4, horizon=5, episodes=3, seed=2)
    b = q_learning_history(goals, size=4, horizon=5, episodes=3, seed=2)
    assert np.array_equal(a.actions, b.actions)
    with pytest.raises(ValueError, match="lr"):
        q_learning_history(goals, size=4, horizon=5, lr=0.0)
    with pytest.raises(ValueError, match="episodes"):
        q_learning_history(goals, size=4, horizon=5, episodes=0)


def test_small_learning_rate_history_improves_gradually():
    """The experiment's histories (lr 0.1, no optimistic init, epsilon 1 -> 0.05): returns rise from
    about random to near optimal without a jump, as a PPO learner's do (lr 1.0 jumps once the goal is found)."""
    train, _ = goal_split(7, 12, seed=20)
    hist = q_learning_history(train, size=7, horizon=20, episodes=250, lr=0.1, optimistic_init=0.0,
                              eps=(1.0, 0.05), seed=20)
    opt = np.array([optimal_return(7, 20, g) for g in hist.goals], dtype=float)
    deciles = (hist.returns / opt[:, None]).reshape(len(train), 10, -1).mean((0, 2))
    assert deciles[0] < 0.1 and deciles[-1] > 0.7
    steps = np.diff(deciles)
    assert (steps > -0.02).all()  # never falls back
    assert steps.max() < 0.2 and (steps > 0.03).sum() >= 6  # many small steps, no single jump


def test_right_padded_puts_valid_steps_first():
    gen = torch.Generator().manual_seed(0)
    steps = episode_steps(torch.randint(0, 5, (2, 8, 2), generator=gen), torch.randint(0, 5, (2, 8), generator=gen),
                          torch.randint(0, 2, (2, 8), generator=gen))
    ctx = right_padded(steps, torch.tensor([0, 1]), torch.tensor([2, 7]), 4)
    assert ctx["mask"].tolist() == [[True, True, True, False], [True, True, True, True]]
    assert torch.equal(ctx["actions"][0, :3], steps["actions"][0, :3]) and ctx["actions"][0, 3] == 0
    assert torch.equal(ctx["actions"][1], steps["actions"][1, 4:8])
