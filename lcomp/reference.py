"""Published rate-distortion curves, loadable by name.

The data files live in ``lcomp/reference_data/`` (package data; see the README there for sources, licences
and caveats) as ``<dataset>/<METRIC>_sRGB_<COLOUR>/<name>.txt``. ``load_curve("jpeg420")`` returns the Kodak
JPEG 4:2:0 curve on RGB PSNR; ``metric="ms_ssim_db"`` converts the linear MS-SSIM files to dB.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import io
import re

import numpy as np

from lcomp.errors import LcompError
from lcomp.metrics import ms_ssim_to_db

DATASETS = ("kodak", "tecnick")
METRICS = ("psnr", "ms_ssim", "ms_ssim_db")
COLOURS = ("rgb", "y")

_METRIC_FOLDER = {"psnr": "PSNR", "ms_ssim": "MS-SSIM", "ms_ssim_db": "MS-SSIM"}
_COLOUR_FOLDER = {"rgb": "RGB", "y": "Y"}
_LABEL_PATTERN = re.compile(r'data for "([^"]+)"')

#: What kind of rate a published curve reports, where the spec records it (section 3.2).
_RATE_KIND = {"toderici-2017-cvpr": "raw"}
#: Curves aggregated by per-image interpolation on a bpp grid (rule B) instead of a mean at a fixed setting.
_AGGREGATION = {"mentzer-2018-cvpr": "B"}


@dataclasses.dataclass(frozen=True)
class Curve:
    """A published RD curve: points as given in the file (not sorted, not cleaned)."""

    bpp: np.ndarray
    quality: np.ndarray
    label: str  # the method's name as its file states it, e.g. "JPEG (4:2:0)"
    source: str  # where the numbers come from, e.g. "published (tensorflow/compression ...): kodak/PSNR_sRGB_RGB/jpeg420.txt"
    name: str = ""
    dataset: str = "kodak"
    metric: str = "psnr"
    colour: str = "rgb"
    rate_kind: str = "published"  # "raw" where the paper's rate is before entropy coding
    aggregation: str = "A"  # "A": mean at a fixed setting; "B": per-image interpolation on a bpp grid

    def describe(self) -> str:
        """A plot/table label stating method, rate kind, aggregation, data set and colour."""
        rate = "raw bpp" if self.rate_kind == "raw" else "bpp as published"
        return f"{self.label} [{rate}, rule {self.aggregation}, {self.dataset}, {self.colour.upper()}] (published)"


def _check_choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    value = value.lower()
    if value not in allowed:
        raise LcompError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
    return value


def _folder(dataset: str, metric: str, colour: str):
    dataset = _check_choice(dataset, DATASETS, "data set")
    metric = _check_choice(metric, METRICS, "metric")
    colour = _check_choice(colour, COLOURS, "colour")
    root = importlib.resources.files("lcomp") / "reference_data" / dataset
    return root / f"{_METRIC_FOLDER[metric]}_sRGB_{_COLOUR_FOLDER[colour]}", dataset, metric, colour


def list_curves(dataset: str = "kodak", metric: str = "psnr", colour: str = "rgb") -> list[str]:
    """Names of the curves available for this data set, metric and colour."""
    folder, *_ = _folder(dataset, metric, colour)
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".txt")] for p in folder.iterdir() if p.name.endswith(".txt"))


def load_curve(name: str, dataset: str = "kodak", metric: str = "psnr", colour: str = "rgb") -> Curve:
    """One published curve. ``metric`` is "psnr", "ms_ssim" (linear) or "ms_ssim_db"."""
    folder, dataset, metric, colour = _folder(dataset, metric, colour)
    path = folder / f"{name}.txt"
    if not path.is_file():
        available = ", ".join(list_curves(dataset, metric, colour)) or "none"
        raise LcompError(
            f"no published curve {name!r} for {dataset} / {metric} / {colour.upper()}; available: {available}"
        )
    text = path.read_text()
    try:
        points = np.loadtxt(io.StringIO(text), delimiter=",", comments="#", ndmin=2)
    except ValueError as exc:
        raise LcompError(f"cannot parse reference file {path}: {exc}") from exc
    if points.shape[1] != 2 or not np.all(np.isfinite(points)):
        raise LcompError(f"reference file {path} must hold finite 'bpp, value' pairs")
    quality = points[:, 1]
    if metric == "ms_ssim_db":
        quality = ms_ssim_to_db(quality)
    match = _LABEL_PATTERN.search(text)
    relative = f"{dataset}/{path.parent.name}/{path.name}"
    source = (
        f"published, transcribed from the paper's Figure 1 list (fab-jul/imgcomp-cvpr README): {relative}"
        if name in _AGGREGATION
        else f"published, tensorflow/compression@dda8cb4 results/image_compression: {relative}"
    )
    return Curve(
        bpp=points[:, 0],
        quality=quality,
        label=match.group(1) if match else name,
        source=source,
        name=name,
        dataset=dataset,
        metric=metric,
        colour=colour,
        rate_kind=_RATE_KIND.get(name, "published"),
        aggregation=_AGGREGATION.get(name, "A"),
    )
