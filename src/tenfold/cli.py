"""The ``tenfold`` command line: list, run, reproduce, report, bench, tune.

Exit codes: 0 done; 1 done but a claim failed (only with ``--strict``); 2 bad usage (one line naming
the argument; every argument is checked before anything is written); 130 interrupted (finished seeds
are kept: continue with ``--resume``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tenfold import registry
from tenfold.config import ConfigError
from tenfold.experiment import PRESET_NAMES
from tenfold.results import SMOKE_NOTE, is_evidence

EXIT_OK, EXIT_CLAIM_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad usage: printed and turned into exit code 2."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except (UsageError, ConfigError) as exc:
        print(f"tenfold: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a folder or file that cannot be written or read
        print(f"tenfold: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ntenfold: interrupted; finished seeds are saved, continue with --resume", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tenfold", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the experiments")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("run", help="run one experiment")
    p.add_argument("name")
    _add_run_options(p)
    p.add_argument("--seeds", help="comma-separated seeds, overriding the preset's")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--resume", action="store_true", help="continue the newest run folder, skipping finished seeds")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("reproduce", help="run all (or some) experiments and write the report")
    _add_run_options(p)
    p.add_argument("--only", help="comma-separated experiment names")
    p.add_argument("--resume", action="store_true", help="continue interrupted runs")
    p.set_defaults(handler=cmd_reproduce)

    p = sub.add_parser("report", help="rebuild the report from results on disk")
    p.add_argument("dir", type=Path)
    p.add_argument("--out", type=Path, help="where REPORT.md goes (default: DIR)")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("bench", help="performance benchmarks, as ratios against a baseline")
    p.add_argument("names", nargs="*")
    p.add_argument("--out", type=Path, default=Path("runs/bench"))
    p.add_argument("--full", action="store_true", help="the larger grid (slower)")
    p.set_defaults(handler=cmd_bench)

    p = sub.add_parser("tune", help="sweep one arm's hyperparameters on development seeds (tenfold.tuning)")
    p.add_argument("name")
    p.add_argument("--arm", required=True, help="the arm to tune (see the experiment's tuning spec)")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="values of one tuned hyperparameter (repeat for several: every combination is tried)")
    p.add_argument("--seeds", help="comma-separated development seeds, 1000-1009 (default 1000,1001)")
    p.add_argument("--preset", default="quick", help=f"one of {', '.join(PRESET_NAMES)} (default quick)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--out", type=Path, default=Path("runs/tune"), help="where NAME-ARM.json goes")
    p.add_argument("--workers", type=int, default=1, help="parallel trial processes, >= 1 (default 1)")
    p.set_defaults(handler=cmd_tune)
    return parser


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="quick", help=f"one of {', '.join(PRESET_NAMES)} (default quick)")
    p.add_argument("--out", type=Path, default=Path("runs"))
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda or auto (cuda where the experiment supports it: see `tenfold list`)")
    p.add_argument("--workers", type=int, default=None, help="parallel seed processes, >= 1 (default: cores)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a claim fails")


def cmd_list(args) -> int:
    experiments = registry.all_experiments()
    print(f"{'name':<22}{'claims':>7}{'quick':>9}  {'devices':<10}  paper")
    for exp in experiments:
        devices = ",".join(exp.devices)
        print(f"{exp.name:<22}{len(exp.claim_ids):>7}{exp.quick_minutes:>7.1f} m  {devices:<10}  {exp.paper}")
    return EXIT_OK


def _experiment(name: str):
    try:
        return registry.get(name)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None


def _check_preset(preset: str) -> None:
    if preset not in PRESET_NAMES:
        raise UsageError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESET_NAMES)}")


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {pair!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds expects comma-separated non-negative ints, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds expects distinct non-negative ints, got {text!r}")
    return seeds


def _check_out(out: Path, option: str = "--out") -> None:
    """Refuse an output folder that is a file (anything else is found out when it is created)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {out} is a file, not a folder")


def _make_out(out: Path, option: str = "--out") -> None:
    """Create the output folder, once every argument has been checked."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {option} {out}: {exc.strerror or exc}") from None


def _check_run(exp, cfg, args) -> None:
    """Every check of one run's arguments, before anything is created."""
    from tenfold.runner import RunError, check_run

    try:
        check_run(exp, cfg, args.device, args.workers)
    except RunError as exc:
        raise UsageError(str(exc)) from None


def _run(exp, cfg, args, resume: bool) -> dict:
    from tenfold.runner import RunError, run_experiment

    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    try:
        return run_experiment(exp, cfg, args.preset, args.out, args.device, args.workers, resume, log=log)
    except RunError as exc:
        raise UsageError(str(exc)) from None


def cmd_run(args) -> int:
    exp = _experiment(args.name)
    _check_preset(args.preset)
    cfg = exp.config(args.preset, _parse_sets(args.set), _parse_seeds(args.seeds))
    _check_out(args.out)
    _check_run(exp, cfg, args)
    _make_out(args.out)
    result = _run(exp, cfg, args, args.resume)
    print(claim_table(result))
    caveat = "" if is_evidence(result) else f"; {SMOKE_NOTE}"
    print(f"\nresult: {Path(result['_dir']) / 'result.json'}  ({result['wall_s']:.1f}s){caveat}")
    return _exit_for([result], args.strict)


def cmd_reproduce(args) -> int:
    from tenfold.report import write_report

    _check_preset(args.preset)
    names = args.only.split(",") if args.only else registry.names()
    experiments = [_experiment(n.strip()) for n in names]
    cpu_only = [exp.name for exp in experiments if args.device == "cuda" and "cuda" not in exp.devices]
    if cpu_only:
        raise UsageError(f"--device cuda: not supported by {', '.join(cpu_only)}; use --device auto "
                         "(cuda where an experiment supports it, else cpu) or --only")
    _check_out(args.out)
    for exp in experiments:
        _check_run(exp, exp.config(args.preset), args)
    _make_out(args.out)
    results, start = [], time.perf_counter()
    for i, exp in enumerate(experiments, 1):
        print(f"\n== [{i}/{len(experiments)}] {exp.name}: {exp.paper} (about {exp.quick_minutes:.0f} min at quick)",
              file=sys.stderr, flush=True)
        result = _run(exp, exp.config(args.preset), args, args.resume)
        print(claim_table(result))
        results.append(result)
    report = write_report(args.out)
    passed = sum(c["passed"] is True for r in results for c in r["claims"])
    total = sum(c["passed"] is not None for r in results for c in r["claims"])
    caveat = "" if all(is_evidence(r) for r in results) else f" ({SMOKE_NOTE})"
    print(f"\n{passed}/{total} claims passed in {time.perf_counter() - start:.0f}s{caveat}")
    print(f"report: {report} and {report.with_name('report.html')}")
    return _exit_for(results, args.strict)


def cmd_report(args) -> int:
    from tenfold.report import write_report

    if not args.dir.is_dir():
        raise UsageError(f"no such results folder: {args.dir}")
    if args.out is not None:
        _check_out(args.out)
    try:
        path = write_report(args.dir, args.out)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    print(f"report: {path} and {path.with_name('report.html')}")
    return EXIT_OK


def cmd_bench(args) -> int:
    from tenfold import benchmarks
    from tenfold.utils.checkpoint import atomic_write_json
    from tenfold.utils.threads import single_thread

    names = [_experiment(n).name for n in args.names] if args.names else benchmarks.names()
    missing = [n for n in names if n not in benchmarks.names()]
    if missing:
        raise UsageError(f"no benchmark for {missing}; experiments with benchmarks: "
                         f"{', '.join(benchmarks.names()) or '(none)'}")
    single_thread()  # once, for every benchmark: they set no threads themselves
    for name in names:
        rows = benchmarks.get(name)(not args.full)
        print(f"\n== {name}")
        print(bench_table(rows))
        atomic_write_json(args.out / f"{name}.json", [row.to_dict() for row in rows])
    print(f"\nbenchmarks written to {args.out}")
    return EXIT_OK


def cmd_tune(args) -> int:
    from tenfold import tuning
    from tenfold.utils.checkpoint import atomic_write_json

    exp = _experiment(args.name)
    spec = exp.tuning
    if spec is None:
        tuned = [e.name for e in registry.all_experiments() if e.tuning is not None]
        raise UsageError(f"{exp.name} declares no tuning; experiments that do: {', '.join(tuned) or '(none)'}")
    if args.arm not in spec.fields:
        raise UsageError(f"--arm {args.arm!r}: valid arms of {exp.name}: {', '.join(spec.fields)}")
    _check_preset(args.preset)
    overrides = _parse_sets(args.set)
    try:
        grid = tuning.parse_grid(args.grid, list(spec.fields[args.arm]))
        seeds = tuning.check_dev_seeds(_parse_seeds(args.seeds) or tuning.DEFAULT_TUNE_SEEDS)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    swept = sorted(k for k in overrides if k in spec.fields[args.arm].values())
    if swept:
        raise UsageError(f"--set {', '.join(swept)}: swept by --grid, not set")
    cfg = exp.config(args.preset, overrides)
    from tenfold.runner import RunError, check_workers

    try:
        check_workers(args.workers)
    except RunError as exc:
        raise UsageError(str(exc)) from None
    _check_out(args.out)
    _make_out(args.out)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    rows, record = tuning.sweep(exp, args.arm, grid, seeds, args.preset, cfg, args.workers, log)
    path = args.out / f"{exp.name}-{args.arm}.json"
    atomic_write_json(path, {"experiment": exp.name, "arm": args.arm, "metric": spec.metric,
                             "fields": spec.fields[args.arm], "overrides": overrides, "rows": rows,
                             "record": record.to_dict()})
    print(tune_table(exp.name, args.arm, spec.metric, rows, record))
    print(f"\nsweep: {path}")
    return EXIT_OK


def tune_table(name: str, arm: str, metric: str, rows: list[dict], record) -> str:
    """The sweep's rows (mean score and final loss over the seeds) and the record to paste."""
    lines = [f"\n{name} / {arm}: {metric}; seeds {list(record.seeds)}, preset {record.preset}",
             f"  {'point':<28}{'score':>10}{'loss':>10}"]
    for row in rows:
        mark = "  <- chosen" if row["point"] == record.chosen else ""
        lines.append(f"  {row['label']:<28}{row['score']:>10.4g}{row['loss']:>10.4g}{mark}")
    lines.append(f"\nrecord (TuningSpec.record[{arm!r}]):\n  ArmTuning(grid={dict(record.grid)!r}, "
                 f"seeds={record.seeds!r}, preset={record.preset!r},\n            scores={dict(record.scores)!r},"
                 f"\n            chosen={dict(record.chosen)!r})")
    return "\n".join(lines)


def claim_table(result: dict) -> str:
    caveat = "" if is_evidence(result) else f"; {SMOKE_NOTE}"
    lines = [f"\n{result['experiment']} ({result['preset']}, seeds {result['seeds']}{caveat})",
             f"  {'claim':<34}{'measured':>12}  {'threshold':<12}result"]
    for claim in result["claims"]:
        verdict = "n/a" if claim["passed"] is None else ("PASS" if claim["passed"] else "FAIL")
        note = f"  ({claim['note']})" if claim.get("note") else ""
        lines.append(f"  {claim['id']:<34}{claim['measured']:>12.4g}  {claim['threshold']:<12}{verdict}{note}")
    return "\n".join(lines)


def bench_table(rows) -> str:
    """One line per measurement: method time / baseline time (below 1: the method is faster)."""
    lines = [f"  {'benchmark':<40}{'baseline':>14}{'method':>14}{'ratio':>9}  method vs baseline"]
    for row in rows:
        lines.append(f"  {row.name:<40}{row.baseline_s * 1e3:>11.3f} ms{row.method_s * 1e3:>11.3f} ms"
                     f"{row.ratio:>9.3f}  {row.method} vs {row.baseline}")
    return "\n".join(lines)


def _exit_for(results: list[dict], strict: bool) -> int:
    failed = any(c["passed"] is False for r in results for c in r["claims"])
    return EXIT_CLAIM_FAILED if strict and failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
