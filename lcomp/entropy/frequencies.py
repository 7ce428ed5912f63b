"""From floating-point probabilities to the integer frequency tables the range coder uses.

Encoder and decoder must agree on every frequency, bit for bit, or decoding derails. Floating-point
probabilities are therefore never handed to the coder directly: both ends pass them through
:func:`quantize_pmf`, a pure-numpy function whose result depends only on the bits of its input (float64
arithmetic, sequential sums in a fixed order, ties broken by index). Changing this function changes the
file format.
"""

from __future__ import annotations

import decimal
import functools

import numpy as np

from lcomp.errors import LcompError

#: Frequencies of one row sum to ``2**DEFAULT_PRECISION``. 16 bits keep the cost of the "every symbol at
#: least 1" rule negligible (a near-certain symbol costs at most about ``K * 2**-16 / ln 2`` bits) while
#: making the table robust: a last-bit difference in a float32 probability moves a 16-bit frequency far
#: less often than a 24-bit one.
DEFAULT_PRECISION = 16

#: The largest precision the range coder can represent exactly (constriction's default range coder works
#: with 24-bit probabilities; see ``range_coding.CODER_PRECISION``).
MAX_PRECISION = 24


class EntropyCodingError(LcompError, ValueError):
    """Invalid input to the entropy coder: bad probabilities, out-of-range symbols, mismatched shapes.

    This is a caller's mistake (or a broken model), not a corrupt file; corrupt files raise
    :class:`lcomp.errors.BitstreamError`.
    """


def check_precision(precision: int) -> int:
    """Return ``precision`` as an int if it is a supported frequency precision, else raise."""
    if isinstance(precision, bool) or not isinstance(precision, (int, np.integer)):
        raise EntropyCodingError(f"precision must be an integer, got {precision!r}")
    if not 1 <= precision <= MAX_PRECISION:
        raise EntropyCodingError(f"precision must be between 1 and {MAX_PRECISION} bits, got {precision}")
    return int(precision)


def quantize_pmf(probs, precision: int = DEFAULT_PRECISION) -> np.ndarray:
    """Turn probability rows into integer frequency rows, deterministically.

    Args:
      probs: float array of shape ``(n, K)``: one (unnormalised) distribution per row. Any positive scale;
        entries may be 0 or tiny. A row of all zeros becomes the uniform distribution.
      precision: every output row sums to exactly ``2**precision`` (1..24).

    Returns:
      ``uint32`` array of shape ``(n, K)``, every entry >= 1, every row summing to ``2**precision``.

    Rule (the file format depends on it): each symbol first gets 1; the remaining ``2**precision - K``
    units are shared in proportion to the row's probabilities, rounding down; the units lost to rounding
    go one each to the entries with the largest rounding remainders, ties to the lowest index.

    Raises:
      EntropyCodingError: NaN, infinite or negative entries, wrong rank, ``K < 2`` or ``K > 2**precision``.
    """
    precision = check_precision(precision)
    table = np.asarray(probs)
    if table.ndim != 2:
        raise EntropyCodingError(f"probabilities must have shape (n, K), got shape {table.shape}")
    if not (np.issubdtype(table.dtype, np.floating) or np.issubdtype(table.dtype, np.integer)):
        raise EntropyCodingError(f"probabilities must be a float or integer array, got dtype {table.dtype}")
    num_rows, num_symbols = table.shape
    total = 1 << precision
    if num_symbols < 2:
        raise EntropyCodingError(f"need at least 2 symbols per distribution, got K={num_symbols}")
    if num_symbols > total:
        raise EntropyCodingError(
            f"K={num_symbols} symbols do not fit into {precision}-bit frequencies (at most {total})"
        )
    table = table.astype(np.float64, order="C", copy=True)
    if not np.all(np.isfinite(table)):
        raise EntropyCodingError("probabilities contain NaN or infinite values")
    if np.any(table < 0):
        raise EntropyCodingError("probabilities contain negative values")
    if num_rows == 0:
        return np.zeros((0, num_symbols), dtype=np.uint32)

    # Divide by the row maximum first (exact, order-independent), so huge inputs cannot overflow the sum
    # and subnormal inputs regain full precision. All-zero rows become uniform.
    row_max = table.max(axis=1, keepdims=True)
    all_zero = row_max[:, 0] == 0
    table[all_zero] = 1.0
    row_max[all_zero] = 1.0
    table /= row_max
    # np.cumsum adds strictly left to right, unlike np.sum (pairwise, blocking-dependent), so the row sum
    # is the same on every platform.
    row_sum = np.cumsum(table, axis=1)[:, -1:]

    free_units = total - num_symbols
    shares = table / row_sum * free_units
    floors = np.floor(shares)
    freqs = floors.astype(np.int64) + 1
    # The floors add up to at most free_units (rounding in `shares` stays far below one unit for
    # K, free_units <= 2**24) and lose less than one unit per entry, so 0 <= leftover <= K.
    leftover = total - freqs.sum(axis=1)
    remainders = shares - floors
    # Rank entries by remainder, largest first; the stable sort keeps lower indices first among equals.
    order = np.argsort(-remainders, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(num_symbols)[None, :], axis=1)
    freqs += rank < leftover[:, None]

    if np.any(freqs.sum(axis=1) != total) or np.any(freqs < 1):  # guards the bound argued above
        raise AssertionError("quantize_pmf produced an invalid table; this is a bug in lcomp")
    return freqs.astype(np.uint32)


def binary_pmf(p_one) -> np.ndarray:
    """Probabilities ``(P(0), P(1))`` per bit from the probability of a one.

    Args:
      p_one: float array of any shape with values in [0, 1].

    Returns:
      float64 array of shape ``(n, 2)`` with ``n = p_one.size`` (C order), ready for :func:`quantize_pmf`.
    """
    p = np.asarray(p_one, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(p)):
        raise EntropyCodingError("bit probabilities contain NaN or infinite values")
    if np.any((p < 0) | (p > 1)):
        raise EntropyCodingError("bit probabilities must lie in [0, 1]")
    return np.stack([1.0 - p, p], axis=1)


def check_freqs(freqs, precision: int) -> np.ndarray:
    """Validate an integer frequency table (as made by :func:`quantize_pmf`) and return it as uint32."""
    precision = check_precision(precision)
    table = np.asarray(freqs)
    if table.ndim != 2 or table.shape[1] < 2:
        raise EntropyCodingError(f"frequencies must have shape (n, K) with K >= 2, got {table.shape}")
    if not np.issubdtype(table.dtype, np.integer):
        raise EntropyCodingError(f"frequencies must be integers, got dtype {table.dtype}")
    if table.size and table.min() < 1:
        raise EntropyCodingError("every frequency must be at least 1")
    if np.any(table.astype(np.int64).sum(axis=1) != (1 << precision)):
        raise EntropyCodingError(f"every frequency row must sum to 2**{precision}")
    return table.astype(np.uint32)


def code_length_bits(symbols, freqs, precision: int = DEFAULT_PRECISION) -> float:
    """Ideal code length in bits of ``symbols`` under an integer frequency table.

    This is ``sum(precision - log2(freqs[i, symbols[i]]))``: what an ideal coder would spend with exactly
    the table the range coder uses, so "estimated" rates computed with it match the real file size up to
    the coder's few words of overhead.

    Args:
      symbols: integer array, ``symbols.size == n`` (flattened in C order).
      freqs: ``(n, K)`` table from :func:`quantize_pmf` with the same ``precision``.
    """
    table = check_freqs(freqs, precision)
    flat = check_symbols(symbols, table.shape[0], table.shape[1])
    chosen = table[np.arange(table.shape[0]), flat].astype(np.float64)
    return float(np.sum(precision - np.log2(chosen)))


def check_symbols(symbols, num_rows: int, num_symbols: int) -> np.ndarray:
    """Flatten ``symbols`` to int32 after checking its size, dtype and range."""
    array = np.asarray(symbols)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise EntropyCodingError(f"symbols must be integers, got dtype {array.dtype}")
    if array.size != num_rows:
        raise EntropyCodingError(f"got {array.size} symbols but {num_rows} probability rows")
    flat = array.reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= num_symbols):
        raise EntropyCodingError(
            f"symbols must lie in [0, {num_symbols - 1}], got values in [{flat.min()}, {flat.max()}]"
        )
    return flat.astype(np.int32)


# --- correctly rounded tables for exact networks' logits ----------------------------------------------------
# An exact network's logit is an integer index k on a grid (logit = (k - limit * steps) / steps). These
# functions turn indices into integer frequencies with integer or `decimal` arithmetic only, so the same
# index gives the same frequency on every machine and backend.


@functools.lru_cache(maxsize=16)
def binary_logit_table(steps_per_unit: int, limit: int, precision: int = DEFAULT_PRECISION) -> np.ndarray:
    """Integer frequency of bit = 1 for every logit index 0 .. 2 * limit * steps, out of 2**precision.

    `round_half_even(sigmoid(z) * 2**precision)` with a correctly rounded `decimal` exp, clipped to
    [1, 2**precision - 1] so that both outcomes stay codable."""
    precision = check_precision(precision)
    context = decimal.Context(prec=40)
    total = 1 << precision
    steps = limit * steps_per_unit
    table = []
    for k in range(-steps, steps + 1):
        z = decimal.Decimal(k) / steps_per_unit
        p = decimal.Decimal(1) / (1 + context.exp(-z))
        table.append(min(max(int((p * total).to_integral_value(decimal.ROUND_HALF_EVEN)), 1), total - 1))
    table = np.asarray(table, np.int64)
    table.setflags(write=False)
    return table


def binary_frequencies(logit_index, steps_per_unit: int, limit: int, precision: int = DEFAULT_PRECISION):
    """(..., 2) integer frequencies (bit 0, bit 1) for logit indices of any shape."""
    one = binary_logit_table(steps_per_unit, limit, precision)[np.asarray(logit_index)]
    return np.stack([(1 << precision) - one, one], axis=-1)


#: exp(-d / steps) for the categorical tables is held as an integer with this many fraction bits.
_EXP_BITS = 30


@functools.lru_cache(maxsize=16)
def _exp_table(steps_per_unit: int, limit: int) -> np.ndarray:
    """round(2**30 * exp(-d / steps)) for d = 0 .. 2 * limit * steps (correctly rounded via `decimal`)."""
    context = decimal.Context(prec=40)
    scale = decimal.Decimal(1 << _EXP_BITS)
    values = [
        int((context.exp(decimal.Decimal(-d) / steps_per_unit) * scale).to_integral_value(decimal.ROUND_HALF_EVEN))
        for d in range(2 * limit * steps_per_unit + 1)
    ]
    table = np.asarray(values, np.int64)
    table.setflags(write=False)
    return table


def categorical_frequencies(logit_index, steps_per_unit: int, limit: int, precision: int = DEFAULT_PRECISION):
    """Integer frequency rows (n, L) for L-ary symbols from logit indices (n, L), in integer arithmetic only.

    softmax weights w_i = round(2**30 * exp(-(max_k - k_i) / steps)) from a `decimal` table; then every symbol
    gets 1 and the remaining 2**precision - L units are shared as floor(w_i * free / sum w), the units lost to
    rounding going one each to the largest remainders (ties: lowest index). Every row sums to 2**precision,
    every entry >= 1, identically on every machine."""
    precision = check_precision(precision)
    index = np.asarray(logit_index, np.int64)
    if index.ndim != 2 or index.shape[1] < 2:
        raise EntropyCodingError(f"logit indices must have shape (n, L) with L >= 2, got {index.shape}")
    num_symbols = index.shape[1]
    total = 1 << precision
    if num_symbols > total:
        raise EntropyCodingError(f"L={num_symbols} symbols do not fit into {precision}-bit frequencies")
    table = _exp_table(steps_per_unit, limit)
    top = 2 * limit * steps_per_unit
    if index.size and (index.min() < 0 or index.max() > top):
        raise EntropyCodingError(f"logit indices must lie in 0..{top}")
    weights = table[index.max(axis=1, keepdims=True) - index]  # the largest weight of a row is 2**30
    free = total - num_symbols
    row_sum = weights.sum(axis=1, keepdims=True)  # <= L * 2**30: int64 products below stay < 2**63
    scaled = weights * free
    shares = scaled // row_sum
    remainders = scaled - shares * row_sum
    freqs = shares + 1
    leftover = total - freqs.sum(axis=1)
    order = np.argsort(-remainders, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(num_symbols)[None, :], axis=1)
    freqs += rank < leftover[:, None]
    return freqs.astype(np.uint32)
