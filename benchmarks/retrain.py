"""Retrain latency: from the trigger (POST /v1/retrain's job) to the new version serving, at 100/1,000/6,000 labels.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/retrain.py [--sizes 100 1000 6000] [--holdout 1000] [--pool 50000] [--smoke]

Fashion-MNIST images are written and embedded once beforehand (the service embeds every image when it
arrives; the embedding cache lives in data/embeddings and is reused by later runs). Each retrain is asked
for through the scheduler exactly as ``POST /v1/retrain`` does, and the clock stops when
``ModelHolder.current`` shows the new version. Re-scoring the pool afterwards is timed on its own.
Target (issues 4 and 12): at most 2 s at 6,000 labels with a 50,000-item unlabelled pool.

The pool is 500 real images plus ``--pool - 500`` stand-ins: store rows whose cached embeddings are real
Fashion-MNIST embeddings with 5% Gaussian noise (so 50,000 images need not be embedded on a CPU); the
service reads them through its embedding cache (a temporary one) like any other item. Both heads are
timed in the same run (``--heads``): the semi-supervised default and the plain SoftmaxHead as the baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 6000])
    parser.add_argument("--holdout", type=int, default=400)
    parser.add_argument("--pool", type=int, default=50_000, help="unlabelled pool items (500 real, the rest stand-ins)")
    parser.add_argument("--backbone", default="efficientnet-lite0")
    parser.add_argument("--heads", nargs="+", default=["supervised", "semi"], choices=["supervised", "semi"])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.holdout, args.pool = [20, 40], 40, 100
    results = {head: run(args, head) for head in args.heads}
    phases = ("labels", "embeddings", "fit", "holdout", "record_and_swap")
    for head, rows in results.items():
        print(f"\nhead: {head}; unlabelled pool {args.pool:,} items; load {os.getloadavg()[0]:.1f} (2 cores)")
        print(f"{'labels':>7} {'version':>8} {'trigger->serving s':>19} {'re-score pool s':>16} {'holdout acc':>12}   "
              + " ".join(f"{p:>9}" for p in phases))  # fmt: skip
        for size, version, serving, rescore, accuracy, timings in rows:
            print(f"{size:>7} {version:>8} {serving:>19.2f} {rescore:>16.2f} {accuracy:>12.1%}   "
                  + " ".join(f"{timings.get(p, 0):>9.2f}" for p in phases))  # fmt: skip
    last = {head: rows[-1] for head, rows in results.items()}
    for head, row in last.items():
        print(f"{head}: at {row[0]} labels {row[2]:.2f} s trigger-to-serving (target <= 2 s: {'met' if row[2] <= 2 else 'NOT met'})")
    if len(last) == 2:
        print(f"semi / supervised at {last['semi'][0]} labels: {last['semi'][2] / last['supervised'][2]:.2f}x")
    return 0


def run(args: argparse.Namespace, head_name: str) -> list[tuple]:
    """Retrain at every size with one head; the rows of the table."""
    import functools

    import numpy as np

    from app.core.demo import seed_demo
    from app.worker.scheduler import Scheduler
    from app.services import build_services
    from app.store import NewItem, NewLabel, Store
    from app.core.training import default_head_factory
    from config import load_settings
    from learner.backbones import load_backbone, resolve_backbone
    from learner.cache import EmbeddingCache
    from learner.datasets import load_fashion_mnist

    sizes = sorted(args.sizes)
    n_real_pool = min(500, args.pool)
    n_total = sizes[-1] + args.holdout + n_real_pool + 10
    # 700 per class, seed 0: the images `juicer curve` embeds, so the shared cache usually holds them all.
    dataset = load_fashion_mnist("/usr/share/datasets/fashion-mnist", per_class_limit=max(0 if args.smoke else 700, n_total // 10 + 5), seed=0)
    spec = resolve_backbone(args.backbone, REPO / "data")
    backbone = load_backbone(spec, batch_size=32)
    print(f"backbone {spec.name} ({backbone.device}); {len(dataset)} Fashion-MNIST images")

    with tempfile.TemporaryDirectory(prefix="juicer-bench-") as tmp:
        data_dir = Path(tmp)
        settings = load_settings(
            environ={}, data_dir=data_dir,
            service={"retrain_after_labels": 10**6, "deliver_interval_s": 3600, "pull_interval_s": 3600},
        )  # fmt: skip
        store = Store.open(data_dir)
        store.set_meta("classes", list(dataset.class_names))
        # The labelled items enter as "pool" and get labels below, in steps; seed_demo labels 1 per class.
        seed_demo(store, data_dir, dataset, n_pool=sizes[-1] - 10 + n_real_pool, n_holdout=args.holdout, seed=2, progress=True)

        services = build_services(settings, store=store, backbone=backbone)
        services.desk = None  # no Label Studio: the jobs that need it wait
        every = [row for split in ("seed", "holdout", "pool") for row in store.items_of_split(split)]
        hashes = [r.content_hash for r in every]
        started = time.perf_counter()
        # The images' embeddings, from the shared cache where `juicer curve` put them (keyed by the arrays'
        # hashes); the PNG files the demo wrote decode to the same pixels, so their vectors are these.
        with EmbeddingCache(REPO / "data" / "embeddings", backbone.id) as shared:
            from learner.cache import embed_sources

            row_of = {item_id: i for i, item_id in enumerate(dataset.item_ids)}
            vectors = embed_sources(backbone, shared, dataset.sources, progress=True)
            real = vectors[[row_of[r.id] for r in every]]
        print(f"embedded {len(every)} images in {time.perf_counter() - started:.1f} s (cached afterwards)")
        # Stand-ins for the rest of the pool: rows with (noisy copies of real) embeddings in a temporary cache.
        n_fake = args.pool - n_real_pool
        rng = np.random.default_rng(0)
        fake = real[rng.integers(0, len(real), n_fake)]
        fake = (fake + rng.standard_normal(fake.shape).astype(np.float32) * 0.05 * fake.std()).astype(np.float32)
        fake_hashes = [f"{i:064x}" for i in range(1, n_fake + 1)]
        cache = EmbeddingCache(data_dir / "embeddings", backbone.id)
        cache.put_many(hashes + fake_hashes, np.concatenate([real, fake]))
        services.embeddings.cache = cache
        store.add_items([NewItem(f"standin/{i:06d}", h, "stand-in", "pool", f"images/{h}.png") for i, h in enumerate(fake_hashes)])
        if head_name == "supervised":
            from learner.head import SoftmaxHead

            def supervised(previous):
                if previous is not None:
                    return default_head_factory(previous, settings.service.warm_start_max_iter)
                return SoftmaxHead(random_state=0, warm_start=True)

            services.trainer.head_factory = supervised
        else:
            services.trainer.head_factory = functools.partial(
                default_head_factory, warm_start_max_iter=settings.service.warm_start_max_iter)
        print(f"{head_name}: pool of {args.pool:,} items ({n_fake:,} stand-ins)")
        truth = dict(zip(dataset.item_ids, dataset.label_names))
        pool_ids = [row.id for row in store.items_of_split("pool")]

        jobs = Scheduler(services)
        jobs.start()
        rows = []
        labelled = 10
        try:
            for size in sizes:
                new = pool_ids[labelled - 10 : size - 10]
                store.add_labels([NewLabel(item_id, truth[item_id], "api") for item_id in new])
                labelled = size
                before = services.models.current.version if services.models.current else None
                trigger = time.perf_counter()
                job_id = jobs.submit_retrain()
                while (services.models.current.version if services.models.current else None) == before:
                    if services.store.get_job(job_id).status == "failed":
                        raise SystemExit(f"retrain failed: {services.store.get_job(job_id).error}")
                    time.sleep(0.002)
                serving = time.perf_counter() - trigger
                while services.store.get_job(job_id).status in ("queued", "running"):
                    time.sleep(0.01)
                done = time.perf_counter() - trigger
                job = services.store.get_job(job_id).result
                rows.append((size, job["version"], serving, done - serving, job["holdout_accuracy"], job["timings"]))
        finally:
            jobs.shutdown()
            store.close()
            cache.close()
    return rows


if __name__ == "__main__":
    sys.exit(main())
