"""Runs an experiment: seeds in parallel worker processes at one torch thread each, each seed's
record saved atomically as soon as it finishes, ``--resume`` skipping finished seeds, and a
``result.json`` (:mod:`tenfold.results`) at the end.

Every argument is checked before anything is written. Without a terminal, each seed prints a start
line and a status line (step, ETA) at least every 20 s (:mod:`tenfold.progress`); on a terminal,
tqdm bars. On Ctrl-C the workers are stopped quietly and the finished seeds stay on disk."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import importlib.util
import json
import multiprocessing
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import tenfold
from tenfold import registry
from tenfold.experiment import Claim, Evaluation, Experiment, RunContext, fill_claims
from tenfold.progress import SEND_EVERY_S, ProgressBoard, SeedTracker
from tenfold.results import RESULT_FILE, default_note, evidence_fields
from tenfold.tuning import tuning_block
from tenfold.utils.checkpoint import atomic_write_json
from tenfold.utils.seeding import seed_everything
from tenfold.utils.threads import single_thread

PROGRESS_EVERY_S = 20.0


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


def check_run(experiment: Experiment, cfg: Any, device: str = "cpu", workers: int | None = None) -> torch.device:
    """Every check a run makes before it writes anything (device, seeds, workers, optional packages);
    raise :class:`RunError` naming the argument. Returns the torch device."""
    torch_device = resolve_device(device, experiment.devices, experiment.name)
    seeds = list(cfg.seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise RunError(f"seeds must be distinct and non-empty, got {seeds}")
    check_workers(workers)
    missing = {module: extra for module, extra in (experiment.needs(cfg) if experiment.needs else {}).items()
               if not _installed(module)}
    if missing:
        extras = sorted(set(missing.values()))
        raise RunError(f"{experiment.name} needs {', '.join(sorted(missing))}, which is not installed: "
                       f"pip install 'tenfold[{','.join(extras)}]'")
    return torch_device


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_workers(workers: int | None) -> None:
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise RunError(f"--workers must be an int >= 1, got {workers!r}")


def output_dir(root: Path, name: str, resume: bool) -> Path:
    """Where a run of ``name`` writes. An existing folder with results is never overwritten: a
    resume continues the newest one that holds results (finished seeds or a result.json), any
    other run gets a fresh timestamped folder beside it."""
    root = Path(root)
    existing = sorted((p for p in root.glob(f"{name}*") if p.is_dir() and _is_run_of(p, name) and _has_results(p)),
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


def _has_results(folder: Path) -> bool:
    return (folder / RESULT_FILE).exists() or any((folder / "seeds").glob("seed_*.json"))


def _make_dirs(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"cannot create the run folder {folder}: {error.strerror or error}") from None


def run_experiment(experiment: Experiment, cfg: Any, preset: str, out_root: Path = Path("runs"),
                   device: str = "cpu", workers: int | None = None, resume: bool = False,
                   log=print, progress_every: float = PROGRESS_EVERY_S) -> dict:
    """Run every seed of ``cfg`` (skipping finished ones when resuming), evaluate, write result.json."""
    torch_device = check_run(experiment, cfg, device, workers)
    out_root = Path(out_root)
    if out_root.exists() and not out_root.is_dir():
        raise RunError(f"--out {out_root} is a file, not a folder")
    out_dir = output_dir(out_root, experiment.name, resume)
    seed_dir = out_dir / "seeds"
    seeds = list(cfg.seeds)
    config = config_dict(cfg)
    records, cpu_s = _load_finished(seed_dir, seeds, config) if resume else ({}, {})
    _make_dirs(seed_dir)
    if records:
        log(f"[{experiment.name}] resuming in {out_dir}: seeds {sorted(records)} already done")
    todo = [s for s in seeds if s not in records]
    count = workers_used(workers, len(todo))
    start = time.perf_counter()
    terminal = sys.stderr.isatty()
    bar = tqdm(total=len(seeds), initial=len(records), desc=experiment.name, unit="seed", leave=False,
               disable=not terminal)
    board = ProgressBoard(experiment.name, len(seeds), len(records), log, progress_every, quiet=terminal)
    with _seed_runner(experiment, cfg, todo, torch_device, seed_dir, count, board) as finished:
        for seed, record, seed_cpu_s in finished:
            atomic_write_json(seed_dir / f"seed_{seed}.json",
                              {"seed": seed, "config": config, "cpu_s": seed_cpu_s, "record": record})
            records[seed], cpu_s[seed] = record, seed_cpu_s
            board.receive(("done", seed))
            bar.update()
            if not terminal:
                log(f"[{experiment.name}] seed {seed} done ({len(records)}/{len(seeds)}, "
                    f"{time.perf_counter() - start:.1f}s elapsed, {seed_cpu_s:.1f} CPU-s for this seed)")
    bar.close()
    records = {s: records[s] for s in seeds}
    evaluation = experiment.evaluate(cfg, records, out_dir)
    claims = _claims(experiment, evaluation)
    extras = _comparison_fields(experiment, cfg, evaluation, claims)
    result = {
        "experiment": experiment.name,
        "paper": experiment.paper,
        "preset": preset,
        **evidence_fields(preset),
        "seeds": seeds,
        "config": config,
        "claims": [c.to_dict() for c in claims],
        "metrics": jsonable(evaluation.metrics),
        "figures": list(evaluation.figures),
        **extras,
        "wall_s": round(time.perf_counter() - start, 2),
        "env": {**environment(torch_device, count),
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
    check_workers(workers)
    wanted = (os.cpu_count() or 1) if workers is None else workers
    return max(1, min(wanted, jobs))


@contextlib.contextmanager
def _seed_runner(experiment: Experiment, cfg: Any, seeds: list[int], device: torch.device, seed_dir: Path,
                 count: int, board: ProgressBoard):
    """Yields an iterator of ``(seed, record, cpu_seconds)`` as each seed finishes: in this process
    (``count == 1``) or in ``count`` spawned workers, stopped at once if the caller is interrupted."""
    if count == 1 or not seeds:
        with board:
            yield _seeds_here(experiment, cfg, seeds, device, seed_dir, board)
        return
    context = multiprocessing.get_context("spawn")  # fork after torch has run threads can deadlock
    messages = context.Queue()
    board.source = messages
    pool = ProcessPoolExecutor(count, mp_context=context, initializer=_init_worker, initargs=(messages,))
    try:
        with board:
            with _sigint_ignored():  # workers are spawned here and inherit the ignored Ctrl-C
                futures = {pool.submit(_worker_seed, experiment.name, cfg, seed, str(device), str(seed_dir),
                                       _send_every(board)): seed for seed in seeds}
            yield _as_finished(futures)
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


def _as_finished(futures: dict) -> Iterator[tuple[int, dict, float]]:
    """``(seed, record, cpu_seconds)`` as each seed's future finishes. The main thread waits in short
    slices: the kernel may hand Ctrl-C to any of the process's threads, and a main thread blocked
    without a timeout would never run Python's handler (the run then hangs instead of stopping)."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        for future in done:
            yield (futures[future], *future.result())


def _seeds_here(experiment: Experiment, cfg: Any, seeds: list[int], device: torch.device, seed_dir: Path,
                board: ProgressBoard):
    show = sys.stderr.isatty()
    for seed in seeds:
        board.receive(("start", seed))
        yield seed, *run_one_seed(experiment.name, cfg, seed, str(device), str(seed_dir), show, board.receive,
                                  _send_every(board))


@contextlib.contextmanager
def _sigint_ignored():
    if threading.current_thread() is not threading.main_thread():  # signals belong to the main thread
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate the workers now (shutdown alone would wait for the running seeds)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public API before Python 3.14
    for process in processes:
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(timeout=5)


_MESSAGES = None  # a worker process's queue to the parent's progress board


def _init_worker(messages) -> None:
    global _MESSAGES
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    single_thread()
    _MESSAGES = messages


def _worker_seed(name: str, cfg: Any, seed: int, device: str, seed_dir: str, send_every: float) -> tuple[dict, float]:
    _MESSAGES.put(("start", seed))
    return run_one_seed(name, cfg, seed, device, seed_dir, False, _MESSAGES.put, send_every)


def _send_every(board: ProgressBoard) -> float:
    """How often a seed sends its status: often enough for the board's lines to be fresh."""
    return min(SEND_EVERY_S, board.every / 2)


def run_one_seed(name: str, cfg: Any, seed: int, device: str, seed_dir: str,
                 show_progress: bool, send=None, send_every: float = SEND_EVERY_S) -> tuple[dict, float]:
    """Run one seed of experiment ``name`` deterministically, at one torch thread; return its record
    and the CPU seconds it took (the budget measure, not inflated by other processes' load).
    ``send`` receives the seed's progress messages (:class:`tenfold.progress.SeedTracker`)."""
    previous_threads = torch.get_num_threads()
    single_thread()
    start = time.process_time()
    try:
        seed_everything(seed)
        workdir = Path(seed_dir) / f"seed_{seed}.work"
        tracker = SeedTracker(seed, send, send_every) if send is not None else None
        ctx = RunContext(seed=seed, device=torch.device(device), workdir=workdir, show_progress=show_progress,
                         tracker=tracker)
        return jsonable(registry.get(name).run_seed(cfg, ctx)), time.process_time() - start
    finally:
        torch.set_num_threads(previous_threads)


def _claims(experiment: Experiment, evaluation: Evaluation) -> list[Claim]:
    """The experiment's claim table filled from the evaluation's measurements (a NaN gets a note)."""
    if not isinstance(evaluation, Evaluation):
        raise RunError(f"{experiment.name}.evaluate must return an Evaluation, got {type(evaluation).__name__}")
    try:
        claims = fill_claims(experiment.claims, evaluation.measured, evaluation.notes)
    except ValueError as error:
        raise RunError(f"{experiment.name}: {error}") from None
    for claim in claims:
        claim.note = default_note(claim.measured, claim.note)
    return claims


def _comparison_fields(experiment: Experiment, cfg: Any, evaluation: Evaluation, claims: list[Claim]) -> dict:
    """result.json's ``tuning`` block (experiments with a tuning spec) and ``convergence`` block (claims
    whose evaluation measured it); a claim whose arms are mixed gets a note naming the arm still improving."""
    extras: dict[str, Any] = {}
    if experiment.tuning is not None:
        extras["tuning"] = jsonable(tuning_block(experiment.tuning, cfg, list(cfg.seeds)))
    unknown = sorted(set(evaluation.convergence) - set(experiment.claim_ids))
    if unknown:
        raise RunError(f"{experiment.name}: convergence reported for undeclared claims {unknown}")
    if evaluation.convergence:
        extras["convergence"] = jsonable(evaluation.convergence)
    for claim in claims:
        entry = evaluation.convergence.get(claim.id)
        if entry and entry.get("mixed"):
            flag = f"arms still improving at the end: {', '.join(entry['still_improving'])}; the others converged"
            claim.note = f"{claim.note}; {flag}" if claim.note else flag
    return extras


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
