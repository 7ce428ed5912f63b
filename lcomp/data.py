"""Images in and out of lcomp: loading, sources, training batches and padding.

Sections, in the order a newcomer meets them:

1. Loading and saving one image (:func:`load_image`, :func:`save_image`). Every image inside lcomp is a
   ``uint8`` array of shape ``(H, W, 3)``; this is the one place where files become such arrays.
2. Image sources: ordered, indexable collections of images (:class:`FolderSource`, :class:`EmbeddedSource`,
   :class:`TfdsSource`, :class:`ArraySource`) and :func:`make_source`, which builds one from a config section.
3. Kodak: where the shipped test set lives (:func:`kodak_dir`) and its integrity check (:func:`verify_kodak`,
   built on :func:`verify_sha256sums`, which any image folder with a ``SHA256SUMS`` file can use).
4. Training batches (:class:`TrainBatches`): a batch is a pure function of ``(seed, step)``, so a resumed run
   sees exactly the batches an uninterrupted run would have seen.
5. Evaluation helpers: :func:`pad_to_multiple`, :func:`crop`, :func:`eval_images`.

Decisions that affect pixel values (each is documented again where it is implemented):

- No colour management, ever: ICC profiles, ``gAMA`` and ``sRGB`` chunks are ignored, as the evaluation rules
  for Kodak require (decoding is the same as Pillow's ``Image.open(p).convert("RGB")`` for 8-bit RGB files).
- Transparency is composited onto a white background (what a viewer shows on a white page), not dropped:
  colours under fully transparent pixels are often garbage that should not be coded.
- Samples deeper than 8 bits are scaled with rounding, ``round(v * 255 / 65535)``, not truncated to the high
  byte.
- The EXIF orientation tag is applied (the pixels are turned the way a viewer shows them) unless
  ``exif_orientation=False``.
"""

from __future__ import annotations

import abc
import hashlib
import importlib.util
import io
import itertools
import operator
import os
import queue
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from lcomp.errors import ConfigError, ImageError, LcompError

__all__ = [
    "MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "EMBEDDED_PHOTOGRAPHS",
    "EMBEDDED_EVAL_PHOTOGRAPHS",
    "load_image",
    "save_image",
    "ImageSource",
    "ArraySource",
    "FolderSource",
    "EmbeddedSource",
    "TfdsSource",
    "make_source",
    "KODAK_ENV_VAR",
    "kodak_dir",
    "verify_kodak",
    "verify_sha256sums",
    "kodak_source",
    "TrainBatches",
    "pad_to_multiple",
    "crop",
    "eval_images",
]

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

# ---------------------------------------------------------------------------------------------------------------
# 1. Loading and saving one image
# ---------------------------------------------------------------------------------------------------------------

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

    if mode == "RGB":
        color = np.asarray(image)
        alpha = None if transparency is None else _alpha_from_color_key(color, transparency, 255)
        return _to_rgb8(color, alpha, 255)
    if mode == "RGBA":
        channels = np.asarray(image)
        return _to_rgb8(channels[..., :3], channels[..., 3], 255)
    if mode == "L":
        gray = np.asarray(image)
        alpha = None if transparency is None else _alpha_from_color_key(gray, transparency, 255)
        return _to_rgb8(gray, alpha, 255)
    if mode == "LA":
        channels = np.asarray(image)
        return _to_rgb8(channels[..., 0], channels[..., 1], 255)
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


# ---------------------------------------------------------------------------------------------------------------
# 2. Image sources
# ---------------------------------------------------------------------------------------------------------------

#: File name suffixes that FolderSource picks up by default (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif")


class ImageSource(abc.ABC):
    """An ordered, indexable collection of images; ``source[i]`` is a read-only uint8 ``(H, W, 3)`` array.

    Images are decoded on first access (so building a source over a large folder is instant) and, with
    ``cache=True``, kept in memory afterwards. The returned arrays are read-only because a cached array is
    shared; copy one before modifying it. Subclasses set ``names`` and implement ``_load(index)``.
    """

    names: list[str]

    def __init__(self, names: Sequence[str], cache: bool = True):
        self.names = list(names)
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        self._cache_lock = threading.Lock()  # the prefetch thread of TrainBatches reads sources too

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> np.ndarray:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"image sources are indexed by int, got {type(index).__name__}")
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"image index {index} out of range for a source of {len(self)} images")
        if self._cache is not None:
            with self._cache_lock:
                cached = self._cache.get(index)
            if cached is not None:
                return cached
        image = np.asarray(self._load(index))
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ImageError(f"{self.names[index]}: source produced {image.dtype} {image.shape}, not uint8 (H, W, 3)")
        image.flags.writeable = False
        if self._cache is not None:
            with self._cache_lock:
                image = self._cache.setdefault(index, image)
        return image

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(len(self)):
            yield self[index]

    @abc.abstractmethod
    def _load(self, index: int) -> np.ndarray:
        """Decode image ``index`` (already bounds-checked) into uint8 (H, W, 3)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images)"


class ArraySource(ImageSource):
    """Images already in memory (uint8 ``(H, W, 3)`` arrays); handy for tests and notebooks."""

    def __init__(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None):
        arrays = [np.asarray(image) for image in images]
        if not arrays:
            raise ConfigError("ArraySource needs at least one image")
        for i, image in enumerate(arrays):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
                raise ImageError(f"ArraySource image {i} is {image.dtype} {image.shape}, not uint8 (H, W, 3)")
        if names is None:
            names = [f"image{i:04d}" for i in range(len(arrays))]
        if len(names) != len(arrays):
            raise ConfigError(f"ArraySource got {len(arrays)} images but {len(names)} names")
        super().__init__(names, cache=False)
        self._arrays = [image.copy() for image in arrays]  # later changes by the caller do not leak in
        for image in self._arrays:
            image.flags.writeable = False

    def _load(self, index: int) -> np.ndarray:
        return self._arrays[index]


class FolderSource(ImageSource):
    """The image files in a folder, in sorted order.

    Args:
      path: the folder.
      recursive: also look in subfolders (paths are sorted as relative POSIX paths).
      extensions: file suffixes to include, case-insensitive. Hidden files (names starting with ".") are skipped.
      cache: keep decoded images in memory.

    ``names`` are the relative paths without their suffix (``kodim01``, ``sub/photo``); if two files differ only
    in their suffix, all names keep the suffix so that names stay unique. ``paths`` lists the files.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        recursive: bool = False,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
        cache: bool = True,
    ):
        self.root = Path(path).expanduser()
        if not self.root.exists():
            raise ConfigError(f"image folder {self.root} does not exist")
        if not self.root.is_dir():
            raise ConfigError(f"{self.root} is not a folder")
        if isinstance(extensions, str):
            extensions = [extensions]
        suffixes = {("." + ext.lstrip(".")).lower() for ext in extensions}
        candidates = self.root.rglob("*") if recursive else self.root.iterdir()
        relative_paths = sorted(
            p.relative_to(self.root).as_posix()
            for p in candidates
            if p.suffix.lower() in suffixes
            and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
            and p.is_file()
        )
        if not relative_paths:
            raise ConfigError(
                f"image folder {self.root} contains no images with suffix {', '.join(sorted(suffixes))}"
                + ("" if recursive else " (subfolders are not searched; use recursive=True)")
            )
        self.paths = [self.root / rel for rel in relative_paths]
        stems = [rel[: -len(Path(rel).suffix)] for rel in relative_paths]
        names = stems if len(set(stems)) == len(stems) else relative_paths
        super().__init__(names, cache=cache)

    def _load(self, index: int) -> np.ndarray:
        return load_image(self.paths[index])

    def __repr__(self) -> str:
        return f"FolderSource({str(self.root)!r}, {len(self)} images)"


#: The colour photographs that scikit-image ships inside its wheel (``skimage/data/``), in the fixed order of
#: EmbeddedSource. Left out on purpose: gray images, synthetic test charts (color.png, chessboard, phantom)
#: and images with alpha (logo.png, horse.png).
EMBEDDED_PHOTOGRAPHS = (
    "astronaut.png",  # 512 x 512, portrait of an astronaut
    "chelsea.png",  # 451 x 300, a cat
    "coffee.png",  # 600 x 400, a cup of coffee
    "hubble_deep_field.jpg",  # 1000 x 872, galaxies on a black sky
    "ihc.png",  # 512 x 512, stained tissue under a microscope
    "motorcycle_left.png",  # 741 x 500, left view of a stereo pair
    "motorcycle_right.png",  # 741 x 500, right view of the same pair
    "retina.jpg",  # 1411 x 1411, fundus photograph
    "rocket.jpg",  # 640 x 427, a rocket on its launch pad
)

#: The photographs held out for evaluation (``EmbeddedSource(split="eval")``): two ordinary scenes that share
#: nothing with the training images (the stereo pair stays together in the training split).
EMBEDDED_EVAL_PHOTOGRAPHS = ("chelsea.png", "coffee.png")


def _skimage_data_dir() -> Path:
    """skimage/data inside the installed package, found without importing skimage or touching the network."""
    spec = importlib.util.find_spec("skimage")  # a top-level lookup: does not execute skimage/__init__.py
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded photographs come with scikit-image, which is not installed")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data"
        if candidate.is_dir():
            return candidate
    raise ConfigError("scikit-image is installed without its data folder (skimage/data)")


class EmbeddedSource(ImageSource):
    """Real colour photographs that need no download: the ones scikit-image ships in its wheel.

    Args:
      split: ``"train"`` (all but the held-out images), ``"eval"`` (:data:`EMBEDDED_EVAL_PHOTOGRAPHS`) or
        ``"all"``; order always follows :data:`EMBEDDED_PHOTOGRAPHS`.
      cache: keep decoded images in memory (the nine photographs take about 14 MB).

    Files are read straight from the installed package folder; scikit-image's fetchers (which may download)
    are never used. A photograph missing from an unusual scikit-image build is skipped.
    """

    SPLITS = ("train", "eval", "all")

    def __init__(self, split: str = "all", cache: bool = True):
        if split not in self.SPLITS:
            raise ConfigError(f"EmbeddedSource split must be one of {self.SPLITS}, got {split!r}")
        self.split = split
        self.root = _skimage_data_dir()
        if split == "eval":
            wanted = [f for f in EMBEDDED_PHOTOGRAPHS if f in EMBEDDED_EVAL_PHOTOGRAPHS]
        elif split == "train":
            wanted = [f for f in EMBEDDED_PHOTOGRAPHS if f not in EMBEDDED_EVAL_PHOTOGRAPHS]
        else:
            wanted = list(EMBEDDED_PHOTOGRAPHS)
        self.paths = [self.root / f for f in wanted if (self.root / f).is_file()]
        if not self.paths:
            raise ConfigError(f"none of the embedded photographs of split {split!r} exist in {self.root}")
        super().__init__([p.stem for p in self.paths], cache=cache)

    def _load(self, index: int) -> np.ndarray:
        return load_image(self.paths[index])

    def __repr__(self) -> str:
        return f"EmbeddedSource(split={self.split!r}, {len(self)} images)"


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ConfigError(
            "the tfds source needs tensorflow-datasets, an optional extra: pip install 'lcomp[tfds]'"
        ) from error
    return tfds


class TfdsSource(ImageSource):
    """One split of a prepared TensorFlow Datasets data set, read without TensorFlow.

    Uses ``tfds.data_source`` (random access to ``array_record``/``parquet`` data; TensorFlow not needed).
    Nothing is downloaded unless ``download=True``, so an unprepared data set fails at once instead of
    retrying the network for minutes. Prepare one with ``builder.download_and_prepare(file_format=
    "array_record")``.

    Args:
      name: data set name, optionally with config and version (``"clic/2020:1.0.0"``).
      split: tfds split string (slicing such as ``"train[:1000]"`` works).
      data_dir: tfds data folder (default: tfds' own default, ``~/tensorflow_datasets``).
      download, try_gcs: passed to tfds; both off by default.
      image_key: feature holding the image (uint8 array, or encoded bytes).
      cache: keep decoded images in memory; off by default because tfds data sets can be large.

    ``names`` are ``"<name>/<split>/<index>"``.
    """

    def __init__(
        self,
        name: str,
        split: str = "train",
        data_dir: str | os.PathLike | None = None,
        download: bool = False,
        try_gcs: bool = False,
        image_key: str = "image",
        cache: bool = False,
    ):
        tfds = _import_tfds()
        try:
            self._records = tfds.data_source(
                name,
                split=split,
                data_dir=None if data_dir is None else os.fspath(data_dir),
                download=download,
                try_gcs=try_gcs,
            )
            count = len(self._records)
        except Exception as error:  # DatasetNotFoundError, missing files, wrong file format, ...
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(
                f"cannot open tfds data set {name!r} split {split!r} (data_dir={data_dir}): {first_line}. "
                "Is it prepared in the array_record format? lcomp never downloads unless download=True."
            ) from error
        if count == 0:
            raise ConfigError(f"tfds data set {name!r} split {split!r} is empty")
        self.name, self.split, self.image_key = name, split, image_key
        super().__init__([f"{name}/{split}/{i}" for i in range(count)], cache=cache)

    def _load(self, index: int) -> np.ndarray:
        record = self._records[index]
        if self.image_key not in record:
            raise ConfigError(f"tfds record has no feature {self.image_key!r}; it has {sorted(record)}")
        return _array_to_rgb8(record[self.image_key], self.names[index])

    def __repr__(self) -> str:
        return f"TfdsSource({self.name!r}, split={self.split!r}, {len(self)} images)"


def _array_to_rgb8(value: Any, what: str) -> np.ndarray:
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


# Options each source kind accepts in make_source (besides "source"). Options of other kinds may appear with the
# value None (a locked ConfigDict has to declare every field), anything else is a configuration error.
_SOURCE_OPTIONS = {
    "folder": {"path", "recursive", "extensions", "cache"},
    "embedded": {"split", "cache"},
    "tfds": {"name", "split", "data_dir", "download", "try_gcs", "image_key", "cache"},
    "kodak": {"path", "verify", "cache"},
}


def make_source(spec: Mapping[str, Any] | Any) -> ImageSource:
    """Build an image source from a config section.

    ``spec`` is a dict or an ``ml_collections.ConfigDict`` (or just the kind as a string) with key ``source``:

    - ``{"source": "embedded", "split": "train"}``
    - ``{"source": "folder", "path": "...", "recursive": False, "extensions": [".png"]}``
    - ``{"source": "tfds", "name": "...", "split": "train", "data_dir": None, "download": False}``
    - ``{"source": "kodak", "path": None, "verify": True}``: the Kodak folder (:func:`kodak_dir` unless
      ``path`` is given), hashes checked first.

    Options set to None mean "default". A non-None option that the chosen kind does not use raises
    ConfigError (it is most likely a typo).
    """
    if isinstance(spec, str):
        spec = {"source": spec}
    if hasattr(spec, "to_dict"):  # ml_collections.ConfigDict / FrozenConfigDict
        spec = spec.to_dict()
    if not isinstance(spec, Mapping):
        raise ConfigError(f"a data source spec must be a dict or ConfigDict, got {type(spec).__name__}")
    kind = spec.get("source")
    if kind not in _SOURCE_OPTIONS:
        raise ConfigError(f"unknown data source {kind!r}; choose one of {sorted(_SOURCE_OPTIONS)}")
    options = {key: value for key, value in spec.items() if key != "source" and value is not None}
    unused = sorted(set(options) - _SOURCE_OPTIONS[kind])
    if unused:
        raise ConfigError(
            f"data source {kind!r} does not take option(s) {unused}; it takes {sorted(_SOURCE_OPTIONS[kind])}"
        )

    if kind == "folder":
        if "path" not in options:
            raise ConfigError("data source 'folder' needs a 'path'")
        return FolderSource(**options)
    if kind == "embedded":
        return EmbeddedSource(**options)
    if kind == "tfds":
        if "name" not in options:
            raise ConfigError("data source 'tfds' needs a data set 'name'")
        return TfdsSource(**options)
    return kodak_source(**options)


# ---------------------------------------------------------------------------------------------------------------
# 3. Kodak
# ---------------------------------------------------------------------------------------------------------------

KODAK_ENV_VAR = "LCOMP_KODAK"


def kodak_dir() -> Path:
    """The Kodak folder: ``$LCOMP_KODAK`` if set, else ``<repo root>/../shared/data/kodak``.

    The repo root is the folder that contains the ``lcomp`` package. The path is returned whether or not it
    exists; :func:`verify_kodak` and :func:`kodak_source` report a missing folder.
    """
    override = os.environ.get(KODAK_ENV_VAR)
    if override:
        return Path(override).expanduser()
    repo_root = Path(__file__).resolve().parent.parent
    return repo_root.parent / "shared" / "data" / "kodak"


def verify_kodak(path: str | os.PathLike | None = None) -> list[str]:
    """Check the Kodak folder (default :func:`kodak_dir`) against its ``SHA256SUMS``; see :func:`verify_sha256sums`."""
    folder = Path(path) if path is not None else kodak_dir()
    if not folder.is_dir():
        raise ImageError(f"Kodak folder {folder} does not exist (set {KODAK_ENV_VAR} to its location)")
    return verify_sha256sums(folder)


def verify_sha256sums(folder: str | os.PathLike) -> list[str]:
    """Check every file listed in ``SHA256SUMS`` inside ``folder``; return the verified file names.

    ``SHA256SUMS`` has the ``sha256sum`` format (``<hex digest>  <file name>``, or ``*<file name>``).

    Raises:
      ImageError: folder or ``SHA256SUMS`` missing, a listed file missing, or a digest mismatch (all problems
        are listed in one message).
    """
    folder = Path(folder)
    sums_file = folder / "SHA256SUMS"
    if not folder.is_dir():
        raise ImageError(f"image folder {folder} does not exist")
    if not sums_file.is_file():
        raise ImageError(f"{sums_file} is missing; cannot verify the images")
    expected: dict[str, str] = {}
    for line_number, line in enumerate(sums_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ImageError(f"{sums_file}:{line_number}: not a sha256sum line: {line!r}")
        expected[parts[1].strip().lstrip("*")] = parts[0].lower()
    if not expected:
        raise ImageError(f"{sums_file} lists no files")
    problems = []
    for file_name, digest in expected.items():
        file_path = folder / file_name
        if not file_path.is_file():
            problems.append(f"{file_name}: missing")
            continue
        actual = hashlib.sha256(file_path.read_bytes()).hexdigest()
        if actual != digest:
            problems.append(f"{file_name}: sha256 {actual} != expected {digest}")
    if problems:
        raise ImageError(f"{folder} failed its SHA-256 check ({sums_file.name}):\n  " + "\n  ".join(problems))
    return sorted(expected)


def kodak_source(path: str | os.PathLike | None = None, verify: bool = True, cache: bool = True) -> FolderSource:
    """The 24 Kodak images as a :class:`FolderSource` (names ``kodim01`` ... ``kodim24``), hashes checked first."""
    folder = Path(path) if path is not None else kodak_dir()
    if not folder.is_dir():
        raise ConfigError(f"Kodak folder {folder} does not exist (set {KODAK_ENV_VAR} to its location)")
    if verify:
        verify_kodak(folder)
    return FolderSource(folder, extensions=(".png",), cache=cache)


# ---------------------------------------------------------------------------------------------------------------
# 4. Training batches
# ---------------------------------------------------------------------------------------------------------------


class TrainBatches:
    """Deterministic random crops for training: ``batch(step)`` depends only on (seed, step, example index).

    Every example of the *global* batch has its own generator, ``numpy.random.default_rng([seed, step, j])``
    for global example index ``j``; process ``p`` of ``n`` computes the examples ``j`` in
    ``[p * local, (p + 1) * local)`` with ``local = batch_size // n``. Consequences: resuming at step k gives
    exactly the batches an uninterrupted run sees, the processes' slices are disjoint parts of one global
    batch, and that global batch does not depend on how many processes share it.

    Each example: choose an image uniformly, choose a crop position uniformly, flip left-right with
    probability 1/2. Images smaller than the patch in a dimension are padded at the bottom/right by edge
    replication (the same padding codecs apply at evaluation time) rather than upscaled, which would change
    the image statistics.

    ``hard_patch_fraction=f`` (optional) imitates the high-entropy training set of Toderici et al. 2017, who
    kept the patches that PNG compresses worst: each example becomes the hardest of ``round(1 / f)``
    candidate crops, "hardest" meaning the largest zlib-compressed size after PNG's "Sub" filter (a cheap
    stand-in for PNG).

    Args:
      source: an :class:`ImageSource` (decoded images are cached by the source).
      patch_size: side P of the square crops.
      batch_size: global batch size, divisible by process_count.
      seed: non-negative integer.
      process_index, process_count: this process's slice of the global batch (``jax.process_index()``,
        ``jax.process_count()``).
      hard_patch_fraction: None, or a fraction in (0, 1].
      permute_channels: shuffle R, G, B of every example (one of the 6 orders, uniformly). A small training
        set (the embedded photographs) then covers hues it lacks; a codec must code every colour.
    """

    def __init__(
        self,
        source: ImageSource,
        patch_size: int,
        batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
        hard_patch_fraction: float | None = None,
        permute_channels: bool = False,
    ):
        patch_size = _as_int("patch_size", patch_size, minimum=1)
        batch_size = _as_int("batch_size", batch_size, minimum=1)
        seed = _as_int("seed", seed, minimum=0)
        process_index = _as_int("process_index", process_index, minimum=0)
        process_count = _as_int("process_count", process_count, minimum=1)
        if process_index >= process_count:
            raise ConfigError(f"process_index {process_index} is not below process_count {process_count}")
        if batch_size % process_count:
            raise ConfigError(f"batch_size {batch_size} is not divisible by process_count {process_count}")
        if len(source) == 0:
            raise ConfigError("the training source has no images")
        if hard_patch_fraction is not None and not 0.0 < float(hard_patch_fraction) <= 1.0:
            raise ConfigError(f"hard_patch_fraction must be in (0, 1], got {hard_patch_fraction!r}")
        self.source = source
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.seed = seed
        self.process_index = process_index
        self.process_count = process_count
        self.local_batch_size = batch_size // process_count
        self.hard_patch_fraction = hard_patch_fraction
        self.candidates_per_example = 1 if hard_patch_fraction is None else max(1, round(1.0 / hard_patch_fraction))
        self.permute_channels = bool(permute_channels)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's part of the global batch of ``step``: ``{"image": uint8 (local_batch, P, P, 3)}``."""
        step = _as_int("step", step, minimum=0)
        first = self.process_index * self.local_batch_size
        images = np.empty((self.local_batch_size, self.patch_size, self.patch_size, 3), np.uint8)
        for i in range(self.local_batch_size):
            images[i] = self._example(step, first + i)
        return {"image": images}

    def iterate(
        self, start_step: int = 0, prefetch: int = 2, stop_step: int | None = None
    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield ``(step, batch(step))`` for ``step = start_step, start_step + 1, ...`` (before ``stop_step``).

        With ``prefetch > 0`` a background thread computes up to ``prefetch`` batches ahead. The thread ends
        when the iterator is exhausted, closed (``close()``, leaving a ``for`` loop with ``break`` and dropping
        the iterator) or garbage-collected; an error in the thread is raised in the consumer.
        """
        prefetch = _as_int("prefetch", prefetch, minimum=0)
        start_step = _as_int("start_step", start_step, minimum=0)
        steps = itertools.count(start_step) if stop_step is None else range(start_step, _as_int("stop_step", stop_step))
        if prefetch == 0:
            return ((step, self.batch(step)) for step in steps)
        return _prefetched(steps, self.batch, prefetch)

    # -- one example ------------------------------------------------------------------------------------------

    def _example(self, step: int, example_index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, step, example_index])
        if self.candidates_per_example == 1:
            patch = self._random_crop(rng)
        else:
            candidates = [self._random_crop(rng) for _ in range(self.candidates_per_example)]
            patch = max(candidates, key=_compressed_size)  # first of equals wins: deterministic
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if self.permute_channels:  # drawn last, so the crops and flips are the same with or without it
            patch = patch[..., rng.permutation(3)]
        return patch

    def _random_crop(self, rng: np.random.Generator) -> np.ndarray:
        image = self.source[int(rng.integers(len(self.source)))]
        height, width = image.shape[:2]
        size = self.patch_size
        top = int(rng.integers(max(height - size, 0) + 1))
        left = int(rng.integers(max(width - size, 0) + 1))
        patch = image[top : top + size, left : left + size]
        if patch.shape[0] < size or patch.shape[1] < size:
            patch = np.pad(patch, ((0, size - patch.shape[0]), (0, size - patch.shape[1]), (0, 0)), mode="edge")
        return patch


def _as_int(label: str, value: Any, minimum: int | None = None) -> int:
    """An integer setting (Python, numpy or 0-d JAX integer; not bool), checked against a lower bound."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise ConfigError(f"{label} must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"{label} must be >= {minimum}, got {number}")
    return number


def _compressed_size(patch: np.ndarray) -> int:
    """Bytes zlib needs for the patch after PNG's "Sub" filter (difference to the left neighbour, mod 256).

    zlib's fastest level ranks patches like the default level at a third of the cost (about 3 ms for 256 x 256).
    """
    filtered = np.diff(patch.astype(np.int16), axis=1, prepend=0).astype(np.uint8)
    return len(zlib.compress(filtered.tobytes(), 1))


class _ProducerFailed:
    def __init__(self, error: BaseException):
        self.error = error


_END_OF_STEPS = object()


def _prefetched(steps: Iterable[int], make_batch, prefetch: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Run ``make_batch`` over ``steps`` in a daemon thread, at most ``prefetch`` results ahead of the consumer."""
    results: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def hand_over(item) -> bool:
        # A bounded put that gives up once the consumer has gone away, so the thread can always finish.
        while not stop.is_set():
            try:
                results.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for step in steps:
                if stop.is_set() or not hand_over((step, make_batch(step))):
                    return
            hand_over(_END_OF_STEPS)
        except BaseException as error:  # forwarded to the consumer, which re-raises it
            hand_over(_ProducerFailed(error))

    thread = threading.Thread(target=produce, name="lcomp-train-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = results.get()
            if item is _END_OF_STEPS:
                return
            if isinstance(item, _ProducerFailed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()  # returns once the batch in progress (if any) is done


# ---------------------------------------------------------------------------------------------------------------
# 5. Evaluation helpers
# ---------------------------------------------------------------------------------------------------------------


def _image_axes(image: np.ndarray, what: str) -> tuple[int, int]:
    """Axes of height and width: (0, 1) for one (H, W, C) image, (1, 2) for an (N, H, W, C) batch."""
    if image.ndim == 3:
        return 0, 1
    if image.ndim == 4:
        return 1, 2
    raise ImageError(f"{what} expects an (H, W, C) image or an (N, H, W, C) batch, got shape {image.shape}")


def pad_to_multiple(image: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad height and width up to a multiple by replicating the bottom row and right column.

    Works on an (H, W, C) image or an (N, H, W, C) batch. Returns ``(padded, (H, W))`` where ``(H, W)`` is the
    original size to pass to :func:`crop` after decoding. An image that is already a multiple is returned as is.
    """
    multiple = _as_int("padding multiple", multiple, minimum=1)
    image = np.asarray(image)
    h_axis, w_axis = _image_axes(image, "pad_to_multiple")
    height, width = image.shape[h_axis], image.shape[w_axis]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return image, (height, width)
    widths = [(0, 0)] * image.ndim
    widths[h_axis], widths[w_axis] = (0, pad_h), (0, pad_w)
    return np.pad(image, widths, mode="edge"), (height, width)


def crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The top-left ``(H, W)`` of an (H', W', C) image or (N, H', W', C) batch: undoes :func:`pad_to_multiple`."""
    image = np.asarray(image)
    h_axis, w_axis = _image_axes(image, "crop")
    height, width = (int(v) for v in size)
    if not (0 < height <= image.shape[h_axis] and 0 < width <= image.shape[w_axis]):
        raise ImageError(f"cannot crop an image of shape {image.shape} to {height} x {width}")
    if image.ndim == 3:
        return image[:height, :width]
    return image[:, :height, :width]


def eval_images(source: ImageSource) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, image)`` for every image of a source, in order."""
    for index in range(len(source)):
        yield source.names[index], source[index]
