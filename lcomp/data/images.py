"""Loading and saving one image: every image inside lcomp is a uint8 (H, W, 3) array, and this is
where files (and arrays of other dtypes or channel counts) become one.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from lcomp.errors import ImageError, LcompError

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

#: Largest image (in pixels) that :func:`load_image` decodes by default: 2**26 = 67 million pixels, e.g.
#: 8192 x 8192, about 200 MB as uint8 RGB. The header is checked before any pixel is decoded. The value sits
#: below Pillow's own decompression-bomb warning threshold (about 89 million pixels) so that Pillow never warns
#: first; a caller who needs more passes ``max_pixels`` (Pillow then refuses anything above about 179 million).
MAX_PIXELS = 2**26

# Pillow raw modes of 16-bit-per-sample PNGs that Pillow itself reduces to 8 bits by keeping the high byte, and
# the raw mode that reads the low byte of the same samples instead (see _decode_16bit_png_channels).
_PNG16_LOW_BYTE_RAWMODE = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}

# EXIF orientation tag (0x0112) value -> numpy operation that turns stored pixels into displayed pixels.
# Same geometry as PIL.ImageOps.exif_transpose; done on the array so that it also applies to our own 16-bit path.
_EXIF_ORIENTATION_TAG = 0x0112
_ORIENT = {
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1, :],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # transposed (mirror along the main diagonal)
    6: lambda a: np.rot90(a, k=-1),  # stored rotated 90 counter-clockwise: turn it clockwise
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],  # transverse (mirror along the anti-diagonal)
    8: lambda a: np.rot90(a, k=1),  # stored rotated 90 clockwise: turn it counter-clockwise
}


def load_image(
    path_or_bytes: ImageInput,
    *,
    max_pixels: int = MAX_PIXELS,
    exif_orientation: bool = True,
) -> np.ndarray:
    """Decode an image file into a ``uint8`` array of shape ``(H, W, 3)``.

    Args:
      path_or_bytes: a path, the file's bytes, or a binary file object. Any format Pillow reads (PNG, JPEG,
        WebP, TIFF, BMP, GIF, PPM, ...); for multi-frame files the first frame is used.
      max_pixels: refuse images with more pixels than this; checked from the header before decoding.
      exif_orientation: apply the EXIF orientation tag so the array looks like the image in a viewer.

    Conversions (no gamma or ICC handling anywhere):

    - gray (``1``, ``L``, ``I;16``): replicated into three channels; ``I`` (32-bit integer) is read as 16-bit
      data clipped to 0..65535; ``F`` (32-bit float) as values in [0, 1], clipped (NaN becomes 0).
    - 16-bit samples become ``round(v * 255 / 65535)``. Pillow 13 reads 16-bit RGB(A) PNGs as 8-bit RGB(A)
      keeping only the high byte; for those this function decodes the low bytes as well and rounds. (16-bit
      gray+alpha PNGs keep Pillow's high-byte reduction.)
    - alpha (``LA``, ``RGBA``, palette or ``tRNS`` transparency): composited onto white,
      ``round((c * a + max * (max - a)) * 255 / max**2)`` with ``max`` = 255 or 65535.
    - ``CMYK``, ``YCbCr``, ``HSV``: Pillow's plain formula conversion to RGB. ``LAB`` is refused (it needs
      colour management).

    Raises:
      ImageError: missing or unreadable file, empty file, not an image, truncated or corrupt data, zero-size or
        too large image, unsupported pixel layout.
    """
    opener, what = _make_opener(path_or_bytes)
    try:
        file = opener()
    except OSError as error:  # FileNotFoundError, IsADirectoryError, PermissionError, ...
        raise ImageError(f"{what}: cannot open ({error.strerror or error})") from error
    with file:
        if _is_empty(file):
            raise ImageError(f"{what}: the file is empty")
        try:
            image = Image.open(file)
        except UnidentifiedImageError as error:
            raise ImageError(f"{what}: not an image file in a format Pillow can read") from error
        except Image.DecompressionBombError as error:
            raise ImageError(f"{what}: image is too large ({error})") from error
        except Exception as error:  # Pillow raises assorted types for malformed headers
            raise ImageError(f"{what}: cannot read the image header ({error})") from error
        with image:
            _check_size(image, what, max_pixels)
            try:
                pixels = _decode_rgb8(image, opener)
                orientation = _exif_orientation(image) if exif_orientation else 1
            except LcompError:
                raise
            except Exception as error:  # truncated data, bad checksums, zlib errors, ...
                raise ImageError(
                    f"{what}: cannot decode the pixels; the file is truncated or corrupt ({error})"
                ) from error
    if orientation in _ORIENT:
        pixels = np.ascontiguousarray(_ORIENT[orientation](pixels))
    return pixels


def save_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a ``uint8`` ``(H, W, 3)`` array as a PNG file (whatever the suffix) and return the path.

    The file carries no gamma, colour-profile or text chunks, so every reader decodes the same values.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"save_image expects a uint8 array of shape (H, W, 3), got {image.dtype} {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"save_image cannot write an empty image of shape {image.shape}")
    path = Path(path)
    try:
        Image.fromarray(np.ascontiguousarray(image)).save(path, format="PNG")
    except OSError as error:
        raise ImageError(f"{path}: cannot write the PNG file ({error})") from error
    return path


def _make_opener(source: ImageInput):
    """Return (a function that opens a fresh binary file on the input, a description for error messages).

    A fresh file per call lets the 16-bit PNG path decode the same data a second time.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return (lambda: io.BytesIO(data)), f"image data ({len(data)} bytes)"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return (lambda: open(path, "rb")), str(path)
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, bytes):
            raise ImageError("load_image expects a binary file object (opened with 'rb')")
        name = getattr(source, "name", "file object")
        return (lambda: io.BytesIO(data)), str(name)
    raise ImageError(f"load_image expects a path, bytes or a binary file, got {type(source).__name__}")


def _is_empty(file: BinaryIO) -> bool:
    position = file.tell()
    empty = file.read(1) == b""
    file.seek(position)
    return empty


def _check_size(image: Image.Image, what: str, max_pixels: int) -> None:
    """Refuse zero-size and oversized images using only the header (no pixel has been decoded yet)."""
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(f"{what}: the image has zero size ({width} x {height})")
    if width * height > max_pixels:
        raise ImageError(
            f"{what}: {width} x {height} = {width * height} pixels exceeds the limit of {max_pixels} pixels "
            "(pass max_pixels to load larger images)"
        )


def _decode_rgb8(image: Image.Image, opener) -> np.ndarray:
    """Decode an opened (header-only) Pillow image into uint8 (H, W, 3), following the rules in load_image."""
    mode = image.mode
    transparency = image.info.get("transparency")

    if mode in ("RGB", "RGBA") and _is_16bit_rgb_png(image):
        channels = _decode_16bit_png_channels(image, opener)
        color, alpha = channels[..., :3], (channels[..., 3] if mode == "RGBA" else None)
        if alpha is None and transparency is not None:  # tRNS in 16-bit PNGs holds 16-bit sample values
            alpha = _alpha_from_color_key(color, transparency, 65535)
        return _to_rgb8(color, alpha, 65535)

    if mode in ("P", "PA"):
        # Pillow applies the palette and its transparency (tRNS per palette entry) in one step.
        return _decode_rgb8(image.convert("RGBA"), opener)
    if mode == "1":
        return _decode_rgb8(image.convert("L"), opener)
    if mode in ("La", "RGBa"):  # premultiplied alpha: undo the premultiplication first
        return _decode_rgb8(image.convert(mode[0:-1] + "A"), opener)
    if mode == "RGBX":
        return _decode_rgb8(image.convert("RGB"), opener)

    if mode in ("RGB", "L"):
        color = np.asarray(image)
        alpha = None if transparency is None else _alpha_from_color_key(color, transparency, 255)
        return _to_rgb8(color, alpha, 255)
    if mode in ("RGBA", "LA"):  # colour or gray, then alpha last
        channels = np.asarray(image)
        return _to_rgb8(channels[..., :-1], channels[..., -1], 255)
    if mode.startswith("I;16"):  # I;16, I;16B, I;16L, I;16N: unsigned 16-bit gray in some byte order
        gray = np.asarray(image).astype(np.uint16)
        alpha = None if transparency is None else _alpha_from_color_key(gray, transparency, 65535)
        return _to_rgb8(gray, alpha, 65535)
    if mode == "I":
        # 32-bit integers carry no declared range; 16-bit data is what produces this mode in practice.
        gray = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
        alpha = None if transparency is None else _alpha_from_color_key(gray, transparency, 65535)
        return _to_rgb8(gray, alpha, 65535)
    if mode == "F":
        gray = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        gray8 = np.rint(np.clip(gray, 0.0, 1.0) * 255.0).astype(np.uint8)
        return _to_rgb8(gray8, None, 255)
    if mode == "LAB":
        raise ImageError("CIELAB images are not supported (converting them to RGB needs colour management)")
    try:  # CMYK, YCbCr, HSV and anything else Pillow can turn into RGB by formula
        rgb = image.convert("RGB")
    except ValueError as error:
        raise ImageError(f"unsupported pixel layout (Pillow mode {mode!r})") from error
    return np.array(rgb, dtype=np.uint8)


def _is_16bit_rgb_png(image: Image.Image) -> bool:
    """True for a not-yet-decoded PNG whose samples are 16-bit RGB or RGBA."""
    tile = getattr(image, "tile", None)
    if image.format != "PNG" or not tile or len(tile) != 1:
        return False
    rawmode = tile[0][3]
    return isinstance(rawmode, str) and rawmode in _PNG16_LOW_BYTE_RAWMODE


def _decode_16bit_png_channels(image: Image.Image, opener) -> np.ndarray:
    """Decode a 16-bit RGB(A) PNG to uint16 (H, W, C) with full precision.

    Pillow has no 16-bit-per-channel colour mode: its PNG reader unpacks each big-endian sample and keeps only
    the high byte. Decoding a second time with the little-endian unpacker (which keeps the *second* byte of
    each sample) yields the low bytes; the PNG unfiltering is identical in both passes because both raw modes
    use the same 6 or 8 bytes per pixel. high * 256 + low is the original sample.
    """
    rawmode = image.tile[0][3]
    high = np.asarray(image).astype(np.uint16)
    with opener() as file, Image.open(file) as second:
        low_tile = second.tile[0]
        low_args = _PNG16_LOW_BYTE_RAWMODE[rawmode]
        if hasattr(low_tile, "_replace"):
            second.tile = [low_tile._replace(args=low_args)]
        else:  # Pillow versions whose tiles are plain tuples
            second.tile = [(low_tile[0], low_tile[1], low_tile[2], low_args)]
        low = np.asarray(second).astype(np.uint16)
    if low.shape != high.shape:
        raise ImageError("inconsistent 16-bit PNG decoding")
    return (high << 8) | low


def _alpha_from_color_key(color: np.ndarray, key: Any, maxval: int) -> np.ndarray | None:
    """Alpha from a transparent colour key (tRNS for gray/RGB images): 0 where the pixel equals the key."""
    if color.ndim == 2:
        if not isinstance(key, (int, np.integer)):
            return None
        transparent = color == key
    else:
        if not (isinstance(key, tuple) and len(key) == 3):
            return None
        transparent = np.all(color == np.asarray(key, dtype=np.int64), axis=-1)
    return np.where(transparent, 0, maxval).astype(color.dtype)


def _to_rgb8(color: np.ndarray, alpha: np.ndarray | None, maxval: int) -> np.ndarray:
    """Integer samples in 0..maxval (gray (H, W) or colour (H, W, 3)), optional alpha -> uint8 (H, W, 3).

    Exact integer arithmetic: out = round((c * a + maxval * (maxval - a)) * 255 / maxval**2), i.e. composite
    onto white and rescale to 8 bits in one rounding step (at most 65535**2 * 255 < 2**63).
    """
    if color.ndim == 2:
        color = color[..., None]
    if alpha is None and maxval == 255 and color.dtype == np.uint8:
        rgb = color
    else:
        c = color.astype(np.int64)
        if alpha is None:
            numerator = c * maxval
        else:
            a = alpha.astype(np.int64)[..., None]
            numerator = c * a + maxval * (maxval - a)
        denominator = maxval * maxval
        rgb = ((numerator * 255 + denominator // 2) // denominator).astype(np.uint8)
    if rgb.shape[2] == 1:
        return np.repeat(rgb, 3, axis=2)
    # Arrays that come straight from Pillow may be read-only views; callers get an array of their own.
    return rgb if rgb.flags.writeable and rgb.flags.c_contiguous and rgb.flags.owndata else rgb.copy()


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation value (1..8), or 1 when absent or unreadable (a broken EXIF block is not fatal)."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        return int(value)
    except Exception:
        return 1

def array_to_rgb8(value: Any, what: str) -> np.ndarray:
    """A decoded image from a data set (gray, gray+alpha, RGB, RGBA; uint8 or uint16) -> uint8 (H, W, 3)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return load_image(value)
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[2] in (1, 2, 3, 4):
        color, alpha = (array[..., :3], array[..., 3]) if array.shape[2] == 4 else (array, None)
        if array.shape[2] in (1, 2):
            color, alpha = array[..., 0], (array[..., 1] if array.shape[2] == 2 else None)
    elif array.ndim == 2:
        color, alpha = array, None
    else:
        raise ImageError(f"{what}: unsupported image array of shape {array.shape}")
    if array.dtype == np.uint8:
        return _to_rgb8(color, alpha, 255)
    if array.dtype == np.uint16:
        return _to_rgb8(color, alpha, 65535)
    raise ImageError(f"{what}: unsupported image dtype {array.dtype} (expected uint8 or uint16)")
