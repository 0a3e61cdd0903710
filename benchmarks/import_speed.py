"""``juicer import`` against embedding alone, peak memory as the import grows, and an import resumed after kill -9.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/import_speed.py [--n 10000] [--resume-n 2000]
    PYTHONPATH=$PWD .venv/bin/python benchmarks/import_speed.py --smoke      # a few dozen images (make test runs it)

The images are Fashion-MNIST photos upscaled to 96x96, written first (not timed) as JPEG and PNG files, each one
distinct. Then, in the same run, each in a child process of its own (both load TensorFlow and the same backbone):

- **embedding alone** (the floor): the same files read, decoded and embedded by the same backbone at the same batch
  size, the next batch decoded on a thread while the backbone runs (as ``learner.cache.embed_sources`` does); no
  store, no hashing, no file copy;
- **juicer import** (the real command, ``python -m app.cli import DIR``) into a fresh data folder; its peak RSS
  (``VmHWM`` from ``/proc``) is read as the store's item count passes each mark (goal: flat in the number of
  images);
- **resumed**: another fresh import, ``kill -9`` once about half the images are items, then run again: the second run
  must import exactly the rest (no duplicate, no orphan file, none missing), checked against the files' hashes.

Prints a table; exits 1 when the resumed import is wrong. The import's overhead over the floor is the ratio of the
two processes' wall times (goal: at most 15%).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.served import link_built_backbones, subprocess_env

IDX = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
BACKBONE = REPO / "data" / "backbones" / "efficientnet-lite0"
SIDE = 96


def write_images(folder: Path, n: int) -> None:
    """``n`` distinct image files (JPEG and PNG alternately), Fashion-MNIST upscaled, in folders of 1,000."""
    from PIL import Image

    from learner.datasets import _read_idx

    pictures = _read_idx(IDX, 2051)[16:].reshape(-1, 28, 28) if IDX.exists() else None
    rng = np.random.default_rng(0)
    for index in range(n):
        grey = pictures[index % len(pictures)] if pictures is not None else rng.integers(0, 256, (28, 28), dtype=np.uint8)
        rgb = np.repeat(grey[:, :, None], 3, axis=2).copy()
        rgb[0, :3, :] = np.frombuffer(index.to_bytes(9, "big"), dtype=np.uint8).reshape(3, 3)  # distinct content
        image = Image.fromarray(rgb).resize((SIDE, SIDE), Image.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG" if index % 2 else "PNG", **({"quality": 90} if index % 2 else {}))
        path = folder / f"{index // 1000:03d}" / f"{index:06d}.{'jpg' if index % 2 else 'png'}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(buffer.getvalue())


def floor(folder: str, marks: list[int]) -> None:
    """Child process: embed every file under ``folder`` with the configured backbone, nothing else; prints JSON
    (with its peak RSS as the images embedded pass each of ``marks``)."""
    from concurrent.futures import ThreadPoolExecutor

    from config import load_settings
    from learner.backbones import load_backbone, resolve_backbone
    from learner.images import BytesImage

    started = time.perf_counter()
    settings = load_settings()
    spec = resolve_backbone(settings.learner.backbone, Path(settings.data_dir), settings.learner.input_size)
    backbone = load_backbone(spec, settings.learner.batch_size, settings.learner.mixed_precision)
    loaded = time.perf_counter()
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    size = tuple(backbone.input_size)
    batches = [paths[i:i + backbone.batch_size] for i in range(0, len(paths), backbone.batch_size)]

    def load(batch: list[Path]) -> np.ndarray:
        return np.stack([BytesImage(p.read_bytes()).pixels(size) for p in batch])

    rss: dict[int, float] = {}
    embedded = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, batches[0])
        for index in range(len(batches)):
            pixels = pending.result()
            if index + 1 < len(batches):
                pending = pool.submit(load, batches[index + 1])
            backbone.embed(pixels)
            embedded += len(pixels)
            rss.update({mark: peak_rss_mb(os.getpid()) for mark in marks if mark not in rss and embedded >= mark})
    done = time.perf_counter()
    print(json.dumps({"n": len(paths), "load_s": loaded - started, "embed_s": done - loaded, "rss": rss}))


def item_count(db: Path) -> int:
    """Items in the store at ``db`` (0 while it does not exist yet)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM items").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # the schema is being created


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set so far (``VmHWM``), in MB; 0 once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def start_import(images: Path, data_dir: Path) -> subprocess.Popen:
    """``juicer import`` (this checkout's code) into ``data_dir`` as a child process."""
    env = subprocess_env(data_dir, JUICER_LEARNER__BACKBONE=str(BACKBONE))
    command = [sys.executable, "-m", "app.cli", "import", str(images), "--no-progress"]
    return subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def linked_subset(images: Path, folder: Path, n: int) -> Path:
    """A folder of the first ``n`` files of ``images``, hard-linked (not copied)."""
    for path in sorted(images.rglob("*")):
        if path.is_file() and int(path.stem) < n:
            (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
            os.link(path, folder / path.parent.name / path.name)
    return folder


def fresh_data_dir(root: Path, name: str) -> Path:
    data_dir = root / name
    data_dir.mkdir()
    link_built_backbones(data_dir)
    return data_dir


@dataclass
class Watched:
    """One import run: wall seconds, peak RSS (MB) as the item count passed each mark, output, exit status, and
    the steady rate: items stored after the first chunk over the time from the first chunk to the last."""

    seconds: float
    rss: dict[int, float]
    output: str
    status: int
    steady_per_s: float


def watched_import(images: Path, data_dir: Path, marks: list[int], kill_at: int | None = None) -> Watched:
    """Run an import, reading its peak RSS as the item count passes each of ``marks``; ``kill_at``: kill -9 there."""
    db = data_dir / "juicer.db"
    started = time.perf_counter()
    child = start_import(images, data_dir)
    rss: dict[int, float] = {}
    peak = 0.0
    first: tuple[int, float] | None = None
    last = (0, 0.0)
    while child.poll() is None:
        peak = max(peak, peak_rss_mb(child.pid))
        count = item_count(db)
        now = time.perf_counter()
        if count and first is None:
            first = (count, now)
        if count != last[0]:
            last = (count, now)
        for mark in marks:
            if mark not in rss and count >= mark:
                rss[mark] = peak
        if kill_at is not None and count >= kill_at:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    child.wait()
    elapsed = time.perf_counter() - started
    output = child.stdout.read() if child.stdout else ""
    count = item_count(db)
    if first is not None and count != last[0]:
        last = (count, time.perf_counter())
    for mark in marks:
        rss.setdefault(mark, peak)
    steady = (last[0] - first[0]) / (last[1] - first[1]) if first is not None and last[1] > first[1] else float("nan")
    return Watched(elapsed, rss, output, child.returncode, steady)


def check_resumed(images: Path, data_dir: Path) -> list[str]:
    """What is wrong with the store after the resumed import (empty: each file's content once, no orphan file)."""
    wanted = {hashlib.sha256(p.read_bytes()).hexdigest() for p in images.rglob("*") if p.is_file()}
    with sqlite3.connect(f"file:{data_dir / 'juicer.db'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT content_hash, image_path FROM items").fetchall()
    hashes = [content_hash for content_hash, _ in rows]
    files = {p.relative_to(data_dir / "files").as_posix() for p in (data_dir / "files" / "images").rglob("*") if p.is_file()}
    problems = []
    if len(hashes) != len(set(hashes)):
        problems.append(f"{len(hashes) - len(set(hashes))} duplicate items")
    if set(hashes) - wanted:
        problems.append(f"{len(set(hashes) - wanted)} items of no file")
    if wanted - set(hashes):
        problems.append(f"{len(wanted - set(hashes))} files missing")
    orphans = files - {path for _, path in rows}
    if orphans:
        problems.append(f"{len(orphans)} orphan image files")
    return problems


def summary_line(output: str) -> str:
    return next((line for line in output.splitlines() if line.startswith("imported ")), output.strip()[-200:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="images imported and embedded")
    parser.add_argument("--resume-n", type=int, default=2_000, help="images of the resumed import")
    parser.add_argument("--smoke", action="store_true", help="a few dozen images: checks the benchmark runs")
    parser.add_argument("--floor-of", help=argparse.SUPPRESS)  # the child process of the floor
    parser.add_argument("--marks", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_of:
        floor(args.floor_of, [int(mark) for mark in args.marks.split(",") if mark])
        return 0
    if args.smoke:
        args.n, args.resume_n = 64, 200  # the kill (at 100 items) lands after the first chunk of 128, before the last
    with tempfile.TemporaryDirectory(prefix="juicer-import-bench-") as tmp:
        root = Path(tmp)
        images = root / "images"
        images.mkdir()
        started = time.perf_counter()
        write_images(images, max(args.n, args.resume_n))
        print(f"wrote {max(args.n, args.resume_n)} images ({SIDE}x{SIDE} JPEG/PNG) in {time.perf_counter() - started:.1f} s; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        resume_images = linked_subset(images, root / "resume-images", args.resume_n)
        images = linked_subset(images, root / "main-images", args.n)

        marks = sorted({m for m in (args.n // 10, args.n // 5, args.n // 2, args.n) if m > 0})
        floor_dir = fresh_data_dir(root, "floor")
        env = subprocess_env(floor_dir, JUICER_LEARNER__BACKBONE=str(BACKBONE))
        started = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--floor-of", str(images), "--marks", ",".join(map(str, marks))],
                             env=env, cwd=REPO, capture_output=True, text=True, check=True)  # fmt: skip
        floor_s = time.perf_counter() - started
        floor_result = json.loads(out.stdout.strip().splitlines()[-1])
        load_floor = os.getloadavg()[0]
        run = watched_import(images, fresh_data_dir(root, "import"), marks)
        load_import = os.getloadavg()[0]
        if run.status != 0:
            print(run.output)
            raise SystemExit(f"juicer import failed with status {run.status}")

        resume_dir = fresh_data_dir(root, "resume")
        killed = watched_import(resume_images, resume_dir, [], kill_at=args.resume_n // 2)
        after_kill = item_count(resume_dir / "juicer.db")
        second = watched_import(resume_images, resume_dir, [])
        after_second = item_count(resume_dir / "juicer.db")
        problems = check_resumed(resume_images, resume_dir) if second.status == 0 else [f"second run exit {second.status}"]
        expected = f"imported {args.resume_n - after_kill}, duplicates {after_kill}, skipped 0"
        if not summary_line(second.output).startswith(expected):
            problems.append(f"the second run should say {expected!r}")
        if not 0 < after_kill < args.resume_n:
            problems.append(f"the kill came at {after_kill} of {args.resume_n} items, not part-way")

    n = args.n
    print(f"\njuicer import of {n} images vs embedding alone (same backbone, batch size, files; each a fresh process)")
    print(f"{'run':34s} {'seconds':>8s} {'images/s':>9s} {'load avg':>9s}")
    print(f"{'embedding alone (floor), process':34s} {floor_s:8.1f} {n / floor_s:9.1f} {load_floor:9.1f}")
    print(f"{'  of which embedding only':34s} {floor_result['embed_s']:8.1f} {n / floor_result['embed_s']:9.1f}")
    print(f"{'juicer import, process':34s} {run.seconds:8.1f} {n / run.seconds:9.1f} {load_import:9.1f}")
    print(f"{'  from its first chunk stored':34s} {'':8s} {run.steady_per_s:9.1f}")
    # The whole processes are the like-for-like pair: the import's steady rate starts after its first chunk, the
    # floor's embedding-only time includes its first batch and the graph trace.
    print(f"import overhead over the floor (whole processes): {run.seconds / floor_s - 1:+.1%} (goal <= +15%)")
    print("\npeak RSS (MB) as the images go through (goal: flat in the number of images)")
    print(f"{'images':>15s} {'juicer import':>14s} {'floor':>8s}")
    for mark in marks:
        print(f"{mark:15d} {run.rss[mark]:14.0f} {floor_result['rss'].get(str(mark), float('nan')):8.0f}")
    print(f"\nresumed import of {args.resume_n} images: kill -9 at ~50%, then run again")
    print(f"{'run':34s} {'seconds':>8s} {'items after':>12s}  summary")
    print(f"{'first (killed, exit ' + str(killed.status) + ')':34s} {killed.seconds:8.1f} {after_kill:12d}  -")
    print(f"{'second':34s} {second.seconds:8.1f} {after_second:12d}  {summary_line(second.output)}")
    print("check: " + ("exactly the rest imported (no duplicate, no orphan file, none missing)" if not problems
                       else "; ".join(problems)))  # fmt: skip
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
