"""Scaling: /v1/predict under 16 clients against 1, 2 and 4 gunicorn workers, on SQLite and on PostgreSQL, in one run;
then the scheduler failover (SIGKILL of the lease holder) on each database.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/scaling.py [--seconds 60] [--clients 16] [--workers 1 2 4]
                                                          [--stores sqlite postgresql] [--no-failover] [--smoke]

Each configuration starts ``juicer serve --workers N`` (the real backbone, the Fashion-MNIST demo with a pool of
100, Label Studio away so only juicer is measured) on a fresh data folder sharing the repository's embedding cache;
PostgreSQL is a throwaway cluster (the tests' :class:`PostgresServer`). Every client sends one new image per request
(distinct noise: each request decodes, embeds, predicts and stores). Prints per configuration: requests/s, p50/p99
latency, errors (goal 0), and the RSS of each worker process; the ratio to 1 worker on the same database.

Failover: with 4 workers, 30 label webhooks are recorded, the worker holding the scheduler lease (``pid`` of
``juicer_scheduler_running 1`` in /metrics) is SIGKILLed, and the time until another worker reports holding it is
measured; then every recorded webhook must have become a label (lost labels, goal 0) and no review task may have
left the outbox (lost deliveries, goal 0: every task is still pending, sent, failed or labelled; Label Studio is
away, so none can be sent: delivery across a SIGKILL is the fault suite's, tests/integration/faults).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from benchmarks.load import noise, percentile  # noqa: E402
from tests.conftest import PostgresServer  # noqa: E402
from tests.support.served import ServedJuicer, data_folder, free_port, service_env  # noqa: E402

SECRET = "fault-suite-secret"


def workers_of(master_pid: int) -> dict[int, float]:
    """{pid: RSS MB} of the gunicorn master's child processes."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) != master_pid:  # field 4: parent pid
                continue
            rss = next(int(line.split()[1]) for line in (entry / "status").read_text().splitlines() if line.startswith("VmRSS:"))
            found[int(entry.name)] = rss / 1024
        except (OSError, ValueError, IndexError, StopIteration):
            continue
    return found


def metric_values(service: ServedJuicer, name: str, label: str) -> dict[str, float]:
    """{label value: sample value} of the samples called ``name`` in one scrape of /metrics (with the API token)."""
    with service.client(timeout_s=10) as client:
        text = client.get("/metrics").text
    return {
        sample.labels[label]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def review_tasks(service: ServedJuicer) -> dict[str, float]:
    """{status: review tasks} from /metrics (the store's outbox)."""
    return metric_values(service, "juicer_review_tasks", "status")


def scheduler_pids(service: ServedJuicer) -> dict[str, float]:
    """{pid: juicer_scheduler_running} from one scrape (every live worker has a series)."""
    return metric_values(service, "juicer_scheduler_running", "pid")


def start(store: str, workers: int, pg: PostgresServer | None) -> ServedJuicer:
    root = Path(tempfile.mkdtemp(prefix=f"juicer-scale-{store}-{workers}-"))
    data_dir = data_folder(root)
    port = free_port()
    extra = {"JUICER_SERVICE__WORKERS": str(workers), "JUICER_SERVICE__THREADS": "16",
             "JUICER_SERVICE__RETRAIN_AFTER_LABELS": "1000000"}  # fmt: skip
    if store == "postgresql":
        extra["JUICER_STORE__URL"] = pg.new_database()
    env = service_env(data_dir, port, f"http://127.0.0.1:{free_port()}", "scale", **extra)
    service = ServedJuicer(data_dir, port, env, args=["--demo-pool", "100", "--holdout", "100"])
    service.start(timeout_s=900)
    service.wait_for(lambda: len(scheduler_pids(service)) == workers, 600, f"{workers} workers loaded")
    return service


def load(service: ServedJuicer, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    seeds = iter(range(10**6, 10**9))

    def client_loop() -> None:
        with service.client(timeout_s=120) as client:
            while not stop.is_set():
                with lock:
                    image = noise(next(seeds))
                started = time.perf_counter()
                try:
                    response = client.post("/v1/predict", json={"images": [image]})
                    ok, detail = response.status_code == 200, f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, detail = False, repr(exc)
                with lock:
                    (latencies.append(time.perf_counter() - started) if ok else errors.append(detail))

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    rss = workers_of(service.process.pid)  # under load
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {"rps": len(latencies) / elapsed, "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
            "errors": errors, "n": len(latencies), "rss": rss}  # fmt: skip


def failover(service: ServedJuicer) -> dict:
    with service.client() as client:
        pool = [row["id"] for row in client.get("/v1/items", params={"split": "pool", "limit": 30}).json()["items"]]
        classes = client.get("/v1/models/current").json()["classes"]
    outbox_before = review_tasks(service)
    hooks = httpx.Client(base_url=service.url, headers={"X-Juicer-Secret": SECRET}, timeout=30)
    for n, item in enumerate(pool):
        body = {"action": "ANNOTATION_CREATED", "task": {"id": n, "data": {"item_id": item}},
                "annotation": {"id": 50_000 + n, "completed_by": 1, "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                           "value": {"choices": [classes[n % len(classes)]]}}]}}  # fmt: skip
        assert hooks.post("/v1/webhooks/label-studio", json=body).status_code == 200
    hooks.close()
    holder = next(pid for pid, value in scheduler_pids(service).items() if value == 1)
    os.kill(int(holder), signal.SIGKILL)
    killed = time.monotonic()

    def new_holder():
        try:
            return next((pid for pid, value in scheduler_pids(service).items() if value == 1 and pid != holder), None)
        except httpx.HTTPError:
            return None

    taker = service.wait_for(new_holder, 120, "another worker holding the scheduler lease")
    takeover_s = time.monotonic() - killed
    with service.client() as client:

        def labelled() -> int:
            return sum(1 for item in pool if client.get(f"/v1/items/{item}").json()["label"])

        service.wait_for(lambda: labelled() == len(pool), 60, "every webhook applied as a label")
        applied_s = time.monotonic() - killed
        labels_lost = len(pool) - labelled()
    outbox_after = review_tasks(service)
    return {"holder": holder, "taker": taker, "takeover_s": takeover_s, "applied_s": applied_s, "labels_lost": labels_lost,
            "outbox_before": outbox_before, "outbox_after": outbox_after,
            "deliveries_lost": int(sum(outbox_before.values()) - sum(outbox_after.values()))}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--no-failover", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:  # one configuration; the failover needs a second worker to take the lease over
        args.seconds, args.clients, args.workers, args.stores, args.no_failover = 3, 2, [1], ["sqlite"], True
    pg = PostgresServer().start() if "postgresql" in args.stores else None
    results: dict[tuple[str, int], dict] = {}
    failovers: dict[str, dict] = {}
    try:
        for store in args.stores:
            for workers in args.workers:
                service = start(store, workers, pg)
                try:
                    results[store, workers] = result = load(service, args.clients, args.seconds)
                    print(f"{store:10s} {workers} worker(s): {result['rps']:6.1f} req/s, p50 {1000 * result['p50']:.0f} ms, "
                          f"p99 {1000 * result['p99']:.0f} ms, errors {len(result['errors'])}, RSS per worker "
                          f"{', '.join(f'{mb:.0f}' for mb in sorted(result['rss'].values()))} MB, "
                          f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
                    if workers == max(args.workers) and not args.no_failover:
                        failovers[store] = failover(service)
                        print(f"{store:10s} failover: {failovers[store]}", flush=True)
                finally:
                    service.stop()
    finally:
        if pg is not None:
            pg.stop()
    print(f"\n{args.clients} clients, {args.seconds:.0f} s each, /v1/predict batch 1, Label Studio away; "
          f"{os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.1f} (other work shares this machine)")
    print("store       workers  req/s   x1     p50 ms  p99 ms  errors  RSS/worker MB (mean)")
    for (store, workers), result in results.items():
        base = results.get((store, min(args.workers)), result)["rps"]
        rss = result["rss"].values()
        print(f"{store:10s}  {workers:7d}  {result['rps']:5.1f}  {result['rps'] / base:4.2f}  {1000 * result['p50']:6.0f}  "
              f"{1000 * result['p99']:6.0f}  {len(result['errors']):6d}  {sum(rss) / max(1, len(rss)):.0f}")  # fmt: skip
    for store, outcome in failovers.items():
        print(f"failover on {store}: lease taken over {outcome['takeover_s']:.1f} s after the SIGKILL, all 30 webhook labels "
              f"applied after {outcome['applied_s']:.1f} s; labels lost {outcome['labels_lost']}, deliveries lost "
              f"{outcome['deliveries_lost']}")  # fmt: skip
    for result in results.values():
        for error in result["errors"][:5]:
            print("  error:", error)
    return 1 if any(result["errors"] for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
