"""Tests for lcomp.entropy: the float -> frequency rule and the range coder wrapper."""

import constriction
import numpy as np
import pytest

from lcomp.entropy import (
    CODER_PRECISION,
    EntropyCodingError,
    SymbolDecoder,
    SymbolEncoder,
    binary_pmf,
    code_length_bits,
    quantize_pmf,
)
from lcomp.entropy.range_coding import _table_for_constriction
from lcomp.errors import BitstreamError, LcompError


def sample(rng, probs):
    """One symbol per row of a normalised probability table."""
    cumulative = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    return np.minimum((rng.random(len(probs))[:, None] > cumulative).sum(axis=1), probs.shape[1] - 1)


# ---------------------------------------------------------------------------------------------------
# quantize_pmf


@pytest.mark.parametrize("num_symbols", [2, 3, 7, 64, 256])
@pytest.mark.parametrize("precision", [8, 16, 24])
def test_quantize_pmf_rows_sum_to_total_and_every_symbol_is_codable(num_symbols, precision):
    rng = np.random.default_rng(num_symbols * 100 + precision)
    probs = rng.dirichlet(np.full(num_symbols, 0.2), size=50)
    probs[::7, 0] = 0.0  # some exact zeros
    freqs = quantize_pmf(probs, precision)
    assert freqs.dtype == np.uint32 and freqs.shape == probs.shape
    assert np.all(freqs >= 1)
    assert np.all(freqs.astype(np.int64).sum(axis=1) == 2**precision)


def test_quantize_pmf_follows_the_documented_rule_on_small_examples():
    # 16 units: one per symbol, 13 shared as 6.5 / 3.25 / 3.25 -> floors 6, 3, 3, one unit left over goes
    # to the largest remainder (0.5).
    assert quantize_pmf([[0.5, 0.25, 0.25]], precision=4).tolist() == [[8, 4, 4]]
    # Equal remainders: the leftover unit goes to the lowest index.
    assert quantize_pmf([[1.0, 1.0, 1.0]], precision=4).tolist() == [[6, 5, 5]]
    # Zeros still get one unit; an all-zero row is uniform.
    assert quantize_pmf([[0.0, 3.0, 0.0]], precision=4).tolist() == [[1, 14, 1]]
    assert quantize_pmf([[0.0, 0.0, 0.0]], precision=4).tolist() == [[6, 5, 5]]


def test_quantize_pmf_regression_vector():
    """Pinned output: if this changes, files written by earlier versions no longer decode."""
    probs = np.array([[0.1, 0.2, 0.3, 0.4], [1e-9, 0.5, 0.5, 1e-9], [3.0, 1.0, 0.0, 0.0]])
    assert quantize_pmf(probs, 16).tolist() == [
        [6554, 13107, 19661, 26214],
        [1, 32767, 32767, 1],
        [49150, 16384, 1, 1],
    ]


def test_quantize_pmf_is_close_to_its_input():
    rng = np.random.default_rng(1)
    for num_symbols in (2, 6, 32):
        probs = rng.dirichlet(np.ones(num_symbols), size=200)
        q = quantize_pmf(probs, 16).astype(np.float64) / 2**16
        kl_bits = np.sum(probs * np.log2(probs / q), axis=1)
        assert kl_bits.max() < 1e-4
        assert np.abs(q - probs).max() < num_symbols / 2**16 + 1e-12


def test_quantize_pmf_is_deterministic_and_row_independent():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.full(9, 0.5), size=300).astype(np.float32)
    reference = quantize_pmf(probs)
    assert np.array_equal(quantize_pmf(probs.copy()), reference)
    # Each row depends on that row only, and not on memory layout or batch composition.
    assert np.array_equal(quantize_pmf(np.asfortranarray(probs)), reference)
    assert np.array_equal(quantize_pmf(probs[::-1])[::-1], reference)
    assert np.array_equal(quantize_pmf(np.repeat(probs, 2, axis=1)[:, ::2]), reference)
    for row in (0, 17, 299):
        assert np.array_equal(quantize_pmf(probs[row : row + 1])[0], reference[row])


def test_quantize_pmf_ignores_scale():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(5), size=100)
    reference = quantize_pmf(probs)
    for power in (-1000, -60, 1, 60, 1000):  # powers of two rescale exactly
        assert np.array_equal(quantize_pmf(probs * 2.0**power), reference)
    for factor in (1e-300, 1e300, 7.0):  # other factors may move a unit between entries, no more
        other = quantize_pmf(probs * factor)
        assert np.all(other.astype(np.int64).sum(axis=1) == 2**16)
        assert np.abs(other.astype(np.int64) - reference).max() <= 1


def test_quantize_pmf_handles_subnormal_and_lopsided_rows():
    freqs = quantize_pmf([[5e-324, 1e-320], [1.0, 1e-300], [1e308, 1e308]])
    assert freqs[1].tolist() == [2**16 - 1, 1]
    assert freqs[0, 1] / freqs[0, 0] == pytest.approx(1e-320 / 5e-324, rel=0.05)  # the ratio survives
    assert freqs[2].tolist() == [2**15, 2**15]


@pytest.mark.parametrize(
    "bad",
    [
        [[np.nan, 1.0]],
        [[np.inf, 1.0]],
        [[-0.5, 1.0]],
        [[1.0]],  # K < 2
        [0.5, 0.5],  # not (n, K)
        [["a", "b"]],
    ],
)
def test_quantize_pmf_rejects_invalid_tables(bad):
    with pytest.raises(EntropyCodingError):
        quantize_pmf(np.array(bad))


def test_quantize_pmf_rejects_bad_precision_and_oversized_alphabets():
    with pytest.raises(EntropyCodingError, match="do not fit"):
        quantize_pmf(np.ones((1, 17)), precision=4)
    for precision in (0, 25, 16.0, True):
        with pytest.raises(EntropyCodingError, match="precision"):
            quantize_pmf(np.ones((1, 2)), precision=precision)
    # The error is an LcompError and a ValueError, so either kind of handler catches it.
    with pytest.raises(ValueError):
        quantize_pmf(np.array([[np.nan, 1.0]]))
    with pytest.raises(LcompError):
        quantize_pmf(np.array([[np.nan, 1.0]]))


def test_binary_pmf():
    assert binary_pmf([0.25, 1.0]).tolist() == [[0.75, 0.25], [0.0, 1.0]]
    assert binary_pmf(np.zeros((2, 3))).shape == (6, 2)
    for bad in ([1.5], [-0.1], [np.nan]):
        with pytest.raises(EntropyCodingError):
            binary_pmf(bad)


def test_code_length_bits_matches_its_definition():
    freqs = quantize_pmf([[0.5, 0.25, 0.25], [0.9, 0.05, 0.05]], precision=4)
    expected = (4 - np.log2(8)) + (4 - np.log2(freqs[1, 2]))
    assert code_length_bits([0, 2], freqs, precision=4) == pytest.approx(expected)
    with pytest.raises(EntropyCodingError, match="sum"):
        code_length_bits([0, 2], freqs, precision=5)
    with pytest.raises(EntropyCodingError, match=r"\[0, 2\]"):
        code_length_bits([0, 3], freqs, precision=4)
    with pytest.raises(EntropyCodingError, match="2 probability rows"):
        code_length_bits([0], freqs, precision=4)


# ---------------------------------------------------------------------------------------------------
# Our integer table reaches constriction exactly


def _symbol_at_quantile(quantile, probabilities):
    """Decode one symbol from a hand-made stream whose first quantile is exactly ``quantile``.

    A fresh constriction range decoder has range 2**64 - 1, so the quantile of the 64-bit point ``x``
    (the first two words) is ``x // (2**40 - 1)`` in 24-bit units.
    """
    point = quantile * (2**40 - 1)
    words = np.array([point >> 32, point & 0xFFFFFFFF], dtype=np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    return int(decoder.decode(constriction.stream.model.Categorical(perfect=False), probabilities[None])[0])


@pytest.mark.parametrize("precision", [4, 12, 16, 24])
def test_constriction_uses_exactly_our_frequency_table(precision):
    """Probe constriction's decoder on both sides of every cumulative boundary of our table."""
    rng = np.random.default_rng(precision)
    freqs = quantize_pmf(rng.dirichlet(np.full(9, 0.3), size=1), precision)[0]
    probabilities = _table_for_constriction(freqs[None], precision)[0]
    boundaries = np.cumsum(freqs.astype(np.int64))[:-1] << (CODER_PRECISION - precision)
    for symbol, boundary in enumerate(boundaries):
        assert _symbol_at_quantile(int(boundary) - 1, probabilities) == symbol
        assert _symbol_at_quantile(int(boundary), probabilities) == symbol + 1
    # The naive alternative (integer frequencies passed as probabilities) is off somewhere, which is why
    # the wrapper rescales.
    if precision == 16:
        naive = freqs.astype(np.float64)
        assert any(
            _symbol_at_quantile(int(b), naive) != s + 1 or _symbol_at_quantile(int(b) - 1, naive) != s
            for s, b in enumerate(boundaries)
        )


# ---------------------------------------------------------------------------------------------------
# Round trips and sizes


@pytest.mark.parametrize("num_symbols", [2, 3, 6, 64, 256])
def test_categorical_round_trip(num_symbols):
    rng = np.random.default_rng(num_symbols)
    probs = rng.dirichlet(np.full(num_symbols, 0.3), size=3000)
    symbols = sample(rng, probs)
    encoder = SymbolEncoder()
    encoder.encode(symbols, probs)
    decoder = SymbolDecoder(encoder.to_bytes())
    decoded = decoder.decode(probs)
    assert decoded.dtype == np.int32
    assert np.array_equal(decoded, symbols)
    decoder.finish()


def test_bits_round_trip_with_extreme_probabilities():
    rng = np.random.default_rng(5)
    p_one = rng.random((40, 50))
    p_one[0] = 0.0
    p_one[1] = 1.0
    p_one[2] = 1e-30
    bits = rng.random(p_one.shape) < p_one
    bits[3, :5] = [True, False, True, False, True]  # some improbable outcomes too
    p_one[3, :5] = [1e-12, 1 - 1e-12, 0.0, 1.0, 0.0]
    encoder = SymbolEncoder()
    encoder.encode_bits(bits, p_one)
    decoded = SymbolDecoder(encoder.to_bytes()).decode_bits(p_one)
    assert decoded.shape == (40, 50)
    assert np.array_equal(decoded, bits.astype(np.int32))


def test_multidimensional_symbols_and_precomputed_freqs():
    rng = np.random.default_rng(6)
    probs = rng.dirichlet(np.ones(5), size=(4, 6, 7))
    symbols = sample(rng, probs.reshape(-1, 5)).reshape(4, 6, 7)
    freqs = quantize_pmf(probs.reshape(-1, 5), precision=12).reshape(4, 6, 7, 5)
    encoder = SymbolEncoder(precision=12)
    encoder.encode(symbols, freqs=freqs)
    decoder = SymbolDecoder(encoder.to_bytes(), precision=12)
    # Floats and the integer table they quantise to are interchangeable on the decode side.
    assert np.array_equal(decoder.decode(probs), symbols)
    decoder.finish()


def test_multi_call_stream_with_probabilities_from_earlier_passes():
    """Three passes; each pass's probabilities depend on the symbols of the passes before it."""
    rng = np.random.default_rng(7)
    num_symbols, size = 6, 2000

    def pass_probs(previous):
        # A deterministic "context model": favour the symbol seen at the same position earlier.
        probs = np.full((size, num_symbols), 0.1)
        if previous is not None:
            probs[np.arange(size), previous] += 2.0
        return probs

    encoder = SymbolEncoder()
    passes, previous = [], None
    for _ in range(3):
        probs = pass_probs(previous)
        symbols = sample(rng, probs)
        encoder.encode(symbols, probs)
        passes.append(symbols)
        previous = symbols
    encoder.encode_bits(passes[-1] % 2, np.full(size, 0.5))
    data = encoder.to_bytes()

    decoder = SymbolDecoder(data)
    previous = None
    for expected in passes:
        previous = decoder.decode(pass_probs(previous))
        assert np.array_equal(previous, expected)
    assert np.array_equal(decoder.decode_bits(np.full(size, 0.5)), passes[-1] % 2)
    decoder.finish()


@pytest.mark.parametrize("num_symbols", [2, 6, 32])
def test_real_size_matches_code_length(num_symbols):
    rng = np.random.default_rng(8 + num_symbols)
    probs = rng.dirichlet(np.full(num_symbols, 0.5), size=20000)
    symbols = sample(rng, probs)
    encoder = SymbolEncoder()
    encoder.encode(symbols, probs)
    ideal_bits = code_length_bits(symbols, quantize_pmf(probs))
    real_bits = 8 * len(encoder.to_bytes())
    assert encoder.num_bytes() * 8 == real_bits
    assert ideal_bits <= real_bits <= 1.01 * ideal_bits + 3 * 32


def test_real_size_matches_code_length_for_skewed_bits():
    rng = np.random.default_rng(9)
    p_one = rng.beta(0.3, 0.3, size=50000)
    bits = rng.random(p_one.size) < p_one
    encoder = SymbolEncoder()
    encoder.encode_bits(bits, p_one)
    ideal_bits = code_length_bits(bits, quantize_pmf(binary_pmf(p_one)))
    real_bits = 8 * len(encoder.to_bytes())
    assert ideal_bits <= real_bits <= 1.01 * ideal_bits + 3 * 32


def test_stream_bytes_are_pinned():
    """The byte stream for a fixed message: catches silent changes in the coder or in quantize_pmf."""
    encoder = SymbolEncoder()
    encoder.encode(np.array([0, 3, 2, 1, 1, 3, 3, 0, 2, 3] * 2), np.array([[0.1, 0.2, 0.3, 0.4]] * 20))
    encoder.encode_bits(np.array([1, 0, 1, 1]), np.array([0.9, 0.2, 0.5, 1e-6]))
    # Recorded with constriction 0.5.0 when the format was defined; a change here breaks old files.
    assert encoder.to_bytes().hex() == "3bf8e7129efc9c25"


def test_empty_stream():
    encoder = SymbolEncoder()
    encoder.encode(np.zeros(0, dtype=np.int32), np.zeros((0, 3)))
    assert encoder.to_bytes() == b""
    decoder = SymbolDecoder(b"")
    assert decoder.decode(np.zeros((0, 3))).shape == (0,)
    decoder.finish()


def test_encoding_may_continue_after_to_bytes():
    encoder = SymbolEncoder()
    encoder.encode_bits([1, 0, 1], [0.5, 0.5, 0.5])
    encoder.to_bytes()
    encoder.encode_bits([1, 1], [0.5, 0.5])
    assert SymbolDecoder(encoder.to_bytes()).decode_bits(np.full(5, 0.5)).tolist() == [1, 0, 1, 1, 1]


# ---------------------------------------------------------------------------------------------------
# Input validation (encoder side: caller errors)


@pytest.mark.parametrize(
    "symbols, probs, message",
    [
        ([0, 3], [[0.5, 0.5, 0.0]] * 2, r"\[0, 2\]"),
        ([-1, 0], [[0.5, 0.5]] * 2, r"\[0, 1\]"),
        ([0.0, 1.0], [[0.5, 0.5]] * 2, "integers"),
        ([0, 1, 0], [[0.5, 0.5]] * 2, "shape"),
        ([[0, 1]], [[0.5, 0.5]] * 2, "shape"),
        ([0], [[np.nan, 0.5]], "NaN"),
        ([0], [[1.0]], "K >= 2"),
    ],
)
def test_encode_rejects_bad_input(symbols, probs, message):
    with pytest.raises(EntropyCodingError, match=message):
        SymbolEncoder().encode(np.array(symbols), np.array(probs))


def test_encode_requires_exactly_one_table_and_valid_freqs():
    encoder = SymbolEncoder()
    with pytest.raises(EntropyCodingError, match="exactly one"):
        encoder.encode([0], [[0.5, 0.5]], freqs=[[1, 2**16 - 1]])
    with pytest.raises(EntropyCodingError, match="exactly one"):
        encoder.encode([0])
    with pytest.raises(EntropyCodingError, match="sum"):
        encoder.encode([0], freqs=np.array([[1, 2**15]]))
    with pytest.raises(EntropyCodingError, match="at least 1"):
        encoder.encode([0], freqs=np.array([[0, 2**16]]))
    with pytest.raises(EntropyCodingError, match="integers"):
        encoder.encode([0], freqs=np.array([[0.5, 2**16 - 0.5]]))
    with pytest.raises(EntropyCodingError, match="shape"):
        encoder.encode_bits([0, 1], [0.5])
    with pytest.raises(EntropyCodingError, match=r"\[0, 1\]"):
        encoder.encode_bits([0, 2], [0.5, 0.5])
    with pytest.raises(EntropyCodingError, match=r"\[0, 1\]"):
        encoder.encode_bits([0, 1], [0.5, 1.5])


# ---------------------------------------------------------------------------------------------------
# Decoder on bad data: always BitstreamError, never a dependency exception


def _encoded_message(num=500, num_symbols=4, seed=10):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(num_symbols), size=num)
    symbols = sample(rng, probs)
    encoder = SymbolEncoder()
    encoder.encode(symbols, probs)
    return encoder.to_bytes(), probs, symbols


def test_decoder_rejects_partial_words():
    with pytest.raises(BitstreamError, match="4-byte words"):
        SymbolDecoder(b"\x00\x01\x02")


def test_decoder_turns_constriction_errors_into_bitstream_errors():
    # All-ones words are an impossible range-coder state: constriction raises AssertionError.
    decoder = SymbolDecoder(b"\xff" * 8)
    with pytest.raises(BitstreamError, match="corrupt range-coded data"):
        decoder.decode(np.full((10, 4), 0.25))


def test_decoder_turns_rust_panics_into_bitstream_errors(monkeypatch):
    # Get the real pyo3 PanicException (it derives from BaseException) from a documented panic.
    try:
        encoder = constriction.stream.queue.RangeEncoder()
        encoder.encode(np.zeros(1, np.int32), constriction.stream.model.QuantizedGaussian(-5, 5), np.zeros(1),
                       np.array([-1.0]))
    except BaseException as exc:  # noqa: BLE001
        panic = exc
    assert type(panic).__name__ == "PanicException" and not isinstance(panic, Exception)

    class PanickingDecoder:
        def decode(self, *args):
            raise panic

        def maybe_exhausted(self):
            raise panic

    decoder = SymbolDecoder(b"\x00" * 8)
    monkeypatch.setattr(decoder, "_decoder", PanickingDecoder())
    with pytest.raises(BitstreamError):
        decoder.decode(np.full((3, 2), 0.5))
    with pytest.raises(BitstreamError):
        decoder.finish()


def test_finish_reports_leftover_data():
    data, probs, symbols = _encoded_message()
    decoder = SymbolDecoder(data)
    decoder.decode(probs[:100])  # a decoder that expects fewer symbols than the file holds
    with pytest.raises(BitstreamError, match="does not end after the last expected symbol"):
        decoder.finish()
    # Trailing garbage: constriction's decoder looks one word ahead, so it reports leftovers from the
    # second extra word on (a single extra word goes unnoticed; the container's lengths and CRC guard
    # against that).
    decoder = SymbolDecoder(data + b"\x01\x00\x00\x00" * 2)
    assert np.array_equal(decoder.decode(probs), symbols)
    with pytest.raises(BitstreamError, match="does not end after the last expected symbol"):
        decoder.finish()


def test_over_long_decode_never_escapes_as_a_dependency_error():
    """Asking for more symbols than were encoded: symbols or BitstreamError, nothing else."""
    data, probs, symbols = _encoded_message()
    outcomes = set()
    for extra in range(1, 60):
        decoder = SymbolDecoder(data)
        assert np.array_equal(decoder.decode(probs), symbols)
        try:
            decoder.decode(np.full((extra * 50, 4), 0.25))
            outcomes.add("symbols")
        except BitstreamError:
            outcomes.add("BitstreamError")
    assert outcomes <= {"symbols", "BitstreamError"}


def test_garbage_data_gives_symbols_or_bitstream_error():
    rng = np.random.default_rng(11)
    outcomes = {"symbols": 0, "BitstreamError": 0}
    for _ in range(300):
        garbage = rng.integers(0, 256, size=4 * int(rng.integers(0, 20)), dtype=np.uint8).tobytes()
        decoder = SymbolDecoder(garbage)
        try:
            decoded = decoder.decode(rng.dirichlet(np.ones(3), size=200))
            assert decoded.min() >= 0 and decoded.max() < 3
            decoder.finish()
            outcomes["symbols"] += 1
        except BitstreamError:
            outcomes["BitstreamError"] += 1
    assert outcomes["BitstreamError"] > 0
