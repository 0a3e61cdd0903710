"""The demo's first model and the model after 100 labels, through the service's own trainer and queue.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/demo_loop.py [--labels 100] [--seed-labels 1] [--heads semi supervised]
        [--smoke]

What ``juicer serve`` does on first start (seed the Fashion-MNIST demo: K labelled images per class, a pool of
1,000, a holdout of 1,000; fit the first model), then the loop ``juicer simulate`` drives, without Label
Studio: the trainer's review queue (service.query_strategy, ``auto`` by default) chooses the next items,
their true labels are recorded as an annotator's would be, and the head retrains every 10 labels. Both heads
run in the same process on the same demo (the semi-supervised default and the plain SoftmaxHead, with the
same query strategy), each from a fresh store. With ``--seed-labels 0`` the first 10 items are the
strategy's cold-start picks (the first model comes after them).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run(head_name: str, args: argparse.Namespace, dataset, backbone, vectors) -> list[tuple[int, float]]:
    """(labels, holdout accuracy) of every model version with one head."""
    from app.core.demo import seed_demo
    from app.services import build_services
    from app.store import NewLabel, Store
    from config import load_settings
    with tempfile.TemporaryDirectory(prefix="juicer-demo-") as tmp:
        data_dir = Path(tmp)
        settings = load_settings(environ={}, data_dir=data_dir,
                                 service={"review_batch_size": 10, "query_strategy": args.strategy})
        store = Store.open(data_dir)
        store.set_meta("classes", list(dataset.class_names))
        seed_demo(store, data_dir, dataset, n_pool=args.pool, n_holdout=args.holdout, seed=0, seed_per_class=args.seed_labels)
        services = build_services(settings, store=store, backbone=backbone)
        services.desk = None  # no Label Studio: the jobs that need it wait
        # The demo's PNG files decode to the dataset's pixels: their vectors are the arrays' cached ones.
        every = [row for split in ("seed", "holdout", "pool") for row in store.items_of_split(split)]
        row_of = {item_id: i for i, item_id in enumerate(dataset.item_ids)}
        services.embeddings.cache.put_many([r.content_hash for r in every],
                                           vectors[[row_of[r.id] for r in every]])
        if head_name == "supervised":
            from app.core.training import default_head_factory
            from learner.head import SoftmaxHead

            services.trainer.head_factory = lambda previous: (
                default_head_factory(previous, settings.service.warm_start_max_iter) if previous is not None
                else SoftmaxHead(random_state=0, warm_start=True))
        truth = dict(zip(dataset.item_ids, dataset.label_names))
        points = []
        try:
            while True:
                result = services.trainer.retrain(reason="bench", refresh_queue=False)
                if result.version:
                    points.append((result.n_labels, result.holdout_accuracy))
                    print(f"{head_name}: {result.n_labels} labels, holdout accuracy {result.holdout_accuracy:.1%}",
                          flush=True)
                if (result.n_labels or 0) >= args.labels:
                    return points
                services.trainer.refresh_review_queue()
                due = store.due_reviews(100)
                if not due:
                    return points
                store.add_labels([NewLabel(row.item_id, truth[row.item_id], "api") for row in due])
        finally:
            store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--seed-labels", type=int, default=1)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--heads", nargs="+", default=["semi", "supervised"])
    parser.add_argument("--per-class", type=int, default=None, help="Fashion-MNIST images per class to draw from")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.labels, args.per_class, args.pool, args.holdout = 30, 12, 60, 40
    args.pool, args.holdout = getattr(args, "pool", 1000), getattr(args, "holdout", 1000)
    from learner.backbones import load_backbone, resolve_backbone
    from learner.cache import EmbeddingCache, embed_sources
    from learner.datasets import load_fashion_mnist

    # serve draws 202/class; --per-class 700 draws the demo's splits from the images `juicer curve` caches.
    per_class = args.per_class or 201 + max(args.seed_labels, 1)
    dataset = load_fashion_mnist("/usr/share/datasets/fashion-mnist", per_class_limit=per_class, seed=0)
    backbone = load_backbone(resolve_backbone("efficientnet-lite0", REPO / "data"), batch_size=32)
    with EmbeddingCache(REPO / "data" / "embeddings", backbone.id) as shared:
        vectors = embed_sources(backbone, shared, dataset.sources, progress=True)
    results = {head: run(head, args, dataset, backbone, vectors) for head in args.heads}
    print(f"\ndemo (pool {args.pool:,}, holdout {args.holdout:,}, {args.seed_labels}/class to start, {args.strategy} picks, retrain every 10)"
          f"; load {os.getloadavg()[0]:.1f}")
    for head, points in results.items():
        print(f"{head:>11}: " + ", ".join(f"{n}: {a:.1%}" for n, a in points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
