"""Side information: small integer maps coded with an adaptive model, and the symbol masks they imply.

Several codecs send a coarse map of small integers before the main symbols, and that map decides which
symbols exist at all:

* SABR (Johnston et al. 2018): per-block iteration counts; block b sends bits while iteration t < counts[b].
* Li et al. 2018: the importance map; position p keeps code channels d < importance[p].
* Mentzer et al. 2018: the same kind of channel mask.

:func:`encode_integer_map` / :func:`decode_integer_map` code such a map in raster order. The model is
adaptive and purely integer, so no floating point can make the two ends disagree: the context of a value is
the value above it plus one (0 in the top row), each context keeps a table of counts starting at 1, and
after coding value v in context c, ``table[c, v]`` grows by :data:`INCREMENT`. Both ends update the very same
integers. (Changing any of this changes the file format: SABR's count map, coded as ``counts - 1`` with
``levels = T``, must keep its bytes.)

:func:`mask_from_counts` expands a map to the boolean mask over (depth, rows, columns) that both ends then
use to decide which symbols are coded.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from lcomp.entropy.frequencies import EntropyCodingError
from lcomp.entropy.range_coding import SymbolDecoder, SymbolEncoder
from lcomp.errors import BitstreamError

__all__ = ["INCREMENT", "MAX_LEVELS", "encode_integer_map", "decode_integer_map", "mask_from_counts"]

#: How fast the adaptive tables learn (part of the format).
INCREMENT = 24
#: The model keeps (levels + 1) x levels integer counts; maps of side information have small alphabets.
MAX_LEVELS = 1024


def _check_levels(levels) -> int:
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)):
        raise EntropyCodingError(f"levels must be an integer, got {levels!r}")
    if not 1 <= levels <= MAX_LEVELS:
        raise EntropyCodingError(f"levels must lie in 1..{MAX_LEVELS}, got {levels}")
    return int(levels)


def _check_shape(shape) -> tuple[int, int]:
    try:
        dims = tuple(shape)
    except TypeError:
        dims = ()
    if len(dims) != 2 or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0 for d in dims):
        raise EntropyCodingError(f"shape must be two non-negative integers (rows, cols), got {shape!r}")
    return int(dims[0]), int(dims[1])


def _run_model(shape: tuple[int, int], levels: int, code: Callable[[np.ndarray, tuple], int]) -> np.ndarray:
    """Visits the map in raster order; ``code(frequencies (1, levels), index)`` codes one value and returns it."""
    rows, cols = shape
    tables = np.ones((levels + 1, levels), np.int64)  # row c: context c = value above + 1 (0 = top row)
    out = np.zeros(shape, np.int32)
    for i in range(rows):
        for j in range(cols):
            context = out[i - 1, j] + 1 if i > 0 else 0
            value = code(tables[context].astype(np.float64)[None], (i, j))
            out[i, j] = value
            tables[context, value] += INCREMENT
    return out


def encode_integer_map(values, levels: int) -> bytes:
    """Range-codes ``values`` (integers, shape ``(rows, cols)``, each in ``[0, levels)``); returns the bytes.

    With ``levels == 1`` (or an empty map) nothing needs coding and the result is empty.
    """
    levels = _check_levels(levels)
    values = np.asarray(values)
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.integer):
        raise EntropyCodingError(f"values must be a 2D integer array, got {values.dtype} of shape {values.shape}")
    if values.size and (values.min() < 0 or values.max() >= levels):
        raise EntropyCodingError(f"values must lie in [0, {levels}), got {values.min()}..{values.max()}")
    encoder = SymbolEncoder()
    if levels > 1 and values.size:

        def code(probs, index):
            value = int(values[index])
            encoder.encode(np.array([value], np.int32), probs)
            return value

        _run_model(values.shape, levels, code)
    return encoder.to_bytes()


def decode_integer_map(data: bytes, shape: Sequence[int], levels: int) -> np.ndarray:
    """Inverse of :func:`encode_integer_map`: int32 array of ``shape``.

    Damaged or foreign data raises :class:`~lcomp.errors.BitstreamError` (bad arguments raise
    :class:`EntropyCodingError`): the decoded map is re-encoded and must give back ``data`` exactly, so a
    flipped bit, a cut or appended word is caught even where the range decoder cannot see it. The work is
    two passes of ``rows * cols`` coder calls, whatever the data.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EntropyCodingError(f"data must be bytes, got {type(data).__name__}")
    shape = _check_shape(shape)
    levels = _check_levels(levels)
    if levels == 1 or shape[0] * shape[1] == 0:
        if len(data):  # nothing was coded, so the encoder wrote nothing
            raise BitstreamError(f"side information of shape {shape} with {levels} level(s) must be empty")
        return np.zeros(shape, np.int32)
    decoder = SymbolDecoder(data)

    def code(probs, index):
        value = int(decoder.decode(probs)[0])
        if not 0 <= value < levels:
            raise BitstreamError(f"side information holds the value {value}, outside [0, {levels})")
        return value

    values = _run_model(shape, levels, code)
    decoder.finish()
    # The range coder has no redundancy: a damaged stream often decodes to some other map and still ends
    # where it should. The encoder's output is a function of the map, so only that exact stream is accepted.
    if encode_integer_map(values, levels) != bytes(data):
        raise BitstreamError("side information is not the stream its decoded values encode to (damaged data)")
    return values


def mask_from_counts(counts, depth: int, repeat: int = 1) -> np.ndarray:
    """Boolean ``(depth, rows * repeat, cols * repeat)``: entry (d, i, j) is ``d < counts[i // r, j // r]``.

    SABR: ``depth`` = iterations and ``repeat`` = block / downsampling (code positions per block side);
    Li et al. 2018's importance map and Mentzer et al.'s mask: ``depth`` = code channels.
    ``counts`` are integers in ``[0, depth]``.
    """
    counts = np.asarray(counts)
    if counts.ndim != 2 or not np.issubdtype(counts.dtype, np.integer):
        raise ValueError(f"counts must be a 2D integer array, got {counts.dtype} of shape {counts.shape}")
    for name, value, low in (("depth", depth, 0), ("repeat", repeat, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if counts.size and (counts.min() < 0 or counts.max() > depth):
        raise ValueError(f"counts must lie in [0, {depth}], got {counts.min()}..{counts.max()}")
    per_cell = np.arange(depth)[:, None, None] < counts[None]
    return np.repeat(np.repeat(per_cell, repeat, axis=1), repeat, axis=2)
