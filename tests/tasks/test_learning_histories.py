import numpy as np
import pytest

from tenfold.envs.dark_room import DarkRoomEnv, goal_split, optimal_return
from tenfold.tasks.learning_histories import q_learning_history


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
