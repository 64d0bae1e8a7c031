import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tenfold.report import load_results, write_report  # noqa: E402


def _fixture_result(folder, name, passed, measured, mtime=None):
    folder.mkdir(parents=True)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig(folder / "curve.png")
    plt.close(fig)
    result = {
        "experiment": name, "paper": f"Paper of {name}", "preset": "quick", "seeds": [0, 1],
        "config": {"seeds": [0, 1], "lr": 0.1}, "metrics": {"acc": {"mean": 0.9}},
        "claims": [{"id": f"{name}.claim", "statement": "A beats B | by a margin", "paper": "A > B",
                    "measured": measured, "threshold": ">= 0.5", "passed": passed}],
        "figures": ["curve.png"], "wall_s": 12.0,
        "env": {"tenfold": "0.1.0", "torch": "2.13.0", "python": "3.11", "device": "cpu", "threads": 1},
    }
    (folder / "result.json").write_text(json.dumps(result))
    if mtime is not None:
        os.utime(folder / "result.json", (mtime, mtime))


def test_report_lists_every_claim_with_pass_and_fail(tmp_path):
    _fixture_result(tmp_path / "alpha", "alpha", True, 0.7)
    _fixture_result(tmp_path / "beta", "beta", False, 0.2)
    path = write_report(tmp_path)
    text = path.read_text()
    assert "**1 of 2 claims passed**" in text
    assert "| alpha | `alpha.claim` | A beats B \\| by a margin | A > B | 0.7 | >= 0.5 | PASS |" in text
    assert "| beta | `beta.claim` |" in text and "**FAIL**" in text
    assert "![curve](figures/alpha/curve.png)" in text
    assert (tmp_path / "figures" / "beta" / "curve.png").exists()
    html = (tmp_path / "report.html").read_text()
    assert "<script" not in html and "http" not in html.split("<body>")[1]  # self-contained
    assert "src='figures/alpha/curve.png'" in html and "class=\"fail\"" in html


def test_report_uses_the_newest_result_of_each_experiment(tmp_path):
    _fixture_result(tmp_path / "alpha", "alpha", False, 0.1, mtime=1_000_000)
    _fixture_result(tmp_path / "alpha-20260101-000000", "alpha", True, 0.9, mtime=2_000_000)
    results = load_results(tmp_path)
    assert len(results) == 1 and results[0]["claims"][0]["measured"] == 0.9


def test_report_can_be_written_elsewhere(tmp_path):
    _fixture_result(tmp_path / "runs" / "alpha", "alpha", True, 0.7)
    path = write_report(tmp_path / "runs", tmp_path / "docs")
    assert path == tmp_path / "docs" / "REPORT.md"
    assert (tmp_path / "docs" / "figures" / "alpha" / "curve.png").exists()


def test_multi_panel_figures_get_the_full_width(tmp_path):
    _fixture_result(tmp_path / "alpha", "alpha", True, 0.7)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    fig.savefig(tmp_path / "alpha" / "panels.png")
    plt.close(fig)
    result = json.loads((tmp_path / "alpha" / "result.json").read_text())
    result["figures"] = ["curve.png", "panels.png"]
    (tmp_path / "alpha" / "result.json").write_text(json.dumps(result))
    write_report(tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "<img class='wide' src='figures/alpha/panels.png'" in html
    assert "<img src='figures/alpha/curve.png'" in html  # a single panel keeps half the width


def test_an_undecided_claim_shows_its_note_in_its_row(tmp_path):
    _fixture_result(tmp_path / "alpha", "alpha", False, float("nan"))
    result = json.loads((tmp_path / "alpha" / "result.json").read_text())
    result["claims"][0]["note"] = "measured value is not finite"
    (tmp_path / "alpha" / "result.json").write_text(json.dumps(result))
    text = write_report(tmp_path).read_text()
    assert "| nan (measured value is not finite) | >= 0.5 | **FAIL** |" in text


def test_smoke_results_are_marked_and_left_out_of_the_count(tmp_path):
    _fixture_result(tmp_path / "alpha", "alpha", True, 0.7)
    _fixture_result(tmp_path / "beta", "beta", False, 0.2)
    smoke = json.loads((tmp_path / "beta" / "result.json").read_text())
    smoke["preset"] = "smoke"  # an older result without the "evidence" field: read from the preset
    (tmp_path / "beta" / "result.json").write_text(json.dumps(smoke))
    text = write_report(tmp_path).read_text()
    assert "**1 of 1 claims passed** across 1 experiments" in text
    assert "**Not evidence:** Results at --preset smoke (beta)" in text
    assert "| beta | `beta.claim` |" in text and "**FAIL** (smoke) |" in text
    html = (tmp_path / "report.html").read_text()
    assert "class='caveat'" in html and '<span class="smoke">(smoke)</span>' in html


def test_report_shows_compute_matched_baselines_only_where_results_have_them(tmp_path):
    _fixture_result(tmp_path / "alpha", "alpha", True, 0.7)
    text = write_report(tmp_path).read_text()
    assert "Compute-matched" not in text
    result = json.loads((tmp_path / "alpha" / "result.json").read_text())
    stats = {"std": 0.0, "per_seed": [0.0]}
    result["metrics"]["compute_matched"] = [{
        "comparison": "A vs B", "metric": "accuracy", "better": "higher",
        "method": {"arm": "a", "mean": 0.91, **stats}, "baseline": {"arm": "b", "mean": 0.82, **stats},
        "matched_baseline": {"arm": "b_matched", "mean": 0.94, **stats}, "cost_ratio": 4.0,
        "budget": "B makes 4 updates | per batch", "method_advantage": -0.03, "method_advantage_same_steps": 0.09}]
    (tmp_path / "alpha" / "result.json").write_text(json.dumps(result))
    text = write_report(tmp_path).read_text()
    assert "## Compute-matched baselines (reported, not claims)" in text
    assert ("| alpha | A vs B | accuracy (higher is better) | 0.91 (a) | 0.82 (b) | 0.94 (b_matched) | -0.03 "
            "| ×4: B makes 4 updates \\| per batch |") in text
    html = (tmp_path / "report.html").read_text()
    assert "Compute-matched baselines" in html and "<td>0.94 (b_matched)</td>" in html
