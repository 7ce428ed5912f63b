"""Published reference curves: every shipped file parses, names and conversions are right."""

import importlib.resources
import re
from pathlib import Path

import numpy as np
import pytest

from lcomp.errors import LcompError
from lcomp.reference import COLOURS, DATASETS, load_curve, list_curves

SPEC = Path(__file__).resolve().parents[1] / ".." / "shared" / "spec" / "evaluation.md"


def test_every_shipped_file_loads():
    count = 0
    for dataset in DATASETS:
        for metric in ("psnr", "ms_ssim"):
            for colour in COLOURS:
                for name in list_curves(dataset, metric, colour):
                    curve = load_curve(name, dataset, metric, colour)
                    assert curve.bpp.shape == curve.quality.shape and curve.bpp.size >= 4
                    assert np.all(curve.bpp > 0)
                    assert curve.label and curve.source
                    if metric == "ms_ssim":
                        assert np.all((curve.quality > 0) & (curve.quality < 1))
                    count += 1
    assert count == 140  # the 139 tensorflow/compression files plus Mentzer et al.


def test_package_data_layout():
    root = importlib.resources.files("lcomp") / "reference_data"
    assert (root / "README.md").is_file()
    assert "dda8cb4c4364e657d13491227e886ff8014f7243" in (root / "README.md").read_text()


def test_jpeg420_curve():
    curve = load_curve("jpeg420")
    assert curve.label == "JPEG (4:2:0)"
    assert curve.bpp.shape == (100,)
    assert (curve.dataset, curve.metric, curve.colour, curve.aggregation) == ("kodak", "psnr", "rgb", "A")
    assert "kodak/PSNR_sRGB_RGB/jpeg420.txt" in curve.source
    assert curve.bpp[0] == pytest.approx(0.169711) and curve.quality[0] == pytest.approx(21.455203)


def test_ms_ssim_db_conversion():
    linear = load_curve("webp", metric="ms_ssim")
    db = load_curve("webp", metric="ms_ssim_db")
    np.testing.assert_allclose(db.quality, -10 * np.log10(1 - linear.quality))
    np.testing.assert_array_equal(db.bpp, linear.bpp)


def test_rate_kind_and_luma_folder():
    assert load_curve("toderici-2017-cvpr").rate_kind == "raw"
    assert "raw bpp" in load_curve("toderici-2017-cvpr").describe()
    y = load_curve("bpg444", metric="psnr", colour="y")
    assert y.colour == "y" and "Y]" in y.describe()
    assert "johnston-2017-cvpr" in list_curves("tecnick", "ms_ssim", "rgb")


def test_mentzer_curve_matches_spec_list():
    curve = load_curve("mentzer-2018-cvpr", metric="ms_ssim")
    assert curve.aggregation == "B" and "rule B" in curve.describe()
    assert curve.bpp.size == 28
    if SPEC.is_file():  # the shared spec sits next to the project checkout
        text = SPEC.read_text()
        block = text[text.index("Fig. 1 curve, 28 points") : text.index("Suggested: add it")]
        points = np.array(re.findall(r"\(([0-9.]+), ([0-9.]+)\)", block), dtype=float)
        np.testing.assert_array_equal(curve.bpp, points[:, 0])
        np.testing.assert_array_equal(curve.quality, points[:, 1])


def test_errors():
    with pytest.raises(LcompError, match="available: .*jpeg420"):
        load_curve("jpeg-xl")
    with pytest.raises(LcompError, match="no published curve 'mentzer-2018-cvpr'"):
        load_curve("mentzer-2018-cvpr", metric="psnr")
    with pytest.raises(LcompError, match="unknown metric"):
        load_curve("jpeg420", metric="ssim")
    with pytest.raises(LcompError, match="unknown data set"):
        list_curves("clic")
