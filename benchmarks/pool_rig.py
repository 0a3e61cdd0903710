"""The pool rig: one retrain + one review refresh over N synthetic pool items, time and peak RSS per phase.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/pool_rig.py --smoke            # 2,000 items, seconds (make test)
    PYTHONPATH=$PWD .venv/bin/python benchmarks/pool_rig.py --sizes 10000 100000 1000000

For each N, a fresh data folder gets N unlabelled pool items and 200 labelled ones (20 per class, 10 classes)
through the store's bulk insert, and a synthetic 1280-d vector per item through the embedding cache's writer:
class centres plus Gaussian noise, so the clustering strategies find structure. No images exist: every item's
vector is cached, as after an embedding pass. A child process then builds the trainer with default settings
(the semi-supervised head, ``auto`` picks, a reserved holdout) and runs one retrain and one review refresh,
sampling its RSS every 10 ms; another child per N does the registration, so its memory does not count
(``--data-root DIR`` keeps each size's registration and starts every round from a copy of it).
``--max-rss-gb`` caps the round child (address space), so a size today's code cannot hold stops instead of
swapping the machine; ``--timeout`` stops it after that many seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DIM = 1280
N_CLASSES = 10
LABELS_PER_CLASS = 20
CHUNK = 50_000
CLASSES = [f"class{k}" for k in range(N_CLASSES)]


def content_hash(index: int) -> str:
    """The synthetic item's content hash (stable across runs)."""
    return hashlib.sha256(f"pool-rig-{index}".encode()).hexdigest()


def vectors(start: int, stop: int, centres):
    """Rows ``start..stop`` of the synthetic embeddings: class ``i % 10``'s centre plus noise, non-negative."""
    import numpy as np

    rng = np.random.default_rng(start)
    noise = rng.standard_normal((stop - start, DIM), dtype=np.float32) * 0.6
    return np.maximum(centres[np.arange(start, stop) % N_CLASSES] + noise, 0.0).astype(np.float32)


def register(data_dir: Path, n_pool: int) -> None:
    """Store N pool items + 200 labelled ones and their cached vectors (the store's and the cache's bulk paths)."""
    import numpy as np

    from app.store import NewItem, NewLabel, Store
    from learner.cache import EmbeddingCache

    store = Store.open(data_dir)
    store.set_meta("classes", CLASSES)
    cache = EmbeddingCache(data_dir / "embeddings", FakeBackbone.id)
    centres = np.random.default_rng(12345).gamma(1.0, 1.0, size=(N_CLASSES, DIM)).astype(np.float32)
    n_labelled = N_CLASSES * LABELS_PER_CLASS
    total = n_labelled + n_pool
    for start in range(0, total, CHUNK):
        stop = min(total, start + CHUNK)
        hashes = [content_hash(i) for i in range(start, stop)]
        cache.put_many(hashes, vectors(start, stop, centres))
        new = [NewItem(f"item-{i:08d}", hashes[i - start], "pool-rig", "pool", f"images/rig/{i}.png")
               for i in range(start, stop)]
        labelled = [NewLabel(f"item-{i:08d}", CLASSES[i % N_CLASSES], "import") for i in range(start, min(stop, n_labelled))]
        store.add_items_with_labels(new, labelled)
    cache.close()
    store.close()


class FakeBackbone:
    """The cache's key: no image is ever embedded here (every vector is cached), so nothing runs it."""

    id = "pool-rig-synthetic-1280"
    input_size = (224, 224)
    batch_size = 32
    dim = DIM

    def embed(self, pixels):  # pragma: no cover - the rig's items are all cached
        raise RuntimeError("the pool rig never embeds: every vector is in the cache")


class RssSampler:
    """Peak resident set size (VmRSS, bytes) since the last ``reset``, sampled on a thread every 10 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.now())

    def reset(self) -> int:
        value = max(self.peak, self.now())
        self.peak = self.now()
        return value

    def stop(self) -> None:
        self._stop.set()


def round_child(data_dir: Path) -> dict:
    """One retrain + one review refresh in this process: seconds and peak RSS per phase, idle RSS."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from app.core.serving import Embeddings, ModelHolder
    from app.core.training import Trainer
    from app.store import Store
    from config import load_settings
    from learner.cache import EmbeddingCache

    sampler = RssSampler()
    settings = load_settings(environ={}, data_dir=data_dir, service={"classes": CLASSES})
    store = Store.open(data_dir)
    embeddings = Embeddings(FakeBackbone(), EmbeddingCache(data_dir / "embeddings", FakeBackbone.id))
    trainer = Trainer(store, embeddings, ModelHolder(), settings.service, data_dir, CLASSES, 100_000_000)
    import sklearn.cluster  # noqa: F401  (imported by the round anyway: part of the idle size, not of a phase)
    import learner.semi  # noqa: F401

    time.sleep(0.05)
    idle = sampler.reset()
    out: dict = {"idle_rss": idle}
    started = time.perf_counter()
    result = trainer.retrain(reason="pool rig", force=True, refresh_queue=False)
    out["retrain_s"] = time.perf_counter() - started
    out["retrain_rss"] = sampler.reset()
    out["version"] = result.version
    out["retrain_phases"] = {name: round(seconds, 2) for name, seconds in result.timings.items()}
    started = time.perf_counter()
    out["queued"] = trainer.refresh_review_queue()
    out["refresh_s"] = time.perf_counter() - started
    out["refresh_rss"] = sampler.reset()
    sampler.stop()
    store.close()
    return out


def prepare(n_pool: int, data_root: Path | None, tmp: str, env: dict) -> tuple[Path, float]:
    """A registered data folder for ``n_pool`` items and the seconds its registration took (0 when reused).

    Under ``--data-root`` a registration is kept (``n<N>/``, with a pristine copy of the store) and each round
    starts from that copy, so the code before and after a change can be timed on the same data without
    registering a million items twice; the round's own writes (models, queue, holdout) are discarded.
    """
    data_dir = Path(tmp) if data_root is None else Path(data_root) / f"n{n_pool}"
    pristine = data_dir / "pristine-juicer.db"
    seconds = 0.0
    if not pristine.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--child-register", str(data_dir), str(n_pool)], check=True, env=env)
        seconds = time.perf_counter() - started
        shutil.copyfile(data_dir / "juicer.db", pristine)
    for path in data_dir.iterdir():
        if path.name not in ("embeddings", pristine.name):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.copyfile(pristine, data_dir / "juicer.db")
    return data_dir, seconds


def run_size(n_pool: int, max_rss_gb: float, timeout: float, data_root: Path | None = None) -> dict:
    """Register (or reuse) then round, each in its own child process; the round's figures or why it stopped."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="pool-rig-") as tmp:
        data_dir, register_s = prepare(n_pool, data_root, tmp, env)
        limit = int(max_rss_gb * 2**30)
        command = [sys.executable, __file__, "--child-round", str(data_dir), str(limit)]
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"n": n_pool, "register_s": register_s, "stopped": f"timed out after {timeout:.0f} s"}
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            tail = (done.stderr.strip().splitlines() or ["?"])[-1][:120]
            return {"n": n_pool, "register_s": register_s, "stopped": f"exit {done.returncode}: {tail}"}
        return {"n": n_pool, "register_s": register_s, **json.loads(lines[-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--smoke", action="store_true", help="one 2,000-item pool (seconds): what make test runs")
    parser.add_argument("--max-rss-gb", type=float, default=8.0, help="address-space cap of the round child")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a round child is stopped")
    parser.add_argument("--data-root", type=Path, help="keep each size's registration here and reuse it (n<N>/)")
    parser.add_argument("--child-register", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--child-round", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_register:
        register(Path(args.child_register[0]), int(args.child_register[1]))
        return 0
    if args.child_round:
        limit = int(args.child_round[1])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(round_child(Path(args.child_round[0]))))
        return 0
    sizes = [2_000] if args.smoke else args.sizes
    gb = 2**30
    print(f"pool rig: {N_CLASSES * LABELS_PER_CLASS} labels over {N_CLASSES} classes, {DIM}-d cached vectors, "
          f"default settings; load {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    print(f"{'pool items':>11} {'register s':>10} {'retrain s':>9} {'refresh s':>9} {'round s':>8} "
          f"{'idle GB':>7} {'peak GB above idle (retrain/refresh)':>37} {'queued':>6}")
    failed = False
    phases: list[str] = []
    for n_pool in sizes:
        row = run_size(n_pool, args.max_rss_gb, args.timeout, args.data_root)
        if "stopped" in row:
            failed = True
            print(f"{n_pool:>11,} {row['register_s']:>10.1f}   stopped: {row['stopped']}", flush=True)
            continue
        idle = row["idle_rss"]
        above = max(row["retrain_rss"], row["refresh_rss"]) - idle
        print(f"{n_pool:>11,} {row['register_s']:>10.1f} {row['retrain_s']:>9.2f} {row['refresh_s']:>9.2f} "
              f"{row['retrain_s'] + row['refresh_s']:>8.2f} {idle / gb:>7.2f} "
              f"{above / gb:>16.2f} ({(row['retrain_rss'] - idle) / gb:.2f} / {(row['refresh_rss'] - idle) / gb:.2f})"
              f"{'':>9} {row['queued']:>6}", flush=True)
        phases.append(f"{n_pool:>11,}  retrain phases (s): {row['retrain_phases']}")
    print("\n".join(phases))
    print(f"load after: {os.getloadavg()[0]:.1f}")
    return 1 if failed and args.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
