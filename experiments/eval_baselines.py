"""Acceptance check of the evaluation pipeline against published classical-codec curves.

Runs classical codecs over Kodak with ``lcomp.evaluate`` (real file sizes, rule A and rule B), then computes
the BD-rate of each of our curves (test) against the matching published curve of
``lcomp/reference_data`` (anchor), on RGB PSNR and on MS-SSIM in dB, with both BD variants.
A negative value means our encoder needs fewer bits than the published curve at equal quality.

Expected (issue "Evaluation"): ``lcomp eval --codec jpeg420`` within +-5 % of the published JPEG 4:2:0 curve
on both axes, WebP within +-10 %, JPEG 2000 reported (ours about 11 % better than the published OpenJPEG
curve; a large gap the other way would mean a settings error).

``jpeg420`` uses libjpeg's standard Huffman tables, as the published curve and plain ``cjpeg`` do.
``jpeg420-opt`` (optimized Huffman tables: the same pixels in about 12 % fewer bits) and ``hevc444`` (x265 in
HEIF, the BPG stand-in, against genuine BPG 4:4:4) are reported next to them.

    python experiments/eval_baselines.py                      # all five on the 24 Kodak images
    python experiments/eval_baselines.py --codecs jpeg420 --max-images 4
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lcomp.bdrate import VARIANTS, bd_rate  # noqa: E402
from lcomp.data import kodak_dir  # noqa: E402
from lcomp.evaluate import evaluate_codec, resolve_codec  # noqa: E402
from lcomp.reference import load_curve  # noqa: E402

#: Our codec -> the published curve it should reproduce, and the bound the issue sets (None: report only).
PUBLISHED = {
    "jpeg420": ("jpeg420", 5.0),
    "jpeg420-opt": ("jpeg420", None),
    "webp": ("webp", 10.0),
    "jpeg2000": ("j2k-opj5", None),
    "hevc444": ("bpg444", None),
}
DEFAULT_CODECS = ("jpeg420", "jpeg420-opt", "webp", "jpeg2000", "hevc444")
AXES = ("psnr", "ms_ssim_db")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=None, help="default: the Kodak folder")
    parser.add_argument("--out", type=Path, default=Path("runs/eval_baselines"), help="evaluation folders")
    parser.add_argument(
        "--codecs", default=",".join(DEFAULT_CODECS), help="comma-separated, from: " + ", ".join(PUBLISHED)
    )
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument(
        "--report", type=Path, default=Path(__file__).parent / "results" / "eval_baselines_kodak.md",
        help="Markdown report with the BD-rates",
    )  # fmt: skip
    args = parser.parse_args(argv)
    images = args.images or kodak_dir()

    lines = [
        "# Classical baselines vs published curves (Kodak)",
        "",
        f"Written by `experiments/eval_baselines.py` on {datetime.date.today().isoformat()}. Test = our curve "
        "(real whole-file bpp, rule A: mean over the images at each setting), anchor = the published "
        "tensorflow/compression curve (rule A as well). Negative BD-rate: ours needs fewer bits.",
        "",
    ]
    table = [
        "| Codec (ours) | Published anchor | Axis | Variant | BD-rate | Overlap | Points (anchor/test) | Bound | Pass |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    failed = False
    for name in [c.strip() for c in args.codecs.split(",") if c.strip()]:
        anchor_name, bound = PUBLISHED[name]
        codec = resolve_codec(name)
        results = evaluate_codec(
            codec, images, args.out / name, aggregate=("A", "B"), max_images=args.max_images,
            require_checksums=args.images is None,  # the default Kodak folder is always verified
        )  # fmt: skip
        meta = results.meta
        lines.append(
            f"- `{name}`: {meta['label']}; {meta['n_images']} images "
            f"(SHA-256 {'verified' if meta['checksums_verified'] else 'not checked'}), settings "
            f"{', '.join(r['setting'] for r in results.by_setting)}; "
            f"bpp {results.by_setting[0]['bpp']:.3f}-{results.by_setting[-1]['bpp']:.3f}"
        )
        for axis in AXES:
            anchor = load_curve(anchor_name, dataset="kodak", metric=axis)
            bpp, quality = results.curve(axis)
            for variant in VARIANTS:
                r = bd_rate(anchor.bpp, anchor.quality, bpp, quality, variant=variant, quality_axis=axis)
                ok = "–" if bound is None else ("yes" if abs(r.value) <= bound else "NO")
                failed |= ok == "NO"
                table.append(
                    f"| {name} | {anchor.label} (`{anchor_name}`) | {axis} | {variant} | {r.value:+.2f} % "
                    f"| [{r.overlap[0]:.3f}, {r.overlap[1]:.3f}] | {r.points[0]}/{r.points[1]} "
                    f"| {'report' if bound is None else f'±{bound:g} %'} | {ok} |"
                )
                print(f"{name} vs {anchor_name}: {r}")
    report = "\n".join(lines + [""] + table) + "\n"
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(report)
    print(report)
    print(f"wrote {args.report} and the evaluation folders under {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
