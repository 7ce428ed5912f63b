"""`lcomp demo`: the whole pipeline on the embedded photographs, in a few minutes on a laptop CPU.

1. Train a registered codec's `tiny` config (default johnston2018) on the embedded training photographs.
2. Compress a held-out photograph and decode real files with real sizes: a progressive codec (its
   `part_layout` numbers its streams, e.g. the recurrent coder's iterations) is compressed once and the file
   cut after 1, 2, 4, 8, ... streams; any other codec is compressed once per operating point it declares.
3. Compress the same photograph with JPEG 4:2:0 at several qualities.
4. Write the files, the reconstructions, an RD plot (PSNR and MS-SSIM dB against real bpp) and a summary.

The demo serves every registered codec whose registered config ships with lcomp and has a `tiny` variant
(what it trains); it refuses any other with a ConfigError naming the ones it serves. The codec's shipped
model (if present) is evaluated on the same image, so the plot also shows what more training buys.
"""

from __future__ import annotations

import json
import pathlib
import re
import time

import numpy as np

from lcomp.errors import ConfigError

DEFAULT_CODEC = "johnston2018"
VARIANT = "tiny"  # the config variant the demo trains: CPU-sized, minutes not days
JPEG_QUALITIES = (5, 10, 20, 35, 50, 75, 90)


def servable_codecs() -> list[str]:
    """Registered codecs the demo can train: their registered config ships with a `tiny` variant."""
    from lcomp import configs
    from lcomp.codecs import registry

    servable = []
    for name in registry.names():
        try:
            configs.codec_config(name, VARIANT)
        except ConfigError:
            continue
        servable.append(name)
    return servable


def demo_config(codec: str, overrides=()):
    """The tiny config the demo trains for `codec`, or a ConfigError saying which codecs the demo serves."""
    from lcomp import configs

    try:
        config = configs.codec_config(codec, VARIANT)
    except ConfigError as exc:
        raise ConfigError(
            f"the demo cannot serve codec {codec!r} ({exc}); it trains a registered codec's shipped "
            f"'{VARIANT}' config, which these codecs have: {', '.join(servable_codecs()) or 'none'}"
        ) from exc
    return configs.apply_overrides(config, overrides)  # override errors are the user's, reported as such


def cut_counts(total: int) -> list[int]:
    """Where the demo cuts a progressive file of `total` streams: 1, 2, 4, ... and the whole file."""
    counts = [1 << k for k in range(total.bit_length()) if 1 << k < total]
    return counts + [total]


def _coded_files(model, image):
    """(setting, file bytes) pairs: cuts of one file for a progressive codec, else one file per operating point."""
    codec, variables = model.codec, model.variables
    layout = codec.part_layout
    if layout.progressive:
        full = codec.compress(variables, image).data
        _, total = codec.unpack_own(variables, full)
        for count in cut_counts(total):
            yield {layout.count_setting: count}, full if count == total else codec.cut_file(full, count)
    else:
        for setting in codec.operating_points():
            yield dict(setting), codec.compress(variables, image, **setting).data


def _setting_text(setting: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "default"


def _file_tag(setting: dict) -> str:
    """A file-name piece for a setting, e.g. `iterations04`."""
    text = "_".join(f"{k}{v:02d}" if isinstance(v, int) else f"{k}{v}" for k, v in setting.items()) or "default"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)


def _learned_points(model, image, name, out: pathlib.Path, label: str, write_files: bool):
    from lcomp import data
    from lcomp.evaluate import measure_quality

    h, w = image.shape[:2]
    points = []
    for setting, blob in _coded_files(model, image):
        decoded = model.codec.decompress(model.variables, blob)
        if write_files:
            (out / f"{name}_{_file_tag(setting)}.lcomp").write_bytes(blob)
            data.save_image(out / f"{name}_{_file_tag(setting)}.png", decoded)
        points.append({"codec": label, "setting": setting, "bytes": len(blob), "bpp": 8 * len(blob) / (h * w),
                       **measure_quality(image, decoded)})
    return points


def _jpeg_points(image):
    from lcomp.baselines import get_baseline
    from lcomp.evaluate import measure_quality

    jpeg = get_baseline("jpeg420")  # the same codec `lcomp eval --codec jpeg420` measures
    h, w = image.shape[:2]
    points = []
    for q in JPEG_QUALITIES:
        blob = jpeg.encode(image, quality=q).data  # a Compressed, like every RateDistortionCodec's
        points.append({"codec": jpeg.label, "setting": {"quality": q}, "bytes": len(blob),
                       "bpp": 8 * len(blob) / (h * w), **measure_quality(image, jpeg.decode(blob))})
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
    from lcomp import data, models, train
    from lcomp.errors import LcompError

    start = time.perf_counter()
    codec = args.codec or DEFAULT_CODEC
    config = demo_config(codec, overrides)  # refuses a codec it cannot serve before anything is written
    if args.steps is not None:
        config.train.num_steps = args.steps
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = out / "workdir"
    print(f"[1/3] training {codec} ({VARIANT} config, {config.train.num_steps} steps, batch "
          f"{config.data.batch_size} of {config.data.patch_size}x{config.data.patch_size} crops) on the embedded "
          f"photographs -> {workdir}")
    train.train(config, workdir)
    model = models.load_model(workdir)

    source = data.EmbeddedSource(split="eval")
    name, image = source.names[0], np.ascontiguousarray(source[0])
    h, w = image.shape[:2]
    how = "cutting the progressive file" if model.codec.part_layout.progressive else "at every operating point"
    print(f"[2/3] compressing the held-out photograph '{name}' ({w}x{h}), {how}, and decoding every file")
    label = f"{codec} {VARIANT} ({config.train.num_steps} steps, just trained)"
    points = _learned_points(model, image, name, out, label, True)
    data.save_image(out / f"{name}_original.png", image)
    try:
        shipped = models.load_shipped(codec)
        points += _learned_points(shipped, image, name, out, f"{codec} shipped model", False)
    except LcompError as exc:
        print(f"      (no shipped model to compare with: {exc})")
    print("[3/3] JPEG 4:2:0 at several qualities, RD plot")
    points += _jpeg_points(image)
    _plot(points, out / "rd.png", f"{name} ({w}x{h}): {codec} vs JPEG")
    (out / "summary.json").write_text(json.dumps(points, indent=2))

    lines = ["| codec | setting | bytes | bpp (real) | PSNR (dB) | MS-SSIM |", "|---|---|---|---|---|---|"]
    for p in points:
        lines.append(f"| {p['codec']} | {_setting_text(p['setting'])} | {p['bytes']} | {p['bpp']:.3f} "
                     f"| {p['psnr']:.2f} | {p['ms_ssim']:.4f} |")
    table = "\n".join(lines)
    (out / "summary.md").write_text(f"# lcomp demo: {name}\n\n{table}\n\nRD plot: rd.png\n")
    print(table)
    print(f"done in {time.perf_counter() - start:.0f} s; files, reconstructions, rd.png and summary.md in {out}/")
    return 0
