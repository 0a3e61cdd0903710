"""Peak memory of reading a large JSON body: Flask's get_json (whole body, then json.loads) against juicer's stream.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/json_body.py [--mb 30] [--smoke]

A body of base64 "images" (``{"images": ["<base64>", ...]}``, the shape /v1/predict takes) is parsed inside
a Flask request context both ways; tracemalloc's peak above the body itself (which the WSGI server holds in
its input stream) is printed in MB, with the time each took and their ratio.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=30, help="body size in MB")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.mb = 4
    from flask import Flask, Request

    from app.http.jsonbody import request_class

    image = base64.b64encode(os.urandom(3 * 1024 * 1024)).decode()  # 4 MB of base64 per image
    body = json.dumps({"images": [image] * max(1, round(args.mb / 4))}).encode()
    print(f"body: {len(body) / 1e6:.1f} MB of JSON ({max(1, round(args.mb / 4))} base64 strings of 4 MB)")
    rows = []
    for name, cls in (("flask get_json (whole body)", Request), ("juicer stream (ijson)", request_class(32))):
        app = Flask(__name__)
        app.request_class = cls
        environ = {"CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
        with app.test_request_context("/", method="POST", environ_overrides=environ):
            from flask import request

            tracemalloc.start()
            started = time.perf_counter()
            value = request.get_json()
            seconds = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert len(value["images"]) == max(1, round(args.mb / 4))
            del value
        rows.append((name, peak / 1e6, seconds))
    print(f"{'parser':>30} {'peak MB':>9} {'seconds':>8}")
    for name, peak, seconds in rows:
        print(f"{name:>30} {peak:>9.1f} {seconds:>8.3f}")
    print(f"stream / whole body peak: {rows[1][1] / rows[0][1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
