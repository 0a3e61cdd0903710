"""/v1/predict against calling the backbone and head directly, on the same images in the same run.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/predict.py [--n-single 60] [--n-batches 6]

The service runs in this process behind a real threaded werkzeug server on 127.0.0.1 and is called over
HTTP (httpx, keep-alive). Both paths start from the same encoded PNG bytes; the direct path decodes, embeds
and runs the head and the decision rule; the HTTP path also parses the request, hashes, writes the image
file, the embedding cache, the prediction and the outbox row in one transaction. Every image is new to
the service when it is sent (the embedding cache would otherwise skip the backbone and flatter HTTP).
Targets (issue 4): HTTP adds at most 15% at batch 1; batch-32 throughput at least 85% of the direct path.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-single", type=int, default=60, help="batch-1 requests per path")
    parser.add_argument("--n-batches", type=int, default=6, help="batch-32 requests per path")
    parser.add_argument("--backbone", default="efficientnet-lite0")
    args = parser.parse_args()

    import logging

    import httpx
    import numpy as np
    from werkzeug.serving import make_server

    from app import create_app
    from app.core.datadir import write_image
    from app.core.demo import encode_png, seed_demo
    from app.services import build_services
    from app.store import Store
    from learner.rules import rule_params
    from config import load_settings
    from learner.backbones import load_backbone, resolve_backbone
    from learner.datasets import load_fashion_mnist
    from learner.images import decode_image
    from learner.rules import decide

    n_needed = args.n_single * 2 + args.n_batches * 32 * 2 + 20
    dataset = load_fashion_mnist("/usr/share/datasets/fashion-mnist", per_class_limit=n_needed // 10 + 60, seed=11)
    spec = resolve_backbone(args.backbone, REPO / "data")
    backbone = load_backbone(spec, batch_size=32)
    print(f"backbone {spec.name} at {spec.input_size}, batch {backbone.batch_size}, {backbone.device}")

    with tempfile.TemporaryDirectory(prefix="juicer-bench-") as tmp:
        data_dir = Path(tmp)
        port = _free_port()
        settings = load_settings(environ={}, data_dir=data_dir, service={"port": port, "max_images_per_request": 64})
        store = Store.open(data_dir)
        store.set_meta("classes", list(dataset.class_names))
        seed_demo(store, data_dir, dataset, n_pool=0, n_holdout=100, seed=1)
        # 5 labels per class so the head is a real one.
        from app.store import NewItem, NewLabel
        from learner.images import content_hash

        used = {row.id for split in ("seed", "holdout") for row in store.items_of_split(split)}
        fresh = [i for i, item_id in enumerate(dataset.item_ids) if item_id not in used]
        extra = fresh[:40]
        items, labels = [], []
        for i in extra:
            data = encode_png(dataset.sources[i].array)
            digest = content_hash(data)
            items.append(NewItem(dataset.item_ids[i], digest, dataset.item_ids[i], "seed", write_image(data_dir, digest, "png", data)))
            labels.append(NewLabel(dataset.item_ids[i], dataset.class_names[dataset.labels[i]], "seed"))
        store.add_items(items)
        store.add_labels(labels)

        services = build_services(settings, store=store, backbone=backbone)
        services.desk = None  # no Label Studio: the jobs that need it wait
        result = services.trainer.retrain(reason="benchmark", refresh_queue=False)
        model = services.models.current
        print(f"model {result.version}: {result.n_labels} labels, holdout accuracy {result.holdout_accuracy:.1%}")

        rest = fresh[40:]
        pngs = [encode_png(dataset.sources[i].array) for i in rest]
        singles = pngs[: args.n_single]
        batches = [pngs[args.n_single + k * 32 : args.n_single + (k + 1) * 32] for k in range(args.n_batches)]
        warm = pngs[-20:]
        size = tuple(backbone.input_size)
        params = rule_params(settings.service.decision_rule, settings.service.decision_threshold)

        def direct(images: list[bytes]) -> None:
            pixels = np.stack([decode_image(data, size, source="bench") for data in images])
            proba = model.proba(backbone.embed(pixels))
            decide(proba, settings.service.decision_rule, **params)

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log lines in the table
        app = create_app(services=services)
        http = make_server("127.0.0.1", port, app, threaded=True)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)

        def over_http(images: list[bytes]) -> None:
            body = {"images": [base64.b64encode(data).decode() for data in images]}
            response = client.post("/v1/predict", json=body)
            response.raise_for_status()

        for data in warm[:10]:
            direct([data])
        over_http(warm[10:12])
        direct(warm[:20])

        def timed(function, images) -> float:
            started = time.perf_counter()
            function(images)
            return time.perf_counter() - started

        # Interleave the two paths so drift on a shared machine hits both alike. The direct path never writes
        # the cache, so each image is still new to the service when HTTP sends it.
        direct_single, http_single = [], []
        for data in singles:
            direct_single.append(timed(direct, [data]))
            http_single.append(timed(over_http, [data]))
        direct_batch, http_batch = [], []
        for batch in batches:
            direct_batch.append(timed(direct, batch))
            http_batch.append(timed(over_http, batch))
        client.close()
        http.shutdown()
        store.close()

    d50, d95 = statistics.median(direct_single), _percentile(direct_single, 0.95)
    h50, h95 = statistics.median(http_single), _percentile(http_single, 0.95)
    d_tp = 32 * len(direct_batch) / sum(direct_batch)
    h_tp = 32 * len(http_batch) / sum(http_batch)
    print()
    print(f"{'path':<10} {'batch-1 p50 ms':>15} {'batch-1 p95 ms':>15} {'batch-32 img/s':>15}")
    print(f"{'direct':<10} {d50 * 1000:>15.1f} {d95 * 1000:>15.1f} {d_tp:>15.1f}")
    print(f"{'HTTP':<10} {h50 * 1000:>15.1f} {h95 * 1000:>15.1f} {h_tp:>15.1f}")
    overhead = h50 / d50 - 1
    ratio = h_tp / d_tp
    print()
    print(f"HTTP overhead at batch 1 (p50): {overhead:+.1%}  (target <= +15%: {'met' if overhead <= 0.15 else 'NOT met'})")
    print(f"HTTP throughput at batch 32: {ratio:.1%} of direct  (target >= 85%: {'met' if ratio >= 0.85 else 'NOT met'})")
    print(f"({len(singles)} single requests, {len(batches)} batches of 32 per path)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
