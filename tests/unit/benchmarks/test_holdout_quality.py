"""benchmarks/holdout_quality.py --smoke: the measurement of the service's own measure runs and prints its tables."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_smoke_run_prints_every_table():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "holdout_quality.py"), "--smoke"], check=False,
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for heading in ("1. The reserved holdout's figure", "2. The weighted estimate", "3. Label efficiency",
                    "4. The holdout's cost"):
        assert heading in out
    covered = re.search(r"all\s+(\d+\.\d)%\s+(\d+)%\s+\(goal >= 90% covered\)", out)
    assert covered, out
    # Well-separated synthetic classes: the holdout's figure is near the unseen one and its interval covers it.
    assert float(covered.group(1)) < 15 and int(covered.group(2)) >= 50
    assert re.search(r"sampled at 40 labels: weighted MAE \d+\.\d%", out)
