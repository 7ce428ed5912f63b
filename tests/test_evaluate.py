"""Evaluation engine: learned-style codecs through the one protocol, encoder call counts, aggregation rules,
files, CLI, Kodak check."""

import argparse
import hashlib
import json
import math
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from lcomp.bdrate import bd_rate
from lcomp.data import kodak_dir
from lcomp.errors import BitstreamError, ConfigError, ImageError, LcompError
from lcomp.evaluate import (
    add_eval_arguments,
    aggregate_on_bpp_grid,
    evaluate_codec,
    load_results,
    parse_settings,
    resolve_codec,
    run_eval,
    warmup_image,
)
from lcomp.interface import Compressed, RateDistortionCodec
from lcomp.metrics import ms_ssim, psnr
from lcomp.reference import load_curve

KODAK = kodak_dir()
needs_kodak = pytest.mark.skipif(not (KODAK / "kodim01.png").is_file(), reason=f"Kodak images not found at {KODAK}")


def _digest(image) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


class QuantisingCodec:
    """A tiny learned-style codec, an `lcomp.interface.RateDistortionCodec` with no adapter: uniform
    quantisation + zlib, real files, and a model estimate (the indices' empirical entropy) from the same encode.

    File: magic, height, width, step (the header), then the zlib-compressed quantisation indices. Every encode
    is recorded (image digest, setting), so tests can count what evaluation encodes.
    """

    name = "fake-quantiser"
    label = "fake quantiser (uniform steps + zlib)"
    header = struct.Struct(">4sHHB")

    def __init__(self):
        self.calls = {"encode": 0, "decode": 0}
        self.encoded: list[tuple[str, str]] = []

    def settings(self):
        return [{"step": 24}, {"step": 12}, {"step": 6}]

    def _indices(self, image, step):
        return np.round(image.astype(np.float64) / step).astype(np.uint8)

    def estimate(self, image, step):
        # Empirical entropy of the indices: a model's estimate, not the zlib length.
        _, counts = np.unique(self._indices(image, step), return_counts=True)
        p = counts / counts.sum()
        return float(-(counts * np.log2(p)).sum())

    def encode(self, image, step):
        self.calls["encode"] += 1
        self.encoded.append((_digest(image), f"step={step}"))
        h, w, _ = image.shape
        payload = zlib.compress(self._indices(image, step).tobytes(), 9)
        return Compressed(self.header.pack(b"FAKE", h, w, step) + payload, self.estimate(image, step))

    def decode(self, data):
        self.calls["decode"] += 1
        magic, h, w, step = self.header.unpack_from(data)
        if magic != b"FAKE":
            raise BitstreamError("not a fake file")
        indices = np.frombuffer(zlib.decompress(data[self.header.size :]), np.uint8).reshape(h, w, 3)
        return np.clip(indices.astype(np.float64) * step, 0, 255).astype(np.uint8)

    def file_layout(self, data):
        return {"header_bytes": self.header.size, "part_bytes": {"indices": len(data) - self.header.size}}


def _images(count=2, height=180, width=200):
    rng = np.random.default_rng(7)
    out = {}
    for i in range(count):
        y, x = np.mgrid[0:height, 0:width]
        smooth = np.stack([x * 1.1, y * 1.3, (x + y) * 0.6], axis=-1) + 30 * i
        out[f"img{i}"] = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
    return out


def test_fake_learned_codec_end_to_end(tmp_path):
    fake = QuantisingCodec()
    assert isinstance(fake, RateDistortionCodec)
    images = _images()
    results = evaluate_codec(fake, images, tmp_path, aggregate=("A", "B"), progress=False)

    assert len(results.records) == 6
    # One timed encode per (image, setting), one untimed warm-up per (image shape, setting): one shared shape.
    assert fake.calls["encode"] == 6 + 3
    reference = QuantisingCodec()  # re-encodes for the checks below, not counted above
    for record in results.records:
        image = images[record["image"]]
        compressed = reference.encode(image, **record["setting"])
        assert record["bytes"] == len(compressed.data)
        assert record["bpp"] == pytest.approx(8 * len(compressed.data) / (180 * 200))
        assert record["bpp_estimated"] == pytest.approx(compressed.estimated_bits / 36000)
        decoded = reference.decode(compressed.data)
        assert record["psnr"] == pytest.approx(float(psnr(image, decoded)), abs=1e-4)
        assert record["ms_ssim"] == pytest.approx(float(ms_ssim(image, decoded)), abs=1e-6)
        assert record["header_bytes"] == QuantisingCodec.header.size  # the codec's own file_layout
        assert record["part_bytes"] == {"indices": len(compressed.data) - QuantisingCodec.header.size}
        assert record["encode_s"] >= 0 and record["decode_s"] >= 0

    rows = results.by_setting
    assert [r["setting"] for r in rows] == ["step=24", "step=12", "step=6"]
    first = [r for r in results.records if r["setting_id"] == "step=24"]
    assert rows[0]["bpp"] == pytest.approx(np.mean([r["bpp"] for r in first]))
    assert rows[0]["psnr"] == pytest.approx(np.mean([r["psnr"] for r in first]))
    mean_ms = np.mean([r["ms_ssim"] for r in first])
    assert rows[0]["ms_ssim"] == pytest.approx(mean_ms)
    assert rows[0]["ms_ssim_db"] == pytest.approx(-10 * np.log10(1 - mean_ms))
    assert rows[0]["bpp_estimated"] == pytest.approx(np.mean([r["bpp_estimated"] for r in first]))

    for name in ("per_image.jsonl", "rd_by_setting.csv", "rd_by_bpp_grid.csv", "summary.md", "meta.json"):
        assert (tmp_path / name).is_file()
    summary = (tmp_path / "summary.md").read_text()
    assert "fake-quantiser" in summary and "Rule A" in summary and "Rule B" in summary
    loaded = load_results(tmp_path)
    assert loaded.meta["label"] == fake.label and loaded.meta["model"] is None  # no trained variables
    assert "synthetic gradient" in loaded.meta["timing"]
    assert loaded.by_setting[1]["setting"] == "step=12" and loaded.by_setting[1]["n_images"] == 2
    np.testing.assert_allclose(loaded.curve("psnr")[0], [r["bpp"] for r in rows])
    np.testing.assert_allclose(loaded.curve("ms_ssim_db", rate="estimated")[1], [r["ms_ssim_db"] for r in rows])
    assert len(loaded.records) == 6


def test_lossless_points_and_small_images():
    fake = QuantisingCodec()
    results = evaluate_codec(
        fake, _images(2, 64, 64), settings=[{"step": 1}, {"step": 8}], progress=False, warmup=False
    )
    lossless, lossy = results.by_setting
    assert lossless["n_psnr_inf"] == 2 and lossless["psnr"] is None  # infinite PSNR is excluded from means
    assert math.isfinite(lossy["psnr"]) and lossy["n_psnr_inf"] == 0
    assert lossy["ms_ssim"] is None  # 64 px is too small for MS-SSIM; it is left out, not shrunk
    assert fake.calls["encode"] == 4  # no warm-up asked for: exactly one encode per image and setting
    assert "without a warm-up" in results.meta["timing"]


def _mixed_shapes():
    """Three images, two of one shape and one of another: warm-ups are per shape and setting."""
    a, b = _images(2, 40, 48).values()
    return {"a": a, "b": b, "c": _images(1, 32, 56)["img0"]}


def test_each_image_and_setting_is_encoded_once():
    # The file and the model's estimate come from one encode; the warm-up never sees an evaluated image.
    fake = QuantisingCodec()
    images = _mixed_shapes()
    results = evaluate_codec(fake, images, progress=False)
    settings = [s["step"] for s in fake.settings()]
    assert len(results.records) == 3 * 3
    assert fake.calls["encode"] == 3 * 3 + 2 * 3  # one encode per (image, setting) + one warm-up per (shape, setting)

    evaluated = {_digest(image) for image in images.values()}
    warmups = {_digest(warmup_image(shape)) for shape in {(40, 48, 3), (32, 56, 3)}}
    assert not evaluated & warmups
    expected = {(d, f"step={s}"): 1 for d in evaluated | warmups for s in settings}
    seen: dict[tuple[str, str], int] = {}
    for key in fake.encoded:
        seen[key] = seen.get(key, 0) + 1
    assert seen == expected


def test_warmup_image_is_a_smooth_gradient():
    image = warmup_image((5, 7, 3))
    assert image.shape == (5, 7, 3) and image.dtype == np.uint8
    assert image[0, 0, 0] == 0 and image[0, -1, 0] == 255 and image[-1, 0, 1] == 255
    assert np.abs(np.diff(image.astype(int), axis=1)).max() <= 255 // 6 + 1  # no edges
    assert warmup_image((1, 1)).shape == (1, 1, 3)


class _CountingCompress:
    """Wraps a codec's `compress`, recording the digest of every image it is asked to encode."""

    def __init__(self, compress):
        self.original, self.encoded = compress, []

    def __call__(self, variables, image, **settings):
        self.encoded.append(_digest(image))
        return self.original(variables, image, **settings)


def test_learned_model_is_swept_directly_and_encodes_once(tmp_path):
    import jax

    from lcomp import container, models
    from tests.toy_codec import ToyCodec, toy_config

    config = toy_config()
    codec = ToyCodec(config.model)
    variables = codec.init(jax.random.key(0), {"image": np.zeros((1, 16, 16, 3), np.uint8)})
    model = models.LoadedModel(codec, variables, config, "untrained toy")
    assert isinstance(model, RateDistortionCodec) and model.name == "toy" and model.settings() == [{}]
    counter = _CountingCompress(codec.compress)
    codec.compress = counter  # an instance attribute: LoadedModel.encode calls it

    images = _mixed_shapes()
    results = evaluate_codec(model, images, tmp_path, progress=False)
    warmups = [_digest(warmup_image(shape)) for shape in ((40, 48, 3), (32, 56, 3))]
    assert sorted(counter.encoded) == sorted([_digest(image) for image in images.values()] + warmups)

    assert results.meta["model"] == {"source": "untrained toy", "fingerprint": model.fingerprint.hex()}
    assert results.meta["label"] == model.label and "learned codec" in model.label
    for record in results.records:
        compressed = counter.original(variables, images[record["image"]])
        layout = container.describe(compressed.data)
        pixels = record["height"] * record["width"]
        assert record["bytes"] == len(compressed.data)
        assert record["bpp_estimated"] == pytest.approx(compressed.estimated_bits / pixels)
        assert record["header_bytes"] == layout["header_bytes"] and record["part_bytes"] == layout["part_bytes"]
    assert (tmp_path / "summary.md").read_text().count("untrained toy") == 1


def test_rule_b_interpolates_without_extrapolation():
    def rec(image, bpp, value):
        return {"image": image, "bpp": bpp, "psnr": value, "psnr_y": value, "ms_ssim": None}

    records = [rec("a", 0.1, 20.0), rec("a", 0.5, 30.0), rec("b", 0.25, 22.0), rec("b", 0.7, 31.0)]
    rows = aggregate_on_bpp_grid(records, "x", grid=[0.2, 0.3, 0.6])
    assert [r["bpp"] for r in rows] == [0.3]  # 0.2 and 0.6 are covered by one image only
    expected = (20 + 10 * (0.3 - 0.1) / 0.4 + 22 + 9 * (0.3 - 0.25) / 0.45) / 2
    assert rows[0]["psnr"] == pytest.approx(expected)
    assert rows[0]["n_images"] == 2 and rows[0]["ms_ssim"] is None


def test_wrong_decoder_output_is_an_error():
    class Cropping(QuantisingCodec):
        def decode(self, data):
            return super().decode(data)[:-1]

    with pytest.raises(BitstreamError, match="expected uint8"):
        evaluate_codec(Cropping(), _images(1, 32, 32), progress=False)


def _write_pngs(folder, count=2):
    folder.mkdir()
    for name, image in _images(count).items():
        Image.fromarray(image).save(folder / f"{name}.png")
    return folder


def test_cli_with_classical_codec_and_checksums(tmp_path, capsys):
    images = _write_pngs(tmp_path / "imgs")
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(images.iterdir()))
    (images / "SHA256SUMS").write_text(sums)
    parser = add_eval_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--codec", "jpeg420", "--images", str(images), "--out", str(tmp_path / "out"), "--settings",
         "quality=30,60,90", "--max-images", "1", "--aggregate", "A,B", "--no-progress"]
    )  # fmt: skip
    assert run_eval(args) == 0
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["n_images"] == 1 and meta["checksums_verified"] is True
    assert meta["label"].startswith("JPEG 4:2:0 (libjpeg-turbo")
    assert meta["aggregation"] == ["A", "B"] and meta["dataset"] == "imgs"
    assert "quality=90" in capsys.readouterr().out

    (images / "img0.png").write_bytes((images / "img1.png").read_bytes())
    with pytest.raises(ImageError, match="failed its SHA-256 check"):
        run_eval(args)


def test_parse_settings():
    assert parse_settings("quality=10, 20,30") == [{"quality": 10}, {"quality": 20}, {"quality": 30}]
    assert parse_settings("target_bpp=0.25,1") == [{"target_bpp": 0.25}, {"target_bpp": 1}]
    assert parse_settings('[{"iterations": 4}, {"iterations": 8, "sabr": true}]')[1] == {"iterations": 8, "sabr": True}
    for bad in ("quality", "[1, 2]", "[{"):
        with pytest.raises(ConfigError):
            parse_settings(bad)


def test_resolve_codec():
    assert resolve_codec("webp").name == "webp"
    assert "optimized Huffman tables" in resolve_codec("jpeg420-opt").label
    with pytest.raises(ConfigError, match="--codec"):
        resolve_codec(None)
    with pytest.raises(ConfigError, match=r"unknown codec 'bpg'; classical codecs: jpeg420.*--checkpoint DIR"):
        resolve_codec("bpg")
    # Learned codecs from a checkpoint: tests/test_eval_cli.py (trains the toy codec).


def test_aggregate_rejects_unknown_rule():
    with pytest.raises(ConfigError, match="aggregate"):
        evaluate_codec(QuantisingCodec(), _images(1, 32, 32), aggregate=("C",))


@pytest.mark.kodak
@needs_kodak
def test_jpeg_on_kodak_reproduces_the_published_curve(tmp_path):
    # A reduced experiments/eval_baselines.py: all 24 images (a subset of 4 moves the mean curve by up to
    # 50 %), 6 of the 12 qualities. jpeg420 uses the standard Huffman tables, as the published curve did.
    codec = resolve_codec("jpeg420")
    results = evaluate_codec(
        codec, KODAK, tmp_path, settings=[{"quality": q} for q in (8, 16, 30, 50, 70, 90)], progress=False
    )
    assert results.meta["checksums_verified"] and results.meta["n_images"] == 24
    for metric in ("psnr", "ms_ssim_db"):
        published = load_curve("jpeg420", metric=metric)
        bpp, quality = results.curve(metric)
        for variant in ("cubic", "pchip"):
            result = bd_rate(published.bpp, published.quality, bpp, quality, variant=variant, quality_axis=metric)
            print(result)
            assert abs(result.value) < 5, result


# --- reports: plots and BD tables from evaluation folders and published curves --------------------------------


def _run_command(add_arguments, run, argv):
    return run(add_arguments(argparse.ArgumentParser()).parse_args(argv))


@pytest.fixture(scope="module")
def jpeg_eval_folders(tmp_path_factory):
    """Two small real evaluations (jpeg420 and webp on synthetic 180x200 images) written to folders."""
    root = tmp_path_factory.mktemp("evals")
    images = _images(2)
    folders = {}
    for name, settings in (("jpeg420", [5, 10, 20, 40, 60, 80, 90]), ("webp", [0, 10, 20, 40, 60, 80, 90])):
        folders[name] = root / name
        evaluate_codec(
            resolve_codec(name), images, folders[name], settings=[{"quality": q} for q in settings],
            aggregate=("A", "B"), progress=False,
        )  # fmt: skip
    return folders


def test_plot_command_writes_pngs_with_honest_labels(jpeg_eval_folders, tmp_path, capsys):
    from lcomp.plots import add_plot_arguments, load_source, run_plot

    out = tmp_path / "rd.png"
    argv = [str(jpeg_eval_folders["jpeg420"]), str(jpeg_eval_folders["webp"]), "ref:jpeg420", "bpg444", "--out", str(out)]
    assert _run_command(add_plot_arguments, run_plot, argv) == 0
    for metric in ("psnr", "ms_ssim_db"):
        png = tmp_path / f"rd_{metric}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ours = load_source(str(jpeg_eval_folders["jpeg420"]), "psnr")
    assert "JPEG 4:2:0" in ours.label and "real bpp" in ours.label and "rule A" in ours.label
    assert "(2 images)" in ours.label and "RGB" in ours.label
    published = load_source("bpg444", "ms_ssim_db")
    assert published.label.startswith("BPG (4:4:4)") and "published" in published.label
    grid = load_source(str(jpeg_eval_folders["webp"]), "psnr", rule="B", colour="y")
    assert "rule B" in grid.label and "Y]" in grid.label
    with pytest.raises(LcompError, match="neither an evaluation folder"):
        load_source("no-such-thing", "psnr")
    assert _run_command(add_plot_arguments, run_plot, argv[:1] + ["--metric", "psnr", "--out", str(out)]) == 0
    assert out.is_file()


def test_bdrate_command(jpeg_eval_folders, tmp_path, capsys):
    from lcomp.plots import add_bdrate_arguments, run_bdrate

    argv = [
        str(jpeg_eval_folders["webp"]), "ref:webp", "ref:mentzer-2018-cvpr", "--anchor",
        str(jpeg_eval_folders["jpeg420"]), "--metric", "ms_ssim_db", "--out", str(tmp_path / "bd"),
    ]  # fmt: skip
    assert _run_command(add_bdrate_arguments, run_bdrate, argv) == 0
    printed = capsys.readouterr().out
    assert "| webp | jpeg420 | ms_ssim_db (RGB) | cubic |" in printed
    assert "| webp | jpeg420 | ms_ssim_db (RGB) | pchip |" in printed
    assert "aggregation differs: test rule B, anchor rule A" in printed  # Mentzer et al. use rule B
    csv_lines = (tmp_path / "bd.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 3 * 2
    assert (tmp_path / "bd.md").read_text().startswith("| Test | Anchor |")


def test_bdrate_labels_name_two_evaluations_of_one_codec_apart(jpeg_eval_folders, tmp_path, capsys):
    import shutil

    from lcomp.plots import add_bdrate_arguments, add_plot_arguments, run_bdrate, run_plot

    before = tmp_path / "jpeg420_before"
    shutil.copytree(jpeg_eval_folders["jpeg420"], before)
    argv = [str(before), "--anchor", str(jpeg_eval_folders["jpeg420"]), "--metric", "psnr", "--variant", "cubic"]
    with pytest.raises(LcompError, match="both called 'jpeg420'.*--label"):
        _run_command(add_bdrate_arguments, run_bdrate, argv)
    with pytest.raises(LcompError, match="--label given 2 times for 1 sources"):
        _run_command(add_bdrate_arguments, run_bdrate, argv + ["--label", "a", "--label", "b"])
    capsys.readouterr()
    assert _run_command(add_bdrate_arguments, run_bdrate, argv + ["--label", "before", "--anchor-label", "now"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| before | now |"))
    assert float(row.split("|")[5].strip().rstrip("%").strip()) == pytest.approx(0.0, abs=1e-6)  # same curve
    out = tmp_path / "rd.png"
    plot_argv = [str(before), str(jpeg_eval_folders["jpeg420"]), "--label", "before", "--label", "now"]
    assert _run_command(add_plot_arguments, run_plot, plot_argv + ["--metric", "psnr", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
