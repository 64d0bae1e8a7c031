import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import tenfold.envs  # noqa: F401  (registers the environments)
from tenfold.envs.dark_room import (MOVES, DarkKeyDoorEnv, DarkRoomEnv, DarkRoomVecEnv, goal_split,
                                    optimal_return, optimal_return_keydoor)


def _greedy(pos, target):
    dx, dy = target[0] - pos[0], target[1] - pos[1]
    if dx > 0:
        return 1
    if dx < 0:
        return 3
    if dy > 0:
        return 2
    if dy < 0:
        return 0
    return 4


@pytest.mark.parametrize("size,horizon", [(5, 10), ((7, 4), 20), (9, 30)])
def test_check_env(size, horizon):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(DarkRoomEnv(size=size, horizon=horizon), skip_render_check=True)
        check_env(DarkKeyDoorEnv(size=size, horizon=horizon), skip_render_check=True)


def test_registered_make():
    env = gymnasium.make("tenfold/DarkRoom-v0", size=6, horizon=12)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=3)
    assert obs.dtype == np.int64 and obs.shape == (2,) and env.observation_space.contains(obs)
    assert gymnasium.make("tenfold/DarkKeyDoor-v0", size=6).unwrapped.__class__ is DarkKeyDoorEnv


def test_seeded_goal_and_truncation():
    env = DarkRoomEnv(size=9, horizon=7)
    _, a = env.reset(seed=5)
    _, b = env.reset(seed=5)
    assert a["goal"] == b["goal"]
    goals = {env.reset(seed=s)[1]["goal"] for s in range(20)}
    assert len(goals) > 1
    for t in range(1, 8):
        _, r, term, trunc, _ = env.step(env.action_space.sample())
        assert term is False and trunc == (t == 7) and isinstance(r, float)


@pytest.mark.parametrize("horizon", [5, 20])
def test_optimal_return_attained_by_greedy(horizon):
    env = DarkRoomEnv(size=6, horizon=horizon)
    for goal in [(0, 0), (1, 0), (5, 5), (3, 2)]:
        obs, _ = env.reset(options={"goal": goal})
        total = 0.0
        for _ in range(horizon):
            obs, r, _, _, _ = env.step(_greedy(obs, goal))
            total += r
        assert total == optimal_return(6, horizon, goal)
    assert optimal_return(10, 100, (3, 4)) == 94 and optimal_return(10, 100, (0, 0)) == 100


def test_keydoor_optimal_return():
    env = DarkKeyDoorEnv(size=6, horizon=20)
    for key, door in [((2, 1), (4, 4)), ((0, 3), (0, 3)), ((5, 5), (0, 0))]:
        obs, _ = env.reset(options={"key": key, "door": door})
        total = 0.0
        for _ in range(20):
            target = door if env.has_key else key
            action = _greedy(obs, target)
            obs, r, _, _, _ = env.step(action)
            total += r
        assert total == optimal_return_keydoor(6, 20, key, door)
    assert optimal_return_keydoor(10, 100, (2, 1), (4, 4)) == 1 + (100 - 3 - 5 + 1)


def test_goal_split():
    train, held = goal_split(9, 21, seed=0)
    assert train.shape == (60, 2) and held.shape == (21, 2)
    assert not {tuple(g) for g in train} & {tuple(g) for g in held}
    assert np.array_equal(goal_split(9, 21, seed=0)[1], held)
    assert not np.array_equal(goal_split(9, 21, seed=1)[1], held)
    with pytest.raises(ValueError, match="n_eval"):
        goal_split(3, 9, seed=0)


def test_vec_env_matches_single_envs():
    rng = np.random.default_rng(0)
    goals = np.array([[1, 2], [4, 4], [0, 0]])
    vec = DarkRoomVecEnv(goals=goals, size=5, horizon=15)
    singles = [DarkRoomEnv(size=5, horizon=15, goal=tuple(g)) for g in goals]
    obs, _ = vec.reset(seed=0)
    single_obs = [e.reset()[0] for e in singles]
    assert np.array_equal(obs, np.stack(single_obs))
    for _ in range(15):
        actions = rng.integers(0, 5, size=3)
        obs, rew, term, trunc, _ = vec.step(actions)
        outs = [e.step(int(a)) for e, a in zip(singles, actions)]
        assert np.array_equal(obs, np.stack([o[0] for o in outs]))
        assert np.array_equal(rew, [o[1] for o in outs])
        assert np.array_equal(trunc, [o[3] for o in outs]) and not term.any()
    with pytest.raises(RuntimeError):
        vec.step(np.zeros(3, dtype=int))
    assert MOVES.shape == (5, 2)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="horizon"):
        DarkRoomEnv(horizon=0)
    with pytest.raises(ValueError, match="goal"):
        DarkRoomEnv(size=4, goal=(4, 0))


def test_experiment_oracle_episodes_attain_the_optimal_return():
    """The oracle-memory diagnostic of the ra-dt experiment fills the memory with these episodes."""
    from tenfold.experiments.ra_dt import Config, found_before, optimal_episodes

    cfg = Config(size=6, horizon=14)
    goals = np.array([[0, 0], [5, 5], [2, 3], [4, 0]])
    steps = optimal_episodes(goals, cfg)
    returns = steps["rewards"].sum(-1).tolist()
    assert returns == [optimal_return(6, 14, g) for g in goals]
    assert steps["states"].shape == (4, 14, 2) and steps["rtg"][:, 0].tolist() == returns
    raw = np.array([[0, 3], [2, 0], [0, 0]])
    assert found_before(raw).tolist() == [[False, False], [False, True], [True, True]]
