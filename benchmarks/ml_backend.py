"""juicer as Label Studio's ML backend: "Retrieve predictions" on N tasks, beside the raw embedding throughput.

Starts its own Label Studio (from .venv-ls, allowed to call juicer on 127.0.0.1) and a juicer service on free
loopback ports, with a temporary data folder (so every image is embedded cold, as a new project's would be). For
each size: a project of its own made through the SDK, N Fashion-MNIST PNGs uploaded to Label Studio, juicer
connected through ``POST /api/ml``, and the Data Manager's "Retrieve predictions" action timed end to end (Label
Studio fetches nothing itself: juicer reads each upload back from Label Studio, embeds, answers). Then the same
backbone embeds N other PNGs straight from memory (images/s), in the same run, for comparison.

Run from the repository root: ``.venv/bin/python benchmarks/ml_backend.py [--sizes 200,1000] [--smoke]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-ml-token-123"
CONFIG = '<View><Image name="photo" value="$img"/><Choices name="garment" toName="photo">{}</Choices></View>'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PredictLog(logging.Handler):
    """Keeps juicer's own per-request timing lines (read images, embed, total)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "predictions for" in record.getMessage():
            self.lines.append(record.getMessage())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="200,1000")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.sizes = "4"
    sizes = [int(n) for n in args.sizes.split(",")]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from label_studio_sdk import LabelStudio
    from werkzeug.serving import make_server

    from annotation.launcher import LabelStudioLauncher
    from app import create_app
    from app.core.demo import encode_png, seed_demo
    from app.worker.scheduler import Scheduler
    from app.services import build_services
    from app.store import Store
    from config import load_settings
    from learner.backbones import load_backbone, resolve_backbone
    from learner.cache import EmbeddingCache, embed_sources
    from learner.datasets import load_fashion_mnist
    from learner.images import BytesImage

    log = PredictLog()
    logging.getLogger("app.http.ml_backend").addHandler(log)
    logging.getLogger("app.http.ml_backend").setLevel(logging.INFO)
    rows: list[tuple[str, str]] = []
    dataset = load_fashion_mnist("/usr/share/datasets/fashion-mnist", per_class_limit=(2 * sum(sizes) + 200) // 10 + 10, seed=7)
    with tempfile.TemporaryDirectory(prefix="juicer-ml-bench-") as tmp:
        root = Path(tmp)
        ls_token = "bench-ls-token-" + "0" * 20
        server = LabelStudioLauncher(
            REPO / ".venv-ls", root / "ls", root / "files" / "images", port=free_port(), username="bench@juicer.test",
            password="bench-password", token=ls_token, ml_backend_address="127.0.0.1",
        )  # fmt: skip
        server.start(wait=True, timeout_s=300)
        port = free_port()
        settings = load_settings(
            environ={}, data_dir=root / "juicer", service={"api_token": TOKEN, "port": port, "pull_interval_s": 3600},
            label_studio={"url": server.url, "token": ls_token, "timeout_s": 60},
        )  # fmt: skip
        store = Store.open(settings.data_dir)
        store.set_meta("classes", list(dataset.class_names))
        seed_demo(store, settings.data_dir, dataset, n_pool=0, n_holdout=20, seed=1)
        backbone = load_backbone(resolve_backbone("efficientnet-lite0", REPO / "data"), batch_size=32)
        services = build_services(settings, store=store, backbone=backbone)
        services.trainer.retrain(reason="first model")
        http_server = make_server("127.0.0.1", port, create_app(services=services), threaded=True)
        threading.Thread(target=http_server.serve_forever, daemon=True).start()
        jobs = Scheduler(services)
        jobs.start()
        rows_left = [row for row in range(len(dataset)) if store.get_item(dataset.item_ids[row]) is None]
        try:
            ls = LabelStudio(base_url=server.url, api_key=ls_token, timeout=600)
            headers = {"Authorization": f"Token {ls_token}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=600) as http:
                for n in sizes:
                    picked, rows_left = rows_left[:n], rows_left[n:]
                    choices = "".join(f'<Choice value="{c}"/>' for c in dataset.class_names)
                    project = ls.projects.create(title=f"ml bench {n}", label_config=CONFIG.format(choices))
                    files = [(f"f{row}", (f"fm{row}.png", encode_png(dataset.sources[row].array), "image/png")) for row in picked]
                    for start in range(0, n, 50):
                        http.post(f"/api/projects/{project.id}/import", files=files[start : start + 50]).raise_for_status()
                    connected = http.post("/api/ml", json={
                        "url": f"http://127.0.0.1:{port}/label-studio-ml", "project": project.id, "title": "juicer",
                        "auth_method": "BASIC_AUTH", "basic_auth_user": "ls", "basic_auth_pass": TOKEN,
                    })  # fmt: skip
                    connected.raise_for_status()
                    started = time.perf_counter()
                    http.post(
                        "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project.id},
                        json={"selectedItems": {"all": True, "excluded": []}},
                    ).raise_for_status()  # fmt: skip
                    seconds = time.perf_counter() - started
                    made = http.get("/api/predictions/", params={"project": project.id}).json()
                    assert len({p["task"] for p in made}) == n, f"{len(made)} predictions for {n} tasks"
                    rows.append((f"Retrieve predictions, {n} tasks (end to end)", f"{seconds:.1f} s ({n / seconds:.0f} images/s)"))
                    rows.append((f"  juicer's side of it", log.lines[-1].split("(", 1)[-1].rstrip(")") if log.lines else "?"))
                    picked_raw, rows_left = rows_left[:n], rows_left[n:]
                    cache = EmbeddingCache(root / f"raw-cache-{n}", backbone.id)
                    sources = [BytesImage(encode_png(dataset.sources[row].array), f"raw-{row}") for row in picked_raw]
                    started = time.perf_counter()
                    embed_sources(backbone, cache, sources, progress=False)
                    seconds = time.perf_counter() - started
                    rows.append((f"raw embedding, {n} PNGs from memory (same run)", f"{seconds:.1f} s ({n / seconds:.0f} images/s)"))
        finally:
            jobs.shutdown(wait=False)
            http_server.shutdown()
            server.stop()
            store.close()
    with open("/proc/loadavg") as load:
        print(f"load average at the end: {load.read().split()[0]} ({len(os.sched_getaffinity(0))} CPUs); backbone on {getattr(backbone, 'device', '?')}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
