import dataclasses

import numpy as np
import pytest
import torch

from tenfold.envs.dark_room import goal_split
from tenfold.experiments import ra_dt
from tenfold.models.radt import DecisionTransformer
from tenfold.models.retrieval import HopfieldEmbedder
from tenfold.tasks.learning_histories import q_learning_history

CFG = dataclasses.replace(ra_dt.PRESETS["smoke"], history_episodes=10)


def _setup(cfg=CFG):
    train, _ = goal_split(cfg.size, cfg.n_eval_goals, seed=0)
    hist = q_learning_history(train, size=cfg.size, horizon=cfg.horizon, episodes=cfg.history_episodes, seed=0)
    steps = ra_dt._history_steps(hist)
    emb = HopfieldEmbedder(size=(cfg.size, cfg.size), max_rtg=cfg.horizon, dim=cfg.embed_dim, num_layers=1,
                           max_steps=cfg.context, pool_steps=cfg.stride, beta=cfg.hopfield_beta)
    memory = ra_dt.build_training_memory(steps, hist.num_episodes, emb, cfg)
    return hist, steps, memory


def test_training_retrieval_excludes_own_trajectory_and_keeps_early_windows_in_the_task():
    cfg = dataclasses.replace(CFG, p_empty_memory=0.0, min_seq_len=3, candidates=50)
    hist, steps, memory = _setup(cfg)
    retriever = ra_dt.TrainingRetriever(memory, hist.num_episodes, cfg)
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(steps["actions"].shape[0], (400,), generator=gen)
    ends = torch.randint(cfg.horizon, (400,), generator=gen)
    ids = retriever(steps, rows, ends, gen)[:, 0]
    assert (ids >= 0).all()
    assert not (memory.index.traj[ids] == rows).any()  # never the query's own episode
    task = rows // hist.num_episodes
    early = ends < cfg.min_seq_len
    assert early.any() and (memory.index.task[ids[early]] == task[early]).all()  # random window of the same task
    chance = 1 / hist.num_tasks
    assert (memory.index.task[ids] == task).float().mean() > 10 * chance  # re-scoring: + 1 for the same task
    stats = retriever.stats(steps, rows, ends, ids[:, None])
    assert stats["same_traj_fraction"] == 0.0 and stats["same_task_fraction"] > 10 * chance
    # fresh query dropout per call: the same contexts retrieve differently across batches
    again = retriever(steps, rows, ends, gen)[:, 0]
    assert (again != ids).any()
    empty = ra_dt.TrainingRetriever(memory, hist.num_episodes, dataclasses.replace(cfg, p_empty_memory=0.5))
    assert 0.3 < (empty(steps, rows, ends, gen) < 0).float().mean() < 0.7


def test_batches_per_batch_and_pool_have_the_memory_shape():
    hist, steps, memory = _setup()
    for mode in ("batch", "pool"):
        cfg = dataclasses.replace(CFG, train_retrieval=mode)
        batch = ra_dt._radt_batches(steps, ra_dt.TrainingRetriever(memory, hist.num_episodes, cfg), cfg,
                                    torch.Generator().manual_seed(0))
        ctx, mem = batch(torch.Generator().manual_seed(1))
        assert ctx["actions"].shape == (cfg.batch, cfg.context)
        assert mem["actions"].shape == (cfg.batch, cfg.mem_past + cfg.mem_future)


def test_episode_targets():
    cfg = dataclasses.replace(CFG, horizon=100)
    gen = torch.Generator().manual_seed(0)
    drawn = ra_dt.episode_targets(cfg, 90.0, 4000, gen).float()
    assert abs(drawn.mean() - 90) < 0.3 and abs(drawn.std() - 5) < 0.3  # official N(90, 5) at H = 100
    fixed = ra_dt.episode_targets(dataclasses.replace(cfg, eval_target="fixed"), 89.6, 3, gen)
    assert fixed.tolist() == [90, 90, 90]


def test_evaluation_runs_every_sampling_seed_in_parallel():
    cfg = dataclasses.replace(CFG, eval_samples=3, eval_episodes=2)
    _, goals = goal_split(cfg.size, cfg.n_eval_goals, seed=0)
    torch.manual_seed(0)
    dt = DecisionTransformer(size=(cfg.size, cfg.size), horizon=cfg.horizon, max_rtg=cfg.horizon, context=cfg.context,
                             dim=cfg.dim).eval()
    fixed = dataclasses.replace(cfg, eval_target="fixed")
    roll = ra_dt.evaluate_in_context("dt", dt, goals, fixed, 8.0, torch.Generator().manual_seed(0))
    assert roll.returns.shape == (2, 3 * len(goals)) and roll.repeated.shape == (2, 3 * len(goals))
    # argmax decoding with a fixed target: the three runs are identical and repeat their first episode
    assert np.array_equal(roll.returns[:, :len(goals)], roll.returns[:, len(goals):2 * len(goals)])
    assert roll.repeated[1].all()


def test_config_choices_are_checked():
    with pytest.raises(ValueError, match="decode_radt"):
        ra_dt.check_config(dataclasses.replace(CFG, decode_radt="greedy"))
    with pytest.raises(ValueError, match="train_retrieval"):
        ra_dt.check_config(dataclasses.replace(CFG, train_retrieval="once"))
    full = ra_dt.PRESETS["full"]
    assert (full.size, full.horizon, full.context, full.stride, full.mem_past) == (10, 100, 50, 25, 25)
    assert full.radt_train_steps * full.batch >= 100_000 * 128 / 10  # within 10x of the official sample count


def test_a_seed_reports_every_training_loop_to_the_progress_tracker(tmp_path):
    from tenfold.experiment import RunContext
    from tenfold.progress import SeedTracker

    sent = []
    tracker = SeedTracker(0, sent.append, send_every=0.0)
    ctx = RunContext(seed=0, device=torch.device("cpu"), workdir=tmp_path, tracker=tracker)
    ra_dt.run_seed(ra_dt.PRESETS["smoke"], ctx)
    done = {status for _, _, status in sent if status.endswith(" done")}
    cfg = ra_dt.PRESETS["smoke"]
    assert done == {f"train dt {cfg.train_steps}/{cfg.train_steps} done",
                    f"train ad {cfg.ad_train_steps}/{cfg.ad_train_steps} done",
                    f"train radt {cfg.radt_train_steps}/{cfg.radt_train_steps} done",
                    f"train radt_no_exclusion {cfg.radt_train_steps}/{cfg.radt_train_steps} done"}
