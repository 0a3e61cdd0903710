"""Retrain latency: from the trigger (POST /v1/retrain's job) to the new version serving, at 100/1,000/6,000 labels.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/retrain.py [--sizes 100 1000 6000] [--holdout 1000]

Fashion-MNIST images are written and embedded once beforehand (the service embeds every image when it
arrives; the embedding cache lives in data/embeddings and is reused by later runs). Each retrain is asked
for through the scheduler exactly as ``POST /v1/retrain`` does, and the clock stops when
``ModelHolder.current`` shows the new version. Re-scoring the pool afterwards is timed on its own.
Target (issue 4): at most 2 s at 6,000 labels.
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
    parser.add_argument("--holdout", type=int, default=1000)
    parser.add_argument("--pool", type=int, default=500, help="unlabelled pool re-scored after each retrain")
    parser.add_argument("--backbone", default="efficientnet-lite0")
    args = parser.parse_args()

    from app.demo import seed_demo
    from app.jobs import Jobs
    from app.services import build_services
    from app.store import NewLabel, Store
    from config import load_settings
    from learner.backbones import load_backbone, resolve_backbone
    from learner.cache import EmbeddingCache
    from learner.datasets import load_fashion_mnist

    sizes = sorted(args.sizes)
    n_total = sizes[-1] + args.holdout + args.pool + 10
    dataset = load_fashion_mnist("/usr/share/datasets/fashion-mnist", per_class_limit=n_total // 10 + 5, seed=21)
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
        seed_demo(store, data_dir, dataset, n_pool=sizes[-1] - 10 + args.pool, n_holdout=args.holdout, seed=2, progress=True)

        class NoDesk:
            def health(self) -> bool:
                return True

        services = build_services(settings, store=store, backbone=backbone, desk=NoDesk())
        services.embeddings.cache = EmbeddingCache(REPO / "data" / "embeddings", backbone.id)
        every = [row for split in ("seed", "holdout", "pool") for row in store.items_of_split(split)]
        sources = [services.trainer.source_for(r["id"], r["content_hash"], r["source"], r["image_path"]) for r in every]
        started = time.perf_counter()
        services.embeddings.embed(sources, progress=True)
        print(f"embedded {len(sources)} images in {time.perf_counter() - started:.1f} s (cached afterwards)")
        truth = dict(zip(dataset.item_ids, dataset.label_names))
        pool_ids = [row["id"] for row in store.items_of_split("pool")]

        jobs = Jobs(services)
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
                    if services.store.get_job(job_id)["status"] == "failed":
                        raise SystemExit(f"retrain failed: {services.store.get_job(job_id)['error']}")
                    time.sleep(0.002)
                serving = time.perf_counter() - trigger
                while services.store.get_job(job_id)["status"] in ("queued", "running"):
                    time.sleep(0.01)
                done = time.perf_counter() - trigger
                job = services.store.get_job(job_id)["result"]
                rows.append((size, job["version"], serving, done - serving, job["holdout_accuracy"], job["timings"]))
        finally:
            jobs.shutdown()
            store.close()

    print()
    phases = ("labels", "embeddings", "fit", "holdout", "record_and_swap")
    print(f"{'labels':>7} {'version':>8} {'trigger->serving s':>19} {'re-score pool s':>16} {'holdout acc':>12}   "
          + " ".join(f"{p:>9}" for p in phases))  # fmt: skip
    for size, version, serving, rescore, accuracy, timings in rows:
        print(f"{size:>7} {version:>8} {serving:>19.2f} {rescore:>16.2f} {accuracy:>12.1%}   "
              + " ".join(f"{timings.get(p, 0):>9.2f}" for p in phases))  # fmt: skip
    last = rows[-1]
    print(f"\nat {last[0]} labels: {last[2]:.2f} s trigger-to-serving (target <= 2 s: {'met' if last[2] <= 2 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
