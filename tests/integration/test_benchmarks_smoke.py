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
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
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


@dataclass
class SmokeRun:
    """One script's smoke run: its exit status and output, or that it ran over its time."""

    returncode: int | None
    output: str
    seconds: float


def smoke_run(script: Path) -> SmokeRun:
    """``python benchmarks/<script> --smoke`` from the repository root, with its own time limit."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("JUICER_CONFIG", None)  # the benchmarks' own settings, not a developer's config file
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, str(script), "--smoke"], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=SLOW_TIMEOUT_S.get(script.name, TIMEOUT_S), start_new_session=True,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return SmokeRun(None, output, time.monotonic() - started)
    output = result.stdout if not result.returncode else f"{result.stdout}\n{result.stderr}"
    return SmokeRun(result.returncode, output, time.monotonic() - started)


@pytest.fixture(scope="module")
def smoke_runs(request: pytest.FixtureRequest) -> Iterator[dict[str, Future]]:
    """The selected scripts' smoke runs, queued at once and run as many at a time as there are CPUs (most of a
    run is Python and TensorFlow starting, one core each); the slow ones first, so no CPU idles at the end while
    one of them still runs."""
    selected = [
        item.callspec.params["script"] for item in request.session.items
        if getattr(item, "originalname", None) == "test_benchmark_runs_in_smoke_mode" and hasattr(item, "callspec")
    ]  # fmt: skip
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="smoke") as pool:
        slow_first = sorted(selected, key=lambda script: -SLOW_TIMEOUT_S.get(script.name, TIMEOUT_S))  # stable: by name
        runs = {script.name: pool.submit(smoke_run, script) for script in slow_first if script.name not in NEVER_HERE}
        yield runs
        for future in runs.values():
            future.cancel()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_benchmark_runs_in_smoke_mode(script: Path, smoke_runs: dict[str, Future]) -> None:
    """``python benchmarks/<script> --smoke`` exits 0 and prints something (its table)."""
    if script.name in NEVER_HERE:
        pytest.skip(NEVER_HERE[script.name])
    run = smoke_runs[script.name].result()
    limit = SLOW_TIMEOUT_S.get(script.name, TIMEOUT_S)
    assert run.returncode is not None, f"{script.name} --smoke ran over {limit} s; its output ended:\n{run.output[-3000:]}"
    assert run.returncode == 0, f"{script.name} --smoke exited {run.returncode} after {run.seconds:.0f} s:\n{run.output[-4000:]}"
    assert run.output.strip(), f"{script.name} --smoke printed nothing"
