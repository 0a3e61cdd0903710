"""Uncertainty order against random order, end to end through the real Label Studio, from 1 label per class.

For each order this starts a fresh ``juicer serve`` (the Fashion-MNIST demo: 1 labelled image per class, a pool,
a holdout; its own Label Studio) in a data folder of its own, runs ``juicer simulate --labels N --order ORDER``
against it, stops it, and keeps the report. It ends with one table: holdout accuracy against labels for both.

    .venv/bin/python benchmarks/simulate.py [--labels 300] [--retrain-every 20] [--keep DIR] [--smoke]

The service's own label-count trigger is turned off (``service.retrain_after_labels`` huge), so every version
comes from the simulation's retrains at the same label counts in both runs; the service's query strategy follows
the order (``least_confidence`` for uncertainty, ``random``), so the random run sends a random sample of the pool to Label Studio.
Takes several minutes (two Label Studio first starts, embedding the demo images, 2 x N annotations).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, deadline_s: float, log: Path) -> None:
    """Poll ``/readyz`` until it answers 200, the process dies, or the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"juicer serve exited with {process.returncode}; log {log}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"juicer serve was not ready within {deadline_s:g} s; log {log}:\n{log.read_text()[-3000:]}")


def run_order(order: str, args: argparse.Namespace, workdir: Path) -> dict:
    """One fresh service + Label Studio, one simulation; the report JSON and the wall time."""
    data = workdir / f"data-{order}"
    data.mkdir(parents=True, exist_ok=True)
    shared = ROOT / "data" / "backbones"  # the converted backbone: reuse it rather than convert it per run
    if shared.exists() and not (data / "backbones").exists():
        (data / "backbones").symlink_to(shared.resolve(), target_is_directory=True)
    service_port, studio_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "JUICER_DATA_DIR": str(data),
        "JUICER_SERVICE__PORT": str(service_port),
        "JUICER_LABEL_STUDIO__PORT": str(studio_port),
        "JUICER_SERVICE__QUERY_STRATEGY": args.uncertainty_strategy if order == "uncertainty" else "random",
        "JUICER_SERVICE__RETRAIN_AFTER_LABELS": "1000000",
        "JUICER_SERVICE__REVIEW_BATCH_SIZE": str(args.review_batch),
        "JUICER_SERVICE__DEMO_POOL": str(args.pool),
        "JUICER_SERVICE__DEMO_HOLDOUT": str(args.holdout),
        "JUICER_LABEL_STUDIO__VENV": str(ROOT / ".venv-ls"),
    }
    log = workdir / f"serve-{order}.log"
    started = time.monotonic()
    with log.open("w") as out:
        serve = subprocess.Popen(
            [PYTHON, "-m", "app.cli", "serve"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{service_port}"
        wait_ready(url, serve, args.start_timeout, log)
        ready_s = time.monotonic() - started
        print(f"[{order}] service ready after {ready_s:.0f} s; simulating {args.labels} labels", flush=True)
        sim_started = time.monotonic()
        simulate = subprocess.run(
            [PYTHON, "-m", "app.cli", "simulate", "--labels", str(args.labels), "--order", order,
             "--retrain-every", str(args.retrain_every), "--service", url, "--seed", str(args.seed)],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )  # fmt: skip
        sim_s = time.monotonic() - sim_started
        print(simulate.stdout[: simulate.stdout.find("{")] if "{" in simulate.stdout else simulate.stdout, end="")
        if simulate.returncode not in (0, 3):
            raise RuntimeError(f"juicer simulate failed ({simulate.returncode}):\n{simulate.stderr[-3000:]}")
        report = json.loads(simulate.stdout[simulate.stdout.index("{") :])
        return {"order": order, "report": report, "ready_s": ready_s, "simulate_s": sim_s}
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)  # juicer serve stops its scheduler and the Label Studio it started
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()


def table(runs: list[dict]) -> str:
    """Holdout accuracy by labels, one column per order."""
    by_order = {run["order"]: {p["n_labels"]: p["holdout_accuracy"] for p in run["report"]["points"]} for run in runs}
    counts = sorted({n for points in by_order.values() for n in points})
    orders = [run["order"] for run in runs]
    lines = [f"{'labels':>7}  " + "  ".join(f"{o:>11}" for o in orders), "-" * (9 + 13 * len(orders))]
    for n in counts:
        cells = []
        for order in orders:
            accuracy = by_order[order].get(n)
            cells.append(f"{'-' if accuracy is None else f'{100 * accuracy:.1f}%':>11}")
        lines.append(f"{n:>7}  " + "  ".join(cells))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=300)
    parser.add_argument("--retrain-every", type=int, default=20)
    parser.add_argument("--review-batch", type=int, default=40, help="service.review_batch_size for both runs")
    parser.add_argument("--orders", default="uncertainty,random")
    parser.add_argument(
        "--uncertainty-strategy", default="least_confidence", help="service.query_strategy of the uncertainty run"
    )
    parser.add_argument("--pool", type=int, default=1000, help="demo pool size (service.demo_pool)")
    parser.add_argument("--holdout", type=int, default=1000, help="demo holdout size (service.demo_holdout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start-timeout", type=float, default=900)
    parser.add_argument("--keep", type=Path, help="keep data folders and logs here (default: a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:  # one order: the other runs the same code with another strategy
        args.labels, args.retrain_every, args.review_batch, args.orders = 10, 10, 10, "uncertainty"
        args.pool, args.holdout = 40, 40
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="juicer-bench-simulate-"))
    runs = []
    try:
        for order in args.orders.split(","):
            try:
                runs.append(run_order(order, args, workdir))
            except RuntimeError as exc:  # report it and still measure the other order
                print(f"[{order}] failed: {exc}", file=sys.stderr)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if not runs:
        return 1
    print()
    print(f"holdout accuracy against labels (Fashion-MNIST demo, retrain every {args.retrain_every} labels)")
    print(table(runs))
    for run in runs:
        print(f"{run['order']}: service ready in {run['ready_s']:.0f} s, simulation {run['simulate_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
