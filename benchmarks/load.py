"""Load: 16 clients on /v1/predict (batch 1 and 8) while retrains are forced every 5 s and webhooks arrive at 20/s.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/load.py [--seconds 60] [--clients 16] [--workers 1] [--smoke]

Starts ``juicer serve`` (gunicorn, the real backbone, the Fashion-MNIST demo with a pool of 200, Label Studio
away so that only juicer is measured) on a fresh data folder. Half the clients send one new image per request,
half eight; every image is new to the service (distinct noise), so each request decodes, embeds and stores.
Meanwhile one thread forces a retrain every 5 s and another posts Label Studio webhooks (labels for pool items)
at 20 per second. Prints requests served, errors (goal 0), p50/p99 latency per batch size, retrains completed,
webhooks accepted and applied, and the peak RSS of the service's processes (master + workers).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.bad_inputs import PeakSampler, tree_rss_mb  # noqa: E402
from tests.support.served import ServedJuicer, data_folder, free_port, service_env  # noqa: E402

SECRET = "fault-suite-secret"


def noise(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, (28, 28), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.clients = 3, 2
    root = Path(tempfile.mkdtemp(prefix="juicer-load-"))
    data_dir = data_folder(root)
    port = free_port()
    env = service_env(data_dir, port, f"http://127.0.0.1:{free_port()}", "load",
                      JUICER_SERVICE__WORKERS=str(args.workers), JUICER_SERVICE__THREADS="16",
                      JUICER_SERVICE__RETRAIN_AFTER_LABELS="1000000")  # fmt: skip
    service = ServedJuicer(data_dir, port, env, args=["--demo-pool", "40" if args.smoke else "200", "--holdout", "20" if args.smoke else "100"])
    service.start()
    latencies: dict[int, list[float]] = {1: [], 8: []}
    errors: list[str] = []
    counters = {"retrains": 0, "retrain_requests": 0, "webhooks": 0, "webhooks_offered": 0}
    lock = threading.Lock()
    stop = threading.Event()
    seeds = iter(range(10**6, 10**9))
    with service.client() as client:
        pool = [row["id"] for row in client.get("/v1/items", params={"split": "pool", "limit": 200}).json()["items"]]
        classes = client.get("/v1/models/current").json()["classes"]

    def predictor(batch: int) -> None:
        with service.client(timeout_s=120) as client:
            while not stop.is_set():
                with lock:
                    images = [noise(next(seeds)) for _ in range(batch)]
                started = time.perf_counter()
                try:
                    response = client.post("/v1/predict", json={"images": images})
                    ok = response.status_code == 200
                    detail = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, detail = False, repr(exc)
                with lock:
                    (latencies[batch] if ok else errors).append(time.perf_counter() - started if ok else detail)

    def retrainer() -> None:
        with service.client() as client:
            while not stop.wait(5):
                job = client.post("/v1/retrain", params={"force": "true"})
                if job.status_code != 202:
                    errors.append(f"retrain {job.status_code}")
                counters["retrain_requests"] += 1

    webhook_latencies: list[float] = []

    def webhooks() -> None:
        """20 per second on a schedule, each sent from a pool (a slow answer does not slow the rate offered)."""
        from concurrent.futures import ThreadPoolExecutor

        hooks = httpx.Client(base_url=service.url, headers={"X-Juicer-Secret": SECRET}, timeout=60,
                             limits=httpx.Limits(max_connections=32))  # fmt: skip

        def send(n: int) -> None:
            item = pool[n % len(pool)]
            body = {"action": "ANNOTATION_CREATED", "task": {"id": n, "data": {"item_id": item}},
                    "annotation": {"id": 10_000 + n, "completed_by": 1, "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                   "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                               "value": {"choices": [classes[n % len(classes)]]}}]}}  # fmt: skip
            started = time.perf_counter()
            try:
                response = hooks.post("/v1/webhooks/label-studio", json=body)
                if response.status_code == 200:
                    with lock:
                        counters["webhooks"] += 1
                        webhook_latencies.append(time.perf_counter() - started)
                else:
                    errors.append(f"webhook {response.status_code}")
            except httpx.HTTPError as exc:
                errors.append(f"webhook {exc!r}")

        with ThreadPoolExecutor(max_workers=32) as senders:
            n = 0
            next_at = time.monotonic()
            while not stop.is_set():
                senders.submit(send, n)
                counters["webhooks_offered"] = n = n + 1
                next_at += 1 / 20
                time.sleep(max(0.0, next_at - time.monotonic()))
        hooks.close()

    idle = tree_rss_mb(service.process.pid)
    threads = [threading.Thread(target=predictor, args=(1 if i % 2 == 0 else 8,)) for i in range(args.clients)]
    threads += [threading.Thread(target=retrainer), threading.Thread(target=webhooks)]
    with PeakSampler(service.process.pid) as sampler:
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(args.seconds)
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    with service.client() as client:
        models = client.get("/v1/models").json()["models"]
        labelled = sum(1 for item in pool if client.get(f"/v1/items/{item}").json()["label"])
    service.stop()
    served = sum(len(v) for v in latencies.values())
    images = len(latencies[1]) + 8 * len(latencies[8])
    print(f"{args.clients} clients, {elapsed:.0f} s, {args.workers} worker(s) x 16 threads, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    print(f"requests served {served} ({images} images, {images / elapsed:.1f} images/s), errors {len(errors)}")
    for batch, values in latencies.items():
        print(f"  batch {batch}: {len(values)} requests, p50 {1000 * percentile(values, 0.5):.0f} ms, "
              f"p99 {1000 * percentile(values, 0.99):.0f} ms")  # fmt: skip
    print(f"retrains asked {counters['retrain_requests']}, model versions now {len(models)}; "
          f"webhooks offered {counters['webhooks_offered']} ({counters['webhooks_offered'] / elapsed:.1f}/s), accepted "
          f"{counters['webhooks']}, p50 {1000 * percentile(webhook_latencies, 0.5):.0f} ms, "
          f"p99 {1000 * percentile(webhook_latencies, 0.99):.0f} ms; pool items labelled {labelled}")
    print(f"peak RSS {sampler.peak:.0f} MB (idle {idle:.0f} MB)")
    for error in errors[:10]:
        print("  error:", error)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
