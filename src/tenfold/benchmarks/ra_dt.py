"""RA-DT benchmark: retrieval latency per evaluation step against memory size, as ratios to the
RA-DT policy forward measured in the same process (see docs/methods/ra-dt.md)."""

from __future__ import annotations

import torch

from tenfold.models.radt import RADT
from tenfold.models.retrieval import ExactIndex, faiss_available
from tenfold.utils.bench import BenchRow, compare

NAME = "ra-dt"
EMBED_DIM = 64  # the experiment's retriever width


def bench(quick: bool) -> list[BenchRow]:
    """Retrieval latency per evaluation step against memory size: exact torch search (top-50 of a batch
    of 21 queries) vs the RA-DT policy forward at batch 21, and faiss IndexFlatIP vs torch where installed."""
    torch.manual_seed(0)
    model = RADT(size=(9, 9), horizon=30, max_rtg=30, context=10, memory_steps=20).eval()
    batch = 21
    ctx = {"states": torch.randint(0, 9, (batch, 10, 2)), "actions": torch.randint(0, 5, (batch, 10)),
           "rewards": torch.zeros(batch, 10, dtype=torch.long), "rtg": torch.randint(0, 30, (batch, 10)),
           "timesteps": torch.arange(10).expand(batch, 10), "mask": torch.ones(batch, 10, dtype=torch.bool)}
    mem = {k: torch.cat([v, v], 1) for k, v in ctx.items()}
    rows = []
    sizes = (1_000, 10_000, 50_000) if quick else (1_000, 10_000, 100_000, 500_000)
    for n in sizes:
        keys, queries = torch.randn(n, EMBED_DIM), torch.randn(batch, EMBED_DIM)
        index = ExactIndex(dim=EMBED_DIM)
        index.add(keys)
        with torch.no_grad():
            rows.append(compare(f"retrieval_step_N{n}", ("policy_forward_b21", lambda: model(ctx, mem)),
                                ("torch_exact_top50", lambda: index.search(queries, 50)), repeats=7, memory_size=n))
        if faiss_available():
            import faiss
            fidx = faiss.IndexFlatIP(EMBED_DIM)
            fidx.add(torch.nn.functional.normalize(keys, dim=-1).numpy())
            qn = torch.nn.functional.normalize(queries, dim=-1).numpy()
            rows.append(compare(f"faiss_vs_torch_N{n}", ("torch_exact_top50", lambda: index.search(queries, 50)),
                                ("faiss_flatip_top50", lambda: fidx.search(qn, 50)), repeats=7, memory_size=n))
    return rows
