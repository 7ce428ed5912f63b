"""Fuzzing the whole decode path: container parsing plus range decoding of real parts.

A toy two-part codec writes a real file (a binary mask and a two-pass categorical stream whose second
pass depends on the first), its parts declared as a `PartLayout` the way codecs declare theirs. Over a
thousand seeded mutations of that file (bit flips, byte changes, insertions, deletions, truncations,
duplicated spans) go through the decoder a real codec would run. Every one must end in an LcompError or
decode without crashing, quickly.
"""

import time
import zlib

import numpy as np
import pytest

from lcomp.container import Container, Header, PartLayout, check_model, pack, unpack
from lcomp.entropy import SymbolDecoder, SymbolEncoder
from lcomp.errors import BitstreamError, LcompError

CODEC = "toy"
FINGERPRINT = b"\x5a" * 8
HEIGHT, WIDTH = 12, 16
MAX_SECONDS_PER_CASE = 2.0
#: What a file of the toy codec holds: the mask (side information, required), then one symbol stream.
LAYOUT = PartLayout(side=("mask",), required=("mask",), streams=("symbols",))


# ---------------------------------------------------------------------------------------------------
# The toy codec: its probabilities depend only on the header and on symbols decoded earlier.


def mask_p_one(height, width):
    column = np.arange(width)[None, :] / max(width - 1, 1)
    return np.broadcast_to(0.2 + 0.6 * column, (height, width))


def first_pass_probs(mask, levels):
    """Even checkerboard positions; the mask bit at the position shifts the distribution."""
    probs = np.ones(mask.shape + (levels,))
    probs[..., 0] += 6.0 * (mask == 0)
    probs[..., levels - 1] += 6.0 * (mask == 1)
    return probs[checkerboard(mask.shape)]


def second_pass_probs(first, shape, levels):
    """Odd positions, conditioned on the left neighbour decoded in the first pass."""
    grid = np.zeros(shape, dtype=np.int64)
    grid[checkerboard(shape)] = first
    left = np.roll(grid, 1, axis=1)[~checkerboard(shape)]
    probs = np.ones((left.size, levels))
    probs[np.arange(left.size), left] += 4.0
    return probs


def checkerboard(shape):
    rows, cols = np.indices(shape)
    return (rows + cols) % 2 == 0


def toy_encode(rng, levels=5):
    mask = (rng.random((HEIGHT, WIDTH)) < mask_p_one(HEIGHT, WIDTH)).astype(np.int32)
    mask_encoder = SymbolEncoder()
    mask_encoder.encode_bits(mask, mask_p_one(HEIGHT, WIDTH))

    symbols = rng.integers(0, levels, size=(HEIGHT, WIDTH))
    first = symbols[checkerboard(symbols.shape)]
    second = symbols[~checkerboard(symbols.shape)]
    symbol_encoder = SymbolEncoder()
    symbol_encoder.encode(first, first_pass_probs(mask, levels))
    symbol_encoder.encode(second, second_pass_probs(first, symbols.shape, levels))

    header = Header(CODEC, FINGERPRINT, HEIGHT, WIDTH, {"levels": levels, "passes": 2})
    parts = (("mask", mask_encoder.to_bytes()), ("symbols", symbol_encoder.to_bytes()))
    return pack(Container(header, parts)), mask, symbols


def toy_decode(data):
    """What the toy codec's decompress does (a decoder configured with small size limits)."""
    container = unpack(data, max_side=64, max_pixels=2048)
    check_model(container, CODEC, FINGERPRINT)
    LAYOUT.validate(container)  # the parts, in order, before any of them is decoded
    header = container.header
    levels = header.settings.get("levels")
    if not isinstance(levels, int) or isinstance(levels, bool) or not 2 <= levels <= 16:
        raise BitstreamError(f"invalid setting levels={levels!r}")
    shape = (header.height, header.width)

    mask_decoder = SymbolDecoder(container.part("mask"))
    mask = mask_decoder.decode_bits(mask_p_one(*shape))
    mask_decoder.finish()

    symbol_decoder = SymbolDecoder(container.part("symbols"))
    first = symbol_decoder.decode(first_pass_probs(mask, levels))
    second = symbol_decoder.decode(second_pass_probs(first, shape, levels))
    symbol_decoder.finish()
    symbols = np.zeros(shape, dtype=np.int32)
    symbols[checkerboard(shape)] = first
    symbols[~checkerboard(shape)] = second
    return mask, symbols


# ---------------------------------------------------------------------------------------------------
# Mutations


def mutate(rng, data: bytes) -> tuple[str, bytes]:
    """One random corruption of ``data``; never returns ``data`` unchanged."""
    buffer = bytearray(data)
    kind = ["bit_flips", "byte_set", "insert", "delete", "truncate", "duplicate"][rng.integers(6)]
    if kind == "bit_flips":
        for _ in range(int(rng.integers(1, 4))):
            position = int(rng.integers(len(buffer)))
            buffer[position] ^= 1 << int(rng.integers(8))
    elif kind == "byte_set":
        for _ in range(int(rng.integers(1, 4))):
            buffer[int(rng.integers(len(buffer)))] = int(rng.integers(256))
    elif kind == "insert":
        position = int(rng.integers(len(buffer) + 1))
        buffer[position:position] = rng.integers(0, 256, size=int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
    elif kind == "delete":
        start = int(rng.integers(len(buffer)))
        del buffer[start : start + int(rng.integers(1, 9))]
    elif kind == "truncate":
        del buffer[int(rng.integers(len(buffer))) :]
    else:  # duplicate a span in place, as a broken copy might
        start = int(rng.integers(len(buffer)))
        span = buffer[start : start + int(rng.integers(1, 17))]
        buffer[start:start] = span
    mutated = bytes(buffer)
    if mutated == data:  # e.g. a byte set to its own value
        mutated = data[:-1]
        kind = "truncate"
    return kind, mutated


def with_valid_crc(rng, data: bytes) -> tuple[str, bytes]:
    """Mutate the CRC-protected body, then write a matching CRC, so the structural checks are reached."""
    kind, body = mutate(rng, data[:-4])
    return kind, body + zlib.crc32(body).to_bytes(4, "big")


def with_mutated_payload(rng, data: bytes) -> tuple[str, bytes]:
    """A well-formed file whose range-coded payload is damaged: reaches the range decoder every time."""
    container = unpack(data)
    index = int(rng.integers(len(container.parts)))
    name, payload = container.parts[index]
    kind, damaged = mutate(rng, payload) if payload else ("insert", b"\x01\x02\x03\x04")
    parts = list(container.parts)
    parts[index] = (name, damaged)
    return f"{name}:{kind}", pack(Container(container.header, tuple(parts)))


def run_case(label, data):
    """Decode one mutated file; return 'error' or 'decoded'. Anything else fails the test."""
    start = time.perf_counter()
    try:
        mask, symbols = toy_decode(data)
        assert mask.shape == symbols.shape
        outcome = "decoded"
    except LcompError:
        outcome = "error"
    except BaseException as exc:  # noqa: BLE001 -- a Rust panic is a BaseException; report it as a failure
        if isinstance(exc, KeyboardInterrupt):
            raise
        pytest.fail(f"{label}: escaped as {type(exc).__module__}.{type(exc).__name__}: {exc}")
    elapsed = time.perf_counter() - start
    assert elapsed < MAX_SECONDS_PER_CASE, f"{label} took {elapsed:.2f} s"
    return outcome


# ---------------------------------------------------------------------------------------------------
# Tests


@pytest.fixture(scope="module")
def original():
    return toy_encode(np.random.default_rng(2024))


def test_the_original_file_decodes(original):
    data, mask, symbols = original
    decoded_mask, decoded_symbols = toy_decode(data)
    assert np.array_equal(decoded_mask, mask)
    assert np.array_equal(decoded_symbols, symbols)
    assert len(unpack(data).part("symbols")) > 8  # a real multi-word stream, not a trivial one
    assert LAYOUT.validate(unpack(data)) == 1


def test_files_with_other_parts_are_refused_before_decoding(original):
    container = unpack(original[0])
    mask, symbols = container.part("mask"), container.part("symbols")
    for parts in ((("symbols", symbols),), (("symbols", symbols), ("mask", mask)),
                  (("mask", mask), ("symbols", symbols), ("extra", b""))):
        data = pack(Container(container.header, parts))
        with pytest.raises(BitstreamError, match="unexpected parts"):
            toy_decode(data)


def test_raw_mutations_are_rejected(original):
    """Arbitrary damage: the CRC (or an earlier check) must catch every one of these."""
    data = original[0]
    rng = np.random.default_rng(1)
    outcomes = {"error": 0, "decoded": 0}
    for case in range(500):
        kind, mutated = mutate(rng, data)
        outcomes[run_case(f"raw case {case} ({kind})", mutated)] += 1
    assert outcomes == {"error": 500, "decoded": 0}


def test_mutations_behind_a_valid_crc(original):
    """Damage that the CRC cannot see: header fields, lengths and payloads are checked one by one."""
    data = original[0]
    rng = np.random.default_rng(2)
    outcomes = {"error": 0, "decoded": 0}
    for case in range(400):
        kind, mutated = with_valid_crc(rng, data)
        outcomes[run_case(f"valid-CRC case {case} ({kind})", mutated)] += 1
    assert outcomes["error"] > 300  # most structural damage is detected, the rest decodes harmlessly


def test_damaged_range_coded_payloads(original):
    """Well-formed files with damaged payloads: the range decoder gets garbage, and copes."""
    data = original[0]
    rng = np.random.default_rng(3)
    outcomes = {"error": 0, "decoded": 0}
    for case in range(300):
        kind, mutated = with_mutated_payload(rng, data)
        outcomes[run_case(f"payload case {case} ({kind})", mutated)] += 1
    # Partial words, impossible coder states and SymbolDecoder.finish()'s end-of-stream consistency check
    # catch nearly all damage (a damaged stream rarely ends where the encoder sealed it).
    assert outcomes["error"] >= 0.9 * 300


def test_size_limits_protect_the_decoder(original):
    """A CRC-valid file announcing a huge image is refused by the decoder's limits before any work."""
    container = unpack(original[0])
    for (height, width), message in [((4000, 4000), "height 4000 is outside 1..64"),
                                     ((64, 40), "exceeds the limit of 2048 pixels")]:
        header = Header(CODEC, FINGERPRINT, height, width, container.header.settings)
        data = pack(Container(header, container.parts))
        assert run_case(f"{height}x{width} image", data) == "error"
        with pytest.raises(BitstreamError, match=message):
            toy_decode(data)
