"""The main job end to end: `juicer serve` (its own Label Studio, the Fashion-MNIST demo) and `juicer simulate`.

Starts the real service as a user does, on free loopback ports in a fresh data folder, plays annotators through
the real Label Studio with `juicer simulate`, and checks that each retrain adds a report point with more labels
and that accuracy grows from 1 label per class.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def served(tmp_path_factory, free_port):
    """`juicer serve` with a small demo, until /readyz answers 200; stopped (with its Label Studio) afterwards."""
    data_dir = tmp_path_factory.mktemp("simulate") / "data"
    data_dir.mkdir()
    built = REPO / "data" / "backbones"
    if built.is_dir():  # the converted backbone from `make backbone`: reuse it instead of converting it again
        (data_dir / "backbones").symlink_to(built.resolve(), target_is_directory=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "USERNAME", "PASSWORD", "PORT") and not k.startswith("JUICER_")}
    env.update(
        PYTHONPATH=str(REPO),
        TF_CPP_MIN_LOG_LEVEL="2",
        JUICER_DATA_DIR=str(data_dir),
        JUICER_SERVICE__PORT=str(port),
        JUICER_SERVICE__RETRAIN_AFTER_LABELS="100000",  # only the simulation's retrains, at known label counts
        JUICER_SERVICE__REVIEW_BATCH_SIZE="20",
        JUICER_LABEL_STUDIO__PORT=str(free_port()),
        JUICER_LABEL_STUDIO__VENV=str(REPO / ".venv-ls"),
    )
    log_path = data_dir.parent / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--demo-pool", "80", "--holdout", "100"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while not _ready(url):
            assert process.poll() is None, f"juicer serve exited ({process.returncode}):\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"juicer serve not ready in 600 s:\n{log_path.read_text()[-3000:]}"
            time.sleep(1)
        yield url, env
    finally:
        process.send_signal(signal.SIGTERM)  # serve stops its scheduler and the Label Studio it started
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_simulate_uncertainty_order_improves_the_model(served):
    url, env = served
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "simulate", "--labels", "20", "--order", "uncertainty",
         "--retrain-every", "10", "--service", url, "--wait", "180"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout[: result.stdout.index("{")].splitlines()
    version_lines = [line for line in lines if line.startswith("model v")]
    assert version_lines[0].startswith("model v0001: 10 labels (1.0/class)")
    report = json.loads(result.stdout[result.stdout.index("{") :])
    points = report["points"]
    assert [p["n_labels"] for p in points] == [10, 20, 30]
    assert len(version_lines) == len(points)
    assert all(sum(p["labels_per_class"].values()) == p["n_labels"] for p in points)
    assert points[-1]["holdout_accuracy"] > points[0]["holdout_accuracy"]


def test_simulate_random_order_takes_open_tasks(served):
    url, env = served
    before = json.loads(urllib.request.urlopen(f"{url}/v1/report", timeout=10).read())["points"]
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "simulate", "--labels", "10", "--order", "random",
         "--retrain-every", "10", "--service", url, "--wait", "180", "--seed", "7"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    after = json.loads(result.stdout[result.stdout.index("{") :])["points"]
    assert len(after) == len(before) + 1
    assert after[-1]["n_labels"] == before[-1]["n_labels"] + 10
