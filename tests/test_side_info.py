"""Tests for lcomp.entropy.side_info: the integer-map coder (round trip, SABR's bytes, damage) and mask_from_counts."""

import numpy as np
import pytest

from lcomp import entropy
from lcomp.codecs.rnn import sabr
from lcomp.entropy import EntropyCodingError, decode_integer_map, encode_integer_map, mask_from_counts
from lcomp.errors import BitstreamError


def _frozen_sabr_count_map_coder(counts: np.ndarray, iterations: int) -> bytes:
    """SABR's count-map encoder as it was before lcomp.entropy.side_info existed (the format to keep)."""
    encoder = entropy.SymbolEncoder()
    rows, cols = counts.shape
    tables = np.ones((iterations + 1, iterations), np.int64)
    out = np.zeros(counts.shape, np.int32)
    for i in range(rows):
        for j in range(cols):
            context = out[i - 1, j] if i > 0 else 0
            value = int(counts[i, j])
            encoder.encode(np.array([value - 1], np.int32), tables[context].astype(np.float64)[None])
            out[i, j] = value
            tables[context, value - 1] += 24
    return encoder.to_bytes()


def _random_map(rng, shape, levels):
    """Spatially correlated values (the kind the context model is for), plus some noise."""
    base = rng.integers(0, levels, (shape[0], 1)) + rng.integers(0, levels, (1, shape[1]))
    return np.clip(base // 2 + rng.integers(-1, 2, shape), 0, levels - 1)


@pytest.mark.parametrize("shape,levels", [((7, 9), 16), ((1, 1), 2), ((1, 13), 3), ((11, 1), 5), ((12, 16), 64)])
def test_integer_map_round_trip(shape, levels):
    rng = np.random.default_rng(levels)
    for values in (rng.integers(0, levels, shape), _random_map(rng, shape, levels), np.full(shape, levels - 1)):
        data = encode_integer_map(values, levels)
        decoded = decode_integer_map(data, shape, levels)
        assert decoded.dtype == np.int32
        np.testing.assert_array_equal(decoded, values)


def test_integer_map_learns_and_trivial_maps_cost_nothing():
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 16, (12, 12))
    smooth = np.full((12, 12), 5)
    assert len(encode_integer_map(smooth, 16)) < len(encode_integer_map(noisy, 16)) / 4
    # One level (the map is implied) or no entries: nothing to send, and only the empty stream decodes.
    assert encode_integer_map(np.zeros((3, 4), np.int64), 1) == b""
    assert encode_integer_map(np.zeros((0, 4), np.int64), 7) == b""
    np.testing.assert_array_equal(decode_integer_map(b"", (3, 4), 1), np.zeros((3, 4)))
    assert decode_integer_map(b"", (0, 4), 7).shape == (0, 4)
    with pytest.raises(BitstreamError):
        decode_integer_map(b"\0\0\0\0", (3, 4), 1)


def test_same_bytes_as_the_sabr_count_map_coder():
    rng = np.random.default_rng(1)
    for trial in range(12):
        iterations = int(rng.integers(2, 25))
        shape = (int(rng.integers(1, 10)), int(rng.integers(1, 10)))
        counts = (rng.integers(1, iterations + 1, shape) if trial % 2 else _random_map(rng, shape, iterations) + 1)
        expected = _frozen_sabr_count_map_coder(counts, iterations)
        assert encode_integer_map(counts - 1, iterations) == expected
        assert sabr.encode_count_map(counts, iterations) == expected
        np.testing.assert_array_equal(sabr.decode_count_map(expected, shape, iterations), counts)


def test_sabr_count_map_of_a_shipped_model_file():
    """The `sabr` part of tests/fixtures/johnston2018_v1/sabr.lcomp (77x93 image, 16-pixel blocks, T = 8)."""
    data = bytes.fromhex("e7507c5c0410b59493954bfb20d7616a")
    counts = np.array(
        [[3, 5, 4, 3, 5, 3], [3, 4, 4, 5, 5, 6], [5, 7, 5, 6, 5, 3], [5, 5, 7, 4, 8, 2], [4, 3, 2, 2, 6, 3]]
    )
    np.testing.assert_array_equal(sabr.decode_count_map(data, (5, 6), 8), counts)
    assert encode_integer_map(counts - 1, 8) == data


def test_damaged_streams_raise_bitstream_error():
    rng = np.random.default_rng(2)
    shape, levels = (10, 12), 8
    values = np.minimum(rng.integers(0, levels, shape), rng.integers(0, levels, shape))
    data = encode_integer_map(values, levels)
    for case in range(100):
        damaged = bytearray(data)
        kind = case % 5
        if kind == 0:  # one flipped bit
            damaged[rng.integers(0, len(damaged))] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # cut (whole words or not)
            damaged = damaged[: rng.integers(0, len(damaged))]
        elif kind == 2:  # appended bytes (one extra word passes the range decoder's own end check)
            damaged += bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
        elif kind == 3:  # garbage of the right length
            damaged = bytearray(rng.integers(0, 256, len(damaged), dtype=np.uint8))
        else:  # one word dropped from the middle
            at = 4 * int(rng.integers(0, len(damaged) // 4))
            damaged = damaged[:at] + damaged[at + 4 :]
        assert bytes(damaged) != data
        with pytest.raises(BitstreamError):
            decode_integer_map(bytes(damaged), shape, levels)
    # The wrong shape or level count for good data is damage too, from the decoder's point of view.
    for wrong_shape, wrong_levels in (((12, 10), 8), ((10, 11), 8), ((10, 12), 9)):
        with pytest.raises(BitstreamError):
            decode_integer_map(data, wrong_shape, wrong_levels)


def test_tiny_maps_never_fail_with_anything_but_bitstream_error():
    """A few bytes holding a whole map have almost no redundancy: a damaged stream can be the exact encoding
    of another map (the container's CRC catches that). Anything else must be a BitstreamError."""
    rng = np.random.default_rng(3)
    for _ in range(150):
        shape, levels = (int(rng.integers(1, 4)), int(rng.integers(1, 4))), int(rng.integers(2, 9))
        garbage = bytes(rng.integers(0, 256, 4 * int(rng.integers(0, 3)), dtype=np.uint8))
        try:
            decoded = decode_integer_map(garbage, shape, levels)
        except BitstreamError:
            continue
        assert decoded.shape == shape and decoded.min() >= 0 and decoded.max() < levels
        assert encode_integer_map(decoded, levels) == garbage


def test_arguments_are_checked():
    good = encode_integer_map(np.zeros((2, 2), np.int64), 4)
    for values, levels in (
        (np.full((2, 2), 4), 4),  # value out of range
        (np.full((2, 2), -1), 4),
        (np.zeros((2, 2)), 4),  # floats
        (np.zeros(4, np.int64), 4),  # not 2D
        (np.zeros((2, 2), np.int64), 0),
        (np.zeros((2, 2), np.int64), 2.0),
        (np.zeros((2, 2), np.int64), entropy.side_info.MAX_LEVELS + 1),
    ):
        with pytest.raises(EntropyCodingError):
            encode_integer_map(values, levels)
    for data, shape, levels in (
        (good, (2,), 4),
        (good, (2, -1), 4),
        (good, (2.0, 2), 4),
        (good, (2, 2), True),
        ("text", (2, 2), 4),
    ):
        with pytest.raises(EntropyCodingError):
            decode_integer_map(data, shape, levels)


def test_mask_from_counts_hand_built():
    counts = np.array([[0, 2], [3, 1]])
    mask = mask_from_counts(counts, depth=3, repeat=2)
    assert mask.dtype == bool and mask.shape == (3, 4, 4)
    expected = np.array(
        [
            [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]],  # d = 0: every cell with count >= 1
            [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]],  # d = 1: counts >= 2
            [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]],  # d = 2: counts >= 3
        ],
        bool,
    )
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(mask_from_counts(counts, 3), expected[:, ::2, ::2])
    assert mask.sum() == 4 * counts.sum()
    # SABR's bit mask is this mask (T iterations, block / downsampling code positions per block side).
    np.testing.assert_array_equal(sabr.bit_mask(counts + 1, 4, 32, 16), mask_from_counts(counts + 1, 4, 2))
    for bad in ((np.array([[4]]), 3, 1), (np.array([[-1]]), 3, 1), (np.zeros((2, 2)), 3, 1), (counts, 3, 0)):
        with pytest.raises(ValueError):
            mask_from_counts(*bad)
