"""The priming x diffusion sweep script: trains each cell, writes its tables and plot, skips finished cells."""

import importlib.util
import json
import pathlib

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


def test_sweep_trains_cells_writes_results_and_skips_finished_cells(sweep, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(images / "noise.png")
    out = tmp_path / "sweep"
    argv = ["--priming", "0,1", "--diffusion", "0", "--steps", "3", "--iterations", "1,2,3,4",
            "--images", str(images), "--out", str(out),
            "--config.model.network.iterations=4", "--config.data.batch_size=4", "--config.train.progress=False"]

    assert sweep.main(argv) == 0
    first = capsys.readouterr().out
    assert "k0_d0: training" in first and "k1_d0: training" in first

    for k in (0, 1):
        config = json.loads((out / f"k{k}_d0" / "workdir" / "config.json").read_text())
        assert config["model"]["network"]["priming_steps"] == k  # the cell's switch reached the model
        assert config["model"]["network"]["iterations"] == 4  # and so did the user's override
        assert config["train"]["num_steps"] == 3

    results = json.loads((out / "results.json").read_text())
    assert [(c["priming"], c["diffusion"]) for c in results["cells"]] == [(0, 0), (1, 0)]
    assert results["cells"][0]["bd_rate_psnr_vs_k0_d0"] is None  # the anchor is not compared with itself
    assert "bd_rate_psnr_vs_k0_d0" in results["cells"][1]
    # A 40x56 image is too small for MS-SSIM's five scales: reported as missing, not as a crash or a number.
    assert results["cells"][1]["bd_rate_ms_ssim_db_vs_k0_d0"].startswith("n/a (ms_ssim_db missing")
    rows = results["rows"]
    assert len(rows) == 8 and {r["setting"] for r in rows} == {f"iterations={t}" for t in (1, 2, 3, 4)}
    # bpp is the real file size: more iterations, more bytes.
    bpp = [float(r["bpp"]) for r in rows if r["priming"] == 0]
    assert all(b > a for a, b in zip(bpp, bpp[1:]))
    assert (out / "results.csv").read_text().splitlines()[0].startswith("priming,diffusion,codec,setting")
    assert (out / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 0 | 0 | anchor | anchor |" in (out / "summary.md").read_text()

    checkpoint_files = sorted(p for p in (out / "k1_d0" / "workdir").rglob("*") if p.is_file())
    mtimes = [p.stat().st_mtime_ns for p in checkpoint_files]
    assert sweep.main(argv) == 0
    second = capsys.readouterr().out
    assert "k0_d0: finished earlier, skipped" in second and "k1_d0: finished earlier, skipped" in second
    assert "training" not in second
    assert [p.stat().st_mtime_ns for p in checkpoint_files] == mtimes
    assert json.loads((out / "results.json").read_text())["rows"] == rows
