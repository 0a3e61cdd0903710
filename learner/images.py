"""Decoding images into the backbone's input: RGB float32 in [0, 1] at an exact (height, width).

Every image juicer sees enters through an :class:`ImageSource`: a file on disk (:class:`FileImage`), an upload
(:class:`BytesImage`) or an array from a dataset (:class:`ArrayImage`). A source is cheap to create (nothing is
read or decoded until :meth:`ImageSource.pixels` is called), so a dataset of 70,000 can hold them all, and its
``content_hash`` keys the embedding cache.

Decoding is strict, because a silently half-decoded image would poison training data:

- accepted formats, recognised by content (never by file name): JPEG (and camera MPO), PNG, GIF and WebP
  (the first frame of an animation);
- the EXIF orientation is applied (a phone photo taken upright comes out upright);
- transparency is composited on white; palette, grey, 16-bit and CMYK images become RGB;
- the pixel count is checked from the header *before* decoding, so a decompression bomb never allocates;
- a truncated file is rejected, never padded with grey.

Failures raise :class:`~learner.errors.ImageDecodeError` or :class:`~learner.errors.ImageTooLargeError`, whose
message names the file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from learner.errors import ImageDecodeError, ImageTooLargeError

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000

# Pillow plugins we let near untrusted bytes. The JPEG plugin returns "MPO" for many camera JPEGs.
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP")

_WHITE = (255, 255, 255, 255)

_ORIENTATION_TAG = ExifTags.Base.Orientation  # EXIF 2.3, tag 0x0112

# uint8 -> float32 in [0, 1] by table lookup: one pass, several times faster than astype() then divide.
_UINT8_TO_UNIT = np.arange(256, dtype=np.float32) / np.float32(255.0)

# What Pillow raises from inside its decoders on malformed input.
_DECODER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error, zlib.error)


@runtime_checkable
class ImageSource(Protocol):
    """An image that can be decoded on demand; see the module docstring."""

    @property
    def content_hash(self) -> str:
        """sha256 hex of the encoded bytes, or of a canonical encoding of an array: the embedding-cache key."""
        ...

    @property
    def source(self) -> str:
        """A human name for errors: a path, an upload's file name, ``fashion-mnist/train/00123``."""
        ...

    def pixels(self, size: tuple[int, int]) -> np.ndarray:
        """float32 ``(h, w, 3)`` RGB in [0, 1] resized to exactly ``size=(h, w)`` (bilinear, no crop)."""
        ...


@dataclass(frozen=True)
class ImageInfo:
    """What an image's header says, read without decoding its pixels."""

    format: str  # Pillow's name: "JPEG", "PNG", "GIF", "WEBP" ("MPO" is reported as "JPEG")
    width: int
    height: int  # as stored; see ``oriented_size`` for how it is shown
    mode: str
    n_frames: int
    orientation: int  # EXIF orientation 1..8 (1 = as stored)

    @property
    def n_pixels(self) -> int:
        """Width times height."""
        return self.width * self.height

    @property
    def oriented_size(self) -> tuple[int, int]:
        """(height, width) after the EXIF orientation is applied."""
        if self.orientation in (5, 6, 7, 8):
            return self.width, self.height
        return self.height, self.width


def content_hash(data: bytes) -> str:
    """sha256 hex digest of ``data``: the key of an encoded image in the embedding cache."""
    return hashlib.sha256(data).hexdigest()


def array_content_hash(array: np.ndarray) -> str:
    """sha256 hex of a canonical encoding of ``array``: dtype, shape, then its C-order bytes."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(f"ndarray:{array.dtype.str}:{','.join(map(str, array.shape))}:".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def sniff_format(head: bytes) -> str | None:
    """The format of an encoded image from its first 12 bytes ("JPEG", "PNG", "GIF", "WEBP"), else None.

    A cheap content check for listing folders; :func:`decode_image` does the real validation.
    """
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _open(data: bytes, source: str) -> Image.Image:
    """Open (parse the header of) ``data`` with our supported plugins only; raise ImageDecodeError otherwise."""
    if not data:
        raise ImageDecodeError("the file is empty (0 bytes); expected a JPEG, PNG, GIF or WebP image", source)
    try:
        return Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"the image is too large to decode safely ({exc})", source) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(_unidentified_reason(data), source) from exc
    except _DECODER_ERRORS as exc:
        raise ImageDecodeError(f"the image header is damaged or truncated ({exc}); re-export the file", source) from exc


def _unidentified_reason(data: bytes) -> str:
    """Why Pillow could not open ``data`` with our plugins: another image format, or not an image at all."""
    supported = "JPEG, PNG, GIF or WebP"
    if sniff_format(data[:12]) is not None:
        return f"the {sniff_format(data[:12])} header is damaged or truncated; re-export the file"
    try:
        # Only the header is parsed; nothing is decoded here.
        with Image.open(io.BytesIO(data)) as other:
            name = other.format or "unknown"
    except Exception:  # noqa: BLE001 - any failure here just means "not an image we know"
        return f"not an image (expected {supported}; the content is not a known image format)"
    return f"unsupported image format {name}; convert it to {supported}"


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8); 1 when absent or unreadable (a broken EXIF block must not fail the image).

    Never decodes pixels: Pillow's ``getexif()`` on a PNG whose eXIf chunk was not met before the image data
    loads the whole image to look for one after it (a 13,000 x 13,000 bomb costs 0.5 GB that way), so a PNG
    counts only the EXIF its header already carried.
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception as exc:  # noqa: BLE001 - malformed EXIF is common and never fatal
        log.debug("ignoring unreadable EXIF (%s)", exc)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _check_pixels(width: int, height: int, max_pixels: int, source: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"the header says the image is {width}x{height} pixels", source)
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image is {width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,} "
            "(a decompression bomb, or simply too big: downscale it or raise learner.max_image_pixels)",
            source,
        )


def _png_is_complete(data: bytes) -> bool:
    """Walk the PNG chunks: True when an IEND chunk is reached inside ``data``."""
    offset = 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        offset += 12 + length  # length, type, body, CRC
        if kind == b"IEND":
            return offset <= len(data)
    return False


def _gif_is_complete(data: bytes) -> bool:
    """Walk the GIF blocks (GIF89a spec): True when the trailer (0x3B) is reached inside ``data``."""
    if len(data) < 13:
        return False
    flags = data[10]
    offset = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # header, screen descriptor, global colours
    while offset < len(data):
        block = data[offset]
        if block == 0x3B:  # trailer
            return True
        if block == 0x21:  # extension: label, then data sub-blocks
            offset += 2
        elif block == 0x2C:  # image: descriptor, local colours, LZW code size, then data sub-blocks
            if offset + 10 > len(data):
                return False
            local = data[offset + 9]
            offset += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
        else:
            return False
        while offset < len(data) and data[offset] != 0:  # sub-blocks, ended by a zero-length one
            offset += data[offset] + 1
        offset += 1
    return False


def _webp_is_complete(data: bytes) -> bool:
    """True when the RIFF container holds as many bytes as its header says."""
    return len(data) >= 12 and len(data) >= 8 + struct.unpack("<I", data[4:8])[0]


_COMPLETENESS_CHECKS = {"PNG": _png_is_complete, "GIF": _gif_is_complete, "WEBP": _webp_is_complete}


def _check_complete(data: bytes, image_format: str, source: str) -> None:
    """Reject truncated PNG, GIF and WebP files even where Pillow would decode the pixels that are there.

    (Pillow returns a PNG without its IEND chunk, or a GIF cut after its first frame, as if nothing were wrong.
    A truncated JPEG makes Pillow's decoder fail by itself.)
    """
    check = _COMPLETENESS_CHECKS.get(image_format)
    if check is not None and not check(data):
        raise ImageDecodeError(
            f"the {image_format} file is truncated (its end is missing); re-download or re-export it", source
        )


def image_info(data: bytes, *, source: str = "<bytes>") -> ImageInfo:
    """Read format, size, mode, frame count and EXIF orientation from the header, without decoding pixels."""
    with _open(data, source) as image:
        image_format = "JPEG" if image.format == "MPO" else str(image.format)
        return ImageInfo(
            format=image_format,
            width=image.width,
            height=image.height,
            mode=image.mode,
            n_frames=int(getattr(image, "n_frames", 1)),
            orientation=_orientation(image),
        )


def _to_rgb(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """A loaded image in any mode -> float32 (h, w, 3) RGB in [0, 1] at ``size``, transparency on white."""
    height, width = size
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16-bit grey: Pillow's convert("L") would clip, not scale; resize in float to keep the precision.
        grey = np.asarray(image, dtype=np.float32)
        if mode != "F":
            grey = grey / np.float32(65535.0)
        grey = resize_float(np.clip(grey, 0.0, 1.0)[:, :, None], (height, width))[:, :, 0]
        return np.repeat(np.clip(grey, 0.0, 1.0)[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        # Composite before resizing, so transparent pixels' hidden colours never bleed into the edges.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        image = Image.alpha_composite(background, rgba).convert("RGB")
    elif mode != "RGB":
        image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return _UINT8_TO_UNIT[np.asarray(image)]


def resize_float(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float32 (h, w, c) array to exactly ``size=(h, w)``, channel by channel."""
    height, width = size
    if array.shape[:2] == (height, width):
        return np.ascontiguousarray(array, dtype=np.float32)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(array[:, :, c], dtype=np.float32), mode="F").resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
        for c in range(array.shape[2])
    ]
    return np.stack(channels, axis=2)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"size must be (height, width), got {size!r}") from exc
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive (height, width), got {size!r}")
    return height, width


def decode_image(
    data: bytes, size: tuple[int, int], *, source: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode an encoded image into float32 ``(h, w, 3)`` RGB in [0, 1] at exactly ``size=(h, w)``.

    See the module docstring for what is accepted. Raises ImageDecodeError / ImageTooLargeError naming ``source``.
    """
    height, width = _check_size(size)
    image = opened = _open(data, source)
    try:
        _check_pixels(image.width, image.height, max_pixels, source)
        _check_complete(data, str(image.format), source)
        orientation = _orientation(image)
        if image.format in ("JPEG", "MPO") and image.mode in ("RGB", "L", "CMYK", "YCbCr"):
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the photo is much larger than needed.
            wanted = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
            image.draft(image.mode if image.mode != "CMYK" else None, wanted)
        try:
            image.load()  # an animation opens at its first frame: that is the one decoded
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"the image is too large to decode safely ({exc})", source) from exc
        except _DECODER_ERRORS as exc:
            raise ImageDecodeError(
                f"cannot decode the {image.format} data ({exc}); the file is truncated or corrupt", source
            ) from exc
        if orientation != 1:  # 1 also stands for an absent or unreadable EXIF block: Pillow never sees those
            ImageOps.exif_transpose(image, in_place=True)
        try:
            return _to_rgb(image, (height, width))
        except _DECODER_ERRORS as exc:
            raise ImageDecodeError(f"cannot convert the {image.mode} image to RGB ({exc})", source) from exc
    finally:
        opened.close()


class BytesImage:
    """An encoded image held in memory (an upload); decoded on each :meth:`pixels` call."""

    __slots__ = ("_data", "_source", "_max_pixels", "_hash")

    def __init__(self, data: bytes, source: str = "<upload>", max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self._data = bytes(data)
        self._source = source
        self._max_pixels = max_pixels
        self._hash: str | None = None

    @property
    def data(self) -> bytes:
        """The encoded bytes."""
        return self._data

    @property
    def content_hash(self) -> str:
        """sha256 hex of the encoded bytes."""
        if self._hash is None:
            self._hash = content_hash(self._data)
        return self._hash

    @property
    def source(self) -> str:
        """The upload's name, for errors."""
        return self._source

    def info(self) -> ImageInfo:
        """Header facts (format, size) without decoding."""
        return image_info(self._data, source=self._source)

    def pixels(self, size: tuple[int, int]) -> np.ndarray:
        """Decoded RGB float32 at ``size=(h, w)``."""
        return decode_image(self._data, size, source=self._source, max_pixels=self._max_pixels)

    def __repr__(self) -> str:
        return f"BytesImage(source={self._source!r}, {len(self._data)} bytes)"


class DecodedImage:
    """Another source's pixels decoded once at one size (a request decodes its images before it writes anything,
    then embeds them): :meth:`pixels` at that size costs nothing; any other size decodes the source again."""

    __slots__ = ("_image", "_size", "_pixels")

    def __init__(self, image: ImageSource, size: tuple[int, int]) -> None:
        self._image = image
        self._size = _check_size(size)
        self._pixels = image.pixels(self._size)  # raises the source's ImageError here

    @property
    def content_hash(self) -> str:
        """The source's content hash."""
        return self._image.content_hash

    @property
    def source(self) -> str:
        """The source's name, for errors."""
        return self._image.source

    def pixels(self, size: tuple[int, int]) -> np.ndarray:
        """The decoded pixels (the source decoded again for another size)."""
        return self._pixels if _check_size(size) == self._size else self._image.pixels(size)

    def __repr__(self) -> str:
        return f"DecodedImage({self._image!r}, {self._size})"


class FileImage:
    """An encoded image file; read (and hashed) lazily, decoded on each :meth:`pixels` call."""

    __slots__ = ("_path", "_max_pixels", "_hash", "_source")

    def __init__(
        self,
        path: str | Path,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        *,
        content_hash: str | None = None,
        source: str | None = None,
    ) -> None:
        """``content_hash``: the file's sha256 when already known (a stored upload); ``source``: the name errors
        use, when the file stands for something else (an upload's original name); the path by default."""
        self._path = Path(path)
        self._max_pixels = max_pixels
        self._hash = content_hash
        self._source = source

    @property
    def path(self) -> Path:
        """The file's path."""
        return self._path

    @property
    def source(self) -> str:
        """The name errors use: ``source`` if given, else the file's path as text."""
        return self._source or str(self._path)

    def read_bytes(self) -> bytes:
        """The file's bytes; ImageDecodeError naming the file if it cannot be read."""
        try:
            return self._path.read_bytes()
        except OSError as exc:
            where = "the file" if self._source is None else f"the file {self._path}"
            raise ImageDecodeError(f"cannot read {where} ({exc.strerror or exc})", self.source) from exc

    @property
    def content_hash(self) -> str:
        """sha256 hex of the file's bytes (read once, then remembered)."""
        if self._hash is None:
            self._hash = content_hash(self.read_bytes())
        return self._hash

    def info(self) -> ImageInfo:
        """Header facts (format, size) without decoding."""
        return image_info(self.read_bytes(), source=self.source)

    def pixels(self, size: tuple[int, int]) -> np.ndarray:
        """Decoded RGB float32 at ``size=(h, w)``."""
        data = self.read_bytes()
        if self._hash is None:
            self._hash = content_hash(data)
        return decode_image(data, size, source=self.source, max_pixels=self._max_pixels)

    def __repr__(self) -> str:
        return f"FileImage({str(self._path)!r})"


class ArrayImage:
    """A uint8 array already in memory: ``(h, w)`` grey or ``(h, w, 3)`` RGB (Fashion-MNIST, tests)."""

    __slots__ = ("_array", "_source", "_hash")

    def __init__(self, array: np.ndarray, source: str) -> None:
        array = np.asarray(array)
        if array.dtype != np.uint8:
            raise ValueError(f"{source}: ArrayImage needs a uint8 array, got {array.dtype}")
        if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)) or 0 in array.shape:
            raise ValueError(f"{source}: ArrayImage needs shape (h, w) or (h, w, 3), got {array.shape}")
        self._array = array
        self._source = source
        self._hash: str | None = None

    @property
    def array(self) -> np.ndarray:
        """The uint8 pixels as given."""
        return self._array

    @property
    def source(self) -> str:
        """The item's name, for errors."""
        return self._source

    @property
    def content_hash(self) -> str:
        """sha256 hex of dtype, shape and bytes of the array."""
        if self._hash is None:
            self._hash = array_content_hash(self._array)
        return self._hash

    def pixels(self, size: tuple[int, int]) -> np.ndarray:
        """RGB float32 at ``size=(h, w)`` (timings: benchmarks/bench_images.py)."""
        height, width = _check_size(size)
        mode = "L" if self._array.ndim == 2 else "RGB"
        image = Image.fromarray(np.ascontiguousarray(self._array), mode=mode)
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)  # grey resized once, not per channel
        if mode == "L":
            image = image.convert("RGB")
        return _UINT8_TO_UNIT[np.asarray(image)]

    def __repr__(self) -> str:
        return f"ArrayImage(source={self._source!r}, shape={self._array.shape})"

