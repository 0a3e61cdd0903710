"""/v1/predict against calling the backbone and head directly, on the same kind of images in the same run.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/predict.py [--server both|werkzeug|gunicorn] [--n-single 60]
                                                           [--n-batches 6] [--profile FILE] [--smoke]

Both paths start from encoded PNG bytes; the direct path decodes, embeds and runs the head and the decision rule in
this process; the HTTP path also parses the request, hashes, writes the image file, the prediction and the outbox
row (one transaction) before it answers, and the embedding cache behind its answer. Every image is new to the service
it is sent to (the embedding cache would otherwise skip the backbone and flatter HTTP). The requests are made over
one kept-alive connection (the standard library's, or ``--client httpx``) with the API token as an application sends
it (``Authorization: Bearer``, generated into ``<data_dir>/secrets/api-token``, never on the command line). The
paths are interleaved request by request, in a new random order every round, so drift on a shared machine hits them
alike, and no path always follows the same one; after a request to ``juicer serve`` the benchmark waits 20 ms
(spinning), so the service's work behind its answer stays out of the next path's timing.

The servers (``--server both``, the default, runs the first two and the floor):

- ``werkzeug``: the service in this process behind a threaded werkzeug server, where each batch-1 request is split
  by where its time went (mean ms per request): guards (Host, token, origin), request checks (spectree), request
  parsing (body, base64, hash, header checks), decode, backbone, cache lookup, head, rules, the wait for the image
  writes, store write, JSON, response checks, the framework (the server's time not in a named part) and HTTP (the
  client's time not in the server). Parts on the service's helper threads are listed apart, "(beside)": they
  overlap the request's own thread and are not in its sum. ``--profile FILE`` writes a cProfile of them.
- ``gunicorn``: ``juicer serve`` in its own process, as in production (gunicorn with juicer's worker, its default
  workers and threads, the scheduler, prometheus-client's multiprocess metrics), Label Studio away.
- the floor: a bare Flask route (no juicer code: parse the body, base64-decode, a fixed answer) on the same
  gunicorn worker class, and the durable write alone (an image file and the three rows, no HTTP): what any Flask
  service that keeps the promise "a returned prediction queued for review is durable" pays before doing anything.

``--smoke`` runs tiny sizes (seconds), to show the benchmark still runs.
Targets (issue 22): HTTP adds at most 15% at batch 1; batch-32 throughput at least 95% of the direct path.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import dataclasses
import functools
import io
import json
import os
import pstats
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from http.client import HTTPConnection, RemoteDisconnected
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.served import ServedJuicer, free_port, link_built_backbones, subprocess_env  # noqa: E402
from tests.support.wait import poll  # noqa: E402


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
                answer = wsgi_app(environ, start_response)
                try:
                    return list(answer)  # the body is built inside the timing
                finally:
                    close = getattr(answer, "close", None)  # as a server does: runs the response's call_on_close
                    if close is not None:
                        close()
            finally:
                if profiler is not None:
                    profiler.disable()
                if self.recording:
                    self.server_seconds += time.perf_counter() - started
                self.local.inside = self.in_request = False

        return app


@dataclass
class Arm:
    """One server the HTTP requests go to, with its own images (each new to the service it reaches)."""

    name: str
    title: str
    send: Callable[[list[bytes]], None]
    singles: list[bytes]
    batches: list[list[bytes]]
    after: Callable[[], None]  # after each timed request, outside the timing
    close: Callable[[], None]
    single_s: list[float] = field(default_factory=list)
    batch_s: list[float] = field(default_factory=list)


def http_client(port: int, token: str, kind: str) -> tuple[Callable[[list[bytes]], None], Callable[[], None]]:
    """(send, close): POST images to ``/v1/predict`` on 127.0.0.1:``port`` over one kept-alive connection, with the
    API token as an application sends it; send raises on anything but 200."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if kind == "httpx":
        import httpx

        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120, headers=headers)

        def send_httpx(images: list[bytes]) -> None:
            client.post("/v1/predict", json={"images": [base64.b64encode(data).decode() for data in images]}).raise_for_status()

        return send_httpx, client.close
    connection = HTTPConnection("127.0.0.1", port, timeout=120)  # the standard library's: the least a client adds

    def send(images: list[bytes]) -> None:
        body = json.dumps({"images": [base64.b64encode(data).decode() for data in images]}).encode()
        try:
            connection.request("POST", "/v1/predict", body=body, headers=headers)
            answer = connection.getresponse()
        except (BrokenPipeError, ConnectionResetError, RemoteDisconnected):
            # The server closed the kept-alive connection (idle past its keep-alive: gunicorn's 5 s, 2 s for the
            # floor's, reached on a loaded machine): a client reconnects and sends again, and so does this one.
            connection.close()
            connection.request("POST", "/v1/predict", body=body, headers=headers)
            answer = connection.getresponse()
        text = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"/v1/predict answered {answer.status}: {text[:300]!r}")

    return send, connection.close


def start_gunicorn(data_dir: Path, backbone: str) -> ServedJuicer:
    """``juicer serve`` on ``data_dir`` (its model and API token), as a user starts it: gunicorn with juicer's worker,
    the default workers and threads, Label Studio away (nothing listens there: only juicer is measured); ready."""
    port = free_port()
    if not (data_dir / "backbones").exists():
        link_built_backbones(data_dir)
    env = subprocess_env(
        data_dir, JUICER_SERVICE__PORT=str(port), JUICER_SERVICE__MAX_IMAGES_PER_REQUEST="64",
        JUICER_LEARNER__BACKBONE=backbone, JUICER_LABEL_STUDIO__URL=f"http://127.0.0.1:{free_port()}",
        JUICER_LABEL_STUDIO__TOKEN="no-label-studio-token",
    )  # fmt: skip
    served = ServedJuicer(data_dir, port, env, args=[])
    try:
        served.start(timeout_s=300)
    except BaseException:
        served.stop()
        raise
    return served


def floor_app():
    """The least a Flask route adds on juicer's server: the same JSON body parsed and its images base64-decoded, a
    fixed answer of the same shape, and no juicer code (``gunicorn 'benchmarks.predict:floor_app()'``)."""
    from flask import Flask, jsonify, request

    app = Flask("floor")
    one = {"item_id": "img-" + "0" * 24, "label": "coat", "score": 0.5, "probabilities": {f"class {k}": 0.1 for k in range(10)},
           "decision": "review", "rule": "threshold", "reason": "below the threshold", "model_version": "v0001"}  # fmt: skip

    @app.post("/v1/predict")
    def predict():
        images = [base64.b64decode(text) for text in request.get_json()["images"]]
        return jsonify({"model_version": "v0001", "predictions": [one for _ in images]})

    return app


def start_floor(folder: Path, threads: int) -> subprocess.Popen:
    """:func:`floor_app` on gunicorn with juicer's worker class and thread count, one worker; listening."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", str(threads),
               "--worker-class", "app.http.server.JuicerWorker", "benchmarks.predict:floor_app()"]  # fmt: skip
    with (folder / "floor.log").open("w") as log:  # the server holds its own copy of the descriptor
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    process.port = port  # type: ignore[attr-defined]

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"it exited ({process.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        poll(listening, 60, "the floor server to listen")
    except AssertionError as exc:
        process.kill()
        raise RuntimeError(f"the floor server did not start ({exc}):\n{(folder / 'floor.log').read_text()[-2000:]}") from None
    return process


def spin(seconds: float) -> None:
    """Wait ``seconds`` without letting this core go idle."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


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
    parser.add_argument("--server", choices=("both", "werkzeug", "gunicorn"), default="both",
                        help="werkzeug: a threaded werkzeug server in this process (where the split below comes from); "
                        "gunicorn: juicer serve's own server (gunicorn, JuicerWorker) in its own process, as in production")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.n_single, args.n_batches = 3, 1

    import logging

    import numpy as np
    from werkzeug.serving import make_server

    import app.http.api.predict as predict_route
    import learner.images
    import learner.rules
    from app import create_app
    from app.core.datadir import write_image
    from app.core.demo import encode_png, seed_demo
    from app.core.secrets import api_token, resolve_secrets
    from app.core.serving import HeldVectors, ServingModel, prediction_record
    from app.core.uploads import upload_item_id
    from app.http.openapi import _Checks
    from app.services import build_services
    from app.store import NewItem, NewLabel, Store
    from config import load_settings
    from learner.backbones import load_backbone, resolve_backbone
    from learner.cache import EmbeddingCache
    from learner.datasets import load_fashion_mnist
    from learner.images import content_hash, decode_image
    from learner.rules import decide, rule_params

    n_servers = 2 if args.server == "both" else 1
    n_needed = (args.n_single + args.n_batches * 32) * n_servers + args.n_single + 20
    dataset = load_fashion_mnist("/usr/share/datasets/fashion-mnist", per_class_limit=n_needed // 10 + 60, seed=11)
    spec = resolve_backbone(args.backbone, REPO / "data")
    backbone = load_backbone(spec, batch_size=32)
    print(f"backbone {spec.name} at {spec.input_size}, batch {backbone.batch_size}, {backbone.device}")

    with tempfile.TemporaryDirectory(prefix="juicer-bench-") as tmp:
        data_dir = Path(tmp) / "data"  # juicer serve's log goes beside it, in the temporary folder
        data_dir.mkdir()
        port = free_port()
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
        per_arm = args.n_single + args.n_batches * 32
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
        split.patch(predict_route, "items_for_uploads", "item lookup + image files")  # on the I/O thread: "(beside)"
        split.patch(services.store, "record_predictions", "store write")
        split.patch(predict_route, "jsonify", "JSON")
        split.patch(HeldVectors, "lookup", "cache lookup")
        split.patch(_Checks, "request_validation", "request checks")
        split.patch(_Checks, "validate_response", "response checks")
        split.patch(Future, "result", "wait for writes")  # the request waiting for its I/O thread's image writes

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log lines in the table
        app = create_app(services=services)
        app.preprocess_request = split.wrap(app.preprocess_request, "guards")  # Host, token, origin, metrics
        app.wsgi_app = split.middleware(app.wsgi_app)
        arms: list[Arm] = []
        try:  # the servers started so far are stopped in the finally below
            servers = ("werkzeug", "gunicorn") if args.server == "both" else (args.server,)
            for k, server in enumerate(servers):  # each server its own images: every image is new to the one it reaches
                own = pngs[k * per_arm : (k + 1) * per_arm]
                singles, batches = own[: args.n_single], [own[args.n_single + j * 32 : args.n_single + (j + 1) * 32] for j in range(args.n_batches)]
                if server == "werkzeug":
                    http = make_server("127.0.0.1", port, app, threaded=True)
                    threading.Thread(target=http.serve_forever, daemon=True).start()
                    send, close = http_client(port, token, args.client)
                    arms.append(Arm("werkzeug", "HTTP, werkzeug in this process (the split below)", send, singles, batches,
                                    after=lambda: flush(services), close=lambda close=close, http=http: (close(), http.shutdown())))  # fmt: skip
                else:  # after each request: time for what the service does behind its answer (the embedding cache
                    # write, the outbox delivery a review wakes), which would otherwise land in the next path's timing;
                    # spent spinning (this process's core kept as busy as between the other paths)
                    served = start_gunicorn(data_dir, args.backbone)
                    send, close = http_client(served.port, token, args.client)
                    arms.append(Arm("gunicorn", "HTTP, gunicorn (juicer serve's server, its own process)", send, singles, batches,
                                    after=functools.partial(spin, 0.02), close=lambda close=close, served=served: (close(), served.stop())))  # fmt: skip
                    floor = start_floor(data_dir.parent, settings.service.threads)
                    send, close = http_client(floor.port, token, args.client)
                    arms.append(Arm("floor", "HTTP floor: a bare Flask route, fixed answer, same server", send, singles, batches,
                                    after=lambda: None, close=lambda close=close, floor=floor: (close(), floor.terminate(), floor.wait())))  # fmt: skip

            for data in warm[:10]:
                direct([data])
            for k, arm in enumerate(arms):  # warm images are sent to every server: the warm-up is not measured
                arm.send(warm[10 + 3 * k : 12 + 3 * k])
                arm.send(warm[12 + 3 * k : 13 + 3 * k])
                arm.after()
            direct(warm[:20])

            def timed(function, images) -> float:
                started = time.perf_counter()
                function(images)
                return time.perf_counter() - started

            # Interleave the paths so drift on a shared machine hits all alike, in a new random order every round (no
            # path always follows the same one, nor the same one's work behind its answer). The direct
            # path never writes the cache, and each server gets its own images, so each image is still new to the
            # service that gets it. The durable write alone (a new image's file and its three rows: what a
            # prediction decided review must have written before its answer leaves) is one more path, without HTTP
            # or a model.
            row = model.proba(backbone.embed(np.stack([decode_image(arms[0].singles[0], size, source="bench")])))[0]
            template = prediction_record(model, "item", row, decision="review", rule="threshold", reason="benchmark")
            split.profiler = cProfile.Profile() if args.profile else None
            direct_single, direct_batch, durable_s = [], [], []

            def durable_write(i: int) -> None:
                data = os.urandom(len(arms[0].singles[i]))  # new content: a new item and a new file every time
                started = time.perf_counter()
                digest = content_hash(data)
                item = NewItem(upload_item_id(digest), digest, "floor", "served", write_image(data_dir, digest, "png", data))
                written = time.perf_counter()
                store.record_predictions([dataclasses.replace(template, item_id=item.id)], [item])
                durable_s.append((written - started, time.perf_counter() - written))

            def over_arm(arm: Arm, i: int) -> None:
                split.recording = arm.name == "werkzeug"
                arm.single_s.append(timed(arm.send, [arm.singles[i]]))
                split.recording = False
                arm.after()  # what the service does behind its answer must not land in the next timing

            order = random.Random(0)
            for i in range(args.n_single):
                paths = [lambda i: direct_single.append(timed(functools.partial(direct, parts=direct_parts), [arms[0].singles[i]])),
                         durable_write, *(functools.partial(over_arm, arm) for arm in arms)]  # fmt: skip
                order.shuffle(paths)
                for path in paths:
                    path(i)
            for j in range(args.n_batches):
                direct_batch.append(timed(direct, arms[0].batches[j]))
                for arm in arms:
                    arm.batch_s.append(timed(arm.send, arm.batches[j]))
                    arm.after()
            decisions = store.prediction_counts()  # every server's and the durable-write path's, in the one store
        finally:
            for arm in arms:
                arm.close()
            store.close()

    load = os.getloadavg()
    d50, d95 = statistics.median(direct_single), _percentile(direct_single, 0.95)
    d_tp = 32 * len(direct_batch) / sum(direct_batch)
    print()
    print(f"{'path':<58} {'batch-1 p50 ms':>15} {'batch-1 p95 ms':>15} {'batch-32 img/s':>15}")
    print(f"{'direct (decode, backbone, head, rule in this process)':<58} {d50 * 1000:>15.1f} {d95 * 1000:>15.1f} {d_tp:>15.1f}")
    for arm in arms:
        h50, h95 = statistics.median(arm.single_s), _percentile(arm.single_s, 0.95)
        print(f"{arm.title:<58} {h50 * 1000:>15.1f} {h95 * 1000:>15.1f} {32 * len(arm.batch_s) / sum(arm.batch_s):>15.1f}")
    file_s, rows_s = [f for f, _ in durable_s], [r for _, r in durable_s]
    f50, r50 = statistics.median(file_s), statistics.median(rows_s)
    print(f"{'durable write alone: the image file (fsync), no HTTP':<58} {f50 * 1000:>15.2f} {_percentile(file_s, 0.95) * 1000:>15.2f}")
    print(f"{'durable write alone: its 3 rows (one commit), no HTTP':<58} {r50 * 1000:>15.2f} {_percentile(rows_s, 0.95) * 1000:>15.2f}")

    n = args.n_single
    werkzeug = next((arm for arm in arms if arm.name == "werkzeug"), None)
    if werkzeug is not None:
        print()
        print("where a batch-1 request's time goes on werkzeug (mean ms per request)")
        print(f"{'part':<20} {'direct':>8} {'HTTP':>8}")
        direct_named = {"decode + backbone": direct_parts["decode + backbone"], "head": direct_parts["head"],
                        "rules": direct_parts["rules"]}  # fmt: skip
        http_named = dict(split.seconds)
        http_named["decode + backbone"] = http_named.pop("decode", 0.0) + http_named.pop("backbone", 0.0)
        rows = ["guards", "request checks", "request", "decode + backbone", "cache lookup", "cache write", "head",
                "rules", "wait for writes", "store write", "JSON", "response checks"]  # fmt: skip
        for part in rows:
            left = f"{direct_named[part] / n * 1000:>8.2f}" if part in direct_named else f"{'':>8}"
            print(f"{part:<20} {left} {http_named.get(part, 0.0) / n * 1000:>8.2f}")
        print(f"{'  decode':<20} {'':>8} {split.seconds.get('decode', 0.0) / n * 1000:>8.2f}")
        print(f"{'  backbone':<20} {'':>8} {split.seconds.get('backbone', 0.0) / n * 1000:>8.2f}")
        for part, seconds in sorted(split.seconds.items()):
            if part.endswith("(beside)"):
                print(f"{part:<20} {'':>8} {seconds / n * 1000:>8.2f}  (on a helper thread, overlapping the rest)")
        framework = split.server_seconds - sum(v for k, v in split.seconds.items() if not k.endswith("(beside)"))
        client_side = sum(werkzeug.single_s) - split.server_seconds
        print(f"{'framework':<20} {'':>8} {framework / n * 1000:>8.2f}")
        print(f"{'HTTP (client+wire)':<20} {'':>8} {client_side / n * 1000:>8.2f}")
        print(f"{'total (mean)':<20} {sum(direct_single) / n * 1000:>8.2f} {sum(werkzeug.single_s) / n * 1000:>8.2f}")

    print()
    for arm in arms:
        h50 = statistics.median(arm.single_s)
        if arm.name == "floor":
            least = h50 + r50
            print(f"floor: a bare Flask route on the same server answers in {h50 * 1000:.2f} ms (p50) with no model at all; "
                  f"with the rows' commit ({r50 * 1000:.2f} ms; the image file's {f50 * 1000:.2f} ms can overlap the "
                  f"backbone) that is {least * 1000:.2f} ms, {least / d50:.1%} of the direct path, before juicer checks, "
                  f"parses or looks up anything (the 15% line: {0.15 * d50 * 1000:.2f} ms)")  # fmt: skip
            continue
        overhead = h50 / d50 - 1
        ratio = 32 * len(arm.batch_s) / sum(arm.batch_s) / d_tp
        print(f"{arm.name}: HTTP overhead at batch 1 (p50): {overhead:+.1%}, {(h50 - d50) * 1000:+.1f} ms a request "
              f"(target <= +15%: {'met' if overhead <= 0.15 else 'NOT met'}); batch-32 throughput {ratio:.1%} of direct "
              f"(target >= 95%: {'met' if ratio >= 0.95 else 'NOT met'})")  # fmt: skip
    decisions["review"] = decisions.get("review", 0) - len(durable_s)  # the durable-write path's rows
    print(f"decisions stored: {', '.join(f'{name} {count}' for name, count in sorted(decisions.items()))} (a review "
          f"decision adds the outbox row to the write)")  # fmt: skip
    print(f"({n} single requests, {args.n_batches} batches of 32 per path, {args.client} client; "
          f"load average {load[0]:.2f} {load[1]:.2f})")
    if args.profile and werkzeug is not None:
        split.profiler.dump_stats(str(args.profile))
        text = io.StringIO()
        pstats.Stats(str(args.profile), stream=text).sort_stats("cumulative").print_stats(30)
        print()
        print(f"cProfile of the {n} batch-1 requests on werkzeug (server side), written to {args.profile}:")
        print(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
