"""Every benchmark still runs: each ``benchmarks/*.py`` in its ``--smoke`` mode (tiny sizes), in a subprocess.

Nothing else runs the benchmarks, so without this a script that no longer runs is found only when someone needs its
figures (``benchmarks/predict.py`` stopped at 401 for weeks once the API token became mandatory). The scripts are
found by glob, so a new benchmark is covered the day it lands; each must take ``--smoke``, exit 0 and print its table.
The full sizes stay manual (``make bench``). Figures printed here are not checked: timings belong to the benchmarks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(path for path in (REPO / "benchmarks").glob("*.py") if path.name != "__init__.py")

#: Scripts that can never run on a machine that runs `make test`, with the reason (none today).
NEVER_HERE: dict[str, str] = {}

#: Seconds a smoke run may take; the default covers the scripts that load TensorFlow and the backbone.
TIMEOUT_S = 240
SLOW_TIMEOUT_S = {
    "label_studio.py": 420,  # starts Label Studio twice (fresh, then a restart)
    "ml_backend.py": 420,  # Label Studio + the service
    "simulate.py": 600,  # juicer serve with its own Label Studio, then juicer simulate against it
    "scaling.py": 420,  # juicer serve under gunicorn
    "load.py": 420,
    "bad_inputs.py": 420,
}


def test_benchmarks_are_found():
    """The glob sees the benchmarks (a moved folder would otherwise make every smoke test vanish silently)."""
    assert {"predict.py", "retrain.py", "curve.py"} <= {path.name for path in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_benchmark_runs_in_smoke_mode(script: Path) -> None:
    """``python benchmarks/<script> --smoke`` exits 0 and prints something (its table)."""
    if script.name in NEVER_HERE:
        pytest.skip(NEVER_HERE[script.name])
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("JUICER_CONFIG", None)  # the benchmarks' own settings, not a developer's config file
    timeout_s = SLOW_TIMEOUT_S.get(script.name, TIMEOUT_S)
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, str(script), "--smoke"], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=timeout_s, start_new_session=True,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        pytest.fail(f"{script.name} --smoke ran over {timeout_s} s; its output ended:\n{output[-3000:]}")
    seconds = time.monotonic() - started
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"{script.name} --smoke exited {result.returncode} after {seconds:.0f} s:\n{output[-4000:]}"
    assert result.stdout.strip(), f"{script.name} --smoke printed nothing"
