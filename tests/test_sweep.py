"""The priming x diffusion sweep script: trains each (cell, seed), writes tables with the spread over seeds,
flags differences within the seed noise, evaluates a bounded number of images, skips finished models."""

import contextlib
import importlib.util
import io
import json
import math
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "experiments" / "sweep_priming_diffusion.py"


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("sweep_priming_diffusion", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _noise_folder(folder, names):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(folder / name)
    return folder


# --- pure functions -----------------------------------------------------------------------------------------


def test_within_noise_flags_only_differences_smaller_than_the_larger_spread(sweep):
    assert sweep.within_noise(0.5, [1.0]) is True  # BD-rate: |mean| < std
    assert sweep.within_noise(-0.5, [1.0]) is True
    assert sweep.within_noise(1.5, [1.0]) is False
    assert sweep.within_noise(-1.5, [1.0]) is False
    assert sweep.within_noise(1.0, [1.0]) is False  # strictly smaller
    assert sweep.within_noise(0.3, [0.1, 0.4]) is True  # PSNR: |diff| < max(std cell, std anchor)
    assert sweep.within_noise(0.3, [0.4, 0.1]) is True
    assert sweep.within_noise(0.3, [0.1, 0.2]) is False
    # One seed: no spread, nothing is flagged either way.
    assert sweep.within_noise(5.0, [None]) is None
    assert sweep.within_noise(0.0, [0.3, None]) is None
    assert sweep.within_noise(None, [0.3]) is None
    assert sweep.within_noise(0.1, [float("nan")]) is None
    assert sweep.noise_flag(None, 1) == "1 seed: spread unknown"
    assert sweep.noise_flag(True, 3) == "within noise"
    assert sweep.noise_flag(False, 3) == "distinguishable"


def test_spread_is_the_sample_std_and_none_with_one_value_or_a_missing_value(sweep):
    stats = sweep.spread([1.0, 2.0, 4.0])
    assert stats["mean"] == pytest.approx(7 / 3)
    assert stats["std"] == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    assert (stats["min"], stats["max"], stats["n"]) == (1.0, 4.0, 3)
    assert sweep.spread([2.0])["std"] is None and sweep.spread([2.0])["mean"] == 2.0
    assert sweep.spread([1.0, None])["mean"] is None


def test_image_selection_folder_kodak_embedded_and_max_images(sweep, tmp_path):
    folder = _noise_folder(tmp_path / "images", ["c.png", "a.png", "b.png"])
    source, info = sweep.select_images(sweep.parse_args(["--out", "x", "--images", str(folder), "--max-images", "2"]))
    assert info["kind"] == "folder" and list(source.names) == ["a", "b"] == info["names"]
    assert (info["n_images"], info["n_available"], info["max_images"]) == (2, 3, 2)
    assert source[1].shape == (40, 56, 3)

    # No --images: Kodak when its folder exists (checked against its SHA256SUMS) ...
    kodak = _noise_folder(tmp_path / "kodak", ["kodim02.png", "kodim01.png"])
    import hashlib

    (kodak / "SHA256SUMS").write_text(
        "".join(f"{hashlib.sha256((kodak / n).read_bytes()).hexdigest()}  {n}\n" for n in ("kodim01.png", "kodim02.png")))
    source, info = sweep.select_images(sweep.parse_args(["--out", "x", "--kodak", str(kodak), "--max-images", "1"]))
    assert info["kind"] == "kodak" and info["names"] == ["kodim01"] and info["n_available"] == 2
    assert "Kodak" in sweep.describe_images(info)
    # ... else the embedded eval photographs.
    source, info = sweep.select_images(sweep.parse_args(["--out", "x", "--kodak", str(tmp_path / "missing")]))
    assert info["kind"] == "embedded-eval" and len(source) == info["n_images"] >= 1
    assert info["names"] == sorted(info["names"])


# --- the sweep ----------------------------------------------------------------------------------------------


def _run(sweep, argv):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert sweep.main(argv) == 0
    return stdout.getvalue()


@pytest.fixture(scope="module")
def runs(sweep, tmp_path_factory):
    """One seed with --max-images 1 (of 2 images); then --seeds 2 in the same folder; then a rerun."""
    tmp = tmp_path_factory.mktemp("sweep")
    images = _noise_folder(tmp / "images", ["b_noise.png", "a_noise.png"])
    out = tmp / "sweep"
    base = ["--priming", "0,1", "--diffusion", "0", "--steps", "3", "--iterations", "1,2,3,4",
            "--images", str(images), "--max-images", "1", "--out", str(out),
            "--config.model.network.iterations=4", "--config.data.batch_size=4", "--config.train.progress=False"]
    result = {"out": out, "base": base}
    result["first"] = _run(sweep, base)
    result["first_json"] = json.loads((out / "results.json").read_text())
    result["first_summary"] = (out / "summary.md").read_text()
    result["first_csv"] = (out / "results.csv").read_text()
    seed0 = sorted(p for p in (out / "k1_d0" / "s0" / "workdir").rglob("*") if p.is_file())
    result["seed0_mtimes"] = (seed0, [p.stat().st_mtime_ns for p in seed0])
    result["second"] = _run(sweep, [*base, "--seeds", "2"])
    result["second_json"] = json.loads((out / "results.json").read_text())
    checkpoint_files = sorted(p for p in (out / "k1_d0").rglob("*") if p.is_file() and "workdir" in p.parts)
    result["mtimes"] = (checkpoint_files, [p.stat().st_mtime_ns for p in checkpoint_files])
    result["third"] = _run(sweep, [*base, "--seeds", "2"])
    return result


def test_one_seed_with_max_images_writes_the_new_layout_and_no_spread(runs):
    out, first = runs["out"], runs["first"]
    assert "evaluation images: 1 images: image folder" in first and "first 1 of 2 by name" in first
    assert "k0_d0/s0: training" in first and "k1_d0/s0: training" in first and "/s1" not in first
    for k in (0, 1):
        config = json.loads((out / f"k{k}_d0" / "s0" / "workdir" / "config.json").read_text())
        assert config["model"]["network"]["priming_steps"] == k  # the cell's switch reached the model
        assert config["model"]["network"]["iterations"] == 4  # and so did the user's override
        assert config["train"]["num_steps"] == 3
        assert config["train"]["seed"] == 0 and config["data"]["seed"] == 0
        records = [json.loads(line) for line in
                   (out / f"k{k}_d0" / "s0" / "eval" / "per_image.jsonl").read_text().splitlines() if line]
        assert {r["image"] for r in records} == {"a_noise"}  # --max-images 1: the first image by name

    results = runs["first_json"]
    assert results["images"]["kind"] == "folder" and results["images"]["names"] == ["a_noise"]
    assert results["images"]["n_images"] == 1 and results["images"]["max_images"] == 1
    assert results["seeds_per_cell"] == [1] and results["num_steps"] == [3]
    assert [(c["priming"], c["diffusion"]) for c in results["cells"]] == [(0, 0), (1, 0)]
    assert results["cells"][0]["bd_rate_psnr_vs_k0_d0"] is None  # the anchor is not compared with itself
    cell = results["cells"][1]
    assert isinstance(cell["bd_rate_psnr_vs_k0_d0"], float) or cell["bd_rate_psnr_vs_k0_d0"].startswith("n/a")
    assert cell["bd_rate_psnr_vs_k0_d0_std"] is None and cell["bd_rate_psnr_vs_k0_d0_within_noise"] is None
    # A 40x56 image is too small for MS-SSIM's five scales: reported as missing, not as a crash or a number.
    assert cell["bd_rate_ms_ssim_db_vs_k0_d0"].startswith("n/a (ms_ssim_db missing")
    assert cell["psnr_at_top_std"] is None and cell["psnr_at_top_within_noise"] is None
    rows = results["rows"]
    assert len(rows) == 8 and {r["setting"] for r in rows} == {f"iterations={t}" for t in (1, 2, 3, 4)}
    assert all(r["n_seeds"] == 1 and r["psnr_std"] is None and r["psnr_min"] == r["psnr_max"] for r in rows)
    # bpp is the real file size: more iterations, more bytes.
    bpp = [r["bpp_mean"] for r in rows if r["priming"] == 0]
    assert all(b > a for a, b in zip(bpp, bpp[1:]))
    assert runs["first_csv"].splitlines()[0].startswith("priming,diffusion,setting,iterations,n_seeds")

    summary = runs["first_summary"]
    assert summary.startswith("Sweep of johnston2018:tiny: 1 seed per cell, 1 images")
    assert "3 training steps per model" in summary and "1 seed: spread unknown" in summary
    assert "| 0 | 0 | 1 | anchor | anchor | anchor | anchor |" in summary
    assert "| distinguishable" not in summary and "| within noise" not in summary  # no verdict column entry


def test_two_seeds_train_per_seed_report_mean_and_sample_std_and_skip_finished(runs):
    out, second = runs["out"], runs["second"]
    # Seed 0 of each cell was finished by the first run: only seed 1 trains.
    assert "k0_d0/s0: finished earlier, skipped" in second and "k1_d0/s0: finished earlier, skipped" in second
    assert "k0_d0/s1: training" in second and "k1_d0/s1: training" in second
    assert "s0: training" not in second
    files, mtimes = runs["seed0_mtimes"]
    assert [p.stat().st_mtime_ns for p in files] == mtimes
    for k in (0, 1):
        seeds = [json.loads((out / f"k{k}_d0" / f"s{s}" / "workdir" / "config.json").read_text()) for s in (0, 1)]
        assert [c["train"]["seed"] for c in seeds] == [0, 1] and [c["data"]["seed"] for c in seeds] == [0, 1]
        assert all(c["model"]["network"]["priming_steps"] == k for c in seeds)

    results = runs["second_json"]
    assert results["seeds_per_cell"] == [2]
    rows = results["rows"]
    assert len(rows) == 8 and all(r["n_seeds"] == 2 and r["seeds"] == [0, 1] for r in rows)
    for column in ("bpp", "psnr", "ms_ssim_db"):
        assert all(f"{column}_{s}" in rows[0] for s in ("mean", "std", "min", "max"))
    # The spread is the sample std over seeds of each seed's mean over images (recomputed from the records).
    for row in rows:
        per_seed = {"bpp": [], "psnr": []}
        for s in (0, 1):
            folder = out / f"k{row['priming']}_d{row['diffusion']}" / f"s{s}" / "eval"
            records = [json.loads(line) for line in (folder / "per_image.jsonl").read_text().splitlines() if line]
            chosen = [r for r in records if r["setting_id"] == row["setting"]]
            assert len(chosen) == 1
            for metric in per_seed:
                per_seed[metric].append(np.mean([r[metric] for r in chosen]))
        for metric, values in per_seed.items():
            assert row[f"{metric}_mean"] == pytest.approx(np.mean(values))
            assert row[f"{metric}_std"] == pytest.approx(np.std(values, ddof=1))
            assert (row[f"{metric}_min"], row[f"{metric}_max"]) == pytest.approx((min(values), max(values)))
        assert row["ms_ssim_db_mean"] is None and row["ms_ssim_db_std"] is None  # too small for MS-SSIM
    assert len(results["per_seed_rows"]) == 16
    assert (out / "results_per_seed.csv").read_text().splitlines()[0].startswith("priming,diffusion,seed,")

    cell = results["cells"][1]
    per_seed = cell["bd_rate_psnr_vs_k0_d0_per_seed"]
    assert set(per_seed) == {"0", "1"}  # one BD-rate per seed pair (same seed)
    if all(isinstance(v, float) for v in per_seed.values()):
        values = [per_seed["0"], per_seed["1"]]
        assert cell["bd_rate_psnr_vs_k0_d0"] == pytest.approx(np.mean(values), abs=0.006)
        assert cell["bd_rate_psnr_vs_k0_d0_std"] == pytest.approx(np.std(values, ddof=1), abs=0.006)
        assert cell["bd_rate_psnr_vs_k0_d0_within_noise"] == (abs(np.mean(values)) < np.std(values, ddof=1))
    anchor_top = [r["psnr_mean"] for r in rows if r["priming"] == 0 and r["iterations"] == 4][0]
    cell_row = [r for r in rows if r["priming"] == 1 and r["iterations"] == 4][0]
    anchor_std = [r["psnr_std"] for r in rows if r["priming"] == 0 and r["iterations"] == 4][0]
    assert cell["top_iterations"] == 4
    assert cell["psnr_at_top_mean"] == pytest.approx(cell_row["psnr_mean"])
    assert cell["psnr_at_top_std"] == pytest.approx(cell_row["psnr_std"])
    diff = cell_row["psnr_mean"] - anchor_top
    assert cell["psnr_at_top_diff_vs_k0_d0"] == pytest.approx(diff)
    assert cell["psnr_at_top_within_noise"] == (abs(diff) < max(cell_row["psnr_std"], anchor_std))

    summary = (out / "summary.md").read_text()
    assert summary.startswith("Sweep of johnston2018:tiny: 2 seeds per cell, 1 images")
    header = [line for line in summary.splitlines() if line.startswith("| k |")][0]
    for column in ("seeds", "mean ± std", "PSNR BD noise", "MS-SSIM BD noise", "Δ PSNR vs k0 d0", "PSNR noise"):
        assert column in header
    row_k1 = [line for line in summary.splitlines() if line.startswith("| 1 | 0 | 2 |")][0]
    flag = "within noise" if cell["psnr_at_top_within_noise"] else "distinguishable"
    assert row_k1.rstrip(" |").endswith(flag) and " ± " in row_k1
    assert "1 seed: spread unknown" not in summary
    assert (out / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A rerun trains and evaluates nothing: every (cell, seed) is finished.
    third = runs["third"]
    assert all(f"k{k}_d0/s{s}: finished earlier, skipped" in third for k in (0, 1) for s in (0, 1))
    assert ": training " not in third
    files, mtimes = runs["mtimes"]
    assert [p.stat().st_mtime_ns for p in files] == mtimes
    assert json.loads((out / "results.json").read_text())["rows"] == rows


def test_checkpoints_mode_evaluates_every_seed_found_without_training(sweep, runs):
    out = runs["out"]
    shutil.rmtree(out / "k1_d0" / "s1" / "eval")
    text = _run(sweep, [*runs["base"], "--checkpoints"])  # no --seeds: the s<seed> folders found
    assert "k1_d0/s1: finished" not in text and "k0_d0/s1: finished earlier, skipped" in text
    assert ": training " not in text
    assert (out / "k1_d0" / "s1" / "eval" / "rd_by_setting.csv").exists()
    assert json.loads((out / "results.json").read_text())["seeds_per_cell"] == [2]
    assert not math.isnan(json.loads((out / "results.json").read_text())["rows"][0]["bpp_mean"])
