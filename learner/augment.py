"""Optional training-set augmentation for the data-size curve: random flip, crop and brightness.

Each augmented copy is an :class:`~learner.images.ImageSource` of its own whose ``content_hash`` is derived
from the base image's hash and the exact augmentation parameters, so the embedding cache stores each copy
under its own key and a second run with the same seed embeds nothing new. The parameters are drawn from a
generator seeded by ``seed`` and the base image's hash: the same image and seed always give the same copies,
and two different images with the same seed get different ones.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from learner.images import ImageSource, resize_float

# Parameters are rounded to this many decimals before use, so the hash key and the pixels agree exactly.
_DECIMALS = 4
_HASH_VERSION = "augment-v1"


@dataclass(frozen=True)
class AugmentParams:
    """One augmentation: a crop box (fractions of the image), then an optional left-right flip, then brightness."""

    crop_top: float = 0.0
    crop_left: float = 0.0
    crop_height: float = 1.0
    crop_width: float = 1.0
    flip: bool = False
    brightness: float = 1.0  # pixel values are multiplied by this, then clipped to [0, 1]

    def __post_init__(self) -> None:
        for name in ("crop_top", "crop_left", "crop_height", "crop_width", "brightness"):
            object.__setattr__(self, name, round(float(getattr(self, name)), _DECIMALS))
        if not (0 < self.crop_height <= 1 and 0 < self.crop_width <= 1):
            raise ValueError(f"crop height and width must be fractions in (0, 1], got {self}")
        if not (0 <= self.crop_top <= 1 - self.crop_height + 1e-9 and 0 <= self.crop_left <= 1 - self.crop_width + 1e-9):
            raise ValueError(f"the crop box must lie inside the image, got {self}")
        if self.brightness <= 0:
            raise ValueError(f"brightness must be positive, got {self.brightness}")

    def key(self) -> str:
        """A canonical text form of the parameters (part of the content hash)."""
        return (
            f"crop={self.crop_top:.{_DECIMALS}f},{self.crop_left:.{_DECIMALS}f},"
            f"{self.crop_height:.{_DECIMALS}f},{self.crop_width:.{_DECIMALS}f};"
            f"flip={int(self.flip)};brightness={self.brightness:.{_DECIMALS}f}"
        )


class AugmentedImage:
    """An :class:`ImageSource` that decodes its base image and applies :class:`AugmentParams`."""

    __slots__ = ("_base", "_params", "_hash")

    def __init__(self, base: ImageSource, params: AugmentParams) -> None:
        self._base = base
        self._params = params
        self._hash: str | None = None

    @property
    def base(self) -> ImageSource:
        """The image this copy was made from."""
        return self._base

    @property
    def params(self) -> AugmentParams:
        """What was done to it."""
        return self._params

    @property
    def content_hash(self) -> str:
        """sha256 hex of the base image's hash and the augmentation parameters."""
        if self._hash is None:
            text = f"{_HASH_VERSION}:{self._base.content_hash}:{self._params.key()}"
            self._hash = hashlib.sha256(text.encode()).hexdigest()
        return self._hash

    @property
    def source(self) -> str:
        """The base image's name with the augmentation, for errors."""
        return f"{self._base.source} [augmented {self._params.key()}]"

    def pixels(self, size: tuple[int, int]) -> np.ndarray:
        """The augmented image as float32 (h, w, 3) RGB in [0, 1] at exactly ``size=(h, w)``."""
        height, width = (int(v) for v in size)
        p = self._params
        # Decode the base so that the crop box comes out at about the requested size, then resize exactly.
        base_h = max(height, math.ceil(height / p.crop_height))
        base_w = max(width, math.ceil(width / p.crop_width))
        full = self._base.pixels((base_h, base_w))
        top, left = round(p.crop_top * base_h), round(p.crop_left * base_w)
        box_h = max(1, min(base_h - top, round(p.crop_height * base_h)))
        box_w = max(1, min(base_w - left, round(p.crop_width * base_w)))
        out = resize_float(full[top : top + box_h, left : left + box_w], (height, width))
        if p.flip:
            out = out[:, ::-1]
        if p.brightness != 1.0:
            out = out * np.float32(p.brightness)
        return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)

    def __repr__(self) -> str:
        return f"AugmentedImage({self._base!r}, {self._params.key()})"


def random_params(rng: np.random.Generator, *, min_crop: float = 0.8, max_brightness_change: float = 0.2) -> AugmentParams:
    """Draw one :class:`AugmentParams`: each crop side in [min_crop, 1], flip with p=0.5, brightness 1 +- change."""
    crop_height = rng.uniform(min_crop, 1.0)
    crop_width = rng.uniform(min_crop, 1.0)
    return AugmentParams(
        crop_top=rng.uniform(0.0, 1.0 - crop_height),
        crop_left=rng.uniform(0.0, 1.0 - crop_width),
        crop_height=crop_height,
        crop_width=crop_width,
        flip=bool(rng.random() < 0.5),
        brightness=rng.uniform(1.0 - max_brightness_change, 1.0 + max_brightness_change),
    )


def augment(
    source: ImageSource,
    n_copies: int,
    seed: int,
    *,
    min_crop: float = 0.8,
    max_brightness_change: float = 0.2,
) -> list[ImageSource]:
    """``n_copies`` randomly flipped / cropped / brightened copies of ``source`` (not including the original).

    Deterministic in (``source.content_hash``, ``seed``); nothing is decoded until a copy's ``pixels`` is called.
    """
    if n_copies < 0:
        raise ValueError(f"n_copies must be >= 0, got {n_copies}")
    if not 0 < min_crop <= 1:
        raise ValueError(f"min_crop must be in (0, 1], got {min_crop}")
    if not 0 <= max_brightness_change < 1:
        raise ValueError(f"max_brightness_change must be in [0, 1), got {max_brightness_change}")
    rng = np.random.default_rng([int(seed), int(source.content_hash[:16], 16)])
    return [
        AugmentedImage(source, random_params(rng, min_crop=min_crop, max_brightness_change=max_brightness_change))
        for _ in range(n_copies)
    ]
