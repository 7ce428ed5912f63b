"""`lcomp demo`: the whole pipeline on the embedded photographs, in a few minutes on a laptop CPU.

1. Train the recurrent coder's `tiny` config on the embedded training photographs (progress bar).
2. Compress a held-out photograph once, cut the progressive file after 1, 2, 4, 8 and 16 iterations, and
   decode every cut: real files, real sizes.
3. Compress the same photograph with JPEG 4:2:0 at several qualities.
4. Write the files, the reconstructions, an RD plot (PSNR and MS-SSIM dB against real bpp) and a summary.

The shipped model (if present) is evaluated on the same image, so the plot also shows what more training
buys.
"""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np

CUT_POINTS = (1, 2, 4, 8, 16)
JPEG_QUALITIES = (5, 10, 20, 35, 50, 75, 90)


def _learned_points(model, image, name, out: pathlib.Path, label: str, write_files: bool):
    from lcomp import data
    from lcomp.codecs.rnn.codec import cut
    from lcomp.evaluate import measure_quality

    h, w = image.shape[:2]
    full = model.codec.compress(model.variables, image)
    points = []
    for t in CUT_POINTS:
        if t > model.codec.iterations:
            continue
        blob = cut(full, t)
        decoded = model.codec.decompress(model.variables, blob)
        if write_files:
            (out / f"{name}_it{t:02d}.lcomp").write_bytes(blob)
            data.save_image(out / f"{name}_it{t:02d}.png", decoded)
        points.append({"codec": label, "iterations": t, "bytes": len(blob), "bpp": 8 * len(blob) / (h * w),
                       "bpp_raw": t / 8, **measure_quality(image, decoded)})
    return points


def _jpeg_points(image):
    from lcomp.baselines import get_baseline
    from lcomp.evaluate import measure_quality

    jpeg = get_baseline("jpeg420")  # the same codec `lcomp eval --codec jpeg420` measures
    h, w = image.shape[:2]
    points = []
    for q in JPEG_QUALITIES:
        blob = jpeg.encode(image, quality=q)
        points.append({"codec": jpeg.label, "quality": q, "bytes": len(blob), "bpp": 8 * len(blob) / (h * w),
                       **measure_quality(image, jpeg.decode(blob))})
    return points


def _plot(points, path: pathlib.Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for label in dict.fromkeys(p["codec"] for p in points):
        curve = sorted((p for p in points if p["codec"] == label), key=lambda p: p["bpp"])
        bpp = [p["bpp"] for p in curve]
        axes[0].plot(bpp, [p["psnr"] for p in curve], "o-", label=label)
        axes[1].plot(bpp, [p["ms_ssim_db"] for p in curve], "o-", label=label)
    axes[0].set_ylabel("PSNR (dB, RGB)")
    axes[1].set_ylabel("MS-SSIM (dB, RGB)")
    for ax in axes:
        ax.set_xlabel("bits per pixel (real: whole file)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_demo(args, overrides) -> int:
    from lcomp import configs, data, models, train
    from lcomp.errors import LcompError

    start = time.perf_counter()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = configs.load_config(f"{args.codec}:tiny", overrides)
    if args.steps is not None:
        config.train.num_steps = args.steps
    workdir = out / "workdir"
    print(f"[1/3] training {args.codec} (tiny config, {config.train.num_steps} steps, batch "
          f"{config.data.batch_size} of {config.data.patch_size}x{config.data.patch_size} crops) on the embedded "
          f"photographs -> {workdir}")
    train.train(config, workdir)
    model = models.load_model(workdir)

    source = data.EmbeddedSource(split="eval")
    name, image = source.names[0], np.ascontiguousarray(source[0])
    h, w = image.shape[:2]
    print(f"[2/3] compressing the held-out photograph '{name}' ({w}x{h}) and decoding every cut")
    points = _learned_points(model, image, name, out, f"{args.codec} tiny ({config.train.num_steps} steps, just trained)", True)
    data.save_image(out / f"{name}_original.png", image)
    try:
        shipped = models.load_shipped(args.codec)
        points += _learned_points(shipped, image, name, out, f"{args.codec} shipped model", False)
    except LcompError as exc:
        print(f"      (no shipped model to compare with: {exc})")
    print("[3/3] JPEG 4:2:0 at several qualities, RD plot")
    points += _jpeg_points(image)
    _plot(points, out / "rd.png", f"{name} ({w}x{h}): {args.codec} vs JPEG")
    (out / "summary.json").write_text(json.dumps(points, indent=2))

    lines = ["| codec | setting | bytes | bpp (real) | PSNR (dB) | MS-SSIM |", "|---|---|---|---|---|---|"]
    for p in points:
        setting = f"{p['iterations']} iterations" if "iterations" in p else f"quality {p['quality']}"
        lines.append(f"| {p['codec']} | {setting} | {p['bytes']} | {p['bpp']:.3f} | {p['psnr']:.2f} | {p['ms_ssim']:.4f} |")
    table = "\n".join(lines)
    (out / "summary.md").write_text(f"# lcomp demo: {name}\n\n{table}\n\nRD plot: rd.png\n")
    print(table)
    print(f"done in {time.perf_counter() - start:.0f} s; files, reconstructions, rd.png and summary.md in {out}/")
    return 0
