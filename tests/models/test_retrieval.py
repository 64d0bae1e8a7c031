import math

import numpy as np
import pytest
import torch

from tenfold.models.retrieval import (EpisodicMemory, ExactIndex, FrozenHopfield, HopfieldEmbedder, TrajectoryMemory,
                                      deduplicate, faiss_available, make_index, minmax, pool_state_tokens,
                                      query_dropout_mask, rescore)
from tenfold.tasks.learning_histories import episode_steps, slice_steps


def _brute(keys, queries, k, exclude=None, cutoff=None):
    kn = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    scores = np.round(qn @ kn.T, 6)
    out = []
    for b in range(len(queries)):
        cand = [(-scores[b, j], j) for j in range(len(keys))
                if (exclude is None or exclude[1][j] != exclude[0][b]) and (cutoff is None or scores[b, j] <= cutoff)]
        out.append([j for _, j in sorted(cand)[:k]])
    return out


def test_exact_index_matches_brute_force_and_excludes():
    gen = torch.Generator().manual_seed(0)
    keys, queries = torch.randn(200, 8, generator=gen), torch.randn(13, 8, generator=gen)
    traj = torch.arange(200) // 10
    index = ExactIndex(dim=8)
    index.add(keys, traj=traj, task=traj % 3)
    qtraj = torch.randint(0, 20, (13,), generator=gen)
    scores, ids = index.search(queries, 7, exclude_traj=qtraj)
    expect = _brute(keys.numpy(), queries.numpy(), 7, exclude=(qtraj.numpy(), traj.numpy()))
    assert ids.tolist() == expect
    assert not (traj[ids] == qtraj[:, None]).any()
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    _, only = index.search(queries, 5, allow_task=torch.zeros(13, dtype=torch.long))
    assert (index.task[only] == 0).all()


def test_ties_are_stable_and_batch_independent():
    base = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    keys = base[torch.tensor([1, 0, 0, 1, 0, 0, 0])]  # many exact ties
    index = ExactIndex(dim=2)
    index.add(keys * torch.arange(1, 8)[:, None].float())  # scaling leaves cosines tied
    q = torch.tensor([[2.0, 0.1]])
    _, ids = index.search(q, 5)
    assert ids[0].tolist() == [1, 2, 4, 5, 6]
    many = q.repeat(37, 1)
    _, ids_many = index.search(many, 5, chunk=8)
    assert (ids_many == ids).all()


def test_fewer_candidates_than_k_and_sim_cutoff():
    index = ExactIndex(dim=2)
    index.add(torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]]), traj=[0, 1, 2])
    scores, ids = index.search(torch.tensor([[1.0, 0.0]]), 5, sim_cutoff=0.98)
    assert ids[0].tolist() == [2, -1, -1, -1, -1] and math.isinf(scores[0, 1])
    scores, ids = index.search(torch.tensor([[1.0, 0.0]]), 5, exclude_traj=[2])
    assert ids[0, :2].tolist() == [0, 1] and ids[0, 2] == -1


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu (optional extra) not installed")
def test_faiss_and_torch_return_the_same_neighbours():
    gen = torch.Generator().manual_seed(1)
    keys = torch.cat([torch.randn(300, 16, generator=gen), torch.randint(0, 3, (100, 16), generator=gen).float() + 0.5])
    queries = torch.cat([torch.randn(25, 16, generator=gen), keys[300:310]])
    traj = torch.arange(400) // 7
    results = []
    for backend in ("torch", "faiss"):
        index = make_index(dim=16, backend=backend)
        index.add(keys, traj=traj)
        results.append(index.search(queries, 20, exclude_traj=traj[torch.arange(35) * 11]))
    assert torch.equal(results[0][1], results[1][1])
    assert torch.allclose(results[0][0], results[1][0])


def test_deduplicate_collapses_same_task_duplicates_only():
    index = ExactIndex(dim=3)
    v = torch.tensor([1.0, 2.0, 3.0])
    keys = torch.stack([v, v, v, v, torch.tensor([0.0, 0.0, 1.0]), v])
    index.add(keys, task=[0, 0, 0, 1, 0, 0], traj=[0, 1, 2, 3, 4, 0])
    old = deduplicate(index, k=10, threshold=0.98)
    # task 0: key 0 (traj 0) deletes the copies in trajectories 1 and 2; key 5 shares trajectory 0 -> kept
    assert old.tolist() == [0, 3, 4, 5]
    assert len(index) == 4 and index.task.tolist() == [0, 1, 0, 0]


def test_minmax_all_equal_gives_zero_and_utility_decides():
    sim = torch.full((2, 4), 0.7)
    valid = torch.ones(2, 4, dtype=torch.bool)
    assert torch.equal(minmax(sim, valid), torch.zeros(2, 4))
    util = torch.tensor([[1.0, 5.0, 3.0, 5.0], [2.0, 2.0, 2.0, 2.0]])
    scores, chosen = rescore(sim, valid, utility=util, top_k=2)
    assert torch.isfinite(scores).all()
    assert chosen[0].tolist() == [1, 3] and chosen[1].tolist() == [0, 1]  # ties -> earlier candidate


def test_rescore_same_task_bonus_and_invalid():
    sim = torch.tensor([[0.9, 0.8, 0.6, 0.1, 0.95]])
    valid = torch.tensor([[True, True, True, True, False]])
    same = torch.tensor([[False, False, True, False, True]])
    scores, chosen = rescore(sim, valid, same_task=same, w_task=1.0)
    assert chosen.tolist() == [[2]]
    assert scores[0, 0] == pytest.approx(1.0) and scores[0, 2] == pytest.approx(1.625) and math.isinf(scores[0, 4])
    _, none = rescore(sim, torch.zeros_like(valid))
    assert none.tolist() == [[-1]]


def test_frozen_hopfield_limits():
    gen = torch.Generator().manual_seed(0)
    codebook = torch.randn(50, 8, generator=gen)
    x = torch.randn(6, 5, generator=gen)
    assert torch.allclose(FrozenHopfield(in_dim=5, codebook=codebook, beta=0.0)(x), codebook.mean(0).expand(6, 8),
                          atol=1e-6)
    hard = FrozenHopfield(in_dim=5, codebook=codebook, beta=1e4)
    z = torch.nn.functional.normalize(x @ hard.proj, dim=-1) @ torch.nn.functional.normalize(codebook, dim=-1).T
    assert torch.allclose(hard(x), codebook[z.argmax(-1)], atol=1e-4)
    assert not any(p.requires_grad for p in hard.parameters())


def test_query_dropout_is_seeded_and_not_rescaled():
    a = query_dropout_mask(100, 5, 0.2, torch.Generator().manual_seed(3))
    b = query_dropout_mask(100, 5, 0.2, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and 0.1 < 1 - a.float().mean() < 0.3
    h = torch.ones(1, 4, 2)
    keep = torch.tensor([[True, False, True, True]])
    pooled = pool_state_tokens(h, torch.ones(1, 4, dtype=torch.bool), 4, keep)
    assert torch.allclose(pooled, torch.full((1, 2), 0.75))  # zeroed token, divided by 4 (no rescaling)


def _episodes(n=3, horizon=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return episode_steps(torch.randint(0, 5, (n, horizon, 2), generator=gen), torch.randint(0, 5, (n, horizon), generator=gen),
                         torch.randint(0, 2, (n, horizon), generator=gen))


def test_windows_cover_past_and_future_with_padding():
    steps = _episodes()
    win = slice_steps(steps, torch.tensor([1, 2]), torch.tensor([2, 10]), past=4, future=3)
    assert win["mask"][0].tolist() == [False, True, True, True, True, True, True]
    assert win["mask"][1].tolist() == [True, True, True, True, True, False, False]
    assert torch.equal(win["actions"][0, 1:], steps["actions"][1, 0:6])
    assert torch.equal(win["actions"][1, :5], steps["actions"][2, 7:12])
    assert (win["actions"][1, 5:] == 0).all()
    assert torch.equal(steps["rtg"][:, 0], steps["rewards"].sum(-1))


def test_episodic_memory_starts_empty_grows_and_isolates_tasks():
    emb = HopfieldEmbedder(size=(5, 5), max_rtg=12, dim=16, num_layers=1, max_steps=6, pool_steps=3, seed=0)
    mem = EpisodicMemory(num_tasks=3, embedder=emb, dim=16, stride=3, context=6, past=4, future=4)
    assert len(mem) == 0 and mem.retrieve(torch.randn(3, 16)) is None
    ep = _episodes()
    mem.add_episodes(ep)
    assert len(mem) == 3 * 4 and all(len(m) == 4 for m in mem.memories)
    mem.add_episodes(_episodes(seed=1))
    assert all(len(m) == 8 for m in mem.memories)
    query = emb(slice_steps(ep, torch.arange(3), torch.tensor([5, 5, 5]), 6))
    out = mem.retrieve(query)
    assert out["actions"].shape == (3, 8)
    for task in range(3):  # each task only sees its own episodes
        own = torch.cat([ep["states"][task], _episodes(seed=1)["states"][task]])
        rows = out["states"][task][out["mask"][task]]
        assert all((own == r).all(-1).any() for r in rows)
    rand = mem.retrieve(query, mode="random", generator=torch.Generator().manual_seed(0))
    assert rand["actions"].shape == (3, 8)


def test_trajectory_memory_windows_sorted_by_return():
    emb = HopfieldEmbedder(size=(5, 5), max_rtg=12, dim=16, num_layers=0, pool_steps=3)
    mem = TrajectoryMemory(embedder=emb, dim=16, stride=6, context=6, past=3, future=3)
    ep = _episodes(n=2)
    mem.add_episodes(ep, task=[0, 0], traj=[0, 1], returns=[5.0, 1.0])
    win = mem.windows(torch.tensor([[0, 2]]))  # id 0 from return 5, id 2 from return 1
    assert win["actions"].shape == (1, 12)
    assert torch.equal(win["actions"][0, :6], mem.values["actions"][2])
    emb_frozen = [p.requires_grad for p in emb.parameters()]
    assert not any(emb_frozen)


def test_hopfield_embedder_tables_equal_direct_hopfield():
    emb = HopfieldEmbedder(size=(5, 4), max_rtg=12, dim=16, num_layers=1, max_steps=6, pool_steps=3, seed=2)
    steps = _episodes(n=2, horizon=6)
    steps["states"][..., 1] %= 4
    hot = emb._one_hot(steps)
    direct = torch.stack([emb.hopfield[n](hot[n]) for n in ("states", "rtg", "actions", "rewards")], 2)
    assert torch.allclose(emb.token_embeddings(steps), direct, atol=1e-6)
    out = emb(steps)
    assert out.shape == (2, 16) and torch.isfinite(out).all()


def test_preselection_fallback_handles_wide_ties():
    keys = torch.tensor([[1.0, 0.0]]).repeat(60, 1)
    keys[::7] = torch.tensor([0.0, 1.0])
    index = ExactIndex(dim=2)
    index.add(keys)
    _, ids = index.search(torch.tensor([[1.0, 0.2]]), 30)
    expect = [i for i in range(60) if i % 7][:30]
    assert ids[0].tolist() == expect


def test_official_anchors_key_before_the_anchor_and_full_length_values():
    emb = HopfieldEmbedder(size=(5, 5), max_rtg=20, dim=16, num_layers=0, pool_steps=5)
    mem = TrajectoryMemory(embedder=emb, dim=16, stride=5, context=10, past=5, future=5)  # H = 20: 100 / 5
    key_ends, value_ends, anchors = mem.anchor_steps(20)
    assert anchors.tolist() == [0, 5, 10, 15]  # official: 0, 25, 50, 75 at H = 100
    assert key_ends.tolist() == [1, 4, 9, 14]  # steps max(0, i-C) .. max(2, i) - 1
    ep = _episodes(n=1, horizon=20)
    mem.add_episodes(ep, task=[0], traj=[0], returns=[1.0])
    assert mem.values["mask"].all()  # every value window has full length inside the episode
    starts = [0, 0, 5, 10]  # [i - 5, i + 5) shifted into [0, 20)
    for j, start in enumerate(starts):
        assert torch.equal(mem.values["actions"][j], ep["actions"][0, start:start + 10])
    keys = emb(slice_steps(ep, torch.zeros(4, dtype=torch.long), key_ends, 10))
    assert torch.allclose(mem.index.keys, torch.nn.functional.normalize(keys, dim=-1), atol=1e-6)
    end = TrajectoryMemory(embedder=emb, dim=16, stride=5, context=10, past=5, future=5, anchors="end")
    assert end.anchor_steps(20)[0].tolist() == [4, 9, 14, 19]
    with pytest.raises(ValueError, match="anchors"):
        TrajectoryMemory(embedder=emb, dim=16, stride=5, context=10, past=5, future=5, anchors="middle")


def test_episodic_memory_inner_product_is_the_official_default():
    emb = HopfieldEmbedder(size=(5, 5), max_rtg=12, dim=16, num_layers=0, pool_steps=3)
    ip = EpisodicMemory(num_tasks=1, embedder=emb, dim=16, stride=3, context=6, past=3, future=3)
    cos = EpisodicMemory(num_tasks=1, embedder=emb, dim=16, stride=3, context=6, past=3, future=3,
                         similarity="cosine")
    assert not ip.memories[0].index.normalize and cos.memories[0].index.normalize
