"""BD-rate / BD-quality: hand-computed cases, the spec's test table (section 5.4), errors and tables."""

import math

import numpy as np
import pytest

from lcomp.bdrate import (
    bd_quality,
    bd_rate,
    bd_table,
    format_bd_markdown,
    pareto_front,
    point_rate_difference,
    write_bd_csv,
)
from lcomp.errors import LcompError
from lcomp.reference import load_curve

VARIANTS = ("cubic", "pchip")


@pytest.mark.parametrize("variant", VARIANTS)
def test_uniform_rate_scaling_gives_exactly_that_percentage(variant):
    quality = np.array([26.0, 28.5, 30.1, 32.0, 34.7, 37.2])
    rate = np.array([0.12, 0.21, 0.33, 0.52, 0.90, 1.61])
    result = bd_rate(rate, quality, 0.8 * rate, quality, variant=variant, quality_axis="psnr")
    assert result.value == pytest.approx(-20.0, abs=1e-9)
    assert result.variant == variant and result.kind == "rate" and result.quality_axis == "psnr"
    assert result.overlap == (26.0, 37.2)
    assert result.points == (6, 6)
    assert result.warning is None


def test_four_point_cubic_matches_closed_form():
    # Anchor: ln R = D/10 - 3. Test: ln R = D/10 - 3 + (D - 33)^2 / 100. With four points the cubic
    # interpolates, so both fits are exact; over the overlap [31, 36] the mean log-rate gap is
    # (1/5) * [(D - 33)^3 / 300] from 31 to 36 = 35/1500.
    d_anchor = np.array([30.0, 32.0, 34.0, 36.0])
    d_test = np.array([31.0, 33.0, 35.0, 37.0])
    rate_anchor = np.exp(d_anchor / 10 - 3)
    rate_test = np.exp(d_test / 10 - 3 + (d_test - 33) ** 2 / 100)
    result = bd_rate(rate_anchor, d_anchor, rate_test, d_test, variant="cubic")
    assert result.overlap == (31.0, 36.0)
    assert result.value == pytest.approx((math.exp(35 / 1500) - 1) * 100, abs=1e-9)


@pytest.mark.parametrize("variant", VARIANTS)
def test_log_linear_curves_match_closed_form(variant):
    # Both curves linear in (D, ln R): every variant is exact. Mean of (D/40 - 0.5) over [31, 36].
    d_anchor = np.array([30.0, 32.0, 34.0, 36.0])
    d_test = np.array([31.0, 33.0, 35.0, 37.0])
    result = bd_rate(np.exp(d_anchor / 10 - 3), d_anchor, np.exp(d_test / 8 - 3.5), d_test, variant=variant)
    assert result.value == pytest.approx((math.exp(33.5 / 40 - 0.5) - 1) * 100, abs=1e-9)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bd_quality_closed_form(variant):
    # D = 10 ln R + 30 for the anchor; the test reaches the same D at 0.8x the rate: +10 ln(1/0.8) dB.
    rate = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
    quality = 10 * np.log(rate) + 30
    result = bd_quality(rate, quality, 0.8 * rate, quality, variant=variant, quality_axis="psnr")
    assert result.kind == "quality"
    assert result.value == pytest.approx(-10 * math.log(0.8), abs=1e-9)
    assert result.overlap == pytest.approx((0.1, 1.28))


# Section 5.4 of the evaluation spec: (test, data set, anchor, quality axis, cubic %, pchip %).
SPEC_TABLE = [
    ("johnston-2017-cvpr", "kodak", "jpeg420", "ms_ssim_db", -42.8, -42.9),
    ("johnston-2017-cvpr", "kodak", "j2k-opj5", "ms_ssim_db", -35.4, -35.4),
    ("johnston-2017-cvpr", "kodak", "j2k-kdu5", "ms_ssim_db", -17.2, -16.9),
    ("johnston-2017-cvpr", "kodak", "webp", "ms_ssim_db", -23.3, -23.2),
    ("johnston-2017-cvpr", "kodak", "bpg420", "ms_ssim_db", -7.8, -6.8),
    ("johnston-2017-cvpr", "kodak", "bpg444", "ms_ssim_db", 1.0, 1.8),
    ("johnston-2017-cvpr", "kodak", "toderici-2017-cvpr", "ms_ssim_db", -43.2, -42.7),
    ("johnston-2017-cvpr", "tecnick", "bpg420", "ms_ssim_db", -5.6, -6.0),
    ("johnston-2017-cvpr", "tecnick", "toderici-2017-cvpr", "ms_ssim_db", -59.3, -59.2),
    ("johnston-2017-cvpr", "kodak", "jpeg420", "psnr", -30.0, -29.9),
    ("johnston-2017-cvpr", "kodak", "bpg420", "psnr", 82.7, 81.2),
    ("mentzer-2018-cvpr", "kodak", "bpg444", "ms_ssim_db", -28.1, -27.6),
    ("theis-2017-iclr", "kodak", "bpg444", "ms_ssim_db", 36.4, 36.4),
    ("rippel2017", "kodak", "bpg444", "ms_ssim_db", -28.4, -27.8),
]


@pytest.mark.parametrize("test_name,dataset,anchor_name,axis,cubic,pchip", SPEC_TABLE)
def test_spec_table(test_name, dataset, anchor_name, axis, cubic, pchip):
    test = load_curve(test_name, dataset=dataset, metric=axis)
    anchor = load_curve(anchor_name, dataset=dataset, metric=axis)
    for variant, expected in (("cubic", cubic), ("pchip", pchip)):
        result = bd_rate(anchor.bpp, anchor.quality, test.bpp, test.quality, variant=variant, quality_axis=axis)
        assert result.value == pytest.approx(expected, abs=0.1), (variant, result)


def test_pareto_front_drops_dominated_and_duplicate_points():
    rate = [0.5, 0.2, 0.3, 0.3, 0.4, 0.4, 0.6]
    quality = [30.0, 25.0, 27.0, 26.0, 27.0, 29.0, 29.5]
    # (0.3, 26) loses to (0.3, 27); (0.4, 27) to (0.3, 27); (0.6, 29.5) to (0.5, 30).
    r, q = pareto_front(rate, quality)
    assert r.tolist() == [0.2, 0.3, 0.4, 0.5]
    assert q.tolist() == [25.0, 27.0, 29.0, 30.0]
    r, q = pareto_front([0.1, 0.1, 0.2], [20.0, 20.0, 21.0])
    assert r.tolist() == [0.1, 0.2]


def test_pchip_counts_points_after_cleaning():
    johnston = load_curve("johnston-2017-cvpr", metric="ms_ssim_db")
    jpeg = load_curve("jpeg420", metric="ms_ssim_db")
    cubic = bd_rate(jpeg.bpp, jpeg.quality, johnston.bpp, johnston.quality, variant="cubic")
    pchip = bd_rate(jpeg.bpp, jpeg.quality, johnston.bpp, johnston.quality, variant="pchip")
    assert cubic.points[1] == 82
    assert pchip.points[1] < 82  # equal-quality points and a non-monotone pair are gone


def test_errors():
    q = np.array([30.0, 32.0, 34.0, 36.0])
    r = np.array([0.2, 0.4, 0.8, 1.6])
    with pytest.raises(LcompError, match="at least 4"):
        bd_rate(r[:3], q[:3], r, q)
    with pytest.raises(LcompError, match="after Pareto cleaning"):
        bd_rate(r, q, [0.2, 0.3, 0.4, 0.5], [30.0, 29.0, 33.0, 34.0], variant="pchip")
    with pytest.raises(LcompError, match="do not overlap"):
        bd_rate(r, q, r, q + 10)
    with pytest.raises(LcompError, match="non-finite"):
        bd_rate(r, [30.0, 32.0, 34.0, np.inf], r, q)
    with pytest.raises(LcompError, match="unknown BD variant"):
        bd_rate(r, q, r, q, variant="akima")
    with pytest.raises(LcompError, match="4 rates but 3 quality values"):
        bd_rate(r, q[:3], r, q)


def test_small_overlap_warns():
    q = np.array([30.0, 32.0, 34.0, 36.0])
    r = np.array([0.2, 0.4, 0.8, 1.6])
    result = bd_rate(r, q, r * 0.9, q + 5.0)
    assert result.overlap == (35.0, 36.0)
    assert "less than 50%" in result.warning
    assert "WARNING" in str(result)


def test_bd_table_and_writers(tmp_path):
    q = np.array([30.0, 32.0, 34.0, 36.0, 38.0])
    r = np.array([0.2, 0.4, 0.8, 1.6, 3.2])
    curves = {"anchor": (r, q), "better": (0.8 * r, q), "tiny": (r[:2], q[:2])}
    rows = bd_table(curves, "anchor", quality_axis="psnr")
    assert [(row.test, row.variant) for row in rows] == [
        ("better", "cubic"),
        ("better", "pchip"),
        ("tiny", "cubic"),
        ("tiny", "pchip"),
    ]
    assert rows[0].bd_rate == pytest.approx(-20.0)
    assert rows[0].bd_quality > 0
    # Two points lying on the anchor's curve: the equal-quality rate difference (said in the note) is 0.
    assert rows[2].bd_rate == pytest.approx(0.0, abs=1e-6) and "not a BD integral" in rows[2].note
    assert rows[2].points_test == 2
    csv_text = write_bd_csv(rows, tmp_path / "bd.csv").read_text().splitlines()
    assert csv_text[0].startswith("test,anchor,quality_axis,variant,bd_rate,bd_quality,overlap_lo")
    assert csv_text[1].startswith("better,anchor,psnr,cubic,-20.0000,")
    markdown = format_bd_markdown(rows)
    assert "| better | anchor | psnr | cubic | -20.00 % |" in markdown
    with pytest.raises(LcompError, match="anchor"):
        bd_table(curves, "missing")


@pytest.mark.parametrize("variant", ["cubic", "pchip"])
def test_point_rate_difference_single_model(variant):
    # ln R is linear in the quality, so both fits reproduce the anchor exactly: a point at 90 % of the
    # anchor's rate at equal quality is -10 %, and its quality gain is what the anchor loses at that rate.
    q = np.array([30.0, 32.0, 34.0, 36.0, 38.0])
    r = np.exp(0.3 * (q - 30.0)) * 0.2
    rate_result, quality_result = point_rate_difference(r, q, [0.9 * 0.2 * np.exp(0.3 * 3.0)], [33.0],
                                                        variant=variant, quality_axis="psnr")
    assert rate_result.value == pytest.approx(-10.0, abs=1e-6 if variant == "cubic" else 0.05)
    assert quality_result.value == pytest.approx(-np.log(0.9) / 0.3, abs=1e-6 if variant == "cubic" else 0.02)
    assert rate_result.points == (5, 1) and "not a BD integral" in rate_result.warning
    with pytest.raises(LcompError, match="outside the anchor"):
        point_rate_difference(r, q, [0.1], [25.0], variant=variant)
    # Below the anchor's lowest rate but inside its quality range: the rate difference only.
    low_rate, no_quality = point_rate_difference(r, q, [0.1], [31.0], variant=variant)
    assert no_quality is None and low_rate.value == pytest.approx((0.1 / (0.2 * np.exp(0.3))) * 100 - 100, abs=0.5)
    assert "quality difference not computed" in low_rate.warning
    # Inside the rate range, above its best quality: the quality difference only.
    no_rate, high_quality = point_rate_difference(r, q, [0.3], [40.0], variant=variant)
    assert no_rate is None and high_quality.value > 0
    rows = bd_table({"anchor": (r, q), "low": ([0.1], [31.0])}, "anchor", variants=[variant])
    assert rows[0].bd_rate == pytest.approx(low_rate.value) and rows[0].bd_quality is None
    line = format_bd_markdown(rows).splitlines()[2]
    assert f"{low_rate.value:+.2f} %" in line and "| – |" in line
    rows = bd_table({"anchor": (r, q), "one": ([0.1], [25.0])}, "anchor", variants=[variant])
    assert rows[0].bd_rate is None and "outside the anchor" in rows[0].note
