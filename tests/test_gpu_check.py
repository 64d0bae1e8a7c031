"""scripts/gpu-check.sh, prepared without a GPU: its dry run lists a smoke run on CUDA of every registered
experiment, a bf16 smoke run of each experiment with the ``amp`` option, and one full run."""

import os
import subprocess
import sys
from pathlib import Path

from tenfold import registry

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_covers_every_experiment(tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path), "PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), "tam"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    labels = [line.split()[1].rstrip(":") for line in (tmp_path / "summary.txt").read_text().splitlines()
              if line.startswith("DRY")]
    names = registry.names()
    amp = [n for n in names if hasattr(registry.get(n).config("smoke"), "amp")]
    assert labels == [f"{n}-smoke" for n in names] + [f"{n}-smoke-bf16" for n in amp] + ["tam-full"]
    assert len(names) == 10 and len(amp) == 6
