"""Range coding of symbols under integer frequency tables (a thin, strict wrapper around constriction).

:class:`SymbolEncoder` appends symbols to one stream over several calls; :class:`SymbolDecoder` reads
them back in the same order, with the same probabilities. This is how multi-pass decoding works: the
probabilities of pass k are computed from the symbols of passes < k, at both ends.

How our integer table reaches constriction exactly
--------------------------------------------------
constriction's ``Categorical(perfect=False)`` family turns float probabilities ``p`` into 24-bit
frequencies by ``left_cumulative(s) = floor(scale * sum(p[:s])) + s`` with ``scale = (2**24 - K) /
sum(p)``, i.e. one unit per symbol plus a share of the rest. We pass ``p = freqs * 2**(24 - precision) -
1``: then ``sum(p) = 2**24 - K``, ``scale`` is exactly 1.0, every partial sum is an integer below
``2**24`` (exact in float64, in any summation order), and constriction's table equals ours scaled by
``2**(24 - precision)``. The tests probe constriction's decoder at every cumulative boundary to check it.

Behaviour on bad data (constriction 0.5)
----------------------------------------
- A range decoder reads past the end of its data as if it were followed by zero words, without an
  error; truncation shows up only at :meth:`SymbolDecoder.finish` (usually) and in the container's part
  lengths and CRC (always).
- On garbage, or when asked for more symbols than were encoded, constriction either returns arbitrary
  symbols or raises ``AssertionError("Tried to decode from compressed data that is invalid ...")`` once
  its state becomes impossible. We raise :class:`BitstreamError` for the latter.
- Rust panics surface as ``pyo3_runtime.PanicException``, which derives from ``BaseException``; they
  are caught explicitly and become :class:`BitstreamError` as well.
- :meth:`SymbolDecoder.finish` uses constriction's end-of-stream check: after the last expected symbol,
  all words must have been read and the decoder's point must lie within ``2**33`` of the lower end of its
  final interval, where the encoder sealed the stream. Damaged data (a flipped bit changes every later
  symbol) almost never passes; leftover data of two or more words fails (in every case we tried). One
  extra word at the end can pass: the decoder reads one word ahead, and that word is within the
  tolerance.
"""

from __future__ import annotations

import contextlib

import constriction
import numpy as np

from lcomp.entropy.frequencies import (
    DEFAULT_PRECISION,
    EntropyCodingError,
    check_symbols,
    binary_pmf,
    check_freqs,
    check_precision,
    quantize_pmf,
)
from lcomp.errors import BitstreamError

#: Probability precision of constriction's default range coder (``DefaultRangeEncoder``: 32-bit words,
#: 64-bit state, 24-bit probabilities). Our tables (``precision <= 24``) are scaled up to it exactly.
CODER_PRECISION = 24

# constriction rejects alphabets of 2**24 - 1 symbols or more.
_MAX_SYMBOLS = (1 << CODER_PRECISION) - 2

# One model family object serves every call; perfect=False is mandatory (perfect=True, constriction's
# default, builds a different table and is slow).
_CATEGORICAL_FAMILY = constriction.stream.model.Categorical(perfect=False)


def _is_rust_panic(exc: BaseException) -> bool:
    """True for pyo3's PanicException (a BaseException subclass that constriction raises on panics)."""
    return type(exc).__name__ == "PanicException"


@contextlib.contextmanager
def _coder_errors_as(error_type: type[Exception], context: str):
    """Re-raise anything constriction throws (exceptions and Rust panics) as ``error_type``."""
    try:
        yield
    except BaseException as exc:  # noqa: BLE001 -- Rust panics are BaseExceptions, not Exceptions
        if isinstance(exc, Exception) or _is_rust_panic(exc):
            raise error_type(f"{context}: {exc}") from exc
        raise  # KeyboardInterrupt, SystemExit


def _table_for_constriction(freqs: np.ndarray, precision: int) -> np.ndarray:
    """float64 probabilities that make constriction's 24-bit table equal ``freqs`` (see module doc)."""
    if freqs.shape[1] > _MAX_SYMBOLS:
        raise EntropyCodingError(f"at most {_MAX_SYMBOLS} symbols per distribution, got {freqs.shape[1]}")
    scaled = freqs.astype(np.float64) * float(1 << (CODER_PRECISION - precision))
    return np.ascontiguousarray(scaled - 1.0)


def _integer_table(probs, freqs, precision: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """The ``(n, K)`` integer table for one call, and the leading shape ``S`` of the ``S + (K,)`` input.

    Exactly one of ``probs`` (floats, quantised here) and ``freqs`` (an integer table) must be given.
    """
    if (probs is None) == (freqs is None):
        raise EntropyCodingError("pass exactly one of probs (floats) or freqs= (integer table)")
    name, source = ("probs", probs) if probs is not None else ("freqs", freqs)
    array = np.asarray(source)
    if array.ndim < 1 or array.shape[-1] < 2:
        raise EntropyCodingError(f"{name} must have shape S + (K,) with K >= 2, got shape {array.shape}")
    rows = array.reshape(-1, array.shape[-1])
    table = quantize_pmf(rows, precision) if probs is not None else check_freqs(rows, precision)
    return table, array.shape[:-1]


class SymbolEncoder:
    """Appends symbols to one range-coded stream.

    Example::

        enc = SymbolEncoder()
        enc.encode(symbols, probs)         # symbols shape S, probs shape S + (K,)
        enc.encode_bits(bits, p_one)       # bits and p_one of equal shape
        data = enc.to_bytes()
    """

    def __init__(self, precision: int = DEFAULT_PRECISION):
        self.precision = check_precision(precision)
        self._encoder = constriction.stream.queue.RangeEncoder()

    def encode(self, symbols, probs=None, *, freqs=None) -> None:
        """Append ``symbols`` (integers, shape ``S``) coded with one distribution each.

        Args:
          symbols: integer array of shape ``S``, values in ``[0, K)``.
          probs: float array of shape ``S + (K,)``, quantised with :func:`quantize_pmf`.
          freqs: instead of ``probs``, an integer table of shape ``S + (K,)`` already made by
            :func:`quantize_pmf` with this encoder's precision.
        """
        table, leading_shape = _integer_table(probs, freqs, self.precision)
        symbol_array = np.asarray(symbols)
        if symbol_array.shape != leading_shape:
            raise EntropyCodingError(
                f"symbols have shape {symbol_array.shape} but the table has shape {leading_shape + table.shape[1:]};"
                " the table must have shape symbols.shape + (K,)"
            )
        flat = check_symbols(symbol_array, table.shape[0], table.shape[1])
        self._encode_rows(flat, table)

    def encode_bits(self, bits, p_one) -> None:
        """Append binary symbols; ``p_one`` (same shape) is the probability that each bit is 1."""
        bit_array = np.asarray(bits)
        p_array = np.asarray(p_one)
        if bit_array.shape != p_array.shape:
            raise EntropyCodingError(f"bits have shape {bit_array.shape} but p_one has shape {p_array.shape}")
        table = quantize_pmf(binary_pmf(p_array), self.precision)
        flat = check_symbols(bit_array, table.shape[0], 2)
        self._encode_rows(flat, table)

    def _encode_rows(self, flat_symbols: np.ndarray, table: np.ndarray) -> None:
        if flat_symbols.size == 0:
            return
        probabilities = _table_for_constriction(table, self.precision)
        with _coder_errors_as(EntropyCodingError, "the range coder rejected the symbols"):
            self._encoder.encode(np.ascontiguousarray(flat_symbols), _CATEGORICAL_FAMILY, probabilities)

    def num_bytes(self) -> int:
        """Size the stream would have if :meth:`to_bytes` were called now."""
        return 4 * int(self._encoder.num_words())

    def to_bytes(self) -> bytes:
        """The stream so far as bytes (uint32 words, little-endian). Encoding may continue afterwards."""
        return self._encoder.get_compressed().astype("<u4").tobytes()


class SymbolDecoder:
    """Reads symbols back from a stream made by :class:`SymbolEncoder`.

    Call :meth:`decode` / :meth:`decode_bits` with the same shapes and probabilities, in the same order, as
    the encoder did, then :meth:`finish`. Any malformed data raises :class:`BitstreamError`.
    """

    def __init__(self, data: bytes, precision: int = DEFAULT_PRECISION):
        self.precision = check_precision(precision)
        data = bytes(data)
        if len(data) % 4:
            raise BitstreamError(
                f"range-coded data must be a whole number of 4-byte words, got {len(data)} bytes"
            )
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        with _coder_errors_as(BitstreamError, "cannot read range-coded data"):
            self._decoder = constriction.stream.queue.RangeDecoder(words)

    def decode(self, probs=None, *, freqs=None) -> np.ndarray:
        """Decode one symbol per distribution: ``probs`` shape ``S + (K,)`` gives int32 symbols of shape ``S``."""
        table, leading_shape = _integer_table(probs, freqs, self.precision)
        return self._decode_rows(table).reshape(leading_shape)

    def decode_bits(self, p_one) -> np.ndarray:
        """Decode bits (int32 0/1, same shape as ``p_one``, the probability of a 1)."""
        p_array = np.asarray(p_one)
        table = quantize_pmf(binary_pmf(p_array), self.precision)
        return self._decode_rows(table).reshape(p_array.shape)

    def _decode_rows(self, table: np.ndarray) -> np.ndarray:
        if table.shape[0] == 0:
            return np.zeros(0, dtype=np.int32)
        probabilities = _table_for_constriction(table, self.precision)
        with _coder_errors_as(BitstreamError, "corrupt range-coded data"):
            symbols = self._decoder.decode(_CATEGORICAL_FAMILY, probabilities)
        return np.asarray(symbols, dtype=np.int32)

    def finish(self) -> None:
        """Check that the stream ends where the decoded symbols say it should; BitstreamError if not.

        Call it after the last decode call. It catches leftover data and, with high probability, damaged
        data (details in the module docstring); the container's CRC covers what it cannot see.
        """
        with _coder_errors_as(BitstreamError, "corrupt range-coded data"):
            exhausted = self._decoder.maybe_exhausted()
        if not exhausted:
            raise BitstreamError(
                "range-coded data does not end after the last expected symbol (damaged, or made with"
                " other probabilities)"
            )
