"""``juicer embed`` engines side by side on real Fashion-MNIST PNGs, each a fresh data folder, in one run.

Prints a table of images/s (the whole command, cluster start and registration included) and the ratio to the
in-process engine: local; Ray with 1 and 2 actors on a local cluster; Ray with 2 actors on a 2-node cluster
(``ray.cluster_utils.Cluster``: two raylets on this machine, one CPU each, stopped by their own handle, never by
``ray stop``, which would stop every Ray on a shared machine), with the vectors each node embedded. Then checks
the vectors of every Ray run against the local engine's bit for bit, and SIGKILLs a Ray run's driver once its
first shard is written, re-runs it, and checks that nothing the first run stored is embedded again and nothing is
missing (cache rows = store items = images).

    .venv/bin/python benchmarks/embed_engines.py [--n 10000] [--smoke]

Needs the ``ray`` extra and Debian's ``dataset-fashion-mnist``. ``--smoke``: 48 images, local and Ray with one
actor only (a minute: a Ray cluster and two backbones start).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.core.demo import encode_png  # noqa: E402
from app.core.embed_job import read_shard  # noqa: E402
from app.store import Store  # noqa: E402
from config import load_settings  # noqa: E402
from learner.backbones import backbone_dir, ensure_backbone, resolve_backbone  # noqa: E402
from learner.cache import EmbeddingCache, embedding_cache_dir  # noqa: E402
from learner.datasets import load_fashion_mnist  # noqa: E402
from learner.images import content_hash  # noqa: E402

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def make_photos(folder: Path, n: int) -> list[str]:
    """``n`` Fashion-MNIST images as PNG files; their content hashes."""
    dataset = load_fashion_mnist(FASHION_MNIST, per_class_limit=-(-n // 10), seed=0)
    folder.mkdir(parents=True)
    hashes = []
    for index, source in enumerate(dataset.sources[:n]):
        data = encode_png(source.array)
        (folder / f"{index:05d}.png").write_bytes(data)
        hashes.append(content_hash(data))
    return hashes


def fresh_data_dir(root: Path) -> Path:
    built, _ = ensure_backbone("efficientnet-lite0", load_settings().data_dir)
    link = backbone_dir("efficientnet-lite0", root)
    link.parent.mkdir(parents=True)
    link.symlink_to(built.resolve(), target_is_directory=True)
    return root


def embed_command(data: Path, photos: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "JUICER_DATA_DIR": str(data), "JUICER_LEARNER__BACKBONE": "efficientnet-lite0",
           "PYTHONPATH": str(REPO)}  # fmt: skip
    return [sys.executable, "-m", "app.cli", "embed", str(photos), *args, "--no-progress"], env


def run_embed(data: Path, photos: Path, *args: str) -> tuple[float, str]:
    """(seconds, stdout) of one ``juicer embed``."""
    command, env = embed_command(data, photos, *args)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"juicer embed {' '.join(args)} failed:\n{done.stdout}\n{done.stderr[-4000:]}")
    return seconds, done.stdout


def cached_vectors(data: Path, hashes: list[str]) -> tuple[np.ndarray, int]:
    spec = resolve_backbone("efficientnet-lite0", data)
    with EmbeddingCache(embedding_cache_dir(data), spec.id) as cache:
        vectors, found = cache.lookup(hashes)
        rows = len(cache)
    assert found.all(), f"{int((~found).sum())} images missing from the cache of {data}"
    return vectors, rows


def pool_items(data: Path) -> int:
    store = Store.open(data)
    try:
        return store.count_items().get("pool", 0)
    finally:
        store.close()


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (read from /proc: the Ray processes a driver started)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_and_resume(root: Path, photos: Path, hashes: list[str], reference: np.ndarray) -> list[str]:
    """SIGKILL the driver once a shard is written, run again; lines for the report."""
    data = fresh_data_dir(root / "killed")
    shards = data / "embeddings" / "shards"
    command, env = embed_command(data, photos, "--engine", "ray", "--actors", "1")
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while not list(shards.glob("*.parquet")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if first.poll() is not None:
        raise SystemExit("the run to be killed ended before its first shard: raise --n")
    below = descendants(first.pid)
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(10)  # Ray's processes share the driver's fate; give them time to go
    left = [pid for pid in below if Path(f"/proc/{pid}").exists()]
    for pid in left:  # only processes this run started
        os.kill(pid, signal.SIGKILL)
    stored_rows = sum(len(read_shard(path)[0]) for path in shards.glob("*.parquet"))
    _, output = run_embed(data, photos, "--engine", "ray", "--actors", "1")
    resumed = re.search(r"resumed: (\d+) vectors", output)
    again = int(re.search(r"ray: embedded (\d+) images", output).group(1))
    resumed_n = int(resumed.group(1)) if resumed else 0
    vectors, rows = cached_vectors(data, hashes)
    distinct = len(set(hashes))
    return [
        f"kill -9 of the driver after its first shard ({stored_rows} vectors in whole shards; "
        f"{len(left)} of its {len(below)} Ray processes outlived it and were killed by pid)",
        f"re-run: resumed {resumed_n} vectors from the shards, embedded {again}; "
        f"{resumed_n} + {again} = {resumed_n + again} for {distinct} distinct images "
        f"({'nothing embedded twice, nothing missing' if resumed_n + again == distinct else 'MISMATCH'})",
        f"cache rows {rows}, pool items {pool_items(data)}, vectors equal to local: {np.array_equal(vectors, reference)}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="images (default 10,000)")
    parser.add_argument("--smoke", action="store_true", help="48 images, local and ray-1 only")
    args = parser.parse_args()
    n = 48 if args.smoke else args.n
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores); {n} images")
    with tempfile.TemporaryDirectory(prefix="juicer-embed-engines-") as tmp:
        root = Path(tmp)
        photos = root / "photos"
        hashes = make_photos(photos, n)
        runs: list[tuple[str, list[str], dict]] = [
            ("local", ["--engine", "local"], {}),
            ("ray, 1 actor", ["--engine", "ray", "--actors", "1"], {}),
        ]
        if not args.smoke:
            runs.append(("ray, 2 actors", ["--engine", "ray", "--actors", "2"], {}))
            runs.append(("ray, 2 actors, 2 nodes", ["--engine", "ray", "--actors", "2"], {"two_nodes": True}))
        rows, reference = [], None
        for name, flags, options in runs:
            data = fresh_data_dir(root / re.sub(r"\W+", "-", name))
            cluster = None
            if options.get("two_nodes"):
                from ray.cluster_utils import Cluster

                cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                                        "object_store_memory": 256 * 1024**2})  # fmt: skip
                cluster.add_node(num_cpus=1, object_store_memory=256 * 1024**2)
                flags = [*flags, "--address", cluster.address]
            try:
                seconds, output = run_embed(data, photos, *flags)
            finally:
                if cluster is not None:
                    cluster.shutdown()
            vectors, _ = cached_vectors(data, hashes)
            if reference is None:
                reference = vectors
            job = re.search(r"ray: embedded (\d+) images in ([\d.]+) s \(per node: ([^)]*)\)", output)
            rows.append((name, seconds, n / seconds, np.array_equal(vectors, reference), job.group(2) if job else "",
                         job.group(3) if job else ""))  # fmt: skip
        local_rate = rows[0][2]
        print("\n| engine | wall s | images/s | ratio to local | ray job s | vectors per node | bit-identical to local |")
        print("|---|---|---|---|---|---|---|")
        for name, seconds, rate, identical, job_s, nodes in rows:
            print(f"| {name} | {seconds:.1f} | {rate:.1f} | {rate / local_rate:.2f}x | {job_s} | {nodes} | {identical} |")
        if not args.smoke:
            print()
            for line in kill_and_resume(root, photos, hashes, reference):
                print(line)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0 if all(row[3] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
