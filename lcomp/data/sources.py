"""Image sources: ordered, indexable collections of images (a folder, the embedded photographs, a tfds
data set, arrays, Kodak) and `make_source`, which builds one from a config section.
"""

from __future__ import annotations

import abc
import importlib.util
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lcomp.data.images import array_to_rgb8, load_image
from lcomp.data.kodak import KODAK_ENV_VAR, kodak_dir, verify_kodak
from lcomp.errors import ConfigError, ImageError

#: File name suffixes that FolderSource picks up by default (compared case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif")


class ImageSource(abc.ABC):
    """An ordered, indexable collection of images; ``source[i]`` is a read-only uint8 ``(H, W, 3)`` array.

    Images are decoded on first access (so building a source over a large folder is instant) and, with
    ``cache=True``, kept in memory afterwards. The returned arrays are read-only because a cached array is
    shared; copy one before modifying it. Subclasses set ``names`` and implement ``_load(index)``.
    """

    names: list[str]

    def __init__(self, names: Sequence[str], cache: bool = True):
        self.names = list(names)
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        self._cache_lock = threading.Lock()  # the prefetch thread of TrainBatches reads sources too

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> np.ndarray:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"image sources are indexed by int, got {type(index).__name__}")
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"image index {index} out of range for a source of {len(self)} images")
        if self._cache is not None:
            with self._cache_lock:
                cached = self._cache.get(index)
            if cached is not None:
                return cached
        image = np.asarray(self._load(index))
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ImageError(f"{self.names[index]}: source produced {image.dtype} {image.shape}, not uint8 (H, W, 3)")
        image.flags.writeable = False
        if self._cache is not None:
            with self._cache_lock:
                image = self._cache.setdefault(index, image)
        return image

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(len(self)):
            yield self[index]

    @abc.abstractmethod
    def _load(self, index: int) -> np.ndarray:
        """Decode image ``index`` (already bounds-checked) into uint8 (H, W, 3)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images)"


class ArraySource(ImageSource):
    """Images already in memory (uint8 ``(H, W, 3)`` arrays); handy for tests and notebooks."""

    def __init__(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None):
        arrays = [np.asarray(image) for image in images]
        if not arrays:
            raise ConfigError("ArraySource needs at least one image")
        for i, image in enumerate(arrays):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
                raise ImageError(f"ArraySource image {i} is {image.dtype} {image.shape}, not uint8 (H, W, 3)")
        if names is None:
            names = [f"image{i:04d}" for i in range(len(arrays))]
        if len(names) != len(arrays):
            raise ConfigError(f"ArraySource got {len(arrays)} images but {len(names)} names")
        super().__init__(names, cache=False)
        self._arrays = [image.copy() for image in arrays]  # later changes by the caller do not leak in
        for image in self._arrays:
            image.flags.writeable = False

    def _load(self, index: int) -> np.ndarray:
        return self._arrays[index]


class FolderSource(ImageSource):
    """The image files in a folder, in sorted order.

    Args:
      path: the folder.
      recursive: also look in subfolders (paths are sorted as relative POSIX paths).
      extensions: file suffixes to include, case-insensitive. Hidden files (names starting with ".") are skipped.
      cache: keep decoded images in memory.

    ``names`` are the relative paths without their suffix (``kodim01``, ``sub/photo``); if two files differ only
    in their suffix, all names keep the suffix so that names stay unique. ``paths`` lists the files.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        recursive: bool = False,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
        cache: bool = True,
    ):
        self.root = Path(path).expanduser()
        if not self.root.exists():
            raise ConfigError(f"image folder {self.root} does not exist")
        if not self.root.is_dir():
            raise ConfigError(f"{self.root} is not a folder")
        if isinstance(extensions, str):
            extensions = [extensions]
        suffixes = {("." + ext.lstrip(".")).lower() for ext in extensions}
        candidates = self.root.rglob("*") if recursive else self.root.iterdir()
        relative_paths = sorted(
            p.relative_to(self.root).as_posix()
            for p in candidates
            if p.suffix.lower() in suffixes
            and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
            and p.is_file()
        )
        if not relative_paths:
            raise ConfigError(
                f"image folder {self.root} contains no images with suffix {', '.join(sorted(suffixes))}"
                + ("" if recursive else " (subfolders are not searched; use recursive=True)")
            )
        self.paths = [self.root / rel for rel in relative_paths]
        stems = [rel[: -len(Path(rel).suffix)] for rel in relative_paths]
        names = stems if len(set(stems)) == len(stems) else relative_paths
        super().__init__(names, cache=cache)

    def _load(self, index: int) -> np.ndarray:
        return load_image(self.paths[index])

    def __repr__(self) -> str:
        return f"FolderSource({str(self.root)!r}, {len(self)} images)"


#: The colour photographs that scikit-image ships inside its wheel (``skimage/data/``), in the fixed order of
#: EmbeddedSource. Left out on purpose: gray images, synthetic test charts (color.png, chessboard, phantom)
#: and images with alpha (logo.png, horse.png).
EMBEDDED_PHOTOGRAPHS = (
    "astronaut.png",  # 512 x 512, portrait of an astronaut
    "chelsea.png",  # 451 x 300, a cat
    "coffee.png",  # 600 x 400, a cup of coffee
    "hubble_deep_field.jpg",  # 1000 x 872, galaxies on a black sky
    "ihc.png",  # 512 x 512, stained tissue under a microscope
    "motorcycle_left.png",  # 741 x 500, left view of a stereo pair
    "motorcycle_right.png",  # 741 x 500, right view of the same pair
    "retina.jpg",  # 1411 x 1411, fundus photograph
    "rocket.jpg",  # 640 x 427, a rocket on its launch pad
)

#: The photographs held out for evaluation (``EmbeddedSource(split="eval")``): two ordinary scenes that share
#: nothing with the training images (the stereo pair stays together in the training split).
EMBEDDED_EVAL_PHOTOGRAPHS = ("chelsea.png", "coffee.png")


def _skimage_data_dir() -> Path:
    """skimage/data inside the installed package, found without importing skimage or touching the network."""
    spec = importlib.util.find_spec("skimage")  # a top-level lookup: does not execute skimage/__init__.py
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the embedded photographs come with scikit-image, which is not installed")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data"
        if candidate.is_dir():
            return candidate
    raise ConfigError("scikit-image is installed without its data folder (skimage/data)")


class EmbeddedSource(ImageSource):
    """Real colour photographs that need no download: the ones scikit-image ships in its wheel.

    Args:
      split: ``"train"`` (all but the held-out images), ``"eval"`` (:data:`EMBEDDED_EVAL_PHOTOGRAPHS`) or
        ``"all"``; order always follows :data:`EMBEDDED_PHOTOGRAPHS`.
      cache: keep decoded images in memory (the nine photographs take about 14 MB).

    Files are read straight from the installed package folder; scikit-image's fetchers (which may download)
    are never used. A photograph missing from an unusual scikit-image build is skipped.
    """

    SPLITS = ("train", "eval", "all")

    def __init__(self, split: str = "all", cache: bool = True):
        if split not in self.SPLITS:
            raise ConfigError(f"EmbeddedSource split must be one of {self.SPLITS}, got {split!r}")
        self.split = split
        self.root = _skimage_data_dir()
        if split == "eval":
            wanted = [f for f in EMBEDDED_PHOTOGRAPHS if f in EMBEDDED_EVAL_PHOTOGRAPHS]
        elif split == "train":
            wanted = [f for f in EMBEDDED_PHOTOGRAPHS if f not in EMBEDDED_EVAL_PHOTOGRAPHS]
        else:
            wanted = list(EMBEDDED_PHOTOGRAPHS)
        self.paths = [self.root / f for f in wanted if (self.root / f).is_file()]
        if not self.paths:
            raise ConfigError(f"none of the embedded photographs of split {split!r} exist in {self.root}")
        super().__init__([p.stem for p in self.paths], cache=cache)

    def _load(self, index: int) -> np.ndarray:
        return load_image(self.paths[index])

    def __repr__(self) -> str:
        return f"EmbeddedSource(split={self.split!r}, {len(self)} images)"


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ConfigError(
            "the tfds source needs tensorflow-datasets, an optional extra: pip install 'lcomp[tfds]'"
        ) from error
    return tfds


class TfdsSource(ImageSource):
    """One split of a prepared TensorFlow Datasets data set, read without TensorFlow.

    Uses ``tfds.data_source`` (random access to ``array_record``/``parquet`` data; TensorFlow not needed).
    Nothing is downloaded unless ``download=True``, so an unprepared data set fails at once instead of
    retrying the network for minutes. Prepare one with ``builder.download_and_prepare(file_format=
    "array_record")``.

    Args:
      name: data set name, optionally with config and version (``"clic/2020:1.0.0"``).
      split: tfds split string (slicing such as ``"train[:1000]"`` works).
      data_dir: tfds data folder (default: tfds' own default, ``~/tensorflow_datasets``).
      download, try_gcs: passed to tfds; both off by default.
      image_key: feature holding the image (uint8 array, or encoded bytes).
      cache: keep decoded images in memory; off by default because tfds data sets can be large.

    ``names`` are ``"<name>/<split>/<index>"``.
    """

    def __init__(
        self,
        name: str,
        split: str = "train",
        data_dir: str | os.PathLike | None = None,
        download: bool = False,
        try_gcs: bool = False,
        image_key: str = "image",
        cache: bool = False,
    ):
        tfds = _import_tfds()
        try:
            self._records = tfds.data_source(
                name,
                split=split,
                data_dir=None if data_dir is None else os.fspath(data_dir),
                download=download,
                try_gcs=try_gcs,
            )
            count = len(self._records)
        except Exception as error:  # DatasetNotFoundError, missing files, wrong file format, ...
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(
                f"cannot open tfds data set {name!r} split {split!r} (data_dir={data_dir}): {first_line}. "
                "Is it prepared in the array_record format? lcomp never downloads unless download=True."
            ) from error
        if count == 0:
            raise ConfigError(f"tfds data set {name!r} split {split!r} is empty")
        self.name, self.split, self.image_key = name, split, image_key
        super().__init__([f"{name}/{split}/{i}" for i in range(count)], cache=cache)

    def _load(self, index: int) -> np.ndarray:
        record = self._records[index]
        if self.image_key not in record:
            raise ConfigError(f"tfds record has no feature {self.image_key!r}; it has {sorted(record)}")
        return array_to_rgb8(record[self.image_key], self.names[index])

    def __repr__(self) -> str:
        return f"TfdsSource({self.name!r}, split={self.split!r}, {len(self)} images)"



# Options each source kind accepts in make_source (besides "source"). Options of other kinds may appear with the
# value None (a locked ConfigDict has to declare every field), anything else is a configuration error.
_SOURCE_OPTIONS = {
    "folder": {"path", "recursive", "extensions", "cache"},
    "embedded": {"split", "cache"},
    "tfds": {"name", "split", "data_dir", "download", "try_gcs", "image_key", "cache"},
    "kodak": {"path", "verify", "cache"},
}


def make_source(spec: Mapping[str, Any] | Any) -> ImageSource:
    """Build an image source from a config section.

    ``spec`` is a dict or an ``ml_collections.ConfigDict`` (or just the kind as a string) with key ``source``:

    - ``{"source": "embedded", "split": "train"}``
    - ``{"source": "folder", "path": "...", "recursive": False, "extensions": [".png"]}``
    - ``{"source": "tfds", "name": "...", "split": "train", "data_dir": None, "download": False}``
    - ``{"source": "kodak", "path": None, "verify": True}``: the Kodak folder (:func:`kodak_dir` unless
      ``path`` is given), hashes checked first.

    Options set to None mean "default". A non-None option that the chosen kind does not use raises
    ConfigError (it is most likely a typo).
    """
    if isinstance(spec, str):
        spec = {"source": spec}
    if hasattr(spec, "to_dict"):  # ml_collections.ConfigDict / FrozenConfigDict
        spec = spec.to_dict()
    if not isinstance(spec, Mapping):
        raise ConfigError(f"a data source spec must be a dict or ConfigDict, got {type(spec).__name__}")
    kind = spec.get("source")
    if kind not in _SOURCE_OPTIONS:
        raise ConfigError(f"unknown data source {kind!r}; choose one of {sorted(_SOURCE_OPTIONS)}")
    options = {key: value for key, value in spec.items() if key != "source" and value is not None}
    unused = sorted(set(options) - _SOURCE_OPTIONS[kind])
    if unused:
        raise ConfigError(
            f"data source {kind!r} does not take option(s) {unused}; it takes {sorted(_SOURCE_OPTIONS[kind])}"
        )

    if kind == "folder":
        if "path" not in options:
            raise ConfigError("data source 'folder' needs a 'path'")
        return FolderSource(**options)
    if kind == "embedded":
        return EmbeddedSource(**options)
    if kind == "tfds":
        if "name" not in options:
            raise ConfigError("data source 'tfds' needs a data set 'name'")
        return TfdsSource(**options)
    return kodak_source(**options)

def kodak_source(path: str | os.PathLike | None = None, verify: bool = True, cache: bool = True) -> FolderSource:
    """The 24 Kodak images as a :class:`FolderSource` (names ``kodim01`` ... ``kodim24``), hashes checked first."""
    folder = Path(path) if path is not None else kodak_dir()
    if not folder.is_dir():
        raise ConfigError(f"Kodak folder {folder} does not exist (set {KODAK_ENV_VAR} to its location)")
    if verify:
        verify_kodak(folder)
    return FolderSource(folder, extensions=(".png",), cache=cache)


def eval_images(source: ImageSource) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, image)`` for every image of a source, in order."""
    for index in range(len(source)):
        yield source.names[index], source[index]
