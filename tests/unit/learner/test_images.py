"""Decoding behind the ImageSource seam: every accepted kind of file, EXIF orientation, and strict rejections."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from learner.errors import ImageDecodeError, ImageError, ImageTooLargeError
from learner.images import (
    ArrayImage,
    BytesImage,
    DecodedImage,
    FileImage,
    content_hash,
    decode_image,
    image_info,
    sniff_format,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
ORANGE = (200, 100, 50)


def encode(image: Image.Image, fmt: str, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_kwargs)
    return buffer.getvalue()


def solid(colour, size=(32, 24), mode="RGB") -> Image.Image:
    """A solid image of ``size=(w, h)``."""
    return Image.new(mode, size, colour)


def assert_colour(pixel: np.ndarray, rgb, tol: float = 0.04) -> None:
    np.testing.assert_allclose(pixel, np.array(rgb, dtype=np.float32) / 255, atol=tol)


# ---------------------------------------------------------------------------------------------- good files


@pytest.mark.parametrize(
    "fmt, kwargs",
    [("JPEG", {"quality": 95}), ("PNG", {}), ("GIF", {}), ("WEBP", {"lossless": True}), ("WEBP", {"quality": 90})],
)
def test_every_format_decodes_to_rgb_floats_at_the_requested_size(fmt, kwargs):
    data = encode(solid(ORANGE, (40, 30)), fmt, **kwargs)
    pixels = decode_image(data, (17, 33), source="orange")
    assert pixels.shape == (17, 33, 3) and pixels.dtype == np.float32
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0
    assert_colour(pixels.mean(axis=(0, 1)), ORANGE)


def test_grey_images_come_out_as_three_equal_channels():
    grey = Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1)), mode="L")
    for fmt in ("PNG", "JPEG"):
        pixels = decode_image(encode(grey, fmt), (16, 64))
        np.testing.assert_array_equal(pixels[..., 0], pixels[..., 1])
        np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])
    png = decode_image(encode(grey, "PNG"), (16, 64))
    np.testing.assert_allclose(png[0, :, 0], np.arange(0, 256, 4) / 255, atol=1e-6)


def test_png_alpha_is_composited_on_white():
    rgba = np.zeros((10, 30, 4), dtype=np.uint8)
    rgba[:, :10] = (0, 0, 0, 0)  # fully transparent black: must come out white, not black
    rgba[:, 10:20] = (255, 0, 0, 255)  # opaque red
    rgba[:, 20:] = (255, 0, 0, 128)  # half transparent red over white: pink
    pixels = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"), (10, 30))
    assert_colour(pixels[5, 5], (255, 255, 255), tol=1e-6)
    assert_colour(pixels[5, 15], RED, tol=1e-6)
    assert_colour(pixels[5, 25], (255, 127, 127), tol=0.01)


def test_grey_with_alpha_png():
    la = Image.fromarray(np.dstack([np.full((8, 8), 0, np.uint8), np.full((8, 8), 0, np.uint8)]), "LA")
    assert_colour(decode_image(encode(la, "PNG"), (8, 8))[4, 4], (255, 255, 255), tol=1e-6)


def test_palette_png_keeps_its_colours_and_transparent_index_becomes_white():
    palette_image = Image.new("P", (20, 10))
    palette_image.putpalette([*RED, *GREEN, *BLUE] + [0] * (256 * 3 - 9))
    palette_image.paste(1, (0, 0, 10, 10))  # green on the left
    palette_image.paste(2, (10, 0, 20, 10))  # blue on the right
    opaque = decode_image(encode(palette_image, "PNG"), (10, 20))
    assert_colour(opaque[5, 2], GREEN, tol=1e-6)
    assert_colour(opaque[5, 17], BLUE, tol=1e-6)
    transparent = decode_image(encode(palette_image, "PNG", transparency=2), (10, 20))
    assert_colour(transparent[5, 2], GREEN, tol=1e-6)
    assert_colour(transparent[5, 17], (255, 255, 255), tol=1e-6)


def test_16_bit_grey_png_keeps_its_range():
    values = np.array([[0, 16384, 32768, 65535]], dtype=np.uint16).repeat(4, axis=0)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    data = encode(image, "PNG")
    assert image_info(data).mode.startswith("I")
    pixels = decode_image(data, (4, 4))
    # Pillow's plain convert("L") would clip everything above 255 to white; we scale instead.
    np.testing.assert_allclose(pixels[0, :, 0], values[0] / 65535, atol=1e-4)
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])


def sixteen_bit_png(array: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit-per-channel PNG written by hand (Pillow cannot write 48/64-bit colour)."""
    height, width = array.shape[:2]
    big_endian = array.astype(">u2")
    raw = b"".join(b"\x00" + big_endian[row].tobytes() for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")
    )


def test_16_bit_colour_png_with_and_without_alpha():
    rgb = np.zeros((4, 6, 3), np.uint16)
    rgb[...] = (65535, 32768, 0)
    assert_colour(decode_image(sixteen_bit_png(rgb, 2), (4, 6))[1, 1], (255, 128, 0), tol=0.01)
    rgba = np.zeros((4, 6, 4), np.uint16)
    rgba[:, :3] = (0, 0, 65535, 65535)  # opaque blue on the left
    rgba[:, 3:] = (0, 0, 0, 0)  # transparent black on the right
    pixels = decode_image(sixteen_bit_png(rgba, 6), (4, 6))
    assert_colour(pixels[1, 0], BLUE, tol=0.01)
    assert_colour(pixels[1, 5], (255, 255, 255), tol=0.01)


def test_cmyk_jpeg_becomes_rgb():
    pixels = decode_image(encode(solid((0, 255, 255, 0), mode="CMYK"), "JPEG", quality=95), (8, 8))
    assert_colour(pixels[4, 4], RED, tol=0.05)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animations_decode_their_first_frame(fmt):
    frames = [solid(RED), solid(GREEN), solid(BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert image_info(data).n_frames == 3
    assert_colour(decode_image(data, (12, 16)).mean(axis=(0, 1)), RED, tol=0.05)


def test_large_jpeg_is_decoded_at_reduced_scale_with_the_right_content():
    image = np.zeros((1500, 2000, 3), dtype=np.uint8)
    image[:, :1000] = RED
    image[:, 1000:] = BLUE
    pixels = decode_image(encode(Image.fromarray(image), "JPEG", quality=95), (224, 224))
    assert pixels.shape == (224, 224, 3)
    assert_colour(pixels[112, 50], RED, tol=0.05)
    assert_colour(pixels[112, 170], BLUE, tol=0.05)


# ---------------------------------------------------------------------------------------------- orientation


def marked_tall_image() -> Image.Image:
    """40 wide x 60 tall, blue, a red block at the top-left and a green block at the top-right (as stored)."""
    array = np.zeros((60, 40, 3), dtype=np.uint8)
    array[:] = BLUE
    array[:20, :15] = RED
    array[:20, 25:] = GREEN
    return Image.fromarray(array)


def with_orientation(image: Image.Image, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    kwargs = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    return encode(image, fmt, exif=exif.tobytes(), **kwargs)


def corner(pixels: np.ndarray, where: str) -> np.ndarray:
    h, w = pixels.shape[:2]
    row = 3 if where[0] == "T" else h - 4
    col = 3 if where[1] == "L" else w - 4
    return pixels[row, col]


# Where the stored top-left (red) and top-right (green) corners are seen, per EXIF orientation (EXIF 2.3).
ORIENTATIONS = {
    1: ("TL", "TR"),
    2: ("TR", "TL"),  # mirrored left-right
    3: ("BR", "BL"),  # rotated 180
    4: ("BL", "BR"),  # mirrored top-bottom
    5: ("TL", "BL"),  # transposed
    6: ("TR", "BR"),  # rotated 90 clockwise (a phone held upright)
    7: ("BR", "TR"),  # transversed
    8: ("BL", "TL"),  # rotated 90 counter-clockwise
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied_to_jpeg(orientation):
    data = with_orientation(marked_tall_image(), "JPEG", orientation)
    info = image_info(data)
    assert info.orientation == orientation
    height, width = info.oriented_size
    assert (height, width) == ((60, 40) if orientation < 5 else (40, 60))  # 5..8 come out wide
    pixels = decode_image(data, (height, width))
    red_at, green_at = ORIENTATIONS[orientation]
    assert_colour(corner(pixels, red_at), RED, tol=0.1)
    assert_colour(corner(pixels, green_at), GREEN, tol=0.1)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_exif_orientation_is_applied_to_png_and_webp(fmt):
    data = with_orientation(marked_tall_image(), fmt, 6)
    assert image_info(data).oriented_size == (40, 60)
    pixels = decode_image(data, (40, 60))
    assert_colour(corner(pixels, "TR"), RED, tol=0.02)
    assert_colour(corner(pixels, "BR"), GREEN, tol=0.02)
    assert_colour(corner(pixels, "TL"), BLUE, tol=0.02)


# ---------------------------------------------------------------------------------------------- bad files


def test_not_an_image_is_rejected_naming_the_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n" * 10)
    with pytest.raises(ImageDecodeError) as excinfo:
        FileImage(path).pixels((8, 8))
    assert excinfo.value.source == str(path) and str(path) in str(excinfo.value)
    assert "not an image" in str(excinfo.value)


def test_empty_file_is_rejected(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty"):
        FileImage(path).pixels((8, 8))


def test_missing_file_is_an_image_error_naming_it(tmp_path):
    path = tmp_path / "gone.jpg"
    with pytest.raises(ImageDecodeError) as excinfo:
        FileImage(path).pixels((8, 8))
    assert str(path) in str(excinfo.value)


def test_a_stored_file_keeps_its_known_hash_and_the_name_it_stands_for(tmp_path):
    path = tmp_path / "stored.png"
    known = FileImage(path, content_hash="ab" * 32, source="upload: shirt.png")
    assert known.content_hash == "ab" * 32  # not read: the file does not even exist yet
    with pytest.raises(ImageDecodeError) as excinfo:
        known.pixels((8, 8))
    assert excinfo.value.source == "upload: shirt.png" and str(path) in str(excinfo.value)


def noisy(size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, -2])
def test_truncated_jpeg_is_rejected(keep):
    data = encode(noisy(), "JPEG", quality=90)
    cut = data[: int(len(data) * keep)] if keep > 0 else data[:keep]
    with pytest.raises(ImageDecodeError) as excinfo:
        decode_image(cut, (8, 8), source="photo.jpg")
    assert "photo.jpg" in str(excinfo.value)


@pytest.mark.parametrize("cut_bytes", [1, 6, 12, 500, 5000])
def test_truncated_png_is_rejected_even_when_only_the_end_chunk_is_missing(cut_bytes):
    data = encode(noisy(), "PNG")
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(data[:-cut_bytes], (8, 8), source="photo.png")


@pytest.mark.parametrize("cut_bytes", [1, 2, 100, 2000])
@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_truncated_gif_and_webp_are_rejected(fmt, cut_bytes):
    frames = [noisy(), noisy((64, 48)).transpose(Image.Transpose.ROTATE_180)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
    # Cutting into the second frame (or only the GIF trailer) leaves a decodable first frame: still refused.
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(data[:-cut_bytes], (8, 8))


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "JPEG"])
def test_bytes_after_a_complete_image_are_tolerated(fmt):
    data = encode(solid(RED), fmt) + b"\x00" * 5000 + b"trailing junk some tools append"
    assert_colour(decode_image(data, (4, 4))[2, 2], RED, tol=0.02)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def one_bit_png_bomb(side: int) -> bytes:
    """A complete, valid black ``side`` x ``side`` 1-bit PNG: kilobytes on disk, side**2 pixels decoded."""
    row = b"\x00" + bytes((side + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_rejected_from_its_header():
    bomb = one_bit_png_bomb(10_000)  # 100 million pixels (300 MB as float RGB) in about 12 KB
    assert len(bomb) < 50_000
    with pytest.raises(ImageTooLargeError) as excinfo:
        decode_image(bomb, (224, 224), source="bomb.png")
    assert "bomb.png" in str(excinfo.value) and "10000x10000" in str(excinfo.value)


def test_bomb_beyond_pillows_own_limit_is_also_an_image_too_large_error():
    bomb = one_bit_png_bomb(20_000)  # 400 million pixels: Pillow refuses it while opening
    with pytest.raises(ImageTooLargeError):
        decode_image(bomb, (224, 224), source="bomb.png", max_pixels=10**12)


def test_max_pixels_is_configurable():
    data = encode(solid(RED, (20, 20)), "PNG")
    assert decode_image(data, (4, 4), max_pixels=400).shape == (4, 4, 3)
    with pytest.raises(ImageTooLargeError):
        decode_image(data, (4, 4), max_pixels=399)
    with pytest.raises(ImageTooLargeError):
        BytesImage(data, "small-limit.png", max_pixels=100).pixels((4, 4))


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_unsupported_formats_are_named(fmt):
    with pytest.raises(ImageDecodeError, match=f"unsupported image format {fmt}"):
        decode_image(encode(solid(RED), fmt), (8, 8))


def test_wrong_extension_still_decodes_by_content(tmp_path):
    path = tmp_path / "really-a-png.jpg"
    path.write_bytes(encode(solid(GREEN), "PNG"))
    assert_colour(FileImage(path).pixels((5, 5))[2, 2], GREEN, tol=1e-6)
    assert FileImage(path).info().format == "PNG"


def test_errors_are_image_errors():
    assert issubclass(ImageDecodeError, ImageError) and issubclass(ImageTooLargeError, ImageError)
    with pytest.raises(ValueError):
        decode_image(encode(solid(RED), "PNG"), (0, 8))


# ---------------------------------------------------------------------------------------------- sources


def test_bytes_and_file_sources_share_the_content_hash_of_their_bytes(tmp_path):
    data = encode(solid(ORANGE), "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert content_hash(data) == expected
    assert BytesImage(data, "upload.png").content_hash == expected
    assert FileImage(path).content_hash == expected
    np.testing.assert_array_equal(BytesImage(data).pixels((6, 7)), FileImage(path).pixels((6, 7)))


def test_sources_do_nothing_until_asked(tmp_path):
    path = tmp_path / "not-yet.png"
    source = FileImage(path)  # the file does not even exist yet: creating a source must not read it
    assert source.source == str(path)
    path.write_bytes(encode(solid(RED), "PNG"))
    assert source.pixels((2, 2)).shape == (2, 2, 3)


# The three ImageSource kinds, each over the same red picture. The Protocol is runtime_checkable, but an
# isinstance check only looks for the attribute names; this checks what a caller relies on.
SOURCE_KINDS = {
    "bytes": lambda path: BytesImage(path.read_bytes(), "upload.png"),
    "file": lambda path: FileImage(path),
    "array": lambda path: ArrayImage(np.asarray(Image.open(path).convert("RGB")), "red-array"),
}


@pytest.mark.parametrize("kind", sorted(SOURCE_KINDS))
def test_every_source_keeps_the_image_source_contract(tmp_path, kind):
    path = tmp_path / "red.png"
    path.write_bytes(encode(solid(RED, size=(12, 8)), "PNG"))
    source, twin = SOURCE_KINDS[kind](path), SOURCE_KINDS[kind](path)

    key = source.content_hash
    assert isinstance(key, str) and len(key) == 64 and int(key, 16) >= 0  # sha256 hex: the cache key
    assert key == source.content_hash == twin.content_hash  # stable, and a function of the content alone
    assert isinstance(source.source, str) and source.source
    pixels = source.pixels((5, 7))  # (h, w), neither the stored size nor square
    assert pixels.shape == (5, 7, 3) and pixels.dtype == np.float32
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0
    assert_colour(pixels[2, 3], RED)
    np.testing.assert_array_equal(source.pixels((5, 7)), pixels)  # asking again gives the same picture


def test_array_image_grey_and_rgb():
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    pixels = ArrayImage(grey, "grey").pixels((4, 4))
    assert pixels.shape == (4, 4, 3) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels[..., 1], grey / 255, atol=1e-7)
    upscaled = ArrayImage(grey, "grey").pixels((224, 224))
    assert upscaled.shape == (224, 224, 3) and 0 <= upscaled.min() and upscaled.max() <= 1
    rgb = np.zeros((5, 6, 3), dtype=np.uint8)
    rgb[..., 2] = 255
    assert_colour(ArrayImage(rgb, "blue").pixels((10, 12))[5, 5], BLUE, tol=1e-6)


def test_array_image_hash_covers_dtype_shape_and_bytes():
    array = np.arange(784, dtype=np.uint16).astype(np.uint8).reshape(28, 28)
    same = ArrayImage(array.copy(), "b").content_hash
    assert ArrayImage(array, "a").content_hash == same
    assert ArrayImage(array.reshape(14, 56), "c").content_hash != same
    changed = array.copy()
    changed[0, 0] += 1
    assert ArrayImage(changed, "d").content_hash != same


def test_array_image_rejects_what_it_cannot_show():
    with pytest.raises(ValueError, match="uint8"):
        ArrayImage(np.zeros((4, 4), np.float32), "floats")
    with pytest.raises(ValueError, match="shape"):
        ArrayImage(np.zeros((4, 4, 4), np.uint8), "rgba")


def test_image_info_reads_the_header_only():
    info = image_info(encode(solid(RED, (31, 17)), "JPEG"))
    assert (info.format, info.width, info.height, info.n_pixels, info.orientation) == ("JPEG", 31, 17, 527, 1)


def test_sniff_format():
    assert sniff_format(encode(solid(RED), "PNG")[:12]) == "PNG"
    assert sniff_format(encode(solid(RED), "JPEG")[:12]) == "JPEG"
    assert sniff_format(encode(solid(RED), "GIF")[:12]) == "GIF"
    assert sniff_format(encode(solid(RED), "WEBP")[:12]) == "WEBP"
    assert sniff_format(b"Copyright 2026") is None


def test_a_decoded_image_is_decoded_once_and_keeps_its_source_s_name_and_hash():
    data = encode(solid(ORANGE, (40, 30)), "PNG")

    class Counted(BytesImage):
        __slots__ = ("sizes",)

        def pixels(self, size):
            self.sizes.append(size)
            return super().pixels(size)

    image = Counted(data, source="upload.png")
    image.sizes = []
    decoded = DecodedImage(image, (16, 16))
    assert decoded.content_hash == content_hash(data) and decoded.source == "upload.png"
    np.testing.assert_array_equal(decoded.pixels((16, 16)), decode_image(data, (16, 16)))
    assert image.sizes == [(16, 16)]  # decoded when made, not again at that size
    assert decoded.pixels((8, 8)).shape == (8, 8, 3) and image.sizes == [(16, 16), (8, 8)]  # another size decodes


def test_a_decoded_image_raises_the_source_s_error_when_made():
    with pytest.raises(ImageDecodeError, match="bad.png"):
        DecodedImage(BytesImage(b"not an image at all", source="bad.png"), (16, 16))
