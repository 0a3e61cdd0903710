"""Does a different view of the same backbone lift the few-label accuracy? Measured on tuning seeds.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/embedding_variants.py [--seeds 100-104]
        [--budgets 1/class,3/class,5%,100%] [--smoke]

Fashion-MNIST 700/class, EfficientNet-Lite0, the curve's holdout and stratified random picks per seed; the
default head (``SemiSupervisedHead``, the rest of the pool unlabelled) and the plain ``SoftmaxHead`` on the
same picks, for each way of turning an image into an embedding:

- ``as is``: juicer's features (the 1,280-dim global average pool after the head convolution);
- ``flip-averaged``: the mean of the image's and its mirror image's features (test-time augmentation);
- ``inverted greys``: the features of ``255 - pixels`` (Fashion-MNIST's items are light on black; the
  catalogue photos they came from, and ImageNet's product shots, are dark on light);
- ``+ block 14 expansion``: the 1,280 features concatenated with the global average pool of block 14's
  1,152-channel expansion (a mid-level layer, often better on images far from ImageNet), each part scaled to
  unit mean row norm;
- ``at 160 px`` / ``at 288 px``: the same network fed the 28-pixel images upscaled to 160 or 288 pixels
  instead of the 224 it was trained at;
- ``bicubic`` / ``nearest``: the images upscaled to 224 pixels by another filter than juicer's bilinear one
  (sharper, and blocky);
- ``padded by 4 px``: a black border first, so the item fills less of the frame (as ImageNet's objects do).

Every variant is embedded once through the shared cache (data/embeddings; the mid layer under a backbone id
of its own), so a rerun costs head fits only. Prints mean holdout accuracy per variant, head
and budget.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402

MID_LAYER = "block14_expand_relu"


class Lite0View:
    """EfficientNet-Lite0 at another input size, or cut at a mid layer and globally average-pooled (an Embedder).

    The converted weights are the backbone's own; only the graph differs (the network is fully convolutional,
    so any input size works). Each view has a cache id of its own.
    """

    batch_size = 32

    def __init__(self, size: int = 224, layer: str | None = None) -> None:
        import tensorflow as tf
        import tf_keras

        from learner.efficientnet_lite import CONVERTER_VERSION, build_keras_model, load_weights

        model = build_keras_model(load_weights("efficientnet-lite0"), size, name="efficientnet_lite0")
        if layer is not None:
            pooled = tf_keras.layers.GlobalAveragePooling2D()(model.get_layer(layer).output)
            model = tf_keras.Model(model.input, pooled)
        self._features = tf.function(lambda images: model(images, training=False))
        self.dim = model.output.shape[-1]
        self.input_size = (size, size)
        cut = f"/{layer}" if layer else ""
        self.id = f"efficientnet-lite0{cut}:c{CONVERTER_VERSION}:{size}x{size} (benchmark)"

    def embed(self, pixels: np.ndarray) -> np.ndarray:  # embed_sources hands it batch_size images at a time
        return self._features(pixels).numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="100-104", help="tuning seeds, FIRST-LAST (default 100-104)")
    parser.add_argument("--budgets", default="1/class,3/class,5%,100%", help="N/class or P%% budgets, comma-separated")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds): check that the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.seeds, args.budgets = "100", "1/class,100%"
    from PIL import Image
    from semi_head import budget_list, embed_through_cache, fashion_dataset, seed_range

    from learner.backbones import load_backbone, resolve_backbone
    from learner.curve import budget_picks, holdout_split
    from learner.head import SoftmaxHead
    from learner.images import ArrayImage
    from learner.rules import proba_in_order
    from learner.semi import SemiSupervisedHead

    dataset = fashion_dataset(per_class=5 if args.smoke else 700)
    y = np.asarray(dataset.labels)

    def transformed(transform) -> list[ArrayImage]:
        return [ArrayImage(np.ascontiguousarray(transform(source.array)), source.source) for source in dataset.sources]

    def upscaled(resample):
        size = lite0.input_size[::-1]
        return lambda a: np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize(size, resample))

    def unit_mean_norm(Z: np.ndarray) -> np.ndarray:
        return Z / np.mean(np.linalg.norm(Z, axis=1))

    lite0 = load_backbone(resolve_backbone("efficientnet-lite0", REPO / "data"), batch_size=32)
    as_is = embed_through_cache(lite0, dataset.sources)
    variants = {
        "as is": as_is,
        "flip-averaged": (as_is + embed_through_cache(lite0, transformed(lambda a: a[:, ::-1]))) / 2,
        "inverted greys": embed_through_cache(lite0, transformed(lambda a: 255 - a)),
        "+ block 14 expansion": np.concatenate(
            [unit_mean_norm(as_is), unit_mean_norm(embed_through_cache(Lite0View(layer=MID_LAYER), dataset.sources))],
            axis=1),
        **{f"at {size} px": embed_through_cache(Lite0View(size), dataset.sources) for size in (160, 288)},
        "bicubic": embed_through_cache(lite0, transformed(upscaled(Image.Resampling.BICUBIC))),
        "nearest": embed_through_cache(lite0, transformed(upscaled(Image.Resampling.NEAREST))),
        "padded by 4 px": embed_through_cache(lite0, transformed(lambda a: np.pad(a, 4))),
    }
    budgets = budget_list(args.budgets)
    classes = np.unique(y)
    seeds = seed_range(args.seeds)
    rows = {(name, head): {b.name: [] for b in budgets} for name in variants for head in ("semi", "plain")}
    for seed in seeds:
        pool, holdout = holdout_split(y, 0.1, seed)
        for budget in budgets:
            picks = budget_picks(y, pool, budget, seed)
            rest = np.setdiff1d(pool, picks)
            for name, X in variants.items():
                semi = SemiSupervisedHead(random_state=seed).fit(
                    np.concatenate([X[picks], X[rest]]), np.concatenate([y[picks], np.full(len(rest), -1)]))
                plain = SoftmaxHead(random_state=seed).fit(X[picks], y[picks])
                for head, model in (("semi", semi), ("plain", plain)):
                    proba = proba_in_order(model, X[holdout], classes)
                    rows[(name, head)][budget.name].append(float(np.mean(classes[proba.argmax(1)] == y[holdout])))
        print(f"seed {seed} done", flush=True)
    print(f"\nFashion-MNIST {len(y) // len(classes)}/class, EfficientNet-Lite0, seeds {seeds[0]}-{seeds[-1]}; load {os.getloadavg()[0]:.1f}")
    print(f"{'embedding':>22} {'head':>6} " + " ".join(f"{b.name:>8}" for b in budgets))
    for (name, head), by_budget in rows.items():
        print(f"{name:>22} {head:>6} " + " ".join(f"{np.mean(by_budget[b.name]):>8.1%}" for b in budgets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
