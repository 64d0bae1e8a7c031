"""The reproduction report: ``REPORT.md`` and a self-contained ``report.html`` (inline styles, no
scripts, PNG figures beside it) built from the ``result.json`` files of a results folder.

Per experiment the newest result is used; a result.json that cannot be read (truncated, missing
keys) is named in a warning and left out. The report opens with one table of every claim (our
statement, the paper's, the measured value, the threshold, PASS/FAIL), then a table of the
compute-matched baselines that results report (``metrics.compute_matched``, see
``tenfold.compute_matched``), then gives each experiment's figures (multi-panel figures at full width),
how the compared arms were tuned and whether each was still improving at the end (a comparison with
one arm still improving and another converged is flagged in the claim table), config and environment.
Results of ``--preset smoke`` are marked as not evidence, in the header and in each of their rows.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import shutil
import struct
import sys
from collections.abc import Callable
from pathlib import Path

from tenfold.results import RESULT_FILE, SMOKE_NOTE, ResultError, is_evidence, read_result
from tenfold.utils.checkpoint import atomic_write_text

REPORT_MD, REPORT_HTML = "REPORT.md", "report.html"
WIDE_FIGURE = 1.6  # width / height above which a figure (several panels side by side) gets the full width


def load_results(results_dir: Path, warn: Callable[[str], None] | None = None) -> list[dict]:
    """The newest result.json of each experiment under ``results_dir`` (searched two levels deep).

    A file that cannot be read or lacks keys is skipped, with ``warn`` called on a line naming it and
    what is wrong (``ResultError`` is raised instead when ``warn`` is None)."""
    results_dir = Path(results_dir)
    newest: dict[str, tuple[float, dict]] = {}
    for path in sorted([*results_dir.glob(f"*/{RESULT_FILE}"), *results_dir.glob(RESULT_FILE)]):
        try:
            result = read_result(path)
        except ResultError as error:
            if warn is None:
                raise ResultError(f"{path}: {error}") from None
            warn(f"skipping {path}: {error}")
            continue
        result["_dir"] = str(path.parent)
        mtime = path.stat().st_mtime
        name = result["experiment"]
        if name not in newest or mtime > newest[name][0]:
            newest[name] = (mtime, result)
    return [newest[name][1] for name in sorted(newest)]


def warn_on_stderr(message: str) -> None:
    print(f"tenfold: warning: {message}", file=sys.stderr, flush=True)


def write_report(results_dir: Path, out_dir: Path | None = None,
                 warn: Callable[[str], None] | None = warn_on_stderr) -> Path:
    """Write REPORT.md and report.html for the results in ``results_dir``; return REPORT.md's path.

    Unreadable result files are skipped with a ``warn`` line; FileNotFoundError when none is left."""
    out_dir = Path(out_dir or results_dir)
    skipped: list[str] = []

    def note(message: str) -> None:
        skipped.append(message)
        if warn is not None:
            warn(message)

    results = load_results(results_dir, warn=note)
    if not results:
        left_out = f" ({len(skipped)} skipped: unreadable)" if skipped else ""
        raise FileNotFoundError(f"no valid {RESULT_FILE} found under {results_dir}{left_out}")
    for result in results:
        result["_figures"] = _copy_figures(result, out_dir)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    atomic_write_text(out_dir / REPORT_MD, render_markdown(results, stamp))
    atomic_write_text(out_dir / REPORT_HTML, render_html(results, stamp, out_dir))
    return out_dir / REPORT_MD


def _copy_figures(result: dict, out_dir: Path) -> list[str]:
    """Copy the result's figures to ``out_dir/figures/<experiment>/``; return paths relative to out_dir."""
    target = out_dir / "figures" / result["experiment"]
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in result["figures"]:
        source = Path(result["_dir"]) / name
        if source.exists():
            if source.resolve() != (target / name).resolve():
                shutil.copyfile(source, target / name)
            copied.append(f"figures/{result['experiment']}/{name}")
    return copied


def _header(results: list[dict], counts: str) -> tuple[str, str]:
    """The header's count sentence (over the evidence results) and its smoke caveat, if any."""
    evidence = [r for r in results if is_evidence(r)]
    smoke = [r for r in results if not is_evidence(r)]
    if not smoke:
        return counts.format(*_counts(evidence), undecided=_undecided_text(evidence), n=len(evidence)), ""
    names = ", ".join(r["experiment"] for r in smoke)
    caveat = (f"Results at --preset smoke ({names}) are {SMOKE_NOTE.split(': ', 1)[1]}; "
              "their claims are marked (smoke) and left out of the count.")
    if not evidence:
        passed, total = _counts(smoke)
        return f"No evidence: every result is from --preset smoke ({passed} of {total} smoke claims passed)", caveat
    return counts.format(*_counts(evidence), undecided=_undecided_text(evidence), n=len(evidence)), caveat


def _undecided_text(results: list[dict]) -> str:
    count = _undecided(results)
    return f" ({count} more n/a: premise absent)" if count else ""


def _counts(results: list[dict]) -> tuple[int, int]:
    """(passed, decided) claims; a claim whose premise was absent (``passed`` null) is neither."""
    claims = [c for r in results for c in r["claims"]]
    return sum(c["passed"] is True for c in claims), sum(c["passed"] is not None for c in claims)


def _undecided(results: list[dict]) -> int:
    return sum(c["passed"] is None for r in results for c in r["claims"])


def _verdict(claim: dict) -> str:
    return "n/a" if claim["passed"] is None else ("PASS" if claim["passed"] else "FAIL")


def _smoke_mark(result: dict) -> str:
    return "" if is_evidence(result) else " (smoke)"


def _mixed_mark(result: dict, claim: dict) -> str:
    """A flag for a comparison claim whose arms are mixed (one still improving, another converged)."""
    entry = result.get("convergence", {}).get(claim["id"], {})
    return " (arms: mixed convergence)" if entry.get("mixed") else ""


CONVERGENCE_HEAD = ("claim", "arm", "steps", "score", "converged seeds", "loss drop, last 10 %", "tolerance", "")
TUNING_HEAD = ("arm", "used", "chosen", "grid", "dev seeds", "mean dev score per point")


def convergence_rows(result: dict) -> list[tuple[str, ...]]:
    """One row per compared arm of each claim with a convergence entry (``CONVERGENCE_HEAD``)."""
    rows = []
    for claim_id, entry in result.get("convergence", {}).items():
        budget = "shared step budget on purpose" if entry.get("shared_budget") else ""
        arms = [(arm, e, "") for arm, e in entry.get("arms", {}).items()]
        arms += [(arm, e, "reference, not compared by the claim") for arm, e in entry.get("reference", {}).items()]
        for arm, arm_entry, role in arms:
            state = "converged" if arm_entry["converged"] else "still improving"
            mixed = "MIXED" if entry.get("mixed") and not role else ""
            rows.append((claim_id, arm, str(arm_entry["steps"]), _fmt(arm_entry.get("score", "")),
                         f"{arm_entry['converged_seeds']}/{arm_entry['seeds']}", _fmt(arm_entry["drop"]),
                         _fmt(arm_entry["tolerance"]), "; ".join(filter(None, [state, role, budget, mixed]))))
    return rows


def tuning_rows(result: dict) -> list[tuple[str, ...]]:
    """One row per tuned arm of the result's ``tuning`` block (``TUNING_HEAD``)."""
    rows = []
    for arm, entry in result.get("tuning", {}).get("arms", {}).items():
        used = ", ".join(f"{k}={_fmt(v)}" for k, v in entry["used"].items())
        if not entry.get("tuned"):
            rows.append((arm, used, "untuned", "", "", ""))
            continue
        chosen = ", ".join(f"{k}={_fmt(v)}" for k, v in entry["chosen"].items())
        if not entry.get("as_chosen"):
            chosen += " (this run used other values)"
        grid = "; ".join(f"{k} in {', '.join(_fmt(v) for v in values)}" for k, values in entry["grid"].items())
        scores = ", ".join(f"{k}: {_fmt(v)}" for k, v in entry["scores"].items())
        rows.append((arm, used, chosen, grid, ", ".join(map(str, entry["seeds"])), scores))
    return rows


def _tuning_caption(result: dict) -> str:
    block = result.get("tuning", {})
    overlap = block.get("seeds_tuned_on_in_this_run")
    warning = f" **Seeds {overlap} of this run were tuned on: not evidence for its claims.**" if overlap else ""
    return f"Tuning ({block.get('metric', '')}; {block.get('rule', '')}).{warning}"


def _md_table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]


def _html_table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    esc = html.escape
    cells = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + f"</tr>{cells}</table>"


def _measured_text(claim: dict) -> str:
    note = claim.get("note") or ""
    return f"{_fmt(claim['measured'])} ({note})" if note else _fmt(claim["measured"])


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


MATCHED_HEADER = ("experiment", "comparison", "metric", "method", "baseline, same steps", "baseline, same compute",
                  "method − matched baseline (+: method better)", "how the budget was matched")


def _matched_rows(results: list[dict]) -> list[tuple[str, ...]]:
    """One row of cells per compute-matched comparison that a result reports (reported, not claims)."""
    rows = []
    for r in results:
        for m in r.get("metrics", {}).get("compute_matched", []):
            arms = [f"{_fmt(m[key]['mean'])} ({m[key]['arm']})" for key in ("method", "baseline", "matched_baseline")]
            rows.append((r["experiment"] + _smoke_mark(r), m["comparison"], f"{m['metric']} ({m['better']} is better)",
                         *arms, f"{m['method_advantage']:+.4g}", f"×{m['cost_ratio']:.3g}: {m['budget']}"))
    return rows


def _matched_markdown(results: list[dict]) -> list[str]:
    rows = _matched_rows(results)
    if not rows:
        return []
    return ["", "## Compute-matched baselines (reported, not claims)", "", *_md_table(MATCHED_HEADER, rows)]


def _matched_html(results: list[dict]) -> str:
    rows = _matched_rows(results)
    return f"<h2>Compute-matched baselines (reported, not claims)</h2>{_html_table(MATCHED_HEADER, rows)}" if rows else ""


def render_markdown(results: list[dict], stamp: str) -> str:
    counts, caveat = _header(results, "**{0} of {1} claims passed**{undecided} across {n} experiments")
    lines = [
        "# tenfold reproduction report", "",
        f"Generated {stamp}. {counts}. "
        "Each claim is a predicate on seed means (or paired seed wins) with its threshold fixed in code "
        "before the run; a failed claim is reported as failed.", "",
        *([f"**Not evidence:** {caveat}", ""] if caveat else []),
        "## Every claim", "",
        "| experiment | claim | ours | the paper | measured | threshold | result |",
        "|---|---|---|---|---:|---|---|",
    ]
    for r in results:
        for c in r["claims"]:
            lines.append(f"| {r['experiment']} | `{c['id']}` | {_md_cell(c['statement'])} | {_md_cell(c['paper'])} "
                         f"| {_md_cell(_measured_text(c))} | {_md_cell(c['threshold'])} "
                         f"| {'**FAIL**' if _verdict(c) == 'FAIL' else _verdict(c)}"
                         f"{_smoke_mark(r)}{_mixed_mark(r, c)} |")
    lines += _matched_markdown(results)
    for r in results:
        p, t = _counts([r])
        smoke = "" if is_evidence(r) else f" ({SMOKE_NOTE})"
        lines += ["", f"## {r['experiment']}", "",
                  f"{r['paper']}. Preset `{r['preset']}`{smoke}, seeds {r['seeds']}, {r['wall_s']:.0f} s; "
                  f"{p}/{t} claims passed.", ""]
        lines += [f"![{Path(f).stem}]({f})" for f in r["_figures"]]
        if r.get("tuning"):
            lines += ["", _tuning_caption(r), "", *_md_table(TUNING_HEAD, tuning_rows(r))]
        if r.get("convergence"):
            lines += ["", "Convergence of the compared arms (training loss, fitted over the last 10 % of steps):", "",
                      *_md_table(CONVERGENCE_HEAD, convergence_rows(r))]
        lines += ["", "<details><summary>config and environment</summary>", "", "```json",
                  json.dumps({"config": r["config"], "env": r["env"]}, indent=2), "```", "", "</details>"]
    return "\n".join(lines) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #0a6b0a; font-weight: bold; } .fail { color: #b00020; font-weight: bold; } .na { color: #666; font-style: italic; }
img { max-width: 100%; margin: 0.5em 0; border: 1px solid #eee; } .figs { display: flex; flex-wrap: wrap; gap: 1em; }
.figs img { max-width: calc(50% - 0.5em); height: auto; } .figs img.wide { max-width: 100%; }
.smoke { color: #8a5a00; font-style: italic; } .caveat { background: #fff6e0; border-left: 4px solid #e0a800; padding: 0.5em 1em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
code { background: #f3f3f3; padding: 0 3px; }
"""


def _png_aspect(path: Path) -> float | None:
    """Width / height of a PNG, read from its header (None if it is not a readable PNG)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return width / height if height else None


def _figure_html(out_dir: Path, figure: str) -> str:
    aspect = _png_aspect(out_dir / figure)
    wide = " class='wide'" if aspect is not None and aspect > WIDE_FIGURE else ""
    return f"<img{wide} src='{html.escape(figure)}' alt='{html.escape(Path(figure).stem)}'>"


def render_html(results: list[dict], stamp: str, out_dir: Path | None = None) -> str:
    esc = html.escape
    out_dir = Path(out_dir or ".")
    counts, caveat = _header(results, "<b>{0} of {1} claims passed</b>{undecided} across {n} experiments")
    rows = []
    for r in results:
        for c in r["claims"]:
            verdict = _verdict(c)
            status = f'<span class="{"na" if verdict == "n/a" else verdict.lower()}">{verdict}</span>'
            if not is_evidence(r):
                status += ' <span class="smoke">(smoke)</span>'
            if _mixed_mark(r, c):
                status += f' <span class="fail">{esc(_mixed_mark(r, c).strip())}</span>'
            rows.append(f"<tr><td><a href='#{esc(r['experiment'])}'>{esc(r['experiment'])}</a></td>"
                        f"<td><code>{esc(c['id'])}</code></td><td>{esc(c['statement'])}</td><td>{esc(c['paper'])}</td>"
                        f"<td class='num'>{esc(_measured_text(c))}</td><td>{esc(c['threshold'])}</td><td>{status}</td></tr>")
    sections = []
    for r in results:
        p, t = _counts([r])
        figures = "".join(_figure_html(out_dir, f) for f in r["_figures"])
        details = esc(json.dumps({"config": r["config"], "env": r["env"]}, indent=2))
        extra = ""
        if r.get("tuning"):
            extra += f"<p>{esc(_tuning_caption(r).replace('**', ''))}</p>" + _html_table(TUNING_HEAD, tuning_rows(r))
        if r.get("convergence"):
            extra += ("<p>Convergence of the compared arms (training loss, fitted over the last 10 % of steps):</p>"
                      + _html_table(CONVERGENCE_HEAD, convergence_rows(r)))
        smoke = "" if is_evidence(r) else f" <span class='smoke'>({esc(SMOKE_NOTE)})</span>"
        sections.append(
            f"<h2 id='{esc(r['experiment'])}'>{esc(r['experiment'])}</h2>"
            f"<p>{esc(r['paper'])}. Preset <code>{esc(r['preset'])}</code>{smoke}, seeds {esc(str(r['seeds']))}, "
            f"{r['wall_s']:.0f} s; {p}/{t} claims passed.</p><div class='figs'>{figures}</div>{extra}"
            f"<details><summary>config and environment</summary><pre>{details}</pre></details>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>tenfold reproduction report</title>"
            f"<style>{_CSS}</style></head><body><h1>tenfold reproduction report</h1>"
            f"<p>Generated {esc(stamp)}. {counts}. "
            "Each claim is a predicate on seed means (or paired seed wins) with its threshold fixed in code before "
            "the run; a failed claim is reported as failed.</p>"
            + (f"<p class='caveat'><b>Not evidence:</b> {esc(caveat)}</p>" if caveat else "") +
            "<table><tr><th>experiment</th><th>claim</th><th>ours</th><th>the paper</th><th>measured</th>"
            f"<th>threshold</th><th>result</th></tr>{''.join(rows)}</table>{_matched_html(results)}"
            f"{''.join(sections)}</body></html>\n")
