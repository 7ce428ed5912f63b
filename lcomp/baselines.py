"""Classical image codecs behind one small rate-distortion interface.

Every codec here is an :class:`lcomp.interface.RateDistortionCodec`, as trained learned codecs are, so
``lcomp.evaluate`` sweeps both the same way. It writes a complete, standard file (``encode``, which returns
:class:`lcomp.interface.Compressed` with no estimate: a classical codec has no entropy model to ask) and reads
it back (``decode``); the rate of an evaluation is always the length of that whole file. Each codec has
exactly one quality knob, swept by ``settings()`` over about 0.1-2 bpp on Kodak (8-12 points), and a
``label`` that states the library versions and the chroma format. ``chroma_format_of(data)`` reads the
chroma format back from a file, so the label can be checked against the bitstream instead of trusted.

Calls follow the evaluation spec (section 7.1) and avoid its pitfalls (section 8): JPEG 2000 uses the
irreversible 9/7 wavelet with the colour transform (Pillow's defaults do neither), HEVC intra fixes its x265
preset and tune for the whole sweep, and lossy WebP is labelled 4:2:0 because VP8 cannot do anything else.
``jpeg420``/``jpeg444`` are libjpeg's defaults (standard Huffman tables, what the published JPEG curves used);
``jpeg420-opt``/``jpeg444-opt`` add image-specific Huffman tables (``optimize=True``).

Codecs from the optional extra (``pillow-heif``, ``imagecodecs``) raise :class:`ConfigError` with the
install command when their package is missing.
"""

from __future__ import annotations

import abc
import functools
import importlib
import io
import re
from typing import Any, ClassVar

import numpy as np
import PIL
from PIL import Image, features

from lcomp.errors import BitstreamError, ConfigError, ImageError
from lcomp.interface import Compressed, RateDistortionCodec

_EXTRA_HINT = "pip install 'lcomp[baselines]'"


def _check_image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ImageError(f"expected a uint8 H x W x 3 RGB image, got {image.dtype} of shape {image.shape}")
    return image


def _decode_with_pillow(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise BitstreamError(f"cannot decode the file: {exc}") from exc


def _require_pillow_feature(feature: str, what: str) -> str:
    if not features.check(feature):
        raise ConfigError(f"this Pillow ({PIL.__version__}) was built without {what}; install pillow>=11.3 wheels")
    return features.version(feature) or "unknown"


def _import_extra(module: str, codec: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"the {codec} baseline needs the package {module!r}: {_EXTRA_HINT}") from exc


class _OneKnobCodec(abc.ABC):
    """The code every classical baseline shares: one quality knob, ``encode(image, **{knob: value})``.

    Subclasses give ``name``, ``label``, the knob, its sweep and ``_encode``; what evaluation calls is the
    ``lcomp.interface.RateDistortionCodec`` protocol, which this class satisfies.
    """

    #: Registry name, e.g. "jpeg420".
    name: ClassVar[str] = ""
    knob: ClassVar[str] = "quality"
    sweep: ClassVar[tuple[float, ...]] = ()

    @property
    @abc.abstractmethod
    def label(self) -> str:
        """Codec, library versions, chroma format and fixed encoder options."""

    def settings(self) -> list[dict[str, Any]]:
        return [{self.knob: value} for value in self.sweep]

    def encode(self, image: np.ndarray, **setting) -> Compressed:
        if set(setting) != {self.knob}:
            raise ConfigError(f"{self.name} takes exactly one setting, {self.knob!r}; got {sorted(setting)}")
        return Compressed(self._encode(_check_image(image), setting[self.knob]), None)

    @abc.abstractmethod
    def _encode(self, image: np.ndarray, value) -> bytes: ...

    def decode(self, data: bytes) -> np.ndarray:
        return _decode_with_pillow(data)

    def file_layout(self, data: bytes) -> dict[str, Any]:
        """Neither header nor part bytes: these standard formats are not split the way lcomp files are."""
        return {"header_bytes": None, "part_bytes": None}


def _save_with_pillow(image: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, fmt, **options)
    return buffer.getvalue()


class PillowJpeg(_OneKnobCodec):
    """Baseline JPEG from libjpeg-turbo through Pillow.

    By default the entropy coder uses the standard Huffman tables of the JPEG spec (Annex K), as plain
    ``cjpeg`` does and as the published JPEG curves in ``lcomp/reference_data`` were made. The ``-opt``
    variants set ``optimize=True``: image-specific Huffman tables, identical pixels in fewer bytes (about
    12 % lower BD-rate than the standard tables on Kodak), so they beat the published curve by about 10 %.
    """

    subsampling: ClassVar[int] = 2  # Pillow's code: 0 = 4:4:4, 2 = 4:2:0
    chroma: ClassVar[str] = "4:2:0"
    optimize: ClassVar[bool] = False

    @property
    def label(self) -> str:
        version = features.version("libjpeg_turbo") or "libjpeg"
        tables = "optimized Huffman tables" if self.optimize else "standard Huffman tables"
        return f"JPEG {self.chroma} (libjpeg-turbo {version}, Pillow {PIL.__version__}, {tables})"

    def _encode(self, image, value) -> bytes:
        return _save_with_pillow(
            image, "JPEG", quality=int(value), subsampling=self.subsampling, optimize=self.optimize
        )


class Jpeg420(PillowJpeg):
    name = "jpeg420"
    sweep = (5, 8, 12, 16, 20, 30, 40, 50, 60, 70, 80, 90)


class Jpeg444(PillowJpeg):
    name = "jpeg444"
    subsampling = 0
    chroma = "4:4:4"
    sweep = (3, 5, 8, 12, 16, 20, 30, 40, 50, 60, 70, 80)


class Jpeg420Optimized(Jpeg420):
    name = "jpeg420-opt"
    optimize = True


class Jpeg444Optimized(Jpeg444):
    name = "jpeg444-opt"
    optimize = True


class WebP(_OneKnobCodec):
    """Lossy WebP (VP8, always 4:2:0) through Pillow, slowest/best method 6."""

    name = "webp"
    sweep = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90)

    @property
    def label(self) -> str:
        version = _require_pillow_feature("webp", "WebP")
        return f"WebP 4:2:0 (libwebp {version}, Pillow {PIL.__version__}, method 6)"

    def _encode(self, image, value) -> bytes:
        _require_pillow_feature("webp", "WebP")
        return _save_with_pillow(image, "WEBP", quality=int(value), method=6)


class Jpeg2000(_OneKnobCodec):
    """JPEG 2000 (OpenJPEG through Pillow): a raw J2K codestream at a target rate.

    The knob is the target in bits per pixel; OpenJPEG's "rates" mode takes a compression ratio against the
    24 bits of an RGB pixel. Irreversible 9/7 wavelet and the colour transform (``mct=1``) are set
    explicitly: Pillow's defaults (5/3 wavelet, no colour transform) lose about 4 dB at 1 bpp.
    """

    name = "jpeg2000"
    knob = "target_bpp"
    sweep = (0.1, 0.15, 0.2, 0.3, 0.4, 0.55, 0.75, 1.0, 1.4, 2.0)

    @property
    def label(self) -> str:
        version = _require_pillow_feature("jpg_2000", "JPEG 2000")
        return f"JPEG 2000 4:4:4 (OpenJPEG {version}, Pillow {PIL.__version__}, 9/7 wavelet + ICT, J2K codestream)"

    def _encode(self, image, value) -> bytes:
        _require_pillow_feature("jpg_2000", "JPEG 2000")
        if not value > 0:
            raise ConfigError(f"jpeg2000 target_bpp must be positive, got {value}")
        return _save_with_pillow(
            image,
            "JPEG2000",
            quality_mode="rates",
            quality_layers=[24.0 / float(value)],
            irreversible=True,
            mct=1,
            no_jp2=True,
        )


class Avif444(_OneKnobCodec):
    """AVIF 4:4:4 through Pillow's built-in plugin (libavif with the aom encoder), speed 4."""

    name = "avif444"
    sweep = (12, 20, 28, 36, 44, 52, 60, 68, 76, 84)
    speed: ClassVar[int] = 4

    @property
    def label(self) -> str:
        version = _require_pillow_feature("avif", "AVIF")
        from PIL import AvifImagePlugin

        aom = AvifImagePlugin.get_codec_version("aom") or "unknown"
        return f"AVIF 4:4:4 (libavif {version} + aom {aom}, Pillow {PIL.__version__}, speed {self.speed})"

    def _encode(self, image, value) -> bytes:
        _require_pillow_feature("avif", "AVIF")
        return _save_with_pillow(image, "AVIF", quality=int(value), subsampling="4:4:4", speed=self.speed)


@functools.cache
def _register_heif_opener(pillow_heif) -> None:
    pillow_heif.register_heif_opener()  # lets Pillow read and write HEIF; once per process is enough


class Hevc444(_OneKnobCodec):
    """HEVC intra in a HEIF file (x265 through pillow-heif), 4:4:4: the stand-in for BPG.

    BPG is not installable from pip; its core is the same kind of HEVC intra coding. The x265 preset and tune
    are fixed for the whole sweep because they move the rate points a lot (spec section 8, pitfall 8).
    """

    name = "hevc444"
    sweep = (5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55)
    preset: ClassVar[str] = "veryslow"
    tune: ClassVar[str] = "psnr"

    def _heif(self):
        pillow_heif = _import_extra("pillow_heif", self.name)
        _register_heif_opener(pillow_heif)
        return pillow_heif

    @property
    def label(self) -> str:
        pillow_heif = self._heif()
        encoder = pillow_heif.libheif_info().get("encoders", {}).get("x265", "")
        version = re.search(r"\d+(?:\.\d+)+", encoder)
        return (
            f"HEVC intra (x265, 4:4:4) (x265 {version.group(0) if version else 'unknown'}, libheif {pillow_heif.libheif_version()}, "
            f"pillow-heif {pillow_heif.__version__}, preset {self.preset}, tune {self.tune}, HEIF file)"
        )

    def _encode(self, image, value) -> bytes:
        self._heif()
        return _save_with_pillow(
            image, "HEIF", quality=int(value), chroma=444, enc_params={"preset": self.preset, "tune": self.tune}
        )

    def decode(self, data: bytes) -> np.ndarray:
        self._heif()
        return _decode_with_pillow(data)


class JpegXL(_OneKnobCodec):
    """JPEG XL (libjxl through imagecodecs), lossy VarDCT in XYB (no chroma subsampling), effort 7.

    The knob is the Butteraugli distance: larger means smaller files.
    """

    name = "jpegxl"
    knob = "distance"
    sweep = (16.0, 11.0, 8.0, 6.0, 4.5, 3.3, 2.4, 1.7, 1.2, 0.9)
    effort: ClassVar[int] = 7

    @property
    def label(self) -> str:
        imagecodecs = _import_extra("imagecodecs", self.name)
        return f"JPEG XL XYB, no subsampling ({imagecodecs.jpegxl_version()}, imagecodecs {imagecodecs.__version__}, effort {self.effort})"

    def _encode(self, image, value) -> bytes:
        imagecodecs = _import_extra("imagecodecs", self.name)
        return bytes(imagecodecs.jpegxl_encode(image, distance=float(value), effort=self.effort))

    def decode(self, data: bytes) -> np.ndarray:
        imagecodecs = _import_extra("imagecodecs", self.name)
        try:
            image = np.asarray(imagecodecs.jpegxl_decode(data))
        except Exception as exc:  # imagecodecs raises its own error classes per codec
            raise BitstreamError(f"cannot decode the JPEG XL file: {exc}") from exc
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise BitstreamError(f"the JPEG XL file holds a {image.dtype} image of shape {image.shape}, not 8-bit RGB")
        return image


BASELINES: dict[str, type[_OneKnobCodec]] = {
    cls.name: cls
    for cls in (Jpeg420, Jpeg444, Jpeg420Optimized, Jpeg444Optimized, WebP, Jpeg2000, Avif444, Hevc444, JpegXL)
}


def baseline_names() -> list[str]:
    """Every name ``get_baseline`` accepts."""
    return list(BASELINES)


def get_baseline(name: str) -> RateDistortionCodec:
    """A classical codec by name: ``jpeg420``, ``jpeg444`` (standard Huffman tables, as the published curves),
    ``jpeg420-opt``, ``jpeg444-opt`` (optimized Huffman tables), ``webp``, ``jpeg2000``, ``avif444``,
    ``hevc444`` or ``jpegxl``."""
    if name not in BASELINES:
        raise ConfigError(f"unknown classical codec {name!r}; choose one of {', '.join(baseline_names())}")
    return BASELINES[name]()


# --- reading the chroma format back from a file ---------------------------------------------------------------


def _chroma_from_factors(luma: tuple[int, int], chroma: tuple[int, int]) -> str:
    ratio = (luma[0] // chroma[0], luma[1] // chroma[1])  # (horizontal, vertical)
    return {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0", (4, 1): "4:1:1"}.get(ratio, f"{ratio}")


def _box_payload(data: bytes, box_type: bytes, length: int) -> bytes | None:
    at = data.find(box_type)
    if at < 0 or at + 4 + length > len(data):
        return None
    return data[at + 4 : at + 4 + length]


def _webp_chunks(data: bytes):
    at = 12
    while at + 8 <= len(data):
        size = int.from_bytes(data[at + 4 : at + 8], "little")
        yield data[at : at + 4]
        at += 8 + size + (size & 1)


def chroma_format_of(data: bytes) -> str | None:
    """The chroma format a file really uses ("4:2:0", "4:4:4", ...), or None where it cannot be read.

    JPEG: the SOF sampling factors. JPEG 2000: the SIZ component subsampling. WebP: a VP8 (lossy) chunk is
    always 4:2:0. AVIF: the ``av1C`` box. HEIF: the ``hvcC`` box's chroma_format_idc. JPEG XL: not parsed.
    """
    if data[:2] == b"\xff\xd8":
        with Image.open(io.BytesIO(data)) as img:
            layers = img.layer  # [(component id, h, v, quantisation table), ...] from SOF
        if len(layers) == 1:
            return "4:0:0"
        return _chroma_from_factors(layers[0][1:3], layers[1][1:3])
    if data[:4] == b"\xff\x4f\xff\x51":  # SOC, then the SIZ segment
        components = int.from_bytes(data[40:42], "big")
        factors = [(data[43 + 3 * i], data[44 + 3 * i]) for i in range(components)]
        if len(set(factors)) == 1:
            return "4:4:4"
        return _chroma_from_factors(factors[0], factors[1])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunks = set(_webp_chunks(data))
        return "4:2:0" if b"VP8 " in chunks else ("lossless ARGB" if b"VP8L" in chunks else None)
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            av1c = _box_payload(data, b"av1C", 3)
            if av1c is None:
                return None
            if av1c[2] & 0x10:
                return "4:0:0"
            return {(0, 0): "4:4:4", (1, 0): "4:2:2", (1, 1): "4:2:0"}.get(((av1c[2] >> 3) & 1, (av1c[2] >> 2) & 1))
        hvcc = _box_payload(data, b"hvcC", 17)
        if hvcc is not None:
            return {0: "4:0:0", 1: "4:2:0", 2: "4:2:2", 3: "4:4:4"}[hvcc[16] & 3]
    return None
