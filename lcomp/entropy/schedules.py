"""Decode schedules: which symbols are coded in which pass, and the one walker every codec codes with.

A symbol tensor (the recurrent coder's bits (T, N, h, w, C), a 3D model's latent volume (C, h, w), ...) is
split into an ordered list of passes. A pass names the container part (stream) its symbols go to and holds a
boolean mask over the tensor; every symbol belongs to exactly one pass. The probability model of a pass may
read every symbol of earlier passes and nothing else, so the decoder can run the passes in order with ONE
network call per pass, never one per symbol:

* `checkerboard_iterations`: the recurrent coder, two passes per iteration (the (i + j) even positions,
  then the odd ones), one stream per iteration;
* `wavefront`: 3D context models with a (2, 3, 3) channel-causal kernel: every symbol with the same
  t = 4 c + 2 h + w is independent of the others (spec mentzer2018 5.4), so a volume of C x H x W takes
  4 (C - 1) + 2 (H - 1) + W passes instead of C H W symbol steps;
* `channel_groups`: groups of whole channels, for models that condition a group on earlier groups only.

`encode`, `estimate` and `decode` below walk a schedule with the codec's table function; compress, the
model's estimate and decompress therefore visit the same symbols in the same order. Exact models
(`lcomp.entropy.exact`) give the same tables whether computed pass by pass or in one dense pass over the
finished tensor, so the encoder may use `dense_tables` (one network call) while the decoder follows the
passes.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np

from lcomp.entropy.frequencies import DEFAULT_PRECISION, code_length_bits
from lcomp.entropy.range_coding import SymbolDecoder, SymbolEncoder
from lcomp.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class CodingPass:
    """One pass: the stream (container part) it writes to, its symbols, and codec-specific coordinates."""

    part: str
    where: np.ndarray  # bool, the shape of the symbol tensor
    step: tuple = ()  # e.g. (iteration, colour) or (wavefront,): what the table function needs to know


@dataclasses.dataclass(frozen=True)
class Schedule:
    shape: tuple[int, ...]
    passes: tuple[CodingPass, ...]

    def __post_init__(self):
        count = np.zeros(self.shape, np.int32)
        for p in self.passes:
            if p.where.shape != self.shape or p.where.dtype != np.bool_:
                raise ConfigError(f"pass {p.step} mask has shape {p.where.shape}/{p.where.dtype}, expected bool {self.shape}")
            count += p.where
        if count.size and (count.min() != 1 or count.max() != 1):
            raise ConfigError("a schedule's passes must cover every symbol exactly once")

    @property
    def parts(self) -> tuple[str, ...]:
        """The streams, in the order their first pass runs."""
        return tuple(dict.fromkeys(p.part for p in self.passes))

    def order(self) -> np.ndarray:
        """The pass index of every symbol (int32, the tensor's shape)."""
        out = np.zeros(self.shape, np.int32)
        for i, p in enumerate(self.passes):
            out[p.where] = i
        return out

    def only(self, parts: Sequence[str]) -> "Schedule":
        """The passes of the given streams only (a progressive file cut short), covering fewer symbols."""
        keep = tuple(p for p in self.passes if p.part in set(parts))
        return _Partial(self.shape, keep)

    def check_dependencies(self, offsets: np.ndarray) -> None:
        """Raises ConfigError unless every symbol comes after each symbol it depends on.

        `offsets` (k, ndim): the relative positions (source - symbol) a symbol's probabilities may read; an
        offset pointing outside the tensor is ignored (padding)."""
        order = self.order()
        grid = np.indices(self.shape).reshape(len(self.shape), -1).T
        for off in np.asarray(offsets, np.int64).reshape(-1, len(self.shape)):
            src = grid + off
            inside = np.all((src >= 0) & (src < np.asarray(self.shape)), axis=1)
            a = order[tuple(grid[inside].T)]
            b = order[tuple(src[inside].T)]
            if np.any(b >= a):
                raise ConfigError(f"schedule codes a symbol no later than a symbol it depends on (offset {tuple(off)})")


class _Partial(Schedule):
    def __post_init__(self):  # a prefix of a full schedule: covers a subset, each symbol at most once
        pass


# --- schedules ----------------------------------------------------------------------------------------------


def checkerboard_iterations(
    iterations: int, batch: int, height: int, width: int, channels: int, part: Callable[[int], str]
) -> Schedule:
    """The recurrent coder's bits (T, N, h, w, C): per iteration t, pass (t, 0) codes the positions with
    (i + j) even, pass (t, 1) the odd ones; all C bits of a position share its pass; stream `part(t)`."""
    parity = np.add.outer(np.arange(height), np.arange(width)) % 2
    shape = (iterations, batch, height, width, channels)
    passes = []
    for t in range(iterations):
        for colour in (0, 1):
            where = np.zeros(shape, bool)
            where[t] = (parity == colour)[None, :, :, None]
            passes.append(CodingPass(part(t), where, (t, colour)))
    return Schedule(shape, tuple(passes))


def wavefront(channels: int, height: int, width: int, weights=(4, 2, 1), part: str = "symbols") -> Schedule:
    """Passes t = wc * c + wh * h + ww * w over a (C, H, W) volume, t ascending (Mentzer's 3D context)."""
    wc, wh, ww = (int(v) for v in weights)
    t = np.add.outer(np.add.outer(wc * np.arange(channels), wh * np.arange(height)), ww * np.arange(width))
    passes = tuple(CodingPass(part, t == value, (int(value),)) for value in np.unique(t))
    return Schedule((channels, height, width), passes)


def channel_groups(channels: int, height: int, width: int, group: int, part: str = "symbols") -> Schedule:
    """One pass per group of `group` consecutive channels of a (C, H, W) volume."""
    if group < 1:
        raise ConfigError(f"channel group size must be >= 1, got {group}")
    passes = []
    for start in range(0, channels, group):
        where = np.zeros((channels, height, width), bool)
        where[start : start + group] = True
        passes.append(CodingPass(part, where, (start // group,)))
    return Schedule((channels, height, width), tuple(passes))


# --- the walker ---------------------------------------------------------------------------------------------

#: `tables(symbols, coding_pass, where) -> (n, K)` integer frequencies of the n symbols `symbols[where]`
#: (C order), computed from the symbols of earlier passes only (`symbols` holds 0 wherever not yet coded).
TableFunction = Callable[[np.ndarray, CodingPass, np.ndarray], np.ndarray]
#: `dense(symbols) -> (*shape, K)` every symbol's frequencies from the finished tensor in one call (exact models).
DenseTableFunction = Callable[[np.ndarray], np.ndarray]


def _walk(schedule, sent, tables, visit, symbols):
    sent = np.ones(schedule.shape, bool) if sent is None else np.broadcast_to(np.asarray(sent, bool), schedule.shape)
    for p in schedule.passes:
        where = p.where & sent
        if not where.any():
            continue
        freqs = tables(symbols, p, where)
        symbols[where] = visit(p, where, freqs)
    return symbols


def _dense_lookup(dense: DenseTableFunction, symbols: np.ndarray) -> TableFunction:
    full = np.asarray(dense(symbols))
    return lambda _symbols, _pass, where: full[where]


def encode(
    schedule: Schedule,
    symbols: np.ndarray,
    *,
    tables: TableFunction | None = None,
    dense_tables: DenseTableFunction | None = None,
    sent: np.ndarray | None = None,
    precision: int = DEFAULT_PRECISION,
) -> tuple[dict[str, bytes], dict[str, float]]:
    """Range-codes `symbols` (integers) pass by pass; returns ({part: bytes}, {part: estimated bits}).

    Symbols outside `sent` are not coded (and must be 0). The estimate is the ideal code length of the very
    tables the coder used, so file and estimate differ only by the coder's few words of overhead."""
    symbols = np.asarray(symbols)
    if symbols.shape != schedule.shape:
        raise ConfigError(f"symbols have shape {symbols.shape}, the schedule {schedule.shape}")
    if sent is not None and np.any(np.where(np.broadcast_to(sent, symbols.shape), 0, symbols)):
        raise ConfigError("symbols that are not sent must be 0 (the decoder sees them as 0)")
    if (tables is None) == (dense_tables is None):
        raise ConfigError("give exactly one of tables= and dense_tables=")
    lookup = tables if tables is not None else _dense_lookup(dense_tables, symbols)
    encoders = {part: SymbolEncoder(precision) for part in schedule.parts}
    estimates = dict.fromkeys(schedule.parts, 0.0)

    def visit(p, where, freqs):
        values = symbols[where]
        encoders[p.part].encode(values.astype(np.int32), freqs=freqs)
        estimates[p.part] += code_length_bits(values, freqs, precision)
        return values

    # Pass by pass, the table function must not see symbols that are not coded yet: start from zeros and fill
    # each pass in, exactly as the decoder does.
    start = np.zeros_like(symbols) if tables is not None else symbols.copy()
    _walk(schedule, sent, lookup, visit, start)
    return {part: enc.to_bytes() for part, enc in encoders.items()}, estimates


def decode(
    schedule: Schedule,
    streams: Mapping[str, bytes],
    tables: TableFunction,
    *,
    sent: np.ndarray | None = None,
    precision: int = DEFAULT_PRECISION,
    dtype=np.int32,
) -> np.ndarray:
    """Decodes every pass of `schedule` from `streams` ({part: bytes}); symbols not sent stay 0.

    Each stream must end exactly after its last symbol (BitstreamError otherwise)."""
    decoders = {part: SymbolDecoder(streams[part], precision) for part in schedule.parts}

    def visit(p, where, freqs):
        return decoders[p.part].decode(freqs=freqs)

    symbols = _walk(schedule, sent, tables, visit, np.zeros(schedule.shape, dtype))
    for decoder in decoders.values():
        decoder.finish()
    return symbols
