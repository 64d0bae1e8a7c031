"""Runs an experiment: seeds in parallel worker processes at one torch thread each, each seed's
record saved atomically as soon as it finishes, ``--resume`` skipping finished seeds, and a
``result.json`` in the schema of DESIGN.md at the end."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import tenfold
from tenfold import registry
from tenfold.experiment import Evaluation, Experiment, RunContext, fill_claims
from tenfold.utils.checkpoint import atomic_write_json
from tenfold.utils.seeding import seed_everything
from tenfold.utils.threads import single_thread

RESULT_FILE = "result.json"


class RunError(RuntimeError):
    """A run that cannot go on (bad device, a resume that does not match, a broken evaluation)."""


def resolve_device(device: str, supported: tuple[str, ...] = ("cpu", "cuda"), name: str = "") -> torch.device:
    """The torch device for ``--device``: ``auto`` is CUDA when it is present and the experiment runs
    there, else CPU; an explicit device the experiment does not support (``supported``) is refused
    rather than silently ignored."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and "cuda" in supported else "cpu")
    if device not in ("cpu", "cuda"):
        raise RunError(f"unknown device {device!r}; valid devices: cpu, cuda, auto")
    if device not in supported:
        raise RunError(f"experiment {name!r} runs on {', '.join(supported)} only, not {device}; "
                       "use --device cpu (or auto, which falls back to cpu)")
    if device == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but no CUDA device is available; use cpu or auto")
    return torch.device(device)


def output_dir(root: Path, name: str, resume: bool) -> Path:
    """Where a run of ``name`` writes. An existing folder with results is never overwritten: a
    resume continues the newest one, any other run gets a fresh timestamped folder beside it."""
    root = Path(root)
    existing = sorted((p for p in root.glob(f"{name}*") if p.is_dir() and _is_run_of(p, name)),
                      key=lambda p: p.stat().st_mtime)
    if resume and existing:
        return existing[-1]
    plain = root / name
    if not plain.exists() or not any(plain.iterdir()):
        return plain
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    fresh = root / f"{name}-{stamp}"
    suffix = 1
    while fresh.exists():
        fresh, suffix = root / f"{name}-{stamp}-{suffix}", suffix + 1
    return fresh


def _is_run_of(folder: Path, name: str) -> bool:
    return folder.name == name or (folder.name.startswith(f"{name}-") and folder.name[len(name) + 1:][:1].isdigit())


def run_experiment(experiment: Experiment, cfg: Any, preset: str, out_root: Path = Path("runs"),
                   device: str = "cpu", workers: int | None = None, resume: bool = False,
                   log=print) -> dict:
    """Run every seed of ``cfg`` (skipping finished ones when resuming), evaluate, write result.json."""
    torch_device = resolve_device(device, experiment.devices, experiment.name)
    out_dir = output_dir(out_root, experiment.name, resume)
    seed_dir = out_dir / "seeds"
    seed_dir.mkdir(parents=True, exist_ok=True)
    seeds = list(cfg.seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise RunError(f"seeds must be distinct and non-empty, got {seeds}")
    config = config_dict(cfg)
    records, cpu_s = _load_finished(seed_dir, seeds, config) if resume else ({}, {})
    if records:
        log(f"[{experiment.name}] resuming in {out_dir}: seeds {sorted(records)} already done")
    todo = [s for s in seeds if s not in records]
    start = time.perf_counter()
    bar = tqdm(total=len(seeds), initial=len(records), desc=experiment.name, unit="seed", leave=False,
               disable=not sys.stderr.isatty())
    for seed, record, seed_cpu_s in _run_seeds(experiment, cfg, todo, torch_device, seed_dir, workers):
        atomic_write_json(seed_dir / f"seed_{seed}.json",
                          {"seed": seed, "config": config, "cpu_s": seed_cpu_s, "record": record})
        records[seed], cpu_s[seed] = record, seed_cpu_s
        bar.update()
        if bar.disable:
            log(f"[{experiment.name}] seed {seed} done ({len(records)}/{len(seeds)}, "
                f"{time.perf_counter() - start:.1f}s elapsed, {seed_cpu_s:.1f} CPU-s for this seed)")
    bar.close()
    records = {s: records[s] for s in seeds}
    evaluation = experiment.evaluate(cfg, records, out_dir)
    _validate(experiment, evaluation)
    result = {
        "experiment": experiment.name,
        "paper": experiment.paper,
        "preset": preset,
        "seeds": seeds,
        "config": config,
        "claims": [c.to_dict() for c in evaluation.claims],
        "metrics": jsonable(evaluation.metrics),
        "figures": list(evaluation.figures),
        "wall_s": round(time.perf_counter() - start, 2),
        "env": {**environment(torch_device, workers_used(workers, len(todo))),
                "cpu_s_per_seed": {str(seed): round(cpu_s[seed], 2) for seed in seeds if seed in cpu_s}},
    }
    atomic_write_json(out_dir / RESULT_FILE, result)
    result["_dir"] = str(out_dir)
    return result


def config_dict(cfg: Any) -> dict:
    return jsonable(dataclasses.asdict(cfg))


def _load_finished(seed_dir: Path, seeds: list[int], config: dict) -> tuple[dict[int, dict], dict[int, float]]:
    """Records (and CPU seconds) of the seeds already finished with this config."""
    finished, cpu_s = {}, {}
    comparable = {k: v for k, v in config.items() if k != "seeds"}
    for seed in seeds:
        path = seed_dir / f"seed_{seed}.json"
        if not path.exists():
            continue
        saved = json.loads(path.read_text())
        saved_config = {k: v for k, v in saved["config"].items() if k != "seeds"}
        if saved_config != comparable:
            changed = sorted(k for k in comparable if saved_config.get(k) != comparable[k])
            raise RunError(f"cannot resume {path.parent.parent}: its config differs in {changed}; "
                           "run without --resume to start a fresh folder")
        finished[seed] = saved["record"]
        if "cpu_s" in saved:
            cpu_s[seed] = saved["cpu_s"]
    return finished, cpu_s


def workers_used(workers: int | None, jobs: int) -> int:
    wanted = (os.cpu_count() or 1) if workers is None else workers
    if wanted < 1:
        raise RunError(f"--workers must be >= 1, got {wanted}")
    return max(1, min(wanted, jobs))


def _run_seeds(experiment: Experiment, cfg: Any, seeds: list[int], device: torch.device,
               seed_dir: Path, workers: int | None):
    """Yield ``(seed, record, cpu_seconds)`` as each seed finishes."""
    if not seeds:
        return
    count = workers_used(workers, len(seeds))
    show = sys.stderr.isatty() and count == 1
    if count == 1:
        for seed in seeds:
            yield seed, *run_one_seed(experiment.name, cfg, seed, str(device), str(seed_dir), show)
        return
    context = multiprocessing.get_context("spawn")  # fork after torch has run threads can deadlock
    with ProcessPoolExecutor(count, mp_context=context, initializer=single_thread) as pool:
        futures = {pool.submit(run_one_seed, experiment.name, cfg, seed, str(device), str(seed_dir), False): seed
                   for seed in seeds}
        for future in as_completed(futures):
            yield futures[future], *future.result()


def run_one_seed(name: str, cfg: Any, seed: int, device: str, seed_dir: str,
                 show_progress: bool) -> tuple[dict, float]:
    """Run one seed of experiment ``name`` deterministically, at one torch thread; return its record
    and the CPU seconds it took (the budget measure, not inflated by other processes' load)."""
    previous_threads = torch.get_num_threads()
    single_thread()
    start = time.process_time()
    try:
        seed_everything(seed)
        workdir = Path(seed_dir) / f"seed_{seed}.work"
        ctx = RunContext(seed=seed, device=torch.device(device), workdir=workdir, show_progress=show_progress)
        return jsonable(registry.get(name).run_seed(cfg, ctx)), time.process_time() - start
    finally:
        torch.set_num_threads(previous_threads)


def _validate(experiment: Experiment, evaluation: Evaluation) -> None:
    """Check the evaluation against the declared claims; fill the claim table from its measurements."""
    if not isinstance(evaluation, Evaluation):
        raise RunError(f"{experiment.name}.evaluate must return an Evaluation, got {type(evaluation).__name__}")
    if experiment.claims:
        if evaluation.claims:
            raise RunError(f"{experiment.name}: evaluate returned checked claims; with a claim table it returns measured values")
        try:
            evaluation.claims = fill_claims(experiment.claims, evaluation.measured, evaluation.notes)
        except ValueError as error:
            raise RunError(f"{experiment.name}: {error}") from None
        return
    got = tuple(c.id for c in evaluation.claims)
    if experiment.claim_ids and sorted(got) != sorted(experiment.claim_ids):
        raise RunError(f"{experiment.name}: evaluate returned claims {got}, declared {experiment.claim_ids}")


def environment(device: torch.device, workers: int) -> dict:
    return {
        "tenfold": tenfold.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": 1,
        "workers": workers,
        "platform": platform.platform(),
    }


def jsonable(value: Any) -> Any:
    """Turn tensors, arrays, tuples and numpy scalars into plain JSON types (NaN/inf stay floats)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
