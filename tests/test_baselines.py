"""Classical baselines: kodim01 sanity values (spec 8.1), chroma formats read back from the files, errors."""

import sys

import numpy as np
import pytest
from PIL import Image

from lcomp.baselines import BASELINES, chroma_format_of, get_baseline
from lcomp.data import kodak_dir, load_image
from lcomp.errors import BitstreamError, ConfigError, ImageError
from lcomp.interface import Compressed, RateDistortionCodec
from lcomp.metrics import psnr

KODAK = kodak_dir()
needs_kodak = pytest.mark.skipif(not (KODAK / "kodim01.png").is_file(), reason=f"Kodak images not found at {KODAK}")

# Spec section 8.1: (codec, setting, whole-file bytes, PSNR in dB) on kodim01, with the library versions of
# spec 7.1. Other versions may move the bytes slightly. The spec's JPEG values used optimize=True: the -opt
# variants.
SANITY = [
    ("jpeg420-opt", {"quality": 25}, 37445, 27.66),
    ("jpeg420-opt", {"quality": 50}, 59894, 29.87),
    ("jpeg420-opt", {"quality": 75}, 91237, 32.40),
    ("jpeg444-opt", {"quality": 25}, 40825, 27.81),
    ("jpeg444-opt", {"quality": 50}, 64856, 30.05),
    ("jpeg444-opt", {"quality": 75}, 100185, 32.67),
    ("webp", {"quality": 25}, 32760, 28.74),
    ("webp", {"quality": 50}, 52712, 31.50),
    ("webp", {"quality": 75}, 73178, 33.87),
    ("jpeg2000", {"target_bpp": 0.25}, 12236, 25.01),
    ("jpeg2000", {"target_bpp": 0.5}, 24517, 27.43),
    ("jpeg2000", {"target_bpp": 1.0}, 49134, 30.80),
    ("jpeg2000", {"target_bpp": 2.0}, 98238, 36.34),
    ("avif444", {"quality": 30}, 16458, 26.93),
    ("avif444", {"quality": 75}, 101178, 37.76),
    ("hevc444", {"quality": 20}, 20501, 27.64),  # veryslow + tune psnr, as the wrapper fixes them
    ("hevc444", {"quality": 30}, 42173, 31.06),
    ("hevc444", {"quality": 40}, 73785, 34.91),
    ("jpegxl", {"distance": 6.0}, 26672, 27.38),
    ("jpegxl", {"distance": 3.0}, 51999, 30.75),
    ("jpegxl", {"distance": 1.5}, 94168, 35.40),
]


def _skip_without_extra(name):
    module = {"hevc444": "pillow_heif", "jpegxl": "imagecodecs"}.get(name)
    if module:
        pytest.importorskip(module, reason=f"optional extra lcomp[baselines] ({module}) is not installed")


@pytest.fixture(scope="module")
def kodim01():
    return load_image(KODAK / "kodim01.png")


@pytest.mark.kodak
@needs_kodak
@pytest.mark.parametrize("name,setting,expected_bytes,expected_psnr", SANITY)
def test_kodim01_sanity_values(kodim01, name, setting, expected_bytes, expected_psnr):
    _skip_without_extra(name)
    codec = get_baseline(name)
    data = codec.encode(kodim01, **setting).data
    decoded = codec.decode(data)
    assert decoded.dtype == np.uint8 and decoded.shape == kodim01.shape
    value = float(psnr(kodim01, decoded))
    if len(data) != expected_bytes:
        print(f"{codec.label} {setting}: {len(data)} bytes (spec {expected_bytes}), {value:.2f} dB")
    assert len(data) == pytest.approx(expected_bytes, rel=0.03)
    assert value == pytest.approx(expected_psnr, abs=0.1)


def _test_image(height=64, width=96):
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 2.5, y * 3.0, (x + y) * 1.5], axis=-1) + rng.normal(0, 10, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


EXPECTED_CHROMA = {
    "jpeg420": "4:2:0",
    "jpeg444": "4:4:4",
    "jpeg420-opt": "4:2:0",
    "jpeg444-opt": "4:4:4",
    "webp": "4:2:0",
    "jpeg2000": "4:4:4",
    "avif444": "4:4:4",
    "hevc444": "4:4:4",
    "jpegxl": None,  # XYB, never subsampled; the codestream is not parsed
}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_chroma_format_in_file_matches_label(name):
    _skip_without_extra(name)
    codec = get_baseline(name)
    data = codec.encode(_test_image(), **codec.settings()[len(codec.settings()) // 2]).data
    assert chroma_format_of(data) == EXPECTED_CHROMA[name]
    if EXPECTED_CHROMA[name]:
        assert EXPECTED_CHROMA[name] in codec.label
    assert codec.decode(data).shape == (64, 96, 3)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_interface(name):
    codec = get_baseline(name)
    assert codec.name == name
    settings = codec.settings()
    assert 8 <= len(settings) <= 12
    assert all(len(s) == 1 for s in settings)
    # The protocol check reads `label`, and encoding runs the library: both need the optional extra.
    _skip_without_extra(name)
    assert isinstance(codec, RateDistortionCodec)
    compressed = codec.encode(_test_image(), **settings[0])
    assert isinstance(compressed, Compressed) and compressed.estimated_bits is None  # no model to estimate
    assert codec.decode(compressed.data).shape == (64, 96, 3)
    assert codec.file_layout(compressed.data) == {"header_bytes": None, "part_bytes": None}


@pytest.mark.parametrize("name", ["jpeg420", "jpeg444"])
def test_jpeg_default_uses_standard_huffman_tables(name):
    # Same quantisation, so the same pixels; only the entropy coding differs.
    standard, optimized = get_baseline(name), get_baseline(f"{name}-opt")
    image = _test_image(128, 160)
    standard_file = standard.encode(image, quality=50).data
    optimized_file = optimized.encode(image, quality=50).data
    np.testing.assert_array_equal(standard.decode(standard_file), optimized.decode(optimized_file))
    assert len(optimized_file) < len(standard_file)
    assert standard_file == _pillow_jpeg(image, quality=50, subsampling=standard.subsampling)  # plain libjpeg
    assert "standard Huffman tables" in standard.label and "optimized Huffman tables" in optimized.label


def _pillow_jpeg(image, **options):
    import io

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def test_errors(monkeypatch):
    jpeg = get_baseline("jpeg420")
    with pytest.raises(ConfigError, match="exactly one setting, 'quality'"):
        jpeg.encode(_test_image(), q=50)
    with pytest.raises(ImageError, match="uint8"):
        jpeg.encode(_test_image().astype(np.float32), quality=50)
    with pytest.raises(BitstreamError):
        jpeg.decode(b"not an image")
    with pytest.raises(ConfigError, match="unknown classical codec 'bpg'"):
        get_baseline("bpg")
    with pytest.raises(ConfigError, match="target_bpp must be positive"):
        get_baseline("jpeg2000").encode(_test_image(), target_bpp=0)
    for module, name in (("pillow_heif", "hevc444"), ("imagecodecs", "jpegxl")):
        monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
        with pytest.raises(ConfigError, match=r"pip install 'lcomp\[baselines\]'"):
            get_baseline(name).encode(_test_image(), **get_baseline(name).settings()[0])
