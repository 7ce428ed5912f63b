"""Training batches: a batch is a pure function of (seed, step), so a resumed run sees exactly the batches
an uninterrupted run would have seen.
"""

from __future__ import annotations

import itertools
import queue
import threading
import zlib
from collections.abc import Iterable, Iterator

import numpy as np

from lcomp.configs import integer_setting
from lcomp.data.sources import ImageSource
from lcomp.errors import ConfigError


class TrainBatches:
    """Deterministic random crops for training: ``batch(step)`` depends only on (seed, step, example index).

    Every example of the *global* batch has its own generator, ``numpy.random.default_rng([seed, step, j])``
    for global example index ``j``; process ``p`` of ``n`` computes the examples ``j`` in
    ``[p * local, (p + 1) * local)`` with ``local = batch_size // n``. Consequences: resuming at step k gives
    exactly the batches an uninterrupted run sees, the processes' slices are disjoint parts of one global
    batch, and that global batch does not depend on how many processes share it.

    Each example: choose an image uniformly, choose a crop position uniformly, flip left-right with
    probability 1/2. Images smaller than the patch in a dimension are padded at the bottom/right by edge
    replication (the same padding codecs apply at evaluation time) rather than upscaled, which would change
    the image statistics.

    ``hard_patch_fraction=f`` (optional) imitates the high-entropy training set of Toderici et al. 2017, who
    kept the patches that PNG compresses worst: each example becomes the hardest of ``round(1 / f)``
    candidate crops, "hardest" meaning the largest zlib-compressed size after PNG's "Sub" filter (a cheap
    stand-in for PNG).

    Args:
      source: an :class:`ImageSource` (decoded images are cached by the source).
      patch_size: side P of the square crops.
      batch_size: global batch size, divisible by process_count.
      seed: non-negative integer.
      process_index, process_count: this process's slice of the global batch (``jax.process_index()``,
        ``jax.process_count()``).
      hard_patch_fraction: None, or a fraction in (0, 1].
      permute_channels: shuffle R, G, B of every example (one of the 6 orders, uniformly). A small training
        set (the embedded photographs) then covers hues it lacks; a codec must code every colour.
      rotate90: turn every example by a uniformly drawn multiple of 90 degrees (with the flip: all 8
        symmetries of the square), so a few photographs also teach edges and textures at other orientations.
      synthetic_source, synthetic_fraction: with ``synthetic_fraction=f > 0``, each example comes from
        ``synthetic_source`` (e.g. :class:`~lcomp.data.dead_leaves.DeadLeavesSource`) with probability ``f``
        and from ``source`` otherwise; ``f = 1`` trains on the synthetic source alone.

    Each optional draw (the source choice first, then channel order, then rotation) is made only when its
    option is on, so turning an option off gives exactly the batches of a run without it.
    """

    def __init__(
        self,
        source: ImageSource,
        patch_size: int,
        batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
        hard_patch_fraction: float | None = None,
        permute_channels: bool = False,
        rotate90: bool = False,
        synthetic_source: ImageSource | None = None,
        synthetic_fraction: float = 0.0,
    ):
        patch_size = integer_setting("patch_size", patch_size, minimum=1)
        batch_size = integer_setting("batch_size", batch_size, minimum=1)
        seed = integer_setting("seed", seed, minimum=0)
        process_index = integer_setting("process_index", process_index, minimum=0)
        process_count = integer_setting("process_count", process_count, minimum=1)
        if process_index >= process_count:
            raise ConfigError(f"process_index {process_index} is not below process_count {process_count}")
        if batch_size % process_count:
            raise ConfigError(f"batch_size {batch_size} is not divisible by process_count {process_count}")
        if len(source) == 0:
            raise ConfigError("the training source has no images")
        if hard_patch_fraction is not None and not 0.0 < float(hard_patch_fraction) <= 1.0:
            raise ConfigError(f"hard_patch_fraction must be in (0, 1], got {hard_patch_fraction!r}")
        try:
            synthetic_fraction = float(synthetic_fraction)
        except (TypeError, ValueError):
            raise ConfigError(f"synthetic_fraction must be a number in [0, 1], got {synthetic_fraction!r}") from None
        if not 0.0 <= synthetic_fraction <= 1.0:
            raise ConfigError(f"synthetic_fraction must be in [0, 1], got {synthetic_fraction!r}")
        if synthetic_fraction > 0 and (synthetic_source is None or len(synthetic_source) == 0):
            raise ConfigError("synthetic_fraction > 0 needs a synthetic_source with images")
        self.source = source
        self.synthetic_source = synthetic_source
        self.synthetic_fraction = synthetic_fraction
        self.rotate90 = bool(rotate90)
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.seed = seed
        self.process_index = process_index
        self.process_count = process_count
        self.local_batch_size = batch_size // process_count
        self.hard_patch_fraction = hard_patch_fraction
        self.candidates_per_example = 1 if hard_patch_fraction is None else max(1, round(1.0 / hard_patch_fraction))
        self.permute_channels = bool(permute_channels)

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's part of the global batch of ``step``: ``{"image": uint8 (local_batch, P, P, 3)}``."""
        step = integer_setting("step", step, minimum=0)
        first = self.process_index * self.local_batch_size
        images = np.empty((self.local_batch_size, self.patch_size, self.patch_size, 3), np.uint8)
        for i in range(self.local_batch_size):
            images[i] = self._example(step, first + i)
        return {"image": images}

    def iterate(
        self, start_step: int = 0, prefetch: int = 2, stop_step: int | None = None
    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield ``(step, batch(step))`` for ``step = start_step, start_step + 1, ...`` (before ``stop_step``).

        With ``prefetch > 0`` a background thread computes up to ``prefetch`` batches ahead. The thread ends
        when the iterator is exhausted, closed (``close()``, leaving a ``for`` loop with ``break`` and dropping
        the iterator) or garbage-collected; an error in the thread is raised in the consumer.
        """
        prefetch = integer_setting("prefetch", prefetch, minimum=0)
        start_step = integer_setting("start_step", start_step, minimum=0)
        steps = itertools.count(start_step) if stop_step is None else range(start_step, integer_setting("stop_step", stop_step))
        if prefetch == 0:
            return ((step, self.batch(step)) for step in steps)
        return _prefetched(steps, self.batch, prefetch)

    # -- one example ------------------------------------------------------------------------------------------

    def _example(self, step: int, example_index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, step, example_index])
        source = self.source
        if self.synthetic_fraction > 0 and rng.random() < self.synthetic_fraction:
            source = self.synthetic_source
        if self.candidates_per_example == 1:
            patch = self._random_crop(rng, source)
        else:
            candidates = [self._random_crop(rng, source) for _ in range(self.candidates_per_example)]
            patch = max(candidates, key=_compressed_size)  # first of equals wins: deterministic
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if self.permute_channels:  # drawn last, so the crops and flips are the same with or without it
            patch = patch[..., rng.permutation(3)]
        if self.rotate90:
            patch = np.rot90(patch, k=int(rng.integers(4)))
        return patch  # a view: batch() copies it into its array

    def _random_crop(self, rng: np.random.Generator, source: ImageSource) -> np.ndarray:
        image = source[int(rng.integers(len(source)))]
        height, width = image.shape[:2]
        size = self.patch_size
        top = int(rng.integers(max(height - size, 0) + 1))
        left = int(rng.integers(max(width - size, 0) + 1))
        patch = image[top : top + size, left : left + size]
        if patch.shape[0] < size or patch.shape[1] < size:
            patch = np.pad(patch, ((0, size - patch.shape[0]), (0, size - patch.shape[1]), (0, 0)), mode="edge")
        return patch



def _compressed_size(patch: np.ndarray) -> int:
    """Bytes zlib needs for the patch after PNG's "Sub" filter (difference to the left neighbour, mod 256).

    zlib's fastest level ranks patches like the default level at a third of the cost (about 3 ms for 256 x 256).
    """
    filtered = np.diff(patch.astype(np.int16), axis=1, prepend=0).astype(np.uint8)
    return len(zlib.compress(filtered.tobytes(), 1))


class _ProducerFailed:
    def __init__(self, error: BaseException):
        self.error = error


_END_OF_STEPS = object()


def _prefetched(steps: Iterable[int], make_batch, prefetch: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Run ``make_batch`` over ``steps`` in a daemon thread, at most ``prefetch`` results ahead of the consumer."""
    results: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def hand_over(item) -> bool:
        # A bounded put that gives up once the consumer has gone away, so the thread can always finish.
        while not stop.is_set():
            try:
                results.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for step in steps:
                if stop.is_set() or not hand_over((step, make_batch(step))):
                    return
            hand_over(_END_OF_STEPS)
        except BaseException as error:  # forwarded to the consumer, which re-raises it
            hand_over(_ProducerFailed(error))

    thread = threading.Thread(target=produce, name="lcomp-train-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = results.get()
            if item is _END_OF_STEPS:
                return
            if isinstance(item, _ProducerFailed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()  # returns once the batch in progress (if any) is done
