"""Tests of lcomp.data: decoding rules, error handling, sources, deterministic batches, padding, Kodak.

Every test image is synthesised here (numpy + Pillow, or raw PNG chunks where Pillow cannot write the layout)
into pytest's tmp_path; expected values are computed from the documented formulas, not from lcomp.
"""

import io
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from lcomp import data
from lcomp.errors import ConfigError, ImageError

# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind, payload):
    """One PNG chunk: length, type, payload, CRC-32."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def raw_png(width, height, color_type, bit_depth, samples=None, extra_chunks=()):
    """A minimal PNG (filter type 0, one IDAT) built by hand, for layouts Pillow cannot write (16-bit RGB)
    and for headers that lie about the image size."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    parts = [PNG_SIGNATURE, _chunk(b"IHDR", header)]
    parts += [_chunk(kind, payload) for kind, payload in extra_chunks]
    if samples is not None:
        rows = b"".join(b"\x00" + row.tobytes() for row in samples)  # filter type 0 per row
        parts.append(_chunk(b"IDAT", zlib.compress(rows)))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def round_div(numerator, denominator):
    """Round-half-up integer division, the rounding load_image documents."""
    return (np.asarray(numerator, np.int64) * 2 + denominator) // (2 * denominator)


def white_composite(color, alpha, maxval):
    color = np.asarray(color, np.int64)
    alpha = np.asarray(alpha, np.int64)[..., None]
    return round_div((color * alpha + maxval * (maxval - alpha)) * 255, maxval * maxval).astype(np.uint8)


def save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


# ---------------------------------------------------------------------------------------------------------------
# 1. load_image: conversions
# ---------------------------------------------------------------------------------------------------------------


def test_rgb8_png_round_trip_through_save_image(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    path = data.save_image(tmp_path / "x.png", image)
    loaded = data.load_image(path)
    assert loaded.dtype == np.uint8 and loaded.shape == (7, 5, 3)
    np.testing.assert_array_equal(loaded, image)
    assert loaded.flags.writeable
    # Input as str, bytes and file object gives the same pixels.
    np.testing.assert_array_equal(data.load_image(str(path)), image)
    np.testing.assert_array_equal(data.load_image(path.read_bytes()), image)
    with open(path, "rb") as file:
        np.testing.assert_array_equal(data.load_image(file), image)


def test_save_image_writes_png_whatever_the_suffix_and_rejects_bad_arrays(tmp_path):
    image = np.zeros((2, 3, 3), np.uint8)
    path = data.save_image(tmp_path / "x.jpg", image)
    assert Image.open(path).format == "PNG"
    for bad in (np.zeros((2, 3), np.uint8), np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3, 3), np.float32)):
        with pytest.raises(ImageError):
            data.save_image(tmp_path / "bad.png", bad)


def test_gray_8bit_is_replicated(tmp_path):
    gray = np.array([[0, 1, 127], [128, 254, 255]], np.uint8)
    path = save(Image.fromarray(gray, mode="L"), tmp_path / "g.png")
    loaded = data.load_image(path)
    assert loaded.shape == (2, 3, 3)
    for channel in range(3):
        np.testing.assert_array_equal(loaded[..., channel], gray)


def test_bilevel_image(tmp_path):
    image = Image.new("1", (3, 1))
    image.putpixel((1, 0), 1)
    loaded = data.load_image(save(image, tmp_path / "b.png"))
    np.testing.assert_array_equal(loaded[0, :, 0], [0, 255, 0])


def test_gray_16bit_png_is_rounded_not_truncated(tmp_path):
    values = np.array([[0, 128, 129, 200, 255, 257, 33024, 65535]], np.uint16)
    path = save(Image.fromarray(values), tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I;16")
    loaded = data.load_image(path)
    expected = round_div(values, 257)
    np.testing.assert_array_equal(loaded[..., 0], expected)
    np.testing.assert_array_equal(loaded[..., 2], expected)
    # 200 and 255 are where rounding and high-byte truncation differ.
    assert loaded[0, 3, 0] == 1 and loaded[0, 4, 0] == 1


def test_gray_int32_and_float_tiff(tmp_path):
    ints = np.array([[-5, 0, 257, 65535, 70000]], np.int32)
    path = save(Image.fromarray(ints), tmp_path / "i.tif")
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(data.load_image(path)[..., 1], round_div(np.clip(ints, 0, 65535), 257))

    floats = np.array([[-1.0, 0.0, 0.5, 1.0, 2.0, np.nan]], np.float32)
    path = save(Image.fromarray(floats), tmp_path / "f.tif")
    assert Image.open(path).mode == "F"
    np.testing.assert_array_equal(data.load_image(path)[0, :, 0], [0, 0, 128, 255, 255, 0])


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.array([[[10, 200, 30, 0], [10, 200, 30, 128], [10, 200, 30, 255], [0, 0, 0, 1]]], np.uint8)
    loaded = data.load_image(save(Image.fromarray(rgba, mode="RGBA"), tmp_path / "a.png"))
    np.testing.assert_array_equal(loaded, white_composite(rgba[..., :3], rgba[..., 3], 255))
    np.testing.assert_array_equal(loaded[0, 0], [255, 255, 255])  # fully transparent -> white
    np.testing.assert_array_equal(loaded[0, 2], [10, 200, 30])  # opaque -> unchanged


def test_gray_alpha_is_composited_on_white(tmp_path):
    gray = Image.fromarray(np.array([[10, 200, 50]], np.uint8))
    alpha = Image.fromarray(np.array([[0, 128, 255]], np.uint8))
    loaded = data.load_image(save(Image.merge("LA", [gray, alpha]), tmp_path / "la.png"))
    expected = white_composite(np.array([[[10] * 3, [200] * 3, [50] * 3]]), [[0, 128, 255]], 255)
    np.testing.assert_array_equal(loaded, expected)


def test_palette_with_and_without_transparency(tmp_path):
    image = Image.new("P", (3, 1))
    image.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90] + [0] * (256 * 3 - 9))
    image.putpixel((1, 0), 1)
    image.putpixel((2, 0), 2)
    plain = data.load_image(save(image, tmp_path / "p.png"))
    np.testing.assert_array_equal(plain[0], [[10, 20, 30], [40, 50, 60], [70, 80, 90]])
    transparent = data.load_image(save(image, tmp_path / "pt.png", transparency=1))
    np.testing.assert_array_equal(transparent[0], [[10, 20, 30], [255, 255, 255], [70, 80, 90]])


def test_rgb_color_key_transparency(tmp_path):
    rgb = np.array([[[1, 2, 3], [4, 5, 6]]], np.uint8)
    loaded = data.load_image(save(Image.fromarray(rgb), tmp_path / "k.png", transparency=(4, 5, 6)))
    np.testing.assert_array_equal(loaded[0], [[1, 2, 3], [255, 255, 255]])


def test_cmyk_uses_the_plain_formula(tmp_path):
    cmyk = np.array([[[10, 20, 30, 40], [0, 0, 0, 0], [255, 0, 100, 7]]], np.uint8)
    path = save(Image.fromarray(cmyk, mode="CMYK"), tmp_path / "c.tif")
    loaded = data.load_image(path).astype(np.int64)
    c = cmyk.astype(np.int64)
    expected = (255 - c[..., :3]) * (255 - c[..., 3:]) / 255.0
    np.testing.assert_array_equal(loaded, np.rint(expected))


def test_rgb_16bit_png_keeps_low_bytes(tmp_path):
    samples = np.array([[[0, 200, 255], [257, 40000, 65535]], [[33024, 128, 129], [384, 65280, 65279]]], ">u2")
    path = tmp_path / "rgb16.png"
    path.write_bytes(raw_png(2, 2, color_type=2, bit_depth=16, samples=samples))
    loaded = data.load_image(path)
    np.testing.assert_array_equal(loaded, round_div(samples.astype(np.int64), 257))
    # Pillow alone keeps the high byte only, so 200 and 255 would read as 0: this is what the test guards.
    assert np.asarray(Image.open(path))[0, 0, 1] == 0 and loaded[0, 0, 1] == 1


def _png_filter_row(kind, row, previous, bytes_per_pixel):
    """PNG row filters 0-4 (encoder side), so the decoder's unfiltering is exercised on 16-bit data."""
    row, previous = row.astype(np.int64), previous.astype(np.int64)
    left = np.concatenate([np.zeros(bytes_per_pixel, np.int64), row[:-bytes_per_pixel]])
    up_left = np.concatenate([np.zeros(bytes_per_pixel, np.int64), previous[:-bytes_per_pixel]])
    if kind == 0:
        predicted = np.zeros_like(row)
    elif kind == 1:
        predicted = left
    elif kind == 2:
        predicted = previous
    elif kind == 3:
        predicted = (left + previous) // 2
    else:
        estimate = left + previous - up_left
        distances = [np.abs(estimate - left), np.abs(estimate - previous), np.abs(estimate - up_left)]
        predicted = np.where(
            (distances[0] <= distances[1]) & (distances[0] <= distances[2]),
            left,
            np.where(distances[1] <= distances[2], previous, up_left),
        )
    return bytes([kind]) + ((row - predicted) % 256).astype(np.uint8).tobytes()


def test_rgb_16bit_png_with_every_filter_and_interlacing(tmp_path):
    """Both decoding passes of the 16-bit path must unfilter identically (Sub/Average/Paeth look at earlier
    bytes) and handle Adam7 interlacing."""
    height, width = 11, 13
    samples = np.random.default_rng(6).integers(0, 65536, (height, width, 3)).astype(">u2")
    expected = round_div(samples.astype(np.int64), 257)

    rows = [np.frombuffer(row.tobytes(), np.uint8) for row in samples]
    previous = np.zeros_like(rows[0])
    filtered = b""
    for y, row in enumerate(rows):
        filtered += _png_filter_row(y % 5, row, previous, bytes_per_pixel=6)
        previous = row
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    png = PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(filtered))
    png += _chunk(b"IEND", b"")
    np.testing.assert_array_equal(data.load_image(png), expected)

    adam7 = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
    interlaced = b""
    for top, left, step_y, step_x in adam7:
        sub_image = samples[top::step_y, left::step_x]
        if sub_image.size:
            interlaced += b"".join(b"\x00" + row.tobytes() for row in sub_image)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 1)
    png = PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(interlaced))
    png += _chunk(b"IEND", b"")
    np.testing.assert_array_equal(data.load_image(png), expected)


def test_rgba_16bit_png_is_composited_with_full_precision(tmp_path):
    samples = np.array([[[0, 257, 65535, 300], [255, 40000, 128, 65535], [200, 384, 33024, 0]]], ">u2")
    path = tmp_path / "rgba16.png"
    path.write_bytes(raw_png(3, 1, color_type=6, bit_depth=16, samples=samples))
    expected = white_composite(samples[..., :3].astype(np.int64), samples[..., 3].astype(np.int64), 65535)
    np.testing.assert_array_equal(data.load_image(path), expected)


def test_16bit_tiff_gray_big_endian(tmp_path):
    values = np.array([[1, 255, 65535]], ">u2")
    path = save(Image.fromarray(values), tmp_path / "be.tif")
    np.testing.assert_array_equal(data.load_image(path)[0, :, 0], round_div(values.astype(np.int64), 257)[0])


def test_gamma_and_profiles_are_ignored(tmp_path):
    """A gAMA chunk must not change the pixels (the Kodak rule)."""
    rgb = np.array([[[10, 100, 200]]], np.uint8)
    gamma = (b"gAMA", struct.pack(">I", 45455))
    path = tmp_path / "gamma.png"
    path.write_bytes(raw_png(1, 1, color_type=2, bit_depth=8, samples=rgb, extra_chunks=[gamma]))
    np.testing.assert_array_equal(data.load_image(path), rgb)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(Image.fromarray(pixels), tmp_path / "o.png", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    np.testing.assert_array_equal(data.load_image(path), expected)
    np.testing.assert_array_equal(data.load_image(path, exif_orientation=False), pixels)


# ---------------------------------------------------------------------------------------------------------------
# 1. load_image: errors
# ---------------------------------------------------------------------------------------------------------------


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(ImageError, match="cannot open"):
        data.load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="cannot open"):
        data.load_image(tmp_path)


def test_empty_file_and_empty_bytes(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        data.load_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="empty"):
        data.load_image(b"")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("these are not pixels\n" * 20)
    with pytest.raises(ImageError, match="not an image"):
        data.load_image(tmp_path / "notes.png")


def test_truncated_png(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    complete = buffer.getvalue()
    with pytest.raises(ImageError, match="truncated or corrupt"):
        data.load_image(complete[: len(complete) // 2])


def test_corrupt_png_checksum(tmp_path):
    good = raw_png(4, 4, 2, 8, np.zeros((4, 4, 3), np.uint8))
    index = good.index(b"IDAT") + 6  # inside the compressed data
    bad = good[:index] + bytes([good[index] ^ 0xFF]) + good[index + 1 :]
    with pytest.raises(ImageError):
        data.load_image(bad)


def test_absurd_header_fails_fast_without_decoding():
    """A 100000 x 100000 header with no pixel data behind it: refused from the header alone."""
    start = time.perf_counter()
    with pytest.raises(ImageError, match="too large|exceeds"):
        data.load_image(raw_png(100_000, 100_000, 2, 8))
    assert time.perf_counter() - start < 0.5


def test_header_above_lcomp_limit_but_below_pillows():
    """72 million pixels: Pillow would accept it; lcomp's own header check must refuse it before decoding
    (had it started decoding, the error would say 'truncated' because there is no IDAT)."""
    with pytest.raises(ImageError, match="exceeds the limit"):
        data.load_image(raw_png(9000, 8000, 2, 8))
    with pytest.raises(ImageError, match="exceeds the limit of 100 pixels"):
        data.load_image(raw_png(20, 20, 2, 8, np.zeros((20, 20, 3), np.uint8)), max_pixels=100)


def test_zero_size_header():
    # Pillow already refuses these at open; load_image's own zero-size check is a second line of defence.
    with pytest.raises(ImageError):
        data.load_image(raw_png(0, 0, 2, 8))
    with pytest.raises(ImageError):
        data.load_image(raw_png(0, 7, 2, 8))
    with pytest.raises(ImageError):
        data.load_image(b"P6\n0 5\n255\n")


def test_cielab_is_refused(tmp_path):
    path = save(Image.new("LAB", (2, 2)), tmp_path / "lab.tif")
    with pytest.raises(ImageError, match="CIELAB"):
        data.load_image(path)


# ---------------------------------------------------------------------------------------------------------------
# 2. sources
# ---------------------------------------------------------------------------------------------------------------


def write_png(path, fill, size=(6, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size + (3,), fill, np.uint8)).save(path)
    return path


def test_folder_source_order_names_filters_and_cache(tmp_path):
    write_png(tmp_path / "b.png", 2)
    write_png(tmp_path / "a.PNG", 1)
    write_png(tmp_path / "sub" / "c.png", 3)
    write_png(tmp_path / ".hidden.png", 9)
    (tmp_path / "readme.txt").write_text("not an image")
    source = data.FolderSource(tmp_path)
    assert source.names == ["a", "b"] and len(source) == 2
    assert source[0][0, 0, 0] == 1 and source[-1][0, 0, 0] == 2
    assert source[0] is source[0]  # decoded once, cached
    assert not source[0].flags.writeable  # the cached array cannot be corrupted by a caller
    with pytest.raises(IndexError):
        source[2]
    recursive = data.FolderSource(tmp_path, recursive=True)
    assert recursive.names == ["a", "b", "sub/c"]
    only_upper = data.FolderSource(tmp_path, extensions=["PNG"])
    assert len(only_upper) == 2  # suffixes compare case-insensitively
    assert [name for name, _ in data.eval_images(source)] == ["a", "b"]


def test_folder_source_names_keep_suffix_when_stems_collide(tmp_path):
    write_png(tmp_path / "x.png", 1)
    Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(tmp_path / "x.bmp")
    assert data.FolderSource(tmp_path).names == ["x.bmp", "x.png"]


def test_folder_source_missing_empty_and_not_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        data.FolderSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        data.FolderSource(tmp_path / "empty")
    write_png(tmp_path / "one.png", 0)
    with pytest.raises(ConfigError, match="not a folder"):
        data.FolderSource(tmp_path / "one.png")


def test_folder_source_decodes_lazily(tmp_path):
    write_png(tmp_path / "good.png", 5)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    source = data.FolderSource(tmp_path)  # building the source decodes nothing
    assert source[source.names.index("good")][0, 0, 0] == 5
    with pytest.raises(ImageError):
        source[source.names.index("bad")]


def test_array_source_validates_and_copies():
    image = np.zeros((4, 5, 3), np.uint8)
    source = data.ArraySource([image])
    image[:] = 9
    assert source[0].max() == 0 and source.names == ["image0000"]
    with pytest.raises(ImageError):
        data.ArraySource([np.zeros((4, 5), np.uint8)])
    with pytest.raises(ConfigError):
        data.ArraySource([])


def test_embedded_source_has_colour_photographs_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("EmbeddedSource tried to use the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    source = data.EmbeddedSource(split="all", cache=False)
    assert len(source) >= 5
    assert source.names == [Path(f).stem for f in data.EMBEDDED_PHOTOGRAPHS if (source.root / f).exists()]
    for name, image in data.eval_images(source):
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        assert 256 <= min(image.shape[:2]) and max(image.shape[:2]) <= 2048, (name, image.shape)
        # a colour photograph: channels differ and there is real texture
        assert np.abs(image[..., 0].astype(int) - image[..., 2]).mean() > 2, name
        assert image.std() > 10, name


def test_embedded_splits_are_disjoint_and_cover_everything():
    train = data.EmbeddedSource("train")
    evaluation = data.EmbeddedSource("eval")
    everything = data.EmbeddedSource("all")
    assert len(train) >= 5 and len(evaluation) >= 1
    assert not set(train.names) & set(evaluation.names)
    assert sorted(train.names + evaluation.names) == sorted(everything.names)
    assert data.EmbeddedSource("train").names == train.names  # deterministic order
    with pytest.raises(ConfigError):
        data.EmbeddedSource("validation")


def test_embedded_source_does_not_import_skimage():
    """Finding the photographs must not run scikit-image's (heavy, possibly downloading) package code."""
    code = (
        "import sys; from lcomp import data; s = data.EmbeddedSource('eval'); s[0]; "
        "print('skimage' in sys.modules)"
    )
    repo_root = Path(data.__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_make_source_builds_each_kind(tmp_path):
    write_png(tmp_path / "one.png", 3)
    folder = data.make_source({"source": "folder", "path": str(tmp_path), "name": None})
    assert isinstance(folder, data.FolderSource) and folder.names == ["one"]
    embedded = data.make_source({"source": "embedded", "split": "eval", "path": None})
    assert isinstance(embedded, data.EmbeddedSource) and embedded.split == "eval"
    assert isinstance(data.make_source("embedded"), data.EmbeddedSource)


def test_make_source_accepts_configdict(tmp_path):
    ml_collections = pytest.importorskip("ml_collections")
    write_png(tmp_path / "one.png", 3)
    config = ml_collections.ConfigDict({"source": "folder", "path": str(tmp_path), "split": None})
    assert len(data.make_source(config)) == 1


def test_make_source_rejects_bad_specs(tmp_path):
    with pytest.raises(ConfigError, match="unknown data source"):
        data.make_source({"source": "ftp"})
    with pytest.raises(ConfigError, match="unknown data source"):
        data.make_source({"path": str(tmp_path)})
    with pytest.raises(ConfigError, match="does not take"):
        data.make_source({"source": "embedded", "pth": "x"})
    with pytest.raises(ConfigError, match="needs a 'path'"):
        data.make_source({"source": "folder"})
    with pytest.raises(ConfigError, match="needs a data set 'name'"):
        data.make_source({"source": "tfds"})
    with pytest.raises(ConfigError):
        data.make_source(["embedded"])


def test_tfds_source_without_tfds_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail
    with pytest.raises(ConfigError, match=r"pip install 'lcomp\[tfds\]'"):
        data.TfdsSource("anything")


def _tiny_tfds_builder_class(tfds):
    """A two-split image data set written in the array_record format (needs no TensorFlow)."""

    class LcompTestTinyImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(None, None, 3))})
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(3), "test": self._generate_examples(2)}

        def _generate_examples(self, count):
            for i in range(count):
                buffer = io.BytesIO()
                Image.fromarray(np.full((8 + i, 10, 3), 40 * i, np.uint8)).save(buffer, format="PNG")
                yield i, {"image": buffer.getvalue()}

    return LcompTestTinyImages


@pytest.fixture(scope="module")
def tfds_tiny(tmp_path_factory):
    tfds = pytest.importorskip(
        "tensorflow_datasets", reason="tensorflow-datasets (optional extra) not installed", exc_type=ImportError
    )
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = _tiny_tfds_builder_class(tfds)(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return builder.name, data_dir


def test_tfds_source_reads_a_prepared_data_set(tfds_tiny):
    name, data_dir = tfds_tiny
    source = data.make_source({"source": "tfds", "name": name, "split": "train", "data_dir": str(data_dir)})
    assert len(source) == 3 and source.names[0] == f"{name}/train/0"
    images = sorted((image.shape, int(image[0, 0, 0])) for image in source)
    assert images == [((8, 10, 3), 0), ((9, 10, 3), 40), ((10, 10, 3), 80)]
    assert len(data.TfdsSource(name, split="test", data_dir=data_dir)) == 2


def test_tfds_source_unprepared_data_set_fails_without_network(tfds_tiny, tmp_path, monkeypatch):
    name, _ = tfds_tiny

    def no_network(*args, **kwargs):
        raise AssertionError("TfdsSource tried to use the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(ConfigError, match="cannot open tfds data set"):
        data.TfdsSource(name, data_dir=tmp_path / "nothing-here")
    with pytest.raises(ConfigError, match="cannot open tfds data set"):
        data.TfdsSource("lcomp_no_such_dataset_xyz", data_dir=tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# 3. Kodak
# ---------------------------------------------------------------------------------------------------------------


def test_kodak_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("LCOMP_KODAK", raising=False)
    repo_root = Path(data.__file__).resolve().parents[2]
    assert data.kodak_dir() == repo_root.parent / "shared" / "data" / "kodak"
    monkeypatch.setenv("LCOMP_KODAK", str(tmp_path))
    assert data.kodak_dir() == tmp_path


def test_verify_kodak_detects_tampering(tmp_path):
    """Runs without the real images: a fake folder with its own SHA256SUMS."""
    import hashlib

    names = ["kodim01.png", "kodim02.png"]
    lines = []
    for i, name in enumerate(names):
        write_png(tmp_path / name, i)
        lines.append(f"{hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()}  {name}")
    (tmp_path / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    assert data.verify_kodak(tmp_path) == names
    write_png(tmp_path / "kodim02.png", 200)
    with pytest.raises(ImageError, match="kodim02.png: sha256"):
        data.verify_kodak(tmp_path)
    (tmp_path / "kodim01.png").unlink()
    with pytest.raises(ImageError, match="kodim01.png: missing"):
        data.verify_kodak(tmp_path)
    (tmp_path / "SHA256SUMS").unlink()
    with pytest.raises(ImageError, match="SHA256SUMS is missing"):
        data.verify_kodak(tmp_path)
    with pytest.raises(ImageError, match="does not exist"):
        data.verify_kodak(tmp_path / "missing")


def _kodak_or_skip():
    folder = data.kodak_dir()
    if not (folder / "SHA256SUMS").is_file():
        pytest.skip(f"Kodak images not found at {folder} (set LCOMP_KODAK to the folder)")
    return folder


@pytest.mark.kodak
def test_real_kodak_hashes_and_loading_rules():
    folder = _kodak_or_skip()
    verified = data.verify_kodak(folder)
    assert len(verified) == 24
    source = data.make_source({"source": "kodak"})
    assert source.names == [f"kodim{i:02d}" for i in range(1, 25)]
    portrait = {"kodim04", "kodim09", "kodim10", "kodim17", "kodim18", "kodim19"}
    for name in ("kodim01", "kodim04"):
        image = source[source.names.index(name)]
        assert image.shape == ((768, 512, 3) if name in portrait else (512, 768, 3))
        # the evaluation rule: exactly Pillow's convert("RGB"), gAMA not applied
        reference = np.asarray(Image.open(folder / f"{name}.png").convert("RGB"))
        np.testing.assert_array_equal(image, reference)


# ---------------------------------------------------------------------------------------------------------------
# 4. training batches
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noise_source():
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (40 + 3 * i, 50 - 2 * i, 3), dtype=np.uint8) for i in range(4)]
    return data.ArraySource(images)


def test_batch_shapes_and_dtypes(noise_source):
    batches = data.TrainBatches(noise_source, patch_size=16, batch_size=6, seed=0)
    batch = batches.batch(0)
    assert set(batch) == {"image"}
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (6, 16, 16, 3)


def test_batches_are_a_pure_function_of_seed_and_step(noise_source):
    first = data.TrainBatches(noise_source, 16, 4, seed=3)
    second = data.TrainBatches(noise_source, 16, 4, seed=3)
    np.testing.assert_array_equal(first.batch(5)["image"], second.batch(5)["image"])
    np.testing.assert_array_equal(first.batch(5)["image"], first.batch(5)["image"])  # no hidden state
    np.testing.assert_array_equal(first.batch(np.int64(5))["image"], first.batch(5)["image"])
    assert not np.array_equal(first.batch(5)["image"], first.batch(6)["image"])
    other_seed = data.TrainBatches(noise_source, 16, 4, seed=4)
    assert not np.array_equal(first.batch(5)["image"], other_seed.batch(5)["image"])


def test_crops_come_from_the_source_and_are_flipped_sometimes(noise_source):
    batches = data.TrainBatches(noise_source, 8, 64, seed=1)
    images = [np.asarray(image) for image in noise_source]
    straight = flipped = 0
    for patch in batches.batch(0)["image"]:
        found_straight = any(_contains(image, patch) for image in images)
        found_flipped = any(_contains(image, patch[:, ::-1]) for image in images)
        assert found_straight or found_flipped
        straight += found_straight
        flipped += found_flipped
    assert straight > 10 and flipped > 10


def _contains(image, patch):
    size = patch.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size, 3))[..., 0, :, :, :]
    return bool(np.any(np.all(windows == patch, axis=(2, 3, 4))))


def test_small_images_are_edge_padded():
    image = np.random.default_rng(2).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    batches = data.TrainBatches(data.ArraySource([image]), patch_size=9, batch_size=8, seed=0)
    expected = np.pad(image, ((0, 4), (0, 2), (0, 0)), mode="edge")
    for patch in batches.batch(0)["image"]:
        assert np.array_equal(patch, expected) or np.array_equal(patch, expected[:, ::-1])


def test_resuming_reproduces_the_uninterrupted_run(noise_source):
    batches = data.TrainBatches(noise_source, 16, 4, seed=11)
    uninterrupted = [batch["image"] for _, batch in batches.iterate(start_step=0, stop_step=8)]
    # a new object (as after a restart), resumed at step 5
    resumed = data.TrainBatches(noise_source, 16, 4, seed=11)
    steps, images = zip(*[(step, batch["image"]) for step, batch in resumed.iterate(start_step=5, stop_step=8)])
    assert steps == (5, 6, 7)
    for got, want in zip(images, uninterrupted[5:]):
        np.testing.assert_array_equal(got, want)


def test_process_slices_form_the_global_batch(noise_source):
    whole = data.TrainBatches(noise_source, 16, 6, seed=2).batch(3)["image"]
    slices = []
    for process in range(2):
        sliced = data.TrainBatches(noise_source, 16, 6, seed=2, process_index=process, process_count=2)
        assert sliced.local_batch_size == 3
        part = sliced.batch(3)["image"]
        np.testing.assert_array_equal(part, sliced.batch(3)["image"])  # deterministic
        slices.append(part)
    assert not np.array_equal(slices[0], slices[1])
    np.testing.assert_array_equal(np.concatenate(slices), whole)


def test_bad_batch_settings(noise_source):
    with pytest.raises(ConfigError, match="divisible"):
        data.TrainBatches(noise_source, 16, 5, seed=0, process_count=2)
    with pytest.raises(ConfigError):
        data.TrainBatches(noise_source, 16, 4, seed=0, process_index=2, process_count=2)
    with pytest.raises(ConfigError):
        data.TrainBatches(noise_source, 0, 4, seed=0)
    with pytest.raises(ConfigError):
        data.TrainBatches(noise_source, 16, 4, seed=-1)
    with pytest.raises(ConfigError):
        data.TrainBatches(noise_source, 16, 4, seed=0, hard_patch_fraction=0.0)
    with pytest.raises(ConfigError):
        data.TrainBatches(noise_source, 16, 4, seed=0).batch(-1)


def _batch_threads():
    return [t for t in threading.enumerate() if t.name == "lcomp-train-batches" and t.is_alive()]


def test_prefetch_iterator_equals_direct_calls_and_stops_its_thread(noise_source):
    batches = data.TrainBatches(noise_source, 16, 4, seed=5)
    iterator = batches.iterate(start_step=2, prefetch=3)
    received = [next(iterator) for _ in range(5)]
    assert [step for step, _ in received] == [2, 3, 4, 5, 6]
    for step, batch in received:
        np.testing.assert_array_equal(batch["image"], batches.batch(step)["image"])
    assert len(_batch_threads()) == 1
    iterator.close()
    assert _batch_threads() == []
    # leaving a for loop early also ends the thread
    for step, _ in batches.iterate(prefetch=2):
        if step == 1:
            break
    time.sleep(0.01)
    assert _batch_threads() == []
    # prefetch=0 is the same sequence without a thread
    direct = [batch["image"] for _, batch in batches.iterate(start_step=2, prefetch=0, stop_step=4)]
    np.testing.assert_array_equal(direct[1], received[1][1]["image"])


def test_errors_in_the_prefetch_thread_reach_the_consumer(tmp_path):
    write_png(tmp_path / "good.png", 1, size=(20, 20))
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    batches = data.TrainBatches(data.FolderSource(tmp_path), 8, 4, seed=0)
    with pytest.raises(ImageError):
        for _ in batches.iterate(prefetch=2, stop_step=20):
            pass
    assert _batch_threads() == []


def test_hard_patch_filter_prefers_high_entropy_crops():
    rng = np.random.default_rng(3)
    image = np.full((64, 128, 3), 120, np.uint8)
    image[:, 64:] = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # right half is noise
    source = data.ArraySource([image])

    def noisy_share(batches):
        patches = batches.batch(0)["image"].astype(int)
        return np.mean([np.std(p) > 30 for p in patches])

    plain = noisy_share(data.TrainBatches(source, 32, 64, seed=0))
    hard = noisy_share(data.TrainBatches(source, 32, 64, seed=0, hard_patch_fraction=0.25))
    assert hard > plain + 0.2 and hard > 0.9


# ---------------------------------------------------------------------------------------------------------------
# 5. evaluation helpers
# ---------------------------------------------------------------------------------------------------------------


def test_pad_and_crop_round_trip():
    image = np.random.default_rng(4).integers(0, 256, (13, 20, 3), dtype=np.uint8)
    padded, size = data.pad_to_multiple(image, 8)
    assert padded.shape == (16, 24, 3) and size == (13, 20)
    np.testing.assert_array_equal(padded[13:, :20], np.repeat(image[12:13], 3, axis=0))  # bottom rows replicate
    np.testing.assert_array_equal(padded[:13, 20:], np.repeat(image[:, 19:20], 4, axis=1))  # right columns too
    assert np.all(padded[13:, 20:] == image[12, 19])
    np.testing.assert_array_equal(data.crop(padded, size), image)


def test_pad_keeps_multiples_and_handles_batches():
    image = np.zeros((16, 32, 3), np.uint8)
    padded, size = data.pad_to_multiple(image, 16)
    assert padded is image and size == (16, 32)
    batch = np.random.default_rng(5).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    padded, size = data.pad_to_multiple(batch, 4)
    assert padded.shape == (2, 8, 8, 3) and size == (5, 6)
    np.testing.assert_array_equal(data.crop(padded, size), batch)


def test_pad_and_crop_errors():
    with pytest.raises(ConfigError):
        data.pad_to_multiple(np.zeros((4, 4, 3), np.uint8), 0)
    with pytest.raises(ImageError):
        data.pad_to_multiple(np.zeros((4, 4), np.uint8), 2)
    with pytest.raises(ImageError):
        data.crop(np.zeros((4, 4, 3), np.uint8), (5, 4))


def test_channel_permutation_keeps_crops_and_is_deterministic():
    from lcomp.data import ArraySource, TrainBatches

    rng = np.random.default_rng(0)
    source = ArraySource([rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)])
    plain = TrainBatches(source, 16, 8, seed=3).batch(5)["image"]
    permuted = TrainBatches(source, 16, 8, seed=3, permute_channels=True).batch(5)["image"]
    np.testing.assert_array_equal(permuted, TrainBatches(source, 16, 8, seed=3, permute_channels=True).batch(5)["image"])
    # The same crops and flips, only the channel order differs (and it does for some example).
    np.testing.assert_array_equal(np.sort(permuted, axis=-1), np.sort(plain, axis=-1))
    assert any(not np.array_equal(p, q) for p, q in zip(permuted, plain))


def test_rotate90_keeps_crops_turns_some_and_is_deterministic():
    from lcomp.data import ArraySource, TrainBatches

    rng = np.random.default_rng(1)
    source = ArraySource([rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)])
    plain = TrainBatches(source, 16, 16, seed=3).batch(2)["image"]
    turned = TrainBatches(source, 16, 16, seed=3, rotate90=True).batch(2)["image"]
    np.testing.assert_array_equal(turned, TrainBatches(source, 16, 16, seed=3, rotate90=True).batch(2)["image"])
    turns = []
    for p, q in zip(plain, turned):
        matches = [k for k in range(4) if np.array_equal(np.rot90(p, k), q)]
        assert matches, "a turned example is not a rotation of the plain one"
        turns.append(matches[0])
    assert len(set(turns)) >= 3  # 16 uniform draws from 4 turns: fewer than 3 distinct has probability < 1e-5


def test_synthetic_source_mix_fraction_and_off_switch():
    from lcomp.data import ArraySource, TrainBatches

    photos = ArraySource([np.full((40, 40, 3), 200, np.uint8)])
    synthetic = ArraySource([np.full((40, 40, 3), 10, np.uint8)])
    plain = TrainBatches(photos, 8, 64, seed=5).batch(1)["image"]
    # fraction 0: the synthetic source is never drawn and the batches are exactly those without it
    off = TrainBatches(photos, 8, 64, seed=5, synthetic_source=synthetic, synthetic_fraction=0.0).batch(1)["image"]
    np.testing.assert_array_equal(off, plain)
    only = TrainBatches(photos, 8, 64, seed=5, synthetic_source=synthetic, synthetic_fraction=1.0).batch(1)["image"]
    assert (only == 10).all()
    half = TrainBatches(photos, 8, 64, seed=5, synthetic_source=synthetic, synthetic_fraction=0.5)
    from_synthetic = [int((example == 10).all()) for example in half.batch(1)["image"]]
    assert 16 <= sum(from_synthetic) <= 48  # Binomial(64, 1/2): outside [16, 48] has probability < 1e-4
    np.testing.assert_array_equal(half.batch(1)["image"], half.batch(1)["image"])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(synthetic_fraction=1.5),
        dict(synthetic_fraction=-0.1),
        dict(synthetic_fraction="half"),
        dict(synthetic_fraction=0.5),  # no synthetic source
    ],
)
def test_bad_synthetic_settings(noise_source, kwargs):
    with pytest.raises(ConfigError):
        data.TrainBatches(noise_source, 8, 4, seed=0, **kwargs)


def test_dead_leaves_images_are_deterministic_varied_and_photo_like():
    first = data.dead_leaves_image(np.random.default_rng([0, 3]), 96, r_min=2)
    assert first.shape == (96, 96, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, data.dead_leaves_image(np.random.default_rng([0, 3]), 96, r_min=2))
    other = data.dead_leaves_image(np.random.default_rng([0, 4]), 96, r_min=2)
    assert not np.array_equal(first, other)
    slopes = []
    for image in (first, other):
        grey = image.astype(np.float64).mean(axis=-1)
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 200  # many colours, not a few flat discs
        power = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean()))) ** 2
        y, x = np.indices(power.shape)
        radius = np.hypot(y - 48, x - 48).astype(int)
        profile = np.bincount(radius.ravel(), power.ravel()) / np.bincount(radius.ravel())
        freqs = np.arange(2, 45)
        slopes.append(np.polyfit(np.log(freqs), np.log(profile[freqs]), 1)[0])
    # Photographs have power spectra close to 1/f^2; white noise would give 0, a smooth ramp far below -4.
    assert -4.5 < np.mean(slopes) < -1.5, slopes


def test_dead_leaves_source_and_bad_radii():
    source = data.DeadLeavesSource(count=3, size=32, seed=7)
    assert len(source) == 3 and source.names[0] == "dead_leaves_7_00000"
    np.testing.assert_array_equal(source[1], data.dead_leaves_image(np.random.default_rng([7, 1]), 32, r_min=2))
    assert source[2].shape == (32, 32, 3)
    with pytest.raises(ConfigError):
        data.dead_leaves_image(np.random.default_rng(0), 32, r_min=20, r_max=10)
    with pytest.raises(ConfigError):
        data.DeadLeavesSource(count=0)


def test_trainer_mixes_dead_leaves_when_configured(tmp_path):
    from lcomp import train
    from tests.toy_codec import toy_config

    cfg = toy_config(num_steps=1)
    cfg.data.dead_leaves_fraction = 0.5
    cfg.data.dead_leaves_count = 4
    cfg.data.dead_leaves_size = 32
    cfg.data.rotate90 = True
    batches = train.Trainer(cfg, tmp_path)._default_batches()
    assert isinstance(batches.synthetic_source, data.DeadLeavesSource) and len(batches.synthetic_source) == 4
    assert batches.synthetic_fraction == 0.5 and batches.rotate90
