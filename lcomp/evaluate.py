"""Rate-distortion evaluation of any codec on a folder of images, on real files.

Images come through ``lcomp.data`` (a folder, any ``ImageSource``, image paths, or in-memory arrays; files
are decoded by ``load_image``) and are checked against a ``SHA256SUMS`` file in their folder when there is one
(the default Kodak folder must have one). For every image and every setting of the codec's sweep the image is
encoded to a complete file, the file is decoded, and the decoded uint8 image is compared with the original:

* rate: **real** bpp = ``8 * len(file) / (H * W)`` (the whole file, header included), next to the model's
  **estimated** bpp (payload) for learned codecs, and the container's header and per-part bytes
  (``lcomp.container.describe``) for lcomp files;
* distortion: PSNR, PSNR-Y, MS-SSIM and MS-SSIM dB (``lcomp.metrics``);
* time: encode and decode wall time, after one untimed warm-up per image shape and setting (so JIT
  compilation is not counted).

Every codec is an ``lcomp.interface.RateDistortionCodec``: a classical baseline (``lcomp.baselines``) or a
trained model (``lcomp.models.LoadedModel``). Its ``encode`` returns the file together with the model's
estimate of its bits, so each image is encoded exactly once per setting: the real and the estimated rate
come from the same encode. The warm-up encodes a synthetic gradient of the image's shape
(``warmup_image``), never the evaluated image.

Aggregation (evaluation spec, section 4): rule **A** averages over the images at each fixed setting (mean
bpp; mean of per-image PSNR with infinite values excluded and counted; linear mean of MS-SSIM, then dB);
rule **B** interpolates each image's curve linearly on a common bpp grid (``linspace(0.1, 1.4, 50)`` as in
Mentzer et al.), without extrapolation, and averages the grid points covered by (more than 99 % of) all
images.

Output folder: ``per_image.jsonl`` (one record per image and setting; an infinite PSNR of a lossless
result is written as ``Infinity``, which Python's ``json`` reads back), ``rd_by_setting.csv`` (rule A),
``rd_by_bpp_grid.csv`` (rule B), ``summary.md`` and ``meta.json`` (what was run, on what, with which
versions). ``load_results(folder)`` reads it back for plots and BD-rate tables.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

import lcomp
from lcomp.baselines import baseline_names, get_baseline
from lcomp.configs import parse_value
from lcomp.data import (
    KODAK_ENV_VAR,
    ArraySource,
    EmbeddedSource,
    FolderSource,
    ImageSource,
    kodak_dir,
    load_image,
    verify_sha256sums,
)
from lcomp.errors import BitstreamError, ConfigError, ImageError, LcompError
from lcomp.interface import RateDistortionCodec
from lcomp.metrics import MS_SSIM_MIN_SIDE, ms_ssim, ms_ssim_to_db, psnr, psnr_y

#: Mentzer et al.'s grid for rule B.
DEFAULT_BPP_GRID = np.linspace(0.1, 1.4, 50)
#: Rule B keeps a grid point when more than this fraction of the images cover it (as Mentzer et al.).
GRID_COVERAGE = 0.99
AGGREGATIONS = ("A", "B")

PER_IMAGE_FILE = "per_image.jsonl"
BY_SETTING_FILE = "rd_by_setting.csv"
BY_GRID_FILE = "rd_by_bpp_grid.csv"
SUMMARY_FILE = "summary.md"
META_FILE = "meta.json"
OUTPUT_FILES = (PER_IMAGE_FILE, BY_SETTING_FILE, BY_GRID_FILE, SUMMARY_FILE, META_FILE)

BY_SETTING_COLUMNS = (
    "codec", "setting", "n_images", "bpp", "bpp_estimated", "header_bytes", "psnr", "psnr_y", "ms_ssim",
    "ms_ssim_db", "n_psnr_inf", "encode_s", "decode_s",
)  # fmt: skip
BY_GRID_COLUMNS = ("codec", "bpp", "n_images", "psnr", "psnr_y", "ms_ssim", "ms_ssim_db")


# --- images ---------------------------------------------------------------------------------------------------

#: The Kodak folder (``$LCOMP_KODAK``, else ``../shared/data/kodak``); an alias of ``lcomp.data.kodak_dir``.
default_images_dir = kodak_dir

CHECKSUM_FILE = "SHA256SUMS"


class _PathsSource(ImageSource):
    """Image files given one by one (decoded with ``lcomp.data.load_image``, like every other source)."""

    def __init__(self, paths: Sequence[str | Path]):
        self.paths = [Path(p) for p in paths]
        super().__init__([p.stem for p in self.paths], cache=False)

    def _load(self, index: int) -> np.ndarray:
        return load_image(self.paths[index])


def _as_source(images) -> ImageSource:
    """A folder, an ``ImageSource``, a list of image paths, or a mapping name -> uint8 array, as a source."""
    if isinstance(images, ImageSource):
        return images
    if isinstance(images, (str, Path)):
        return FolderSource(images, cache=False)
    if isinstance(images, Mapping):
        return ArraySource(list(images.values()), names=[str(k) for k in images])
    paths = list(images)
    if not paths:
        raise ImageError("no images to evaluate")
    return _PathsSource(paths)


def _describe_source(source: ImageSource) -> tuple[str, str]:
    """(data set name, where the images come from) for the results' metadata."""
    if isinstance(source, FolderSource):
        return source.root.name, str(source.root)
    if isinstance(source, EmbeddedSource):
        return f"embedded-{source.split}", str(source.root)
    paths = getattr(source, "paths", None)
    if paths:
        return Path(paths[0]).parent.name, str(Path(paths[0]).parent)
    return "arrays", "in-memory arrays"


def verify_checksums(source: ImageSource, count: int, required: bool = False) -> bool:
    """Checks the first ``count`` images' files against the ``SHA256SUMS`` file of their folder.

    Uses ``lcomp.data.verify_sha256sums`` (every file the list names is hashed, as for Kodak). Returns False
    when there is no list to check against or the images are not files, unless ``required``; raises
    ``ImageError`` when a file does not match or an evaluated file is not listed.
    """
    paths = [Path(p) for p in (getattr(source, "paths", None) or [])][:count]
    folders = {p.parent for p in paths}
    if len(paths) != count or len(folders) != 1 or not (paths[0].parent / CHECKSUM_FILE).is_file():
        if required:
            raise ImageError(f"cannot verify these images: no {CHECKSUM_FILE} next to them")
        return False
    folder = folders.pop()
    verified = set(verify_sha256sums(folder))
    unlisted = [p.name for p in paths if p.name not in verified]
    if unlisted:
        raise ImageError(f"{', '.join(unlisted)} not listed in {folder / CHECKSUM_FILE}; cannot verify them")
    return True


# --- learned codecs ------------------------------------------------------------------------------------------


def resolve_codec(name: str | None = None, checkpoint: str | Path | None = None) -> RateDistortionCodec:
    """A classical codec by name (``lcomp.baselines``), or a learned model (``lcomp.models.LoadedModel``):
    the shipped model of a registered codec by name, or a trained model from a checkpoint."""
    if checkpoint is None:
        if not name:
            raise ConfigError("give a codec name (--codec) or a trained model (--checkpoint DIR)")
        if name in baseline_names():
            return get_baseline(name)
    from lcomp import models  # jax/flax/orbax: only when a learned codec is asked for
    from lcomp.codecs import registry

    if checkpoint is not None:
        loaded = models.load_model(checkpoint)
        if name and name != loaded.codec.name:
            raise ConfigError(f"--codec {name} does not match the model in {checkpoint}, a {loaded.codec.name} model")
        return loaded
    if name not in registry.names():
        raise ConfigError(
            f"unknown codec {name!r}; classical codecs: {', '.join(baseline_names())}; learned codecs "
            f"(shipped models): {', '.join(registry.names()) or 'none'}; or a trained model with --checkpoint DIR"
        )
    return models.load_shipped(name)


def _model_meta(codec: RateDistortionCodec) -> dict[str, str] | None:
    """Where a learned codec's variables come from (``source``, ``fingerprint``); None for a classical codec."""
    fingerprint = getattr(codec, "fingerprint", None)
    if not isinstance(fingerprint, bytes):
        return None
    return {"source": str(getattr(codec, "source", "")), "fingerprint": fingerprint.hex()}


# --- evaluation ----------------------------------------------------------------------------------------------


def setting_id(setting: Mapping[str, Any]) -> str:
    """A stable text form of a setting, e.g. ``quality=50`` or ``default``."""
    return ",".join(f"{k}={setting[k]}" for k in sorted(setting)) or "default"


@jax.jit
def _image_metrics(original, decoded):
    return psnr(original, decoded), psnr_y(original, decoded)


_ms_ssim = jax.jit(ms_ssim)


def measure_quality(original: np.ndarray, decoded: np.ndarray) -> dict[str, float | None]:
    """PSNR, PSNR-Y, MS-SSIM and MS-SSIM in dB of a decoded 8-bit image (MS-SSIM None below its minimum size)."""
    value_psnr, value_psnr_y = (float(v) for v in _image_metrics(original, decoded))
    result = {"psnr": value_psnr, "psnr_y": value_psnr_y, "ms_ssim": None, "ms_ssim_db": None}
    if min(original.shape[:2]) >= MS_SSIM_MIN_SIDE:  # smaller images have no MS-SSIM (no shrinking window)
        value = float(_ms_ssim(original, decoded))
        result.update(ms_ssim=value, ms_ssim_db=float(ms_ssim_to_db(value)))
    return result


def _finite_mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def aggregate_by_setting(records: Sequence[Mapping[str, Any]], codec: str) -> list[dict[str, Any]]:
    """Rule A: one row per setting (in sweep order), means over the images."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault(record["setting_id"], []).append(record)
    rows = []
    for sid, group in groups.items():
        ms = [r["ms_ssim"] for r in group]
        mean_ms = None if any(v is None for v in ms) else float(np.mean(ms))
        estimated = [r["bpp_estimated"] for r in group]
        headers = [r["header_bytes"] for r in group]
        rows.append(
            {
                "codec": codec,
                "setting": sid,
                "n_images": len(group),
                "bpp": float(np.mean([r["bpp"] for r in group])),
                "bpp_estimated": None if None in estimated else float(np.mean(estimated)),
                "header_bytes": None if None in headers else float(np.mean(headers)),
                "psnr": _finite_mean(r["psnr"] for r in group),
                "psnr_y": _finite_mean(r["psnr_y"] for r in group),
                "ms_ssim": mean_ms,
                "ms_ssim_db": None if mean_ms is None else float(ms_ssim_to_db(mean_ms)),
                "n_psnr_inf": sum(1 for r in group if math.isinf(r["psnr"])),
                "encode_s": float(np.mean([r["encode_s"] for r in group])),
                "decode_s": float(np.mean([r["decode_s"] for r in group])),
            }
        )
    return rows


def aggregate_on_bpp_grid(
    records: Sequence[Mapping[str, Any]], codec: str, grid: Sequence[float] = DEFAULT_BPP_GRID
) -> list[dict[str, Any]]:
    """Rule B: per-image linear interpolation on ``grid`` (no extrapolation), then the mean per grid point."""
    grid = np.asarray(grid, dtype=np.float64)
    by_image: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        by_image.setdefault(record["image"], []).append(record)
    metrics = ("psnr", "psnr_y", "ms_ssim")
    sums = {m: np.zeros_like(grid) for m in metrics}
    counts = {m: np.zeros(grid.shape, np.int64) for m in metrics}
    for group in by_image.values():
        bpp = np.array([r["bpp"] for r in group])
        for m in metrics:
            values = np.array([np.nan if r[m] is None else r[m] for r in group], dtype=np.float64)
            ok = np.isfinite(values)
            if ok.sum() < 2:
                continue
            # Equal rates (a saturated knob) are merged so that the interpolation nodes increase strictly.
            nodes, inverse = np.unique(bpp[ok], return_inverse=True)
            node_values = np.bincount(inverse, weights=values[ok]) / np.bincount(inverse)
            covered = (grid >= nodes[0]) & (grid <= nodes[-1])
            sums[m][covered] += np.interp(grid[covered], nodes, node_values)
            counts[m][covered] += 1
    n_images = len(by_image)
    rows = []
    for i, bpp in enumerate(grid):
        if counts["psnr"][i] <= GRID_COVERAGE * n_images:
            continue
        row = {"codec": codec, "bpp": float(bpp), "n_images": int(counts["psnr"][i])}
        for m in metrics:
            row[m] = float(sums[m][i] / counts[m][i]) if counts[m][i] > GRID_COVERAGE * n_images else None
        row["ms_ssim_db"] = None if row["ms_ssim"] is None else float(ms_ssim_to_db(row["ms_ssim"]))
        rows.append(row)
    return rows


@dataclasses.dataclass
class EvalResults:
    """Everything one evaluation produced (also what ``load_results`` reads back from its folder)."""

    meta: dict[str, Any]
    records: list[dict[str, Any]]
    by_setting: list[dict[str, Any]] | None
    by_bpp_grid: list[dict[str, Any]] | None

    def curve(self, metric: str = "psnr", rule: str = "A", rate: str = "real") -> tuple[np.ndarray, np.ndarray]:
        """``(bpp, quality)`` of the aggregated curve; ``rate="estimated"`` (rule A only) uses model estimates."""
        rows = self.by_setting if rule == "A" else self.by_bpp_grid
        if rows is None:
            raise LcompError(f"these results have no rule-{rule} aggregation; rerun with --aggregate {rule}")
        if rate not in ("real", "estimated") or (rate == "estimated" and rule != "A"):
            raise LcompError(f"rate must be 'real' (or 'estimated' with rule A), got {rate!r} with rule {rule}")
        column = "bpp" if rate == "real" else "bpp_estimated"
        points = [(r[column], r[metric]) for r in rows if r.get(column) is not None and r.get(metric) is not None]
        if not points:
            hint = f" (MS-SSIM needs images of at least {MS_SSIM_MIN_SIDE} px per side)" if "ms_ssim" in metric else ""
            raise LcompError(f"no {rate} {metric} values in these results{hint}")
        bpp, quality = np.array(points, dtype=np.float64).T
        return bpp, quality


def _versions() -> dict[str, str]:
    import PIL

    return {"lcomp": lcomp.__version__, "jax": jax.__version__, "numpy": np.__version__, "pillow": PIL.__version__}


def warmup_image(shape: Sequence[int]) -> np.ndarray:
    """A smooth colour gradient of ``shape`` (H x W x 3): what the untimed warm-up encodes.

    JIT compilation and library loading depend on the shape and the setting, not on the pixels, so the
    warm-up needs no evaluated image; encoding the real image a second time would only double the cost.
    """
    height, width = int(shape[0]), int(shape[1])
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    y, x = y / max(height - 1, 1), x / max(width - 1, 1)
    gradient = np.stack([x, y, 1.0 - (x + y) / 2.0], axis=-1)
    return np.round(255.0 * gradient).astype(np.uint8)


def _warm_up(codec: RateDistortionCodec, shape: tuple[int, ...], setting: dict) -> None:
    """One untimed round trip of ``warmup_image(shape)`` at ``setting`` (compiles, loads libraries)."""
    codec.decode(codec.encode(warmup_image(shape), **setting).data)


def _round_trip(codec: RateDistortionCodec, name: str, original: np.ndarray, setting: dict) -> dict[str, Any]:
    """Encodes ``original`` once, decodes the file, and returns the per-image record (rate, quality, time).

    The real rate (the file's length) and the model's estimate come from that one encode."""
    sid = setting_id(setting)
    start = time.perf_counter()
    compressed = codec.encode(original, **setting)
    encode_s = time.perf_counter() - start
    data = compressed.data
    start = time.perf_counter()
    decoded = np.asarray(codec.decode(data))
    decode_s = time.perf_counter() - start
    if decoded.shape != original.shape or decoded.dtype != np.uint8:
        raise BitstreamError(
            f"{codec.name} at {sid} decoded {name} to {decoded.dtype} {decoded.shape}, expected uint8 {original.shape}"
        )
    estimated_bits = compressed.estimated_bits
    height, width = original.shape[:2]
    pixels = height * width
    return {
        "codec": codec.name,
        "image": name,
        "height": height,
        "width": width,
        "setting": setting,
        "setting_id": sid,
        "bytes": len(data),
        "bpp": 8.0 * len(data) / pixels,
        "bpp_estimated": None if estimated_bits is None else estimated_bits / pixels,
        **codec.file_layout(data),  # header_bytes, part_bytes
        **measure_quality(original, decoded),
        "encode_s": encode_s,
        "decode_s": decode_s,
    }


def evaluate_codec(
    codec: RateDistortionCodec,
    images,
    out_dir: str | Path | None = None,
    *,
    settings: Sequence[Mapping[str, Any]] | None = None,
    aggregate: Sequence[str] = ("A",),
    max_images: int | None = None,
    bpp_grid: Sequence[float] = DEFAULT_BPP_GRID,
    warmup: bool = True,
    progress: bool = True,
    dataset: str | None = None,
    require_checksums: bool = False,
) -> EvalResults:
    """Evaluates ``codec`` on ``images``: a folder, an ``lcomp.data.ImageSource``, a list of image paths, or a
    mapping name -> uint8 array. Files are decoded with ``lcomp.data.load_image``.

    ``settings`` overrides the codec's own sweep. ``aggregate`` picks rule "A", "B" or both. Image files are
    checked against a ``SHA256SUMS`` file in their folder when there is one (``require_checksums``: there must
    be one). With ``out_dir`` the results are also written there (see the module docstring).
    """
    aggregate = tuple(a.upper() for a in aggregate)
    if not aggregate or any(a not in AGGREGATIONS for a in aggregate):
        raise ConfigError(f"aggregate must be a subset of {AGGREGATIONS}, got {aggregate}")
    if max_images is not None and max_images < 1:
        raise ConfigError(f"max_images must be at least 1, got {max_images}")
    source = _as_source(images)
    count = len(source) if max_images is None else min(max_images, len(source))
    default_dataset, where = _describe_source(source)
    checksums = verify_checksums(source, count, required=require_checksums)
    settings = [dict(s) for s in (codec.settings() if settings is None else settings)]
    if not settings:
        raise ConfigError(f"codec {codec.name} has no settings to evaluate")

    records: list[dict[str, Any]] = []
    warmed: set[tuple[tuple[int, ...], str]] = set()
    bar = tqdm(total=count * len(settings), desc=f"eval {codec.name}", unit="file", disable=not progress)
    try:
        for index in range(count):
            name, original = source.names[index], source[index]
            for setting in settings:
                sid = setting_id(setting)
                bar.set_postfix_str(f"{name} {sid}")
                if warmup and (original.shape, sid) not in warmed:
                    _warm_up(codec, original.shape, setting)
                    warmed.add((original.shape, sid))
                records.append(_round_trip(codec, name, original, setting))
                bar.update()
    except BaseException:
        bar.leave = False  # the error message then starts on a clean line, not behind a half-drawn bar
        raise
    finally:
        bar.close()

    device = jax.devices()[0]
    meta = {
        "codec": codec.name,
        "label": codec.label,
        "model": _model_meta(codec),
        "dataset": dataset or default_dataset,
        "images": where,
        "n_images": count,
        "checksums_verified": checksums,
        "settings": settings,
        "aggregation": list(aggregate),
        "rate": (
            "real: 8 * whole-file bytes / (H * W); bpp_estimated: the model's estimate of the payload where it "
            "has one; header_bytes and part_bytes from the container where the file is an lcomp container"
        ),
        "psnr_mean": "mean of per-image PSNR, infinite values excluded (counted in n_psnr_inf)",
        "ms_ssim_mean": "linear mean over images, then converted to dB",
        "bpp_grid": [float(b) for b in np.asarray(bpp_grid)] if "B" in aggregate else None,
        "timing": (
            "wall time per call, batch size 1; each image is encoded once per setting (real and estimated rate "
            "from that one encode)"
            + (
                ", after one untimed warm-up round trip per image shape and setting on a synthetic gradient of "
                "that shape (never the evaluated image)"
                if warmup
                else ", without a warm-up (the first call per shape and setting includes compilation)"
            )
        ),
        "device": f"{device.platform} ({device.device_kind})",
        "cpu_count": os.cpu_count(),
        "host": platform.platform(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    results = EvalResults(
        meta=meta,
        records=records,
        by_setting=aggregate_by_setting(records, codec.name) if "A" in aggregate else None,
        by_bpp_grid=aggregate_on_bpp_grid(records, codec.name, bpp_grid) if "B" in aggregate else None,
    )
    if out_dir is not None:
        write_results(results, out_dir)
    return results


# --- files ---------------------------------------------------------------------------------------------------


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _write_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(_csv_cell(row.get(c)) for c in columns)


def _read_csv(path: Path) -> list[dict[str, Any]]:
    def parse(column: str, text: str):
        if text == "":
            return None
        if column in ("codec", "setting"):
            return text
        number = float(text)
        return int(number) if column.startswith("n_") else number

    with path.open(newline="") as f:
        return [{k: parse(k, v) for k, v in row.items()} for row in csv.DictReader(f)]


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def format_summary(results: EvalResults) -> str:
    meta = results.meta
    lines = [
        f"# RD evaluation: {meta['codec']}",
        "",
        f"- Codec: {meta['label']}",
        *([f"- Model: {meta['model']['source']}, fingerprint {meta['model']['fingerprint']}"] if meta.get("model") else []),
        f"- Images: {meta['n_images']} from `{meta['images']}` (data set `{meta['dataset']}`; "
        f"SHA-256 {'verified' if meta['checksums_verified'] else 'not checked'})",
        f"- Rate: {meta['rate']}",
        f"- PSNR: {meta['psnr_mean']}; MS-SSIM: {meta['ms_ssim_mean']}",
        f"- Timing: {meta['timing']}; device {meta['device']}, {meta['cpu_count']} CPUs",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}; created {meta['created']}",
        "",
    ]
    if results.by_setting is not None:
        lines += [
            "## Rule A: mean over images at each setting",
            "",
            "| Setting | bpp (real) | bpp (estimated) | header (bytes) | PSNR (dB) | PSNR-Y (dB) | MS-SSIM "
            "| MS-SSIM (dB) | encode (s) | decode (s) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results.by_setting:
            lines.append(
                f"| {r['setting']} | {_fmt(r['bpp'], 4)} | {_fmt(r['bpp_estimated'], 4)} "
                f"| {_fmt(r['header_bytes'], 1)} | {_fmt(r['psnr'])} "
                f"| {_fmt(r['psnr_y'])} | {_fmt(r['ms_ssim'], 5)} | {_fmt(r['ms_ssim_db'])} "
                f"| {_fmt(r['encode_s'], 4)} | {_fmt(r['decode_s'], 4)} |"
            )
        lines.append("")
    if results.by_bpp_grid is not None:
        lines += [
            "## Rule B: per-image interpolation on a bpp grid (real bpp), mean per grid point",
            "",
            "| bpp | images | PSNR (dB) | PSNR-Y (dB) | MS-SSIM | MS-SSIM (dB) |",
            "|---|---|---|---|---|---|",
        ]
        for r in results.by_bpp_grid:
            lines.append(
                f"| {r['bpp']:.4f} | {r['n_images']} | {_fmt(r['psnr'])} | {_fmt(r['psnr_y'])} "
                f"| {_fmt(r['ms_ssim'], 5)} | {_fmt(r['ms_ssim_db'])} |"
            )
        if not results.by_bpp_grid:
            lines.append("| (no grid point is covered by the images' rate ranges) | | | | | |")
        lines.append("")
    return "\n".join(lines)


def write_results(results: EvalResults, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / PER_IMAGE_FILE).open("w") as f:
        for record in results.records:
            # json writes inf as Infinity, which Python's json reads back.
            f.write(json.dumps(record) + "\n")
    for name in (BY_SETTING_FILE, BY_GRID_FILE):
        (out / name).unlink(missing_ok=True)  # never leave a stale aggregation from an earlier run
    if results.by_setting is not None:
        _write_csv(results.by_setting, BY_SETTING_COLUMNS, out / BY_SETTING_FILE)
    if results.by_bpp_grid is not None:
        _write_csv(results.by_bpp_grid, BY_GRID_COLUMNS, out / BY_GRID_FILE)
    (out / META_FILE).write_text(json.dumps(results.meta, indent=2) + "\n")
    (out / SUMMARY_FILE).write_text(format_summary(results))
    return out


def load_results(folder: str | Path) -> EvalResults:
    """Reads an evaluation folder written by ``evaluate_codec`` / ``lcomp eval``."""
    folder = Path(folder)
    if not (folder / META_FILE).is_file():
        raise LcompError(f"{folder} is not an lcomp evaluation folder (no {META_FILE})")
    meta = json.loads((folder / META_FILE).read_text())
    records = []
    if (folder / PER_IMAGE_FILE).is_file():
        records = [json.loads(line) for line in (folder / PER_IMAGE_FILE).read_text().splitlines() if line]
    by_setting = _read_csv(folder / BY_SETTING_FILE) if (folder / BY_SETTING_FILE).is_file() else None
    by_grid = _read_csv(folder / BY_GRID_FILE) if (folder / BY_GRID_FILE).is_file() else None
    return EvalResults(meta, records, by_setting, by_grid)


# --- command line ------------------------------------------------------------------------------------------


def parse_settings(text: str) -> list[dict[str, Any]]:
    """``--settings``: a JSON list of dicts, or ``knob=v1,v2,...`` for a one-knob sweep."""
    text = text.strip()
    if text.startswith("["):
        try:
            settings = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--settings is not valid JSON: {exc}") from exc
        if not isinstance(settings, list) or not all(isinstance(s, dict) for s in settings):
            raise ConfigError("--settings JSON must be a list of objects, e.g. '[{\"quality\": 50}]'")
        return settings
    knob, sep, values = text.partition("=")
    if not sep or not knob.strip() or not values.strip():
        raise ConfigError(f"--settings must be JSON or 'knob=v1,v2,...', got {text!r}")
    return [{knob.strip(): parse_value(v.strip())} for v in values.split(",") if v.strip()]


EVAL_DESCRIPTION = f"""\
Encodes every image at every setting of the codec's sweep to a real file, decodes it, and measures
real bpp (8 x whole-file bytes / pixels), PSNR, PSNR-Y and MS-SSIM on the decoded 8-bit RGB image.
Learned codecs also report their estimated bpp and the container's header and part bytes.

Writes into --out: {PER_IMAGE_FILE} (one record per image and setting), {BY_SETTING_FILE} (rule A),
{BY_GRID_FILE} (rule B, with --aggregate B), {SUMMARY_FILE} and {META_FILE}. Feed the folder to
`lcomp plot` and `lcomp bdrate`.

examples:
  lcomp eval --codec jpeg420 --out runs/jpeg420                      # 24 Kodak images, checksums verified
  lcomp eval --codec webp --images DIR --settings quality=20,50,80 --out runs/webp
  lcomp eval --checkpoint WORKDIR --max-images 4 --out runs/mine     # a trained model
"""


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--codec", help=f"a classical codec ({', '.join(baseline_names())}) or a codec with a shipped model"
    )
    source.add_argument(
        "--checkpoint", type=Path, metavar="DIR", help="a trained model: a training workdir or exported model folder"
    )
    parser.add_argument(
        "--images", type=Path, metavar="DIR",
        help=f"folder of images (default: Kodak from ${KODAK_ENV_VAR} or ../shared/data/kodak, SHA-256 verified)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument(
        "--settings", metavar="SWEEP",
        help="replace the codec's sweep: 'knob=v1,v2,...' (e.g. quality=20,50,80) or a JSON list of settings",
    )  # fmt: skip
    parser.add_argument("--max-images", type=int, metavar="N", help="only the first N images (sorted by name)")
    parser.add_argument(
        "--aggregate",
        default="A",
        help="A: mean over images per setting (default); B: per-image interpolation on a bpp grid "
        "(Mentzer et al.); A,B: both",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_eval(args: argparse.Namespace) -> int:
    if args.images is None:
        images = kodak_dir()
        if not images.is_dir():
            raise ImageError(f"the Kodak images are not at {images}; set {KODAK_ENV_VAR} or pass --images DIR")
    else:
        images = args.images
    codec = resolve_codec(args.codec, args.checkpoint)
    aggregate = tuple(a.strip() for a in str(args.aggregate).split(",") if a.strip())
    results = evaluate_codec(
        codec,
        images,
        args.out,
        settings=None if args.settings is None else parse_settings(args.settings),
        aggregate=aggregate,
        max_images=args.max_images,
        progress=not args.no_progress,
        require_checksums=args.images is None,  # the default test set is always verified
    )
    print(format_summary(results))
    written = [name for name in OUTPUT_FILES if (args.out / name).is_file()]
    print(f"wrote {args.out}/: {', '.join(written)}")
    return 0
