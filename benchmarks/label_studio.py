"""Label Studio figures: start (fresh, restart), memory, sending 1,000 items, pulling 1,000 labels, webhooks,
and re-scoring N queued tasks after a retrain, before (one PATCH per task) and after (bulk import + prune).

Starts its own Label Studio (from .venv-ls) on a free 127.0.0.1 port with a temporary data folder and stops it
at the end. Run from the repository root:
``.venv/bin/python benchmarks/label_studio.py [--items 1000] [--rescore 1000,10000] [--only-rescore] [--smoke]``.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulate.annotator import AnnotatorDesk  # noqa: E402
from annotation.models import ReviewRequest  # noqa: E402
from annotation.launcher import LabelStudioLauncher  # noqa: E402
from annotation.webhooks import SECRET_HEADER, check_secret, parse_webhook  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = REPO / "tests" / "unit" / "annotation" / "payloads" / "annotation_created.json"
CLASSES = ["cat", "cup", "person"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of ``pid`` in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def timed(call):
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def write_images(files_root: Path) -> list[str]:
    from PIL import Image
    from skimage import data

    files_root.mkdir(parents=True, exist_ok=True)
    for name in ("chelsea", "coffee", "astronaut"):
        Image.fromarray(getattr(data, name)()).convert("RGB").save(files_root / f"{name}.jpg")
    return ["chelsea.jpg", "coffee.jpg", "astronaut.jpg"]


class CountingTransport(httpx.HTTPTransport):
    """The real network, counting the requests made through it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.calls += 1
        return super().handle_request(request)


def patch_one_by_one(desk, project_id: int, requests) -> None:
    """What send_for_review did before bulk re-scoring: list the predictions, PATCH each task's newest (4 at a time)."""
    from annotation.reviews import prediction_body

    client = desk.client
    index = {str(t["data"]["item_id"]): int(t["id"]) for t in desk.reviews._list_tasks(project_id, "id,data")}
    listed = client.request("GET", "/api/predictions/", "listing", params={"project": project_id}, timeout=600).json()
    newest: dict[int, int] = {}
    for prediction in listed:
        newest[int(prediction["task"])] = max(newest.get(int(prediction["task"]), 0), int(prediction["id"]))

    def patch(request) -> None:
        task_id = index[request.item_id]
        client.request("PATCH", f"/api/predictions/{newest[task_id]}", "patching", json={"task": task_id, **prediction_body(request)})

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(patch, requests))
    desk.projects.follow_model_version(project_id, requests[-1].model_version)


def rescore_rows(
    server, token: str, images: list[str], sizes: list[int], rng: random.Random, before_max: int | None = None
) -> list[tuple[str, str]]:
    """Before/after figures for re-scoring ``n`` queued tasks, each on a project of its own."""
    rows: list[tuple[str, str]] = []

    def add(name: str, value: str) -> None:
        rows.append((name, value))
        print(f"{name}: {value}", flush=True)  # as it comes: a 10,000-task PATCH run takes many minutes

    for n in sizes:
        transport = CountingTransport()
        desk = AnnotatorDesk(server.url, token, files_root=server.files_root, timeout_s=600, transport=transport)
        project = desk.ensure_project(CLASSES, f"bench rescore {n}")
        first = [ReviewRequest(f"q-{i:05d}", images[i % 3], rng.choice(CLASSES), rng.random(), "v1") for i in range(n)]
        seconds, _ = timed(lambda: desk.send_for_review(project, first))
        add(f"queue {n} new tasks (bulk import)", f"{seconds:.1f} s")
        before = [ReviewRequest(r.item_id, r.image, rng.choice(CLASSES), rng.random(), "v2") for r in first]
        if before_max is not None and n > before_max:  # one PATCH per task: minutes per thousand on a loaded machine
            desk.send_for_review(project, before)
            add(f"re-score {n} queued tasks, before (PATCH each)", f"not run (--before-max {before_max})")
        else:
            transport.calls = 0
            seconds, _ = timed(lambda: patch_one_by_one(desk, project.id, before))
            add(f"re-score {n} queued tasks, before (PATCH each)", f"{seconds:.1f} s, {transport.calls} calls")
        after = [ReviewRequest(r.item_id, r.image, rng.choice(CLASSES), rng.random(), "v3") for r in first]
        transport.calls = 0
        seconds, _ = timed(lambda: desk.send_for_review(project, after))
        add(f"re-score {n} queued tasks, after (bulk import)", f"{seconds:.1f} s, {transport.calls} calls")
        again = [ReviewRequest(r.item_id, r.image, rng.choice(CLASSES), rng.random(), "v4") for r in first]
        transport.calls = 0
        seconds, _ = timed(lambda: desk.send_for_review(project, again))
        add(f"re-score {n} again (bulk)", f"{seconds:.1f} s, {transport.calls} calls")
        transport.calls = 0
        seconds, pruned = timed(lambda: desk.prune_predictions(project))
        add(f"prune job afterwards (drops {', '.join(pruned) or 'nothing'}, {n} predictions each)", f"{seconds:.1f} s, {transport.calls} calls")
        desk.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--rescore", default="1000", help="comma list of queue sizes to re-score (empty: none)")
    parser.add_argument("--only-rescore", action="store_true", help="skip the other figures")
    parser.add_argument("--before-max", type=int, default=None, help="measure the one-PATCH-per-task way only up to this size")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.items, args.rescore = 20, "20"
    sizes = [int(n) for n in args.rescore.split(",") if n.strip()]
    rows: list[tuple[str, str]] = []
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="juicer-ls-bench-") as tmp:
        root = Path(tmp)
        images = write_images(root / "files" / "images")
        token = "bench-token-" + "0" * 20
        server = LabelStudioLauncher(
            REPO / ".venv-ls", root / "data", root / "files" / "images", port=free_port(),
            username="bench@juicer.test", password="bench-password", token=token,
        )  # fmt: skip
        try:
            seconds, _ = timed(lambda: server.start(wait=True, timeout_s=300))
            rows.append(("start, fresh data folder (to /health UP)", f"{seconds:.1f} s"))
            if args.only_rescore:
                rows.extend(rescore_rows(server, token, images, sizes, rng, args.before_max))
                return report(rows)
            rows.append(("RSS after start", f"{rss_mb(server.pid)[0]:.0f} MB"))
            seconds, _ = timed(server.stop)
            rows.append(("stop (SIGTERM)", f"{seconds:.1f} s"))
            seconds, _ = timed(lambda: server.start(wait=True, timeout_s=300))
            rows.append(("start, restart on the same data", f"{seconds:.1f} s"))

            desk = AnnotatorDesk(server.url, token, files_root=server.files_root, timeout_s=60)
            project = desk.ensure_project(CLASSES, "bench send")
            requests = [
                ReviewRequest(f"item-{i:05d}", images[i % 3], rng.choice(CLASSES), rng.random(), "v1")
                for i in range(args.items)
            ]
            seconds, tasks = timed(lambda: desk.send_for_review(project, requests))
            assert len(tasks) == args.items and all(t.created for t in tasks)
            rows.append((f"send {args.items} new items with predictions", f"{seconds:.1f} s ({args.items / seconds:.0f}/s)"))
            again = [ReviewRequest(r.item_id, r.image, r.label, rng.random(), "v2") for r in requests]
            seconds, tasks = timed(lambda: desk.send_for_review(project, again))
            assert not any(t.created for t in tasks)
            rows.append((f"re-send the {args.items} items (bulk re-score)", f"{seconds:.1f} s"))
            seconds, _ = timed(lambda: desk.next_task(project))
            rows.append((f"GET /next (uncertainty sampling, {args.items} tasks)", f"{seconds * 1000:.0f} ms"))

            labelled = desk.ensure_project(CLASSES, "bench pull")
            result = lambda label: [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]  # noqa: E731
            for start in range(0, args.items, 250):  # tasks with completed annotations, bulk-imported
                chunk = [
                    {"data": {"image": desk.image_url(images[i % 3]), "item_id": f"lab-{i:05d}"},
                     "annotations": [{"result": result(rng.choice(CLASSES))}]}
                    for i in range(start, min(start + 250, args.items))
                ]  # fmt: skip
                desk.client.sdk.projects.import_tasks(id=labelled.id, request=chunk)
            seconds, (events, cursor) = timed(lambda: desk.pull_labels(labelled))
            assert len(events) == args.items, len(events)
            rows.append((f"pull {args.items} labels (first pull)", f"{seconds:.2f} s"))
            seconds, (events, _) = timed(lambda: desk.pull_labels(labelled, cursor))
            assert events == []
            rows.append((f"pull again, nothing new ({args.items} labelled)", f"{seconds:.2f} s"))
            rows.append(("cursor size (JSON)", f"{len(cursor.to_json()) / 1024:.0f} KiB"))

            task = desk.next_task(project)
            seconds, _ = timed(lambda: desk.submit_annotation(task.task_id, "cat"))
            rows.append(("submit one annotation as the editor does", f"{seconds * 1000:.0f} ms"))
            rows.append(("RSS now / peak", "{:.0f} MB / {:.0f} MB".format(*rss_mb(server.pid))))
            desk.close()
            rows.extend(rescore_rows(server, token, images, sizes, rng, args.before_max))
        finally:
            server.stop()

    payload = json.loads(PAYLOAD.read_text())
    headers = {"Content-Type": "application/json", SECRET_HEADER: "a-shared-secret-value"}
    n = 20_000
    started = time.perf_counter()
    for _ in range(n):
        assert check_secret(headers, "a-shared-secret-value")
        parse_webhook(payload)
    per_call = (time.perf_counter() - started) / n
    rows.append(("webhook on our side (check_secret + parse_webhook)", f"{per_call * 1e6:.0f} µs"))

    return report(rows)


def report(rows: list[tuple[str, str]]) -> int:
    """Print the figures as a table; 0."""
    width = max(len(name) for name, _ in rows)
    with open("/proc/loadavg") as load:
        print(f"load average at the end: {load.read().split()[0]} ({len(__import__('os').sched_getaffinity(0))} CPUs)")
    print(f"{'Label Studio 1.23.2 on 127.0.0.1':<{width}}  figure")
    print("-" * (width + 22))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
