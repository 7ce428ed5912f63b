"""The lcomp file format: a small header, named payload parts, and a CRC-32.

Byte layout (all details and the reasons in ``docs/bitstream.md``)::

    magic "LCMP" | version u8 | codec name | fingerprint (8 bytes) | height | width | settings JSON
    | part count | (part name, part length) * count | payloads, concatenated | CRC-32 (big-endian)

Names and the settings JSON are length-prefixed; every integer is an unsigned LEB128 varint.
:func:`unpack` checks everything (magic, version, CRC, every length against the bytes that remain, every
limit) before it allocates anything whose size comes from the file, and reports any problem as
:class:`BitstreamError`. :func:`pack` refuses anything :func:`unpack` would refuse, and
``pack(unpack(data)) == data`` for every file :func:`unpack` accepts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from collections.abc import Iterable, Mapping

from lcomp.errors import BitstreamError, ModelMismatchError

MAGIC = b"LCMP"
FORMAT_VERSION = 1
FINGERPRINT_BYTES = 8
CRC_BYTES = 4

#: Codec and part names: 1..64 printable ASCII characters without spaces.
MAX_NAME_BYTES = 64
#: Upper bound on the settings JSON (it is meant to be a handful of numbers).
MAX_SETTINGS_BYTES = 65536
MAX_PARTS = 4096
#: Default limits on the image size a file may announce (each side, and height * width).
DEFAULT_MAX_SIDE = 2**16
DEFAULT_MAX_PIXELS = 2**28
# A varint carries 7 bits per byte; 9 bytes hold any value below 2**63, which is plenty for sizes.
_MAX_VARINT_BYTES = 9
# Settings integers stay within int64 so every JSON reader can represent them.
_MAX_SETTINGS_INT = 2**63 - 1


# ----------------------------------------------------------------------------------------------------
# Validation shared by pack (what we write) and unpack (what we accept)


def _check_name(name, what: str) -> str:
    if not isinstance(name, str):
        raise BitstreamError(f"{what} must be a string, got {type(name).__name__}")
    if not 1 <= len(name) <= MAX_NAME_BYTES or not all("!" <= ch <= "~" for ch in name):
        raise BitstreamError(
            f"{what} must be 1..{MAX_NAME_BYTES} printable ASCII characters without spaces, got {name!r}"
        )
    return name


def _check_settings_value(key: str, value, allow_list: bool = True) -> None:
    if isinstance(value, bool) or isinstance(value, str):
        return
    if isinstance(value, int):
        if abs(value) > _MAX_SETTINGS_INT:
            raise BitstreamError(f"setting {key!r}: integer {value} is outside the int64 range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BitstreamError(f"setting {key!r}: {value} is not a finite number")
        return
    if isinstance(value, list) and allow_list:
        for item in value:
            _check_settings_value(key, item, allow_list=False)
        return
    kinds = "an int, float, string or bool" + (", or a list of those" if allow_list else " (lists do not nest)")
    raise BitstreamError(f"setting {key!r} must be {kinds}, got {type(value).__name__}")


def _check_settings(settings) -> dict:
    if not isinstance(settings, Mapping):
        raise BitstreamError(f"settings must be a dict, got {type(settings).__name__}")
    for key, value in settings.items():
        if not isinstance(key, str):
            raise BitstreamError(f"setting names must be strings, got {key!r}")
        _check_settings_value(key, value)
    return {key: (list(value) if isinstance(value, list) else value) for key, value in settings.items()}


def _encode_settings(settings: dict) -> bytes:
    """Canonical JSON: sorted keys, no spaces, ASCII only; the empty dict is the empty string."""
    if not settings:
        return b""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode(
        "ascii"
    )


def _check_dimensions(height, width, max_side: int, max_pixels: int) -> None:
    for what, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise BitstreamError(f"image {what} must be an integer, got {value!r}")
        if not 1 <= value <= max_side:
            raise BitstreamError(f"image {what} {value} is outside 1..{max_side}")
    if height * width > max_pixels:
        raise BitstreamError(f"image size {height}x{width} exceeds the limit of {max_pixels} pixels")


@dataclasses.dataclass(frozen=True)
class Header:
    """What the decoder needs besides the payload.

    Attributes:
      codec: registry name of the codec that wrote the file (printable ASCII, 1..64 characters).
      fingerprint: 8 bytes identifying the model parameters (see :func:`check_model`).
      height, width: size of the original (uncropped, unpadded) image in pixels.
      settings: the codec's settings for this file: a flat dict of ints, floats, strings, bools and lists
        of those.
    """

    codec: str
    fingerprint: bytes
    height: int
    width: int
    settings: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        _check_name(self.codec, "codec name")
        if not isinstance(self.fingerprint, (bytes, bytearray)) or len(self.fingerprint) != FINGERPRINT_BYTES:
            raise BitstreamError(f"model fingerprint must be {FINGERPRINT_BYTES} bytes, got {self.fingerprint!r}")
        object.__setattr__(self, "fingerprint", bytes(self.fingerprint))
        # Only the type here; the size limits depend on the reader and are checked by pack/unpack.
        _check_dimensions(self.height, self.width, max_side=2**63, max_pixels=2**126)
        object.__setattr__(self, "settings", _check_settings(self.settings))


@dataclasses.dataclass(frozen=True)
class Container:
    """A parsed file: the header and the named payload parts, in file order."""

    header: Header
    parts: tuple[tuple[str, bytes], ...] = ()

    def __post_init__(self):
        if not isinstance(self.header, Header):
            raise BitstreamError(f"header must be a Header, got {type(self.header).__name__}")
        parts = []
        for entry in self.parts:
            is_pair = isinstance(entry, tuple) and len(entry) == 2
            if not is_pair or not isinstance(entry[1], (bytes, bytearray, memoryview)):
                raise BitstreamError(f"each part must be a (name, bytes) pair, got {entry!r:.80}")
            parts.append((entry[0], bytes(entry[1])))
        parts = tuple(parts)
        if len(parts) > MAX_PARTS:
            raise BitstreamError(f"a file holds at most {MAX_PARTS} parts, got {len(parts)}")
        seen = set()
        for name, _ in parts:
            _check_name(name, "part name")
            if name in seen:
                raise BitstreamError(f"duplicate part name {name!r}")
            seen.add(name)
        object.__setattr__(self, "parts", parts)

    @property
    def part_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.parts)

    def part(self, name: str) -> bytes:
        """The payload of part ``name``; BitstreamError if the file has no such part."""
        for part_name, payload in self.parts:
            if part_name == name:
                return payload
        raise BitstreamError(f"the file has no part {name!r} (it has: {', '.join(self.part_names) or 'none'})")

    def with_parts(self, names: Iterable[str]) -> Container:
        """A copy holding only the named parts (kept in file order), e.g. to cut a progressive file."""
        wanted = set(names)
        for name in wanted:
            self.part(name)  # raises for unknown names
        return dataclasses.replace(self, parts=tuple(part for part in self.parts if part[0] in wanted))

    def first_parts(self, count: int) -> Container:
        """A copy holding the first ``count`` parts: a progressive file cut after ``count`` steps."""
        if not 0 <= count <= len(self.parts):
            raise BitstreamError(f"cannot keep {count} parts of a file that has {len(self.parts)}")
        return dataclasses.replace(self, parts=self.parts[:count])


# ----------------------------------------------------------------------------------------------------
# Varints


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, least significant group first, high bit set on all but the last."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** (7 * _MAX_VARINT_BYTES):
        raise BitstreamError(f"varints hold integers in [0, 2**63), got {value!r}")
    out = bytearray()
    while True:
        group = value & 0x7F
        value >>= 7
        if value:
            out.append(group | 0x80)
        else:
            out.append(group)
            return bytes(out)


class _Reader:
    """A cursor over the file body that checks every read against the bytes that remain."""

    def __init__(self, data: bytes):
        self._data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self.pos

    def take(self, count: int, what: str) -> bytes:
        if count > self.remaining:
            raise BitstreamError(f"{what} needs {count} bytes but only {self.remaining} remain")
        chunk = self._data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def varint(self, what: str) -> int:
        value = 0
        for index in range(_MAX_VARINT_BYTES):
            if self.remaining < 1:
                raise BitstreamError(f"the file ends inside the {what}")
            byte = self._data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << (7 * index)
            if not byte & 0x80:
                if byte == 0 and index > 0:
                    raise BitstreamError(f"the {what} is a non-minimal varint (trailing zero byte)")
                return value
        raise BitstreamError(f"the {what} is a varint longer than {_MAX_VARINT_BYTES} bytes")

    def length_prefixed(self, limit: int, what: str) -> bytes:
        length = self.varint(f"length of the {what}")
        if length > limit:
            raise BitstreamError(f"the {what} takes {length} bytes; the limit is {limit}")
        return self.take(length, what)


def _decode_name(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError(f"the {what} is not ASCII: {raw[:MAX_NAME_BYTES]!r}") from None
    return _check_name(text, what)


def _decode_settings(raw: bytes) -> dict:
    if not raw:
        return {}
    try:
        settings = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BitstreamError(f"the settings are not valid UTF-8 JSON: {exc}") from None
    if not isinstance(settings, dict):
        raise BitstreamError(f"the settings must be a JSON object, got {type(settings).__name__}")
    settings = _check_settings(settings)
    # One byte string per settings dict: this rejects duplicate keys, spaces, "{}" and other variants, so
    # that a file's bytes are determined by its contents.
    if _encode_settings(settings) != raw:
        raise BitstreamError("the settings JSON is not in canonical form (sorted keys, compact, ASCII)")
    return settings


# ----------------------------------------------------------------------------------------------------
# pack / unpack


def _header_and_index(container: Container) -> bytes:
    """Everything before the payloads: header fields, part count, part names and lengths."""
    header = container.header
    _check_dimensions(header.height, header.width, DEFAULT_MAX_SIDE, DEFAULT_MAX_PIXELS)
    codec = header.codec.encode("ascii")
    settings = _encode_settings(header.settings)
    if len(settings) > MAX_SETTINGS_BYTES:
        raise BitstreamError(f"the settings JSON is {len(settings)} bytes; the limit is {MAX_SETTINGS_BYTES}")
    out = bytearray(MAGIC)
    out.append(FORMAT_VERSION)
    out += encode_varint(len(codec)) + codec
    out += header.fingerprint
    out += encode_varint(header.height) + encode_varint(header.width)
    out += encode_varint(len(settings)) + settings
    out += encode_varint(len(container.parts))
    for name, payload in container.parts:
        encoded_name = name.encode("ascii")
        out += encode_varint(len(encoded_name)) + encoded_name + encode_varint(len(payload))
    return bytes(out)


def pack(container: Container) -> bytes:
    """Serialise ``container`` to the bytes of an lcomp file (layout in ``docs/bitstream.md``)."""
    body = _header_and_index(container) + b"".join(payload for _, payload in container.parts)
    return body + zlib.crc32(body).to_bytes(CRC_BYTES, "big")


def unpack(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int = DEFAULT_MAX_SIDE) -> Container:
    """Parse and validate an lcomp file.

    Raises:
      BitstreamError: wrong magic, unsupported version, CRC mismatch, truncation, bad varints, lengths
        beyond the data, image size outside ``1..max_side`` per side or above ``max_pixels``, invalid names
        or settings, too many or duplicate parts, trailing bytes. The message says which.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < len(MAGIC) and MAGIC.startswith(data):
        raise BitstreamError(f"the file is truncated ({len(data)} bytes)")
    if data[: len(MAGIC)] != MAGIC:
        raise BitstreamError(f"not an lcomp file (the first bytes are {data[:4]!r}, expected {MAGIC!r})")
    if len(data) < len(MAGIC) + 1:
        raise BitstreamError("the file ends before the format version")
    version = data[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise BitstreamError(
            f"unsupported lcomp format version {version}; this lcomp reads version {FORMAT_VERSION}"
            + (" (the file was written by a newer lcomp)" if version > FORMAT_VERSION else "")
        )
    if len(data) < len(MAGIC) + 1 + CRC_BYTES:
        raise BitstreamError(f"the file is truncated ({len(data)} bytes)")
    body, stored_crc = data[:-CRC_BYTES], int.from_bytes(data[-CRC_BYTES:], "big")
    if zlib.crc32(body) != stored_crc:
        raise BitstreamError("CRC-32 mismatch: the file is corrupted or truncated")

    reader = _Reader(body)
    reader.take(len(MAGIC) + 1, "magic and version")
    codec = _decode_name(reader.length_prefixed(MAX_NAME_BYTES, "codec name"), "codec name")
    fingerprint = reader.take(FINGERPRINT_BYTES, "model fingerprint")
    height = reader.varint("image height")
    width = reader.varint("image width")
    _check_dimensions(height, width, max_side, max_pixels)
    settings = _decode_settings(reader.length_prefixed(MAX_SETTINGS_BYTES, "settings"))

    num_parts = reader.varint("part count")
    if num_parts > MAX_PARTS:
        raise BitstreamError(f"the file announces {num_parts} parts; the limit is {MAX_PARTS}")
    index = []
    for number in range(num_parts):
        name = _decode_name(reader.length_prefixed(MAX_NAME_BYTES, f"name of part {number}"), "part name")
        if any(name == seen for seen, _ in index):
            raise BitstreamError(f"duplicate part name {name!r}")
        index.append((name, reader.varint(f"length of part {name!r}")))
    payload_bytes = sum(length for _, length in index)
    if payload_bytes != reader.remaining:
        problem = "exceed" if payload_bytes > reader.remaining else "fall short of"
        raise BitstreamError(
            f"the part lengths add up to {payload_bytes} bytes, which {problem} the {reader.remaining}"
            " payload bytes in the file"
        )
    parts = tuple((name, reader.take(length, f"part {name!r}")) for name, length in index)
    return Container(Header(codec, fingerprint, height, width, settings), parts)


# ----------------------------------------------------------------------------------------------------
# Inspection


def header_bytes(container: Container) -> int:
    """Bytes of the file that are not payload: header, part index and CRC (the container's overhead)."""
    return len(_header_and_index(container)) + CRC_BYTES


def describe(data: bytes, **limits) -> dict:
    """What ``lcomp info`` prints about a file (which is unpacked and validated first).

    Returns a dict with ``codec``, ``fingerprint`` (hex), ``height``, ``width``, ``settings``,
    ``format_version``, ``total_bytes``, ``header_bytes``, ``part_bytes`` ({name: bytes}, in file order)
    and ``bits_per_pixel`` (total file bits over the image's pixels).
    """
    container = unpack(data, **limits)
    header = container.header
    return {
        "codec": header.codec,
        "fingerprint": header.fingerprint.hex(),
        "height": header.height,
        "width": header.width,
        "settings": dict(header.settings),
        "format_version": FORMAT_VERSION,
        "total_bytes": len(data),
        "header_bytes": header_bytes(container),
        "part_bytes": {name: len(payload) for name, payload in container.parts},
        "bits_per_pixel": 8 * len(data) / (header.height * header.width),
    }


def check_model(container: Container, codec_name: str, fingerprint: bytes) -> None:
    """Raise ModelMismatchError unless the file was made by ``codec_name`` with the model ``fingerprint``."""
    header = container.header
    if header.codec != codec_name or header.fingerprint != bytes(fingerprint):
        raise ModelMismatchError(
            f"this file was made by codec {header.codec} / model {header.fingerprint.hex()}, but the loaded"
            f" model is {codec_name} / {bytes(fingerprint).hex()}"
        )


# ----------------------------------------------------------------------------------------------------
# Part layouts: which parts a codec's files hold, declared once; validate / cut / cut-to-rate for all codecs


@dataclasses.dataclass(frozen=True)
class PartLayout:
    """The parts of one codec's files, declared instead of hand-checked.

    A file holds, in this order, side-information parts (`side`, each optional unless listed in
    `required`), then its stream parts. Stream parts are either a fixed tuple (`streams`, a codec that is
    not progressive) or numbered (`numbered_streams` = prefix): `prefix01`, `prefix02`, ... up to the count
    the header records under `count_setting`. A progressive file may hold any non-empty prefix of its
    numbered streams; `cut` and `cut_to_rate` write such prefixes without re-encoding.

    Examples::

        PartLayout(side=("sabr",), numbered_streams="t", count_setting="iterations")   # recurrent coder
        PartLayout(side=("mask",), required=("mask",), streams=("symbols",))           # one-shot codec
    """

    side: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    streams: tuple[str, ...] = ()
    numbered_streams: str = ""
    count_setting: str = ""

    def __post_init__(self):
        if bool(self.streams) == bool(self.numbered_streams):
            raise ValueError("a PartLayout has either fixed `streams` or `numbered_streams`, not both or neither")
        if self.numbered_streams and not self.count_setting:
            raise ValueError("numbered streams need the header setting that records their count")
        if not set(self.required) <= set(self.side):
            raise ValueError("required side parts must be listed in `side`")

    @property
    def progressive(self) -> bool:
        return bool(self.numbered_streams)

    def stream_name(self, index: int) -> str:
        """Name of stream `index` (0-based)."""
        if self.progressive:
            return f"{self.numbered_streams}{index + 1:02d}"
        return self.streams[index]

    def recorded_count(self, container: Container, limit: int | None = None) -> int:
        """The full stream count of a progressive file (its header setting), checked against 1..limit."""
        value = container.header.settings.get(self.count_setting)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (limit is not None and value > limit):
            bound = f"1..{limit}" if limit is not None else ">= 1"
            raise BitstreamError(f"file records {self.count_setting}={value!r}; expected an integer in {bound}")
        return value

    def validate(self, container: Container, limit: int | None = None) -> int:
        """Checks the file's parts against the layout; returns how many stream parts it holds.

        `limit` bounds the count a progressive file may record (the model's own maximum)."""
        names = list(container.part_names)
        side = [n for n in names if n in self.side]
        missing = [n for n in self.required if n not in side]
        expected_side = [n for n in self.side if n in side]
        if self.progressive:
            total = self.recorded_count(container, limit)
            streams = names[len(side):]
            expected_streams = [self.stream_name(i) for i in range(len(streams))]
            ok = 1 <= len(streams) <= total and streams == expected_streams
            described = f"{self.stream_name(0)}..{self.stream_name(total - 1)} (a non-empty prefix)"
        else:
            streams = names[len(side):]
            ok = streams == list(self.streams)
            described = ", ".join(self.streams)
        if missing or names[: len(side)] != expected_side or not ok:
            sides = ", ".join(f"{n}{'' if n in self.required else ' (optional)'}" for n in self.side)
            raise BitstreamError(
                f"unexpected parts {', '.join(names) or 'none'}; expected {sides + ', ' if sides else ''}{described}"
            )
        return len(streams)

    def cut(self, data: bytes, count: int, limit: int | None = None) -> bytes:
        """A progressive file cut after its first `count` streams: a valid file in its own right."""
        from lcomp.errors import ConfigError

        if not self.progressive:
            raise ConfigError("this codec's files are not progressive: they cannot be cut")
        if isinstance(count, bool) or int(count) != count or count < 1:
            raise ConfigError(f"a cut file needs at least one {self.count_setting[:-1] or 'stream'}, got {count}")
        box = unpack(data)
        held = self.validate(box, limit)
        if count > held:
            raise ConfigError(f"the file holds {held} {self.count_setting}; cannot keep {count}")
        names = [n for n in box.part_names if n in self.side] + [self.stream_name(i) for i in range(int(count))]
        return pack(box.with_parts(names))

    def cut_to_rate(self, data: bytes, max_bytes: float, limit: int | None = None) -> bytes:
        """The longest prefix whose whole file fits in `max_bytes` (at least one stream, even if larger)."""
        box = unpack(data)
        held = self.validate(box, limit)
        best = self.cut(data, 1, limit)
        for count in range(2, held + 1):
            candidate = self.cut(data, count, limit)
            if len(candidate) > max_bytes:
                break
            best = candidate
        return best
