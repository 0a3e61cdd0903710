"""/v1/predict against calling the backbone and head directly, on the same images in the same run.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/predict.py [--n-single 60] [--n-batches 6] [--profile FILE] [--smoke]

The service runs in this process behind a real threaded werkzeug server on 127.0.0.1 and is called over
HTTP (the standard library's keep-alive connection, or ``--client httpx``) with the API token as an application sends it (``Authorization: Bearer``, read from
the settings: generated into ``<data_dir>/secrets/api-token`` on first start, never on the command line).
Both paths start from the same encoded PNG bytes; the direct path decodes, embeds and runs the head and the
decision rule; the HTTP path also parses the request, hashes, writes the image file, the embedding cache, the
prediction and the outbox row in one transaction. Every image is new to the service when it is sent (the
embedding cache would otherwise skip the backbone and flatter HTTP).

The batch-1 requests are split by where their time went (mean ms per request): decode, backbone, cache write,
head, rules, request parsing (body, base64, hash, header checks), store write (image file, items, prediction,
outbox), JSON, the framework (Flask, spectree, guards: the server's time not in a named part) and HTTP (the
client's time not in the server). Parts that run on the service's helper threads (the embedding-cache writer)
are listed apart, "(beside)": they overlap the request's own thread and are not in its sum. ``--profile FILE`` also writes a cProfile of the server side of the batch-1
requests and prints its top functions. ``--smoke`` runs tiny sizes (seconds), to show the benchmark still runs.
Targets (issue 22): HTTP adds at most 15% at batch 1; batch-32 throughput at least 95% of the direct path.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import functools
import io
import json
import os
import pstats
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from http.client import HTTPConnection
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PARTS = ("guards", "request checks", "request", "decode", "backbone", "cache lookup", "cache write", "head", "rules",
         "store write", "JSON", "response checks")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Split:
    """Seconds per named part, counted only inside a request the server is handling (a thread-local flag)."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.seconds: dict[str, float] = defaultdict(float)
        self.server_seconds = 0.0
        self.recording = False
        self.in_request = False  # a request is being recorded (for the parts on its helper threads)
        self.profiler: cProfile.Profile | None = None

    def wrap(self, function, part: str):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            beside = threading.current_thread().name.startswith("juicer-")  # the service's helper threads
            if not (getattr(self.local, "inside", False) or (beside and self.in_request)):
                return function(*args, **kwargs)
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[f"{part} (beside)" if beside else part] += time.perf_counter() - started

        return timed

    def patch(self, owner, name: str, part: str) -> None:
        setattr(owner, name, self.wrap(getattr(owner, name), part))

    def middleware(self, wsgi_app):
        def app(environ, start_response):
            self.local.inside = self.in_request = self.recording
            profiler = self.profiler if self.recording else None
            started = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            try:
                return list(wsgi_app(environ, start_response))  # the body is built inside the timing
            finally:
                if profiler is not None:
                    profiler.disable()
                if self.recording:
                    self.server_seconds += time.perf_counter() - started
                self.local.inside = self.in_request = False

        return app


def flush(services) -> None:
    """Wait for the embedding-cache writes the service does behind its answers (where it has them)."""
    flush_writes = getattr(services.embeddings, "flush", None)
    if flush_writes is not None:
        flush_writes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-single", type=int, default=60, help="batch-1 requests per path")
    parser.add_argument("--n-batches", type=int, default=6, help="batch-32 requests per path")
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile of the batch-1 requests here")
    parser.add_argument("--client", choices=("stdlib", "httpx"), default="stdlib",
                        help="the HTTP client: the standard library's keep-alive connection (the least a client adds) "
                        "or httpx (about 1.5 ms more a request here)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.n_single, args.n_batches = 3, 1

    import logging

    import httpx
    import numpy as np
    from werkzeug.serving import make_server

    import app.http.api.predict as predict_route
    import learner.images
    import learner.rules
    from app import create_app
    from app.core.datadir import write_image
    from app.core.demo import encode_png, seed_demo
    from app.core.secrets import api_token, resolve_secrets
    from app.core.serving import HeldVectors, ServingModel
    from app.http.openapi import _Checks
    from app.services import build_services
    from app.store import NewItem, NewLabel, Store
    from config import load_settings
    from learner.backbones import load_backbone, resolve_backbone
    from learner.cache import EmbeddingCache
    from learner.datasets import load_fashion_mnist
    from learner.images import content_hash, decode_image
    from learner.rules import decide, rule_params

    n_needed = args.n_single * 2 + args.n_batches * 32 * 2 + 20
    dataset = load_fashion_mnist("/usr/share/datasets/fashion-mnist", per_class_limit=n_needed // 10 + 60, seed=11)
    spec = resolve_backbone(args.backbone, REPO / "data")
    backbone = load_backbone(spec, batch_size=32)
    print(f"backbone {spec.name} at {spec.input_size}, batch {backbone.batch_size}, {backbone.device}")

    with tempfile.TemporaryDirectory(prefix="juicer-bench-") as tmp:
        data_dir = Path(tmp)
        port = _free_port()
        settings = load_settings(environ={}, data_dir=data_dir, service={"port": port, "max_images_per_request": 64})
        settings = resolve_secrets(settings)  # the token juicer serve would generate, in <data_dir>/secrets
        token = api_token(settings)
        store = Store.open(data_dir)
        store.set_meta("classes", list(dataset.class_names))
        seed_demo(store, data_dir, dataset, n_pool=0, n_holdout=100, seed=1)
        # 5 labels per class so the head is a real one.
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
        direct_parts: dict[str, float] = defaultdict(float)

        def direct(images: list[bytes], parts: dict[str, float] | None = None) -> None:
            clock = time.perf_counter()
            pixels = np.stack([decode_image(data, size, source="bench") for data in images])
            features = backbone.embed(pixels)
            after_backbone = time.perf_counter()
            proba = model.proba(features)
            after_head = time.perf_counter()
            decide(proba, settings.service.decision_rule, **params)
            if parts is not None:
                parts["decode + backbone"] += after_backbone - clock
                parts["head"] += after_head - after_backbone
                parts["rules"] += time.perf_counter() - after_head

        split = Split()
        split.patch(predict_route, "request_uploads", "request")
        split.patch(learner.images, "decode_image", "decode")
        split.patch(backbone, "embed", "backbone")  # the instance: the direct path's calls are outside requests
        split.patch(EmbeddingCache, "put_many", "cache write")
        split.patch(ServingModel, "proba", "head")
        split.patch(learner.rules, "decide", "rules")
        split.patch(predict_route, "items_for_uploads", "store write")
        split.patch(services.store, "record_predictions", "store write")
        split.patch(predict_route, "jsonify", "JSON")
        split.patch(HeldVectors, "lookup", "cache lookup")
        split.patch(_Checks, "request_validation", "request checks")
        split.patch(_Checks, "validate_response", "response checks")

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log lines in the table
        app = create_app(services=services)
        app.preprocess_request = split.wrap(app.preprocess_request, "guards")  # Host, token, origin, metrics
        app.wsgi_app = split.middleware(app.wsgi_app)
        http = make_server("127.0.0.1", port, app, threaded=True)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if args.client == "httpx":
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120, headers=headers)

            def over_http(images: list[bytes]) -> None:
                body = {"images": [base64.b64encode(data).decode() for data in images]}
                client.post("/v1/predict", json=body).raise_for_status()

        else:  # the standard library's keep-alive connection: the least a client can add
            client = HTTPConnection("127.0.0.1", port, timeout=120)

            def over_http(images: list[bytes]) -> None:
                body = json.dumps({"images": [base64.b64encode(data).decode() for data in images]}).encode()
                client.request("POST", "/v1/predict", body=body, headers=headers)
                answer = client.getresponse()
                text = answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"/v1/predict answered {answer.status}: {text[:300]!r}")

        for data in warm[:10]:
            direct([data])
        over_http(warm[10:12])
        over_http(warm[12:13])
        direct(warm[:20])

        def timed(function, images) -> float:
            started = time.perf_counter()
            function(images)
            return time.perf_counter() - started

        # Interleave the two paths so drift on a shared machine hits both alike. The direct path never writes
        # the cache, so each image is still new to the service when HTTP sends it.
        split.profiler = cProfile.Profile() if args.profile else None
        direct_single, http_single = [], []
        for data in singles:
            direct_single.append(timed(functools.partial(direct, parts=direct_parts), [data]))
            split.recording = True
            http_single.append(timed(over_http, [data]))
            split.recording = False
            flush(services)  # the cache write behind the answer must not land in the next direct timing
        direct_batch, http_batch = [], []
        for batch in batches:
            direct_batch.append(timed(direct, batch))
            http_batch.append(timed(over_http, batch))
            flush(services)
        client.close()
        http.shutdown()
        store.close()

    load = os.getloadavg()
    d50, d95 = statistics.median(direct_single), _percentile(direct_single, 0.95)
    h50, h95 = statistics.median(http_single), _percentile(http_single, 0.95)
    d_tp = 32 * len(direct_batch) / sum(direct_batch)
    h_tp = 32 * len(http_batch) / sum(http_batch)
    print()
    print(f"{'path':<10} {'batch-1 p50 ms':>15} {'batch-1 p95 ms':>15} {'batch-32 img/s':>15}")
    print(f"{'direct':<10} {d50 * 1000:>15.1f} {d95 * 1000:>15.1f} {d_tp:>15.1f}")
    print(f"{'HTTP':<10} {h50 * 1000:>15.1f} {h95 * 1000:>15.1f} {h_tp:>15.1f}")

    n = len(singles)
    print()
    print("where a batch-1 request's time goes (mean ms per request)")
    print(f"{'part':<20} {'direct':>8} {'HTTP':>8}")
    direct_named = {"decode + backbone": direct_parts["decode + backbone"], "head": direct_parts["head"],
                    "rules": direct_parts["rules"]}  # fmt: skip
    http_named = dict(split.seconds)
    http_named["decode + backbone"] = http_named.pop("decode", 0.0) + http_named.pop("backbone", 0.0)
    rows = ["guards", "request checks", "request", "decode + backbone", "cache lookup", "cache write", "head", "rules",
            "store write", "JSON", "response checks"]
    for part in rows:
        left = f"{direct_named[part] / n * 1000:>8.2f}" if part in direct_named else f"{'':>8}"
        print(f"{part:<20} {left} {http_named.get(part, 0.0) / n * 1000:>8.2f}")
    print(f"{'  decode':<20} {'':>8} {split.seconds.get('decode', 0.0) / n * 1000:>8.2f}")
    print(f"{'  backbone':<20} {'':>8} {split.seconds.get('backbone', 0.0) / n * 1000:>8.2f}")
    for part, seconds in sorted(split.seconds.items()):
        if part.endswith("(beside)"):
            print(f"{part:<20} {'':>8} {seconds / n * 1000:>8.2f}  (on a helper thread, overlapping the rest)")
    framework = split.server_seconds - sum(v for k, v in split.seconds.items() if not k.endswith("(beside)"))
    client_side = sum(http_single) - split.server_seconds
    print(f"{'framework':<20} {'':>8} {framework / n * 1000:>8.2f}")
    print(f"{'HTTP (client+wire)':<20} {'':>8} {client_side / n * 1000:>8.2f}")
    print(f"{'total (mean)':<20} {sum(direct_single) / n * 1000:>8.2f} {sum(http_single) / n * 1000:>8.2f}")

    overhead = h50 / d50 - 1
    ratio = h_tp / d_tp
    print()
    print(f"HTTP overhead at batch 1 (p50): {overhead:+.1%}, {(h50 - d50) * 1000:+.1f} ms a request "
          f"(target <= +15%: {'met' if overhead <= 0.15 else 'NOT met'})")  # fmt: skip
    print(f"HTTP throughput at batch 32: {ratio:.1%} of direct  (target >= 95%: {'met' if ratio >= 0.95 else 'NOT met'})")
    print(f"({len(singles)} single requests, {len(batches)} batches of 32 per path, {args.client} client; "
          f"load average {load[0]:.2f} {load[1]:.2f})")
    if args.profile:
        split.profiler.dump_stats(str(args.profile))
        text = io.StringIO()
        pstats.Stats(str(args.profile), stream=text).sort_stats("cumulative").print_stats(30)
        print()
        print(f"cProfile of the {n} batch-1 requests (server side), written to {args.profile}:")
        print(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
