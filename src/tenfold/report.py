"""The reproduction report: ``REPORT.md`` and a self-contained ``report.html`` (inline styles, no
scripts, PNG figures beside it) built from the ``result.json`` files of a results folder.

Per experiment the newest result is used. The report opens with one table of every claim (our
statement, the paper's, the measured value, the threshold, PASS/FAIL), then gives each experiment's
figures, config and environment.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import shutil
from pathlib import Path

from tenfold.runner import RESULT_FILE
from tenfold.utils.checkpoint import atomic_write_text

REPORT_MD, REPORT_HTML = "REPORT.md", "report.html"


def load_results(results_dir: Path) -> list[dict]:
    """The newest result.json of each experiment under ``results_dir`` (searched two levels deep)."""
    results_dir = Path(results_dir)
    newest: dict[str, tuple[float, dict]] = {}
    for path in [*results_dir.glob(f"*/{RESULT_FILE}"), *results_dir.glob(RESULT_FILE)]:
        result = json.loads(path.read_text())
        result["_dir"] = str(path.parent)
        mtime = path.stat().st_mtime
        name = result["experiment"]
        if name not in newest or mtime > newest[name][0]:
            newest[name] = (mtime, result)
    return [newest[name][1] for name in sorted(newest)]


def write_report(results_dir: Path, out_dir: Path | None = None) -> Path:
    """Write REPORT.md and report.html for the results in ``results_dir``; return REPORT.md's path."""
    out_dir = Path(out_dir or results_dir)
    results = load_results(results_dir)
    if not results:
        raise FileNotFoundError(f"no {RESULT_FILE} found under {results_dir}")
    for result in results:
        result["_figures"] = _copy_figures(result, out_dir)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    atomic_write_text(out_dir / REPORT_MD, render_markdown(results, stamp))
    atomic_write_text(out_dir / REPORT_HTML, render_html(results, stamp))
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


def _counts(results: list[dict]) -> tuple[int, int]:
    """(passed, decided) claims; a claim whose premise was absent (``passed`` null) is neither."""
    claims = [c for r in results for c in r["claims"]]
    return sum(c["passed"] is True for c in claims), sum(c["passed"] is not None for c in claims)


def _undecided(results: list[dict]) -> int:
    return sum(c["passed"] is None for r in results for c in r["claims"])


def _verdict(claim: dict) -> str:
    return "n/a" if claim["passed"] is None else ("PASS" if claim["passed"] else "FAIL")


def _measured_text(claim: dict) -> str:
    note = claim.get("note") or ""
    return f"{_fmt(claim['measured'])} ({note})" if note else _fmt(claim["measured"])


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(results: list[dict], stamp: str) -> str:
    passed, total = _counts(results)
    undecided = f" ({_undecided(results)} more n/a: premise absent)" if _undecided(results) else ""
    lines = [
        "# tenfold reproduction report", "",
        f"Generated {stamp}. **{passed} of {total} claims passed**{undecided} across {len(results)} experiments. "
        "Each claim is a predicate on seed means (or paired seed wins) with its threshold fixed in code "
        "before the run; a failed claim is reported as failed.", "",
        "## Every claim", "",
        "| experiment | claim | ours | the paper | measured | threshold | result |",
        "|---|---|---|---|---:|---|---|",
    ]
    for r in results:
        for c in r["claims"]:
            lines.append(f"| {r['experiment']} | `{c['id']}` | {_md_cell(c['statement'])} | {_md_cell(c['paper'])} "
                         f"| {_md_cell(_measured_text(c))} | {_md_cell(c['threshold'])} "
                         f"| {'**FAIL**' if _verdict(c) == 'FAIL' else _verdict(c)} |")
    for r in results:
        p, t = _counts([r])
        lines += ["", f"## {r['experiment']}", "",
                  f"{r['paper']}. Preset `{r['preset']}`, seeds {r['seeds']}, {r['wall_s']:.0f} s; {p}/{t} claims passed.", ""]
        lines += [f"![{Path(f).stem}]({f})" for f in r["_figures"]]
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
.figs img { max-width: 48%; } pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
code { background: #f3f3f3; padding: 0 3px; }
"""


def render_html(results: list[dict], stamp: str) -> str:
    esc = html.escape
    passed, total = _counts(results)
    rows = []
    for r in results:
        for c in r["claims"]:
            verdict = _verdict(c)
            status = f'<span class="{"na" if verdict == "n/a" else verdict.lower()}">{verdict}</span>'
            rows.append(f"<tr><td><a href='#{esc(r['experiment'])}'>{esc(r['experiment'])}</a></td>"
                        f"<td><code>{esc(c['id'])}</code></td><td>{esc(c['statement'])}</td><td>{esc(c['paper'])}</td>"
                        f"<td class='num'>{esc(_measured_text(c))}</td><td>{esc(c['threshold'])}</td><td>{status}</td></tr>")
    sections = []
    for r in results:
        p, t = _counts([r])
        figures = "".join(f"<img src='{esc(f)}' alt='{esc(Path(f).stem)}'>" for f in r["_figures"])
        details = esc(json.dumps({"config": r["config"], "env": r["env"]}, indent=2))
        sections.append(
            f"<h2 id='{esc(r['experiment'])}'>{esc(r['experiment'])}</h2>"
            f"<p>{esc(r['paper'])}. Preset <code>{esc(r['preset'])}</code>, seeds {esc(str(r['seeds']))}, "
            f"{r['wall_s']:.0f} s; {p}/{t} claims passed.</p><div class='figs'>{figures}</div>"
            f"<details><summary>config and environment</summary><pre>{details}</pre></details>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>tenfold reproduction report</title>"
            f"<style>{_CSS}</style></head><body><h1>tenfold reproduction report</h1>"
            f"<p>Generated {esc(stamp)}. <b>{passed} of {total} claims passed</b> across {len(results)} experiments. "
            "Each claim is a predicate on seed means (or paired seed wins) with its threshold fixed in code before "
            "the run; a failed claim is reported as failed.</p>"
            "<table><tr><th>experiment</th><th>claim</th><th>ours</th><th>the paper</th><th>measured</th>"
            f"<th>threshold</th><th>result</th></tr>{''.join(rows)}</table>{''.join(sections)}</body></html>\n")
