"""`lcomp eval`, `lcomp plot` and `lcomp bdrate` through `cli.main`: outputs, one-line errors, a learned codec."""

import json

import numpy as np
import pytest

from lcomp import cli, container, data, models, train
from tests.toy_codec import toy_config


def _write_images(folder, count=2, height=176, width=192):
    """Smooth synthetic photographs with noise; 176 px is the smallest side MS-SSIM accepts."""
    folder.mkdir()
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:height, 0:width]
    for i in range(count):
        image = np.stack([x * 1.2, y * 1.1 + 20 * i, (x + y) * 0.6], axis=-1) + rng.normal(0, 8, (height, width, 3))
        data.save_image(folder / f"img{i}.png", np.clip(image, 0, 255).astype(np.uint8))
    return folder


def _error_line(capsys, command):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith(f"lcomp {command}: error: "), err
    return message


def test_eval_plot_bdrate_end_to_end(tmp_path, capsys):
    images = _write_images(tmp_path / "imgs")
    out = tmp_path / "jpeg420"
    assert cli.main(["eval", "--codec", "jpeg420", "--images", str(images), "--out", str(out), "--settings", "quality=20,60"]) == 0
    captured = capsys.readouterr()
    assert "eval jpeg420" in captured.err and "4/4" in captured.err  # the progress bar, on stderr
    assert f"wrote {out}/: per_image.jsonl, rd_by_setting.csv, summary.md, meta.json" in captured.out
    records = [json.loads(line) for line in (out / "per_image.jsonl").read_text().splitlines()]
    assert [(r["image"], r["setting_id"]) for r in records] == [
        ("img0", "quality=20"), ("img0", "quality=60"), ("img1", "quality=20"), ("img1", "quality=60")
    ]  # fmt: skip
    for r in records:
        assert r["bpp"] == pytest.approx(8 * r["bytes"] / (176 * 192))
        assert r["bpp_estimated"] is None and r["header_bytes"] is None  # a classical codec has neither
        assert r["ms_ssim_db"] > 5 and r["psnr"] > 20

    png = tmp_path / "rd.png"
    assert cli.main(["plot", str(out), "jpeg420", "ref:webp", "--out", str(png)]) == 0
    printed = capsys.readouterr().out
    for metric in ("psnr", "ms_ssim_db"):
        assert f"wrote {tmp_path / f'rd_{metric}.png'}" in printed
        assert (tmp_path / f"rd_{metric}.png").read_bytes()[:4] == b"\x89PNG"

    stem = tmp_path / "bd"
    assert cli.main(["bdrate", "webp", str(out), "--anchor", "jpeg420", "--metric", "psnr", "--out", str(stem)]) == 0
    printed = capsys.readouterr().out
    assert "| ref:webp | ref:jpeg420 | psnr (RGB) | cubic |" in printed
    # Our 2-point curve is too short for a BD fit: its row says what it holds instead (an equal-quality rate
    # difference, or why there is none: a point outside the published curve's range).
    ours = [line for line in printed.splitlines() if line.startswith("| jpeg420 ")]
    assert ours and all("not a BD integral" in line or "outside the anchor" in line for line in ours)
    assert f"wrote {stem}.csv and {stem}.md" in printed
    assert (tmp_path / "bd.md").read_text().startswith("| Test | Anchor |")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["eval", "--codec", "bpg", "--images", "{images}", "--out", "{out}"], "unknown codec 'bpg'; classical codecs: jpeg420"),
        (["eval", "--codec", "jpeg420", "--images", "{tmp}/missing", "--out", "{out}"], "does not exist"),
        (["eval", "--codec", "jpeg420", "--images", "{images}", "--out", "{out}", "--settings", "quality"], "--settings must be"),
        (["eval", "--codec", "jpeg420", "--images", "{images}", "--out", "{out}", "--settings", "q=5"], "exactly one setting"),
        (["eval", "--codec", "jpeg420", "--images", "{images}", "--out", "{out}", "--aggregate", "C"], "aggregate must be"),
        (["eval", "--checkpoint", "{tmp}", "--images", "{images}", "--out", "{out}"], "neither a training workdir"),
        (["plot", "no-such-curve", "--out", "{tmp}/x.png"], "neither an evaluation folder"),
        (["bdrate", "jpeg420", "--anchor", "{tmp}"], "neither an evaluation folder"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line(tmp_path, capsys, argv, expected):
    images = _write_images(tmp_path / "imgs", count=1, height=32, width=32)
    values = {"images": images, "out": tmp_path / "out", "tmp": tmp_path}
    argv = [a.format(**values) for a in argv]
    assert cli.main(argv) == 2
    message = _error_line(capsys, argv[0])
    assert expected in message
    assert not (tmp_path / "x.png").exists()


def test_default_kodak_folder_must_exist_and_be_verified(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(data.KODAK_ENV_VAR, str(tmp_path / "nowhere"))
    assert cli.main(["eval", "--codec", "jpeg420", "--out", str(tmp_path / "out")]) == 2
    assert "the Kodak images are not at" in _error_line(capsys, "eval")
    # A folder without SHA256SUMS is fine with --images, but not as the default test set.
    images = _write_images(tmp_path / "kodak", count=1, height=32, width=32)
    monkeypatch.setenv(data.KODAK_ENV_VAR, str(images))
    assert cli.main(["eval", "--codec", "jpeg420", "--out", str(tmp_path / "out"), "--settings", "quality=50"]) == 2
    assert "cannot verify" in _error_line(capsys, "eval")
    args = ["eval", "--codec", "jpeg420", "--images", str(images), "--out", str(tmp_path / "out"), "--settings", "quality=50"]
    assert cli.main(args + ["--no-progress"]) == 0


def test_eval_trained_checkpoint_reports_real_and_estimated_rate(tmp_path, capsys):
    workdir = tmp_path / "toy"
    train.Trainer(toy_config(num_steps=10), workdir).fit()
    images = _write_images(tmp_path / "imgs", count=2, height=40, width=52)  # 52 is not a multiple of 4: padding
    out = tmp_path / "eval"
    assert cli.main(["eval", "--checkpoint", str(workdir), "--images", str(images), "--out", str(out), "--no-progress"]) == 0
    assert "| header (bytes) |" in capsys.readouterr().out

    model = models.load_model(workdir)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["codec"] == "toy" and meta["model"]["fingerprint"] == model.fingerprint.hex()
    records = [json.loads(line) for line in (out / "per_image.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        image = data.load_image(images / f"{record['image']}.png")
        compressed = model.encode(image)  # the file and the estimate, from one encode
        file = compressed.data
        layout = container.describe(file)
        assert record["bytes"] == len(file)
        assert record["header_bytes"] == layout["header_bytes"] > 0
        assert record["part_bytes"] == layout["part_bytes"] == {"latent": len(file) - layout["header_bytes"]}
        # Real and estimated rate side by side; the estimate covers the payload, which the range coder
        # reaches to within a few bytes.
        pixels = 40 * 52
        assert record["bpp"] == pytest.approx(8 * len(file) / pixels)
        assert record["bpp_estimated"] == pytest.approx(compressed.estimated_bits / pixels)
        payload_bpp = 8 * sum(record["part_bytes"].values()) / pixels
        assert record["bpp_estimated"] == pytest.approx(payload_bpp, abs=8 * 8 / pixels)
