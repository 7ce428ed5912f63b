"""Tests for lcomp.container: round trips, inspection, model checks and every validation rule."""

import zlib

import pytest

from lcomp.container import (
    FORMAT_VERSION,
    MAGIC,
    MAX_PARTS,
    Container,
    Header,
    PartLayout,
    check_model,
    describe,
    encode_varint,
    header_bytes,
    pack,
    unpack,
)
from lcomp.errors import BitstreamError, ConfigError, ModelMismatchError

FINGERPRINT = bytes.fromhex("0123456789abcdef")


def make_container(**header_changes):
    fields = dict(
        codec="johnston2018",
        fingerprint=FINGERPRINT,
        height=512,
        width=768,
        settings={"iterations": 3, "quality": 0.75, "mode": "gru", "entropy": True, "scales": [1, 2.5, "x"]},
    )
    fields.update(header_changes)
    parts = (("iter00", b"\x01\x02\x03\x04"), ("iter01", b""), ("iter02", bytes(range(256)) * 3))
    return Container(Header(**fields), parts)


def with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


def varint(value: int) -> bytes:
    return encode_varint(value)


def raw_file(
    *,
    magic=MAGIC,
    version=FORMAT_VERSION,
    codec=b"toy",
    fingerprint=FINGERPRINT,
    height=varint(4),
    width=varint(6),
    settings=b'{"a":1}',
    parts=((b"p0", 3), (b"p1", 2)),
    payload=b"abcde",
    crc=True,
):
    """Assemble a file field by field (raw bytes), so each test can break exactly one thing."""
    body = bytearray(magic) + bytes([version])
    body += varint(len(codec)) + codec + fingerprint + height + width
    body += varint(len(settings)) + settings + varint(len(parts))
    for name, length in parts:
        body += varint(len(name)) + name + varint(length)
    body += payload
    return with_crc(bytes(body)) if crc else bytes(body)


# ---------------------------------------------------------------------------------------------------
# Round trips and inspection


def test_round_trip_preserves_everything():
    container = make_container()
    data = pack(container)
    restored = unpack(data)
    assert restored == container
    assert restored.header.settings == container.header.settings
    assert restored.part("iter02") == bytes(range(256)) * 3
    assert restored.part_names == ("iter00", "iter01", "iter02")
    assert pack(restored) == data


def test_raw_helper_matches_pack():
    """The hand-built layout in this file is the layout pack writes (so the rule tests test the format)."""
    container = Container(Header("toy", FINGERPRINT, 4, 6, {"a": 1}), (("p0", b"abc"), ("p1", b"de")))
    assert pack(container) == raw_file()


def test_layout_of_a_minimal_file():
    data = pack(Container(Header("c", b"\x00" * 8, 1, 300)))
    assert data[:5] == b"LCMP\x01"
    assert data[5:7] == b"\x01c"
    assert data[7:15] == b"\x00" * 8
    assert data[15:18] == b"\x01\xac\x02"  # height 1, width 300 = 0b10_0101100 -> 0xac 0x02
    assert data[18:20] == b"\x00\x00"  # empty settings, no parts
    assert data[20:] == zlib.crc32(data[:20]).to_bytes(4, "big")
    assert header_bytes(unpack(data)) == len(data) == 24


def test_varint_encoding():
    assert encode_varint(0) == b"\x00"
    assert encode_varint(127) == b"\x7f"
    assert encode_varint(128) == b"\x80\x01"
    assert encode_varint(2**63 - 1) == b"\xff" * 8 + b"\x7f"
    for bad in (-1, 2**63, 1.0, True):
        with pytest.raises(BitstreamError):
            encode_varint(bad)


def test_header_is_compact():
    container = make_container(settings={})
    # magic 4, version 1, codec 1 + 12, fingerprint 8, height and width 2 + 2, empty settings 1, part
    # count 1, 3 x (name 1 + 6, length 1 / 1 / 2 bytes for 4 / 0 / 768), CRC 4
    assert header_bytes(container) == 4 + 1 + 13 + 8 + 4 + 1 + 1 + (3 * 7 + 4) + 4
    assert header_bytes(container) == len(pack(container)) - sum(len(p) for _, p in container.parts)


def test_describe():
    container = make_container()
    data = pack(container)
    info = describe(data)
    assert info["codec"] == "johnston2018"
    assert info["fingerprint"] == "0123456789abcdef"
    assert (info["height"], info["width"]) == (512, 768)
    assert info["settings"] == container.header.settings
    assert info["format_version"] == FORMAT_VERSION
    assert info["total_bytes"] == len(data)
    assert info["part_bytes"] == {"iter00": 4, "iter01": 0, "iter02": 768}
    assert info["header_bytes"] + sum(info["part_bytes"].values()) == len(data)
    assert info["bits_per_pixel"] == pytest.approx(8 * len(data) / (512 * 768))
    with pytest.raises(BitstreamError):
        describe(data[:-1])


def test_prefix_files_for_progressive_decoding():
    container = make_container()
    first_two = container.first_parts(2)
    assert first_two.part_names == ("iter00", "iter01")
    assert unpack(pack(first_two)) == first_two
    assert len(pack(first_two)) < len(pack(container))
    chosen = container.with_parts(["iter02", "iter00"])
    assert chosen.part_names == ("iter00", "iter02")  # file order is kept
    assert unpack(pack(chosen)).part("iter02") == container.part("iter02")
    with pytest.raises(BitstreamError, match="no part 'iter09'"):
        container.with_parts(["iter09"])
    with pytest.raises(BitstreamError):
        container.first_parts(4)


def test_missing_part_is_a_bitstream_error():
    with pytest.raises(BitstreamError, match="no part 'latents'.*iter00, iter01, iter02"):
        make_container().part("latents")


def test_check_model():
    container = make_container()
    check_model(container, "johnston2018", FINGERPRINT)
    with pytest.raises(ModelMismatchError) as info:
        check_model(container, "mentzer2018", FINGERPRINT)
    assert str(info.value) == (
        "this file was made by codec johnston2018 / model 0123456789abcdef, but the loaded model is"
        " mentzer2018 / 0123456789abcdef"
    )
    with pytest.raises(ModelMismatchError, match="loaded model is johnston2018 / ffffffffffffffff"):
        check_model(container, "johnston2018", b"\xff" * 8)
    assert issubclass(ModelMismatchError, BitstreamError)


# ---------------------------------------------------------------------------------------------------
# What pack refuses to write


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"codec": ""}, "codec name"),
        ({"codec": "has space"}, "codec name"),
        ({"codec": "caf\u00e9"}, "codec name"),
        ({"codec": "x" * 65}, "codec name"),
        ({"fingerprint": b"short"}, "fingerprint"),
        ({"fingerprint": "0123456789abcdef"}, "fingerprint"),
        ({"height": 0}, "height"),
        ({"width": -3}, "width"),
        ({"width": 2.0}, "width"),
        ({"settings": {"a": None}}, "setting 'a'"),
        ({"settings": {"a": float("nan")}}, "finite"),
        ({"settings": {"a": [[1]]}}, "do not nest"),
        ({"settings": {"a": {"b": 1}}}, "setting 'a'"),
        ({"settings": {1: 2}}, "setting names"),
        ({"settings": {"a": 2**70}}, "int64"),
        ({"settings": [("a", 1)]}, "dict"),
    ],
)
def test_header_rejects_unrepresentable_fields(changes, message):
    with pytest.raises(BitstreamError, match=message):
        make_container(**changes)


def test_pack_rejects_what_unpack_would_reject():
    with pytest.raises(BitstreamError, match="outside 1..65536"):
        pack(make_container(width=2**16 + 1))
    with pytest.raises(BitstreamError, match="pixels"):
        pack(make_container(height=2**15, width=2**14))
    with pytest.raises(BitstreamError, match="settings JSON"):
        pack(make_container(settings={"blob": "x" * 70000}))
    header = make_container().header
    with pytest.raises(BitstreamError, match="duplicate part name 'a'"):
        Container(header, (("a", b""), ("a", b"x")))
    with pytest.raises(BitstreamError, match="part name"):
        Container(header, (("", b""),))
    with pytest.raises(BitstreamError, match=r"\(name, bytes\) pair"):
        Container(header, (("a", "text"),))
    with pytest.raises(BitstreamError, match=r"\(name, bytes\) pair"):
        Container(header, (("a", b"", b""),))
    with pytest.raises(BitstreamError, match="at most 4096 parts"):
        Container(header, tuple((f"p{i}", b"") for i in range(MAX_PARTS + 1)))


# ---------------------------------------------------------------------------------------------------
# What unpack refuses to read: one test per rule


def test_valid_raw_file_is_accepted():
    container = unpack(raw_file())
    assert container.header.codec == "toy"
    assert container.parts == (("p0", b"abc"), ("p1", b"de"))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "truncated"),
        (b"LC", "truncated"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "not an lcomp file"),
        (b"LCMP", "before the format version"),
        (b"LCMP\x01\x00\x00", "truncated"),
    ],
)
def test_unpack_rejects_non_files(data, message):
    with pytest.raises(BitstreamError, match=message):
        unpack(data)


def test_unpack_rejects_unsupported_versions():
    with pytest.raises(BitstreamError, match="unsupported lcomp format version 2.*newer lcomp"):
        unpack(raw_file(version=2))
    with pytest.raises(BitstreamError, match="unsupported lcomp format version 0"):
        unpack(raw_file(version=0))


def test_unpack_checks_the_crc():
    good = raw_file()
    with pytest.raises(BitstreamError, match="CRC-32 mismatch"):
        unpack(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(BitstreamError, match="CRC-32 mismatch"):
        unpack(good[:20] + bytes([good[20] ^ 0x40]) + good[21:])
    with pytest.raises(BitstreamError, match="CRC-32 mismatch"):
        unpack(good[:-3])
    with pytest.raises(BitstreamError, match="CRC-32 mismatch"):
        unpack(raw_file(crc=False) + b"\x00\x00\x00\x00")


@pytest.mark.parametrize(
    "fields, message",
    [
        # varints
        ({"height": b"\x84\x00"}, "image height is a non-minimal varint"),
        ({"width": b"\xff" * 9 + b"\x01"}, "image width is a varint longer than 9 bytes"),
        # lengths beyond the data
        ({"parts": ((b"p0", 3), (b"p1", 3))}, "exceed the 5 payload bytes"),
        ({"parts": ((b"p0", 2**40),)}, "exceed the 5 payload bytes"),
        # trailing garbage inside the CRC-protected body
        ({"payload": b"abcdefg"}, "fall short of the 7 payload bytes"),
        # dimensions
        ({"height": varint(0)}, "height 0 is outside"),
        ({"width": varint(2**16 + 1)}, "width 65537 is outside"),
        ({"height": varint(2**16), "width": varint(2**16)}, "exceeds the limit of 268435456 pixels"),
        ({"height": varint(2**62), "width": varint(1)}, "outside"),
        # names
        ({"codec": b"caf\xc3\xa9"}, "codec name is not ASCII"),
        ({"codec": b"a b"}, "codec name must be"),
        ({"codec": b""}, "codec name must be"),
        ({"codec": b"x" * 65}, "codec name takes 65 bytes; the limit is 64"),
        ({"parts": ((b"p\xff", 5),)}, "part name is not ASCII"),
        ({"parts": ((b"p0", 3), (b"p0", 2))}, "duplicate part name 'p0'"),
        # settings
        ({"settings": b"\xff\xfe"}, "not valid UTF-8 JSON"),
        ({"settings": b'{"a":'}, "not valid UTF-8 JSON"),
        ({"settings": b"[1,2]"}, "must be a JSON object"),
        ({"settings": b'{"a":null}'}, "setting 'a'"),
        ({"settings": b'{"a":{"b":1}}'}, "setting 'a'"),
        ({"settings": b'{"a":NaN}'}, "finite"),
        ({"settings": b'{"a":1e999}'}, "finite"),
        ({"settings": b'{"a":' + b"9" * 5000 + b"}"}, "not valid UTF-8 JSON"),
        ({"settings": b"[" * 30000 + b"]" * 30000}, "not valid UTF-8 JSON"),
        ({"settings": b'{"b":1,"a":2}'}, "canonical"),
        ({"settings": b'{"a": 1}'}, "canonical"),
        ({"settings": b'{"a":1,"a":2}'}, "canonical"),
        ({"settings": b"{}"}, "canonical"),
        ({"settings": b'{"a":1.0e0}'}, "canonical"),
        ({"settings": b'{"\xc3\xa9":1}'}, "canonical"),
        ({"settings": b"x" * 65537}, "settings takes 65537 bytes; the limit is 65536"),
    ],
)
def test_unpack_validation_rules(fields, message):
    with pytest.raises(BitstreamError, match=message):
        unpack(raw_file(**fields))


def test_unpack_limits_parts():
    too_many = tuple((f"p{i}".encode(), 0) for i in range(MAX_PARTS + 1))
    with pytest.raises(BitstreamError, match="announces 4097 parts; the limit is 4096"):
        unpack(raw_file(parts=too_many, payload=b""))
    # A huge announced count is rejected before anything is read or allocated for it.
    no_parts = raw_file(parts=(), payload=b"", crc=False)
    assert no_parts.endswith(b"\x00")  # the part count
    with pytest.raises(BitstreamError, match="announces 1152921504606846976 parts"):
        unpack(with_crc(no_parts[:-1] + varint(2**60)))


@pytest.mark.parametrize(
    "body, message",
    [
        (MAGIC + b"\x01", "ends inside the length of the codec name"),
        (MAGIC + b"\x01\x03to", "codec name needs 3 bytes but only 2 remain"),
        (MAGIC + b"\x01\x03toy" + FINGERPRINT[:3], "model fingerprint needs 8 bytes but only 3 remain"),
        (MAGIC + b"\x01\x03toy" + FINGERPRINT + b"\x04", "ends inside the image width"),
        (MAGIC + b"\x01\x03toy" + FINGERPRINT + b"\x04\x06\x05{}", "settings needs 5 bytes but only 2"),
        (MAGIC + b"\x01\x03toy" + FINGERPRINT + b"\x04\x06\x00", "ends inside the part count"),
        (MAGIC + b"\x01\x03toy" + FINGERPRINT + b"\x04\x06\x00\x01\x02p0", "ends inside the length of part"),
        (MAGIC + b"\x01\x03toy" + FINGERPRINT + b"\x04\x06\x00\x01\x02p0\x85", "ends inside the length of part"),
    ],
)
def test_unpack_rejects_bodies_that_end_early(body, message):
    """A CRC-valid file whose body stops in the middle of a field."""
    with pytest.raises(BitstreamError, match=message):
        unpack(with_crc(body))


def test_unpack_limits_are_configurable():
    data = pack(make_container(height=300, width=400))
    assert unpack(data).header.width == 400
    with pytest.raises(BitstreamError, match="outside 1..256"):
        unpack(data, max_side=256)
    with pytest.raises(BitstreamError, match="limit of 100000 pixels"):
        unpack(data, max_pixels=100_000)


def test_unpack_rejects_non_bytes():
    with pytest.raises(BitstreamError, match="expected bytes"):
        unpack("LCMP")
    assert unpack(bytearray(raw_file())).parts == unpack(memoryview(raw_file())).parts


# ---------------------------------------------------------------------------------------------------
# Part layouts: validate, cut and cut_to_rate on hand-built files

PROGRESSIVE = PartLayout(side=("sabr",), numbered_streams="t", count_setting="iterations")
ONE_SHOT = PartLayout(side=("hyper", "mask"), required=("mask",), streams=("symbols",))


def layout_file(names, settings=None, sizes=None):
    """A file with the given parts in this order; part i holds `sizes[i]` bytes (default 10 + 7 i)."""
    sizes = sizes or [10 + 7 * i for i in range(len(names))]
    parts = tuple((name, bytes([i + 1]) * size) for i, (name, size) in enumerate(zip(names, sizes)))
    return Container(Header("toy", FINGERPRINT, 32, 48, {"iterations": 4} if settings is None else settings), parts)


def test_part_layout_declarations_are_checked():
    with pytest.raises(ValueError, match="either fixed"):
        PartLayout(streams=("a",), numbered_streams="t", count_setting="n")
    with pytest.raises(ValueError, match="either fixed"):
        PartLayout(side=("a",))
    with pytest.raises(ValueError, match="header setting"):
        PartLayout(numbered_streams="t")
    with pytest.raises(ValueError, match="required side parts"):
        PartLayout(required=("mask",), streams=("symbols",))
    assert PROGRESSIVE.progressive and not ONE_SHOT.progressive
    assert [PROGRESSIVE.stream_name(i) for i in (0, 1, 9)] == ["t01", "t02", "t10"]
    assert ONE_SHOT.stream_name(0) == "symbols"


@pytest.mark.parametrize(
    "names, held",
    [
        (["t01", "t02", "t03", "t04"], 4),
        (["sabr", "t01", "t02", "t03", "t04"], 4),
        (["t01"], 1),  # any non-empty prefix of the recorded count is a valid file
        (["sabr", "t01", "t02"], 2),
    ],
)
def test_progressive_layout_accepts_prefixes(names, held):
    assert PROGRESSIVE.validate(layout_file(names)) == held
    assert PROGRESSIVE.validate(unpack(pack(layout_file(names))), limit=4) == held


@pytest.mark.parametrize(
    "names, settings, message",
    [
        ([], None, r"unexpected parts none; expected sabr \(optional\), t01..t04"),
        (["sabr"], None, "unexpected parts sabr;"),
        (["t02", "t03"], None, "unexpected parts t02, t03;"),  # a gap: t01 is missing
        (["t01", "t03"], None, "unexpected parts"),
        (["t01", "sabr"], None, "unexpected parts"),  # side information comes first
        (["t01", "t02", "extra"], None, "unexpected parts"),
        (["t01", "t02", "t03", "t04", "t05"], None, "unexpected parts"),  # more than the header records
        (["t01"], {}, "records iterations=None; expected an integer in >= 1"),
        (["t01"], {"iterations": True}, "records iterations=True"),
        (["t01"], {"iterations": 0}, "records iterations=0"),
        (["t01"], {"iterations": 2.0}, "records iterations=2.0"),
    ],
)
def test_progressive_layout_refuses(names, settings, message):
    with pytest.raises(BitstreamError, match=message):
        PROGRESSIVE.validate(layout_file(names, settings))


def test_progressive_layout_limit_is_the_models_maximum():
    box = layout_file(["t01", "t02"], {"iterations": 4})
    assert PROGRESSIVE.validate(box, limit=4) == 2
    with pytest.raises(BitstreamError, match="records iterations=4; expected an integer in 1..3"):
        PROGRESSIVE.validate(box, limit=3)


@pytest.mark.parametrize(
    "names, ok",
    [
        (["mask", "symbols"], True),
        (["hyper", "mask", "symbols"], True),  # optional side part, in declared order
        (["symbols"], False),  # the required mask is missing
        (["hyper", "symbols"], False),
        (["mask", "hyper", "symbols"], False),  # side parts out of order
        (["symbols", "mask"], False),
        (["mask", "symbols", "extra"], False),
        (["mask"], False),
    ],
)
def test_fixed_layout(names, ok):
    box = layout_file(names, {})
    if ok:
        assert ONE_SHOT.validate(box) == 1
    else:
        with pytest.raises(BitstreamError, match=r"expected hyper \(optional\), mask, symbols"):
            ONE_SHOT.validate(box)


def test_cut_keeps_side_information_and_a_prefix():
    box = layout_file(["sabr", "t01", "t02", "t03", "t04"])
    data = pack(box)
    two = PROGRESSIVE.cut(data, 2, limit=4)
    cut_box = unpack(two)
    assert cut_box.part_names == ("sabr", "t01", "t02")
    assert cut_box.header == box.header  # the header still records the full count
    for name in cut_box.part_names:
        assert cut_box.part(name) == box.part(name)  # copied, not re-encoded
    assert PROGRESSIVE.validate(cut_box) == 2
    assert len(two) == header_bytes(cut_box) + sum(len(box.part(n)) for n in ("sabr", "t01", "t02"))
    assert PROGRESSIVE.cut(two, 1) == PROGRESSIVE.cut(data, 1)  # a cut of a cut
    assert PROGRESSIVE.cut(data, 4) == data
    assert unpack(PROGRESSIVE.cut(pack(layout_file(["t01", "t02"])), 1)).part_names == ("t01",)


@pytest.mark.parametrize(
    "count, message",
    [(0, "at least one iteration"), (-1, "at least one"), (1.5, "at least one"), (True, "at least one"),
     (3, "holds 2 iterations; cannot keep 3")],
)  # fmt: skip
def test_cut_refuses_bad_counts(count, message):
    data = pack(layout_file(["sabr", "t01", "t02"]))
    with pytest.raises(ConfigError, match=message):
        PROGRESSIVE.cut(data, count)


def test_cut_refuses_invalid_files_and_fixed_layouts():
    with pytest.raises(BitstreamError, match="unexpected parts"):
        PROGRESSIVE.cut(pack(layout_file(["t02"])), 1)
    damaged = bytearray(pack(layout_file(["t01"])))
    damaged[-1] ^= 1
    with pytest.raises(BitstreamError, match="CRC"):
        PROGRESSIVE.cut(bytes(damaged), 1)
    with pytest.raises(ConfigError, match="not progressive"):
        ONE_SHOT.cut(pack(layout_file(["mask", "symbols"], {})), 1)


def test_cut_to_rate_keeps_the_longest_prefix_that_fits():
    data = pack(layout_file(["sabr", "t01", "t02", "t03", "t04"], sizes=[5, 40, 30, 20, 10]))
    sizes = {t: len(PROGRESSIVE.cut(data, t)) for t in (1, 2, 3, 4)}
    assert sizes[1] < sizes[2] < sizes[3] < sizes[4] == len(data)
    assert PROGRESSIVE.cut_to_rate(data, sizes[3]) == PROGRESSIVE.cut(data, 3)  # the budget is inclusive
    assert PROGRESSIVE.cut_to_rate(data, sizes[3] - 1) == PROGRESSIVE.cut(data, 2)
    assert PROGRESSIVE.cut_to_rate(data, sizes[2] + 0.5) == PROGRESSIVE.cut(data, 2)  # budgets may be fractional
    assert PROGRESSIVE.cut_to_rate(data, 1e9) == data
    assert PROGRESSIVE.cut_to_rate(data, 1) == PROGRESSIVE.cut(data, 1)  # at least one iteration, even if larger
    one = PROGRESSIVE.cut(data, 1)
    assert PROGRESSIVE.cut_to_rate(one, 1e9) == one
    with pytest.raises(BitstreamError, match="1..3"):
        PROGRESSIVE.cut_to_rate(data, 1e9, limit=3)
