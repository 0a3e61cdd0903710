"""The hand-written battery of bad inputs against the running service, with its peak memory over image bombs.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bad_inputs.py [--smoke]

Starts ``juicer serve`` (gunicorn, the real backbone, a 20-image demo, Label Studio away) on a fresh data
folder, measures the RSS of its processes at idle, then sends each bad request of the battery (image bombs in
every format, a request over the per-request pixel budget, deep and huge JSON, bad base64, truncated images,
wrong types and methods, cross-site writes, bad tokens) and prints, per request, the status and the time, then:
how many were tried, the 5xx count (goal 0) and the peak RSS above idle over the image-bomb part (goal: under
200 MB; RSS summed over the gunicorn master and workers, sampled every 20 ms).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import struct
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from tests.support.served import ServedJuicer, data_folder, free_port, service_env  # noqa: E402


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and every process in its session, in MB."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().split()
            if int(stat[5]) != pid and int(entry.name) != pid:  # field 6: session id
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1024


class PeakSampler:
    """The highest :func:`tree_rss_mb` seen while it runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_mb(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int, body_bytes: int = 640_000) -> bytes:
    """A PNG whose header says width x height, its IDAT a zlib stream of zeros (decompresses to the full image)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)
    body = b""
    while len(body) < body_bytes:
        body += raw.compress(row * 64)
    body += raw.flush()
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body[: body_bytes]) + _chunk(b"IEND", b"")


def gif_bomb(width: int, height: int) -> bytes:
    """A GIF whose screen and image descriptors say width x height."""
    screen = b"GIF89a" + struct.pack("<HH", width, height) + b"\xf0\x00\x00" + b"\x00" * 6
    image = b"\x2c" + struct.pack("<HHHH", 0, 0, width, height) + b"\x00" + b"\x02" + b"\x02\x4c\x01\x00" + b"\x3b"
    return screen + image


def jpeg_bomb(width: int, height: int) -> bytes:
    """A real small JPEG with its SOF0 dimensions rewritten."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    at = data.index(b"\xff\xc0") + 5
    data[at : at + 4] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_large(width: int, height: int) -> bytes:
    """A real WebP of width x height (WebP's own limit is 16383 per side)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (20, 40, 230)).save(buffer, format="WEBP", quality=10)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bombs(smoke: bool = False) -> list[tuple[str, dict]]:
    """(name, request kwargs) of every image bomb. ``smoke``: the same headers over shorter bodies, and a real WebP
    just over the per-image pixel limit (40 Mpx), not WebP's largest (building them took most of a smoke run)."""
    body, wide_body = (20_000, 7_000) if smoke else (640_000, 200_000)
    side = 6_400 if smoke else 16_383
    return [
        (f"PNG 13000x13000 ({body // 1000} KB)", {"json": {"image": b64(png_bomb(13_000, 13_000, body))}}),
        ("PNG 30000x30000", {"json": {"image": b64(png_bomb(30_000, 30_000, wide_body))}}),
        ("PNG 13000x13000 multipart", {"files": {"image": ("bomb.png", png_bomb(13_000, 13_000, body), "image/png")}}),
        ("GIF 65535x65535", {"json": {"image": b64(gif_bomb(65_535, 65_535))}}),
        ("JPEG 65000x65000", {"json": {"image": b64(jpeg_bomb(65_000, 65_000))}}),
        (f"WebP {side}x{side} (real)", {"json": {"image": b64(webp_large(side, side))}}),
        ("3 x PNG 6000x6000 (budget)", {"json": {"images": [b64(png_bomb(6_000, 6_000, 60_000)) for _ in range(3)]}}),
        ("64 x PNG 6000x6000 (count)", {"json": {"images": [b64(png_bomb(6_000, 6_000, 2_000)) for _ in range(65)]}}),
        ("PNG 6000x6000 x 8 in /v1/labels", {"json": {"labels": [{"image": b64(png_bomb(6_000, 6_000, 20_000)), "label": "Bag"}] * 8}}),
    ]


def others(secret: str) -> list[tuple[str, str, str, dict]]:
    """(name, method, path, request kwargs) of the rest of the battery."""
    deep = '{"images": ' + "[" * 5000 + "]" * 5000 + "}"
    return [
        ("deep JSON predict", "POST", "/v1/predict", {"content": deep, "headers": {"Content-Type": "application/json"}}),
        ("deep JSON labels", "POST", "/v1/labels", {"content": deep, "headers": {"Content-Type": "application/json"}}),
        ("deep JSON webhook", "POST", "/v1/webhooks/label-studio",
         {"content": deep, "headers": {"Content-Type": "application/json", "X-Juicer-Secret": secret}}),
        ("40 MB body", "POST", "/v1/predict", {"content": b"{" + b" " * 40_000_000 + b"}", "headers": {"Content-Type": "application/json"}}),
        ("not JSON", "POST", "/v1/predict", {"content": b"{nope", "headers": {"Content-Type": "application/json"}}),
        ("JSON list body", "POST", "/v1/labels", {"json": [1, 2, 3]}),
        ("bad base64", "POST", "/v1/predict", {"json": {"image": "!!!not base64!!!"}}),
        ("truncated PNG", "POST", "/v1/predict", {"json": {"image": b64(png_bomb(100, 100)[:-30])}}),
        ("empty image", "POST", "/v1/predict", {"json": {"image": ""}}),
        ("text as image", "POST", "/v1/predict", {"files": {"image": ("a.png", b"hello", "image/png")}}),
        ("unknown label", "POST", "/v1/labels", {"json": {"labels": [{"item_id": "x", "label": "no-such-class"}]}}),
        ("unknown item", "POST", "/v1/labels", {"json": {"labels": [{"item_id": "no-such-item", "label": "Bag"}]}}),
        ("10001 labels", "POST", "/v1/labels", {"json": {"labels": [{"item_id": "x", "label": "Bag"}] * 10_001}}),
        ("wrong content type", "POST", "/v1/predict", {"content": b"x", "headers": {"Content-Type": "text/plain"}}),
        ("invented method", "BREW", "/v1/models", {}),
        ("unknown route", "GET", "/v1/nothing-here", {}),
        ("bad job id", "GET", "/v1/jobs/abc", {}),
        ("huge job id", "GET", "/v1/jobs/999999999999999999999", {}),
        ("bad limit", "GET", "/v1/items?limit=-1", {}),
        ("bad force", "POST", "/v1/retrain?force=perhaps", {}),
        ("cross-site write", "POST", "/v1/retrain", {"headers": {"Origin": "https://evil.example"}}),
        ("no token", "POST", "/v1/retrain", {"headers": {"Authorization": ""}}),
        ("wrong token", "POST", "/v1/retrain", {"headers": {"Authorization": "Bearer wrong"}}),
        ("webhook without secret", "POST", "/v1/webhooks/label-studio", {"json": {"action": "ANNOTATION_CREATED"}}),
        ("poison webhook", "POST", "/v1/webhooks/label-studio",
         {"json": {"action": "ANNOTATION_CREATED", "annotation": {"id": "x"}}, "headers": {"X-Juicer-Secret": secret}}),
        ("huge header", "GET", "/v1/models", {"headers": {"X-Junk": "a" * 20_000}}),
        ("many headers", "GET", "/v1/models", {"headers": {f"X-{i}": "a" for i in range(200)}}),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the same battery, smaller bomb bodies, no idle wait")
    args = parser.parse_args()
    battery = bombs(args.smoke)  # built before the service starts (not timed, not in its RSS)
    root = Path(tempfile.mkdtemp(prefix="juicer-bad-inputs-"))
    data_dir = data_folder(root)
    port = free_port()
    env = service_env(data_dir, port, f"http://127.0.0.1:{free_port()}", "bad-inputs")
    service = ServedJuicer(data_dir, port, env, args=["--demo-pool", "20", "--holdout", "20"])
    service.start()
    statuses: list[int] = []
    try:
        with service.client(timeout_s=120) as client:
            client.post("/v1/predict", json={"image": b64(png_bomb(28, 28, 200))})  # warm: first call traces
            time.sleep(0 if args.smoke else 2)  # let the idle RSS settle (the smoke run checks the run, not RSS)
            idle = tree_rss_mb(service.process.pid)
            print(f"idle RSS {idle:.0f} MB (gunicorn master + 1 worker)")
            with PeakSampler(service.process.pid) as sampler:
                for name, kwargs in battery:
                    started = time.perf_counter()
                    response = client.post("/v1/predict" if "labels" not in kwargs.get("json", {}) else "/v1/labels", **kwargs)
                    statuses.append(response.status_code)
                    print(f"  {response.status_code}  {1000 * (time.perf_counter() - started):7.1f} ms  {name}")
            print(f"image bombs: {len(battery)}, peak RSS {sampler.peak:.0f} MB = {sampler.peak - idle:+.0f} MB above idle")
            for name, method, path, kwargs in others(SECRET):
                started = time.perf_counter()
                try:
                    response = client.request(method, path, **kwargs)
                    status = response.status_code
                except httpx.HTTPError as exc:  # a refused connection would be a finding too
                    status = 0
                    print(f"  transport error: {exc}")
                statuses.append(status)
                print(f"  {status}  {1000 * (time.perf_counter() - started):7.1f} ms  {name}")
            assert client.get("/healthz").status_code == 200
    finally:
        service.stop()
    server_errors = sum(1 for status in statuses if status >= 500 or status == 0)
    print(f"battery: {len(statuses)} bad requests, {server_errors} answered 5xx or dropped (goal 0); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    return 1 if server_errors else 0


SECRET = "fault-suite-secret"

if __name__ == "__main__":
    sys.exit(main())
