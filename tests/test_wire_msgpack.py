"""The wire client's msgpack subset, checked byte for byte against the real msgpack package."""

from __future__ import annotations

import math
import os
import struct
import sys
from array import array
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "wire"))
import colord_wire

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=600)
)
keys = st.text(max_size=40) | st.integers(min_value=-(2**63), max_value=2**64 - 1)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=20) | st.dictionaries(keys, children, max_size=20),
    max_leaves=60,
)

INT_BOUNDARIES = [
    -(2**63), -(2**31) - 1, -(2**31), -(2**15) - 1, -(2**15), -129, -128, -33, -32, -1,
    0, 1, 127, 128, 255, 256, 2**16 - 1, 2**16, 2**32 - 1, 2**32, 2**64 - 1,
]  # fmt: skip
SIZE_BOUNDARIES = [0, 1, 15, 16, 31, 32, 255, 256, 2**16 - 1, 2**16]


def reference_packb(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def reference_unpackb(data: bytes) -> object:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


@given(values)
def test_encoding_equals_msgpack_byte_for_byte(value: object) -> None:
    assert colord_wire.packb(value) == reference_packb(value)


@given(values)
def test_msgpack_reads_what_we_write_and_we_read_what_msgpack_writes(value: object) -> None:
    assert reference_unpackb(colord_wire.packb(value)) == value
    assert colord_wire.unpackb(reference_packb(value)) == value


@given(values)
def test_parts_join_into_the_encoding_and_bins_as_views_decode_alike(value: object) -> None:
    assert b"".join(colord_wire.pack_parts(value)) == reference_packb(value)
    assert colord_wire.unpackb(bytearray(reference_packb(value)), bins_as_views=True) == value


def test_bins_as_views_are_views_of_the_frame() -> None:
    pixels, flats = os.urandom(1 << 20), os.urandom(1 << 16)
    message = {"v": 1, "result": {"timings": {"total_ms": 1.5}, "image": pixels, "flats": flats}}
    frame = bytearray(reference_packb(message))
    decoded = colord_wire.unpackb(frame, bins_as_views=True)
    assert decoded == message
    image = decoded["result"]["image"]
    assert isinstance(image, memoryview) and image.obj is frame  # never copied out
    frame[frame.index(pixels[:64])] ^= 0xFF
    assert image[0] == pixels[0] ^ 0xFF  # the frame's own bytes


def test_a_truncated_frame_is_refused_with_bins_as_views() -> None:
    frame = bytearray(reference_packb({"data": b"x" * 1000})[:-10])
    with pytest.raises(colord_wire.WireFormatError, match="truncated"):
        colord_wire.unpackb(frame, bins_as_views=True)


@pytest.mark.parametrize("value", INT_BOUNDARIES)
def test_every_integer_width_matches_msgpack(value: int) -> None:
    encoded = colord_wire.packb(value)
    assert encoded == reference_packb(value)
    decoded = colord_wire.unpackb(encoded)
    assert decoded == value and type(decoded) is int


@pytest.mark.parametrize("size", SIZE_BOUNDARIES)
def test_every_length_form_of_str_bin_array_map_matches_msgpack(size: int) -> None:
    samples = [
        "é" * (size // 2) + "x" * (size % 2),  # the length counts UTF-8 bytes, not characters
        bytes(size),
        bytearray(b"\x07" * size),
        [None] * size,
        {f"k{index}": index for index in range(size)},
    ]
    for sample in samples:
        encoded = colord_wire.packb(sample)
        assert encoded == reference_packb(sample)
        expected = bytes(sample) if isinstance(sample, bytearray) else sample
        assert colord_wire.unpackb(encoded) == expected


def test_tuples_pack_as_arrays_and_booleans_stay_booleans() -> None:
    value = {"pair": (1, 2), "flags": [True, False], "nested": ({"a": None},)}
    assert colord_wire.packb(value) == reference_packb(value)
    decoded = colord_wire.unpackb(colord_wire.packb(value))
    assert decoded == {"pair": [1, 2], "flags": [True, False], "nested": [{"a": None}]}
    assert decoded["flags"][0] is True


@pytest.mark.parametrize(
    "value", [math.inf, -math.inf, math.nan, -0.0, 5e-324, 1.7976931348623157e308]
)
def test_special_floats_match_msgpack_bit_for_bit(value: float) -> None:
    encoded = colord_wire.packb(value)
    assert encoded == reference_packb(value)
    assert struct.pack(">d", colord_wire.unpackb(encoded)) == struct.pack(">d", value)


@given(st.floats(width=32, allow_nan=False))
def test_float32_written_by_msgpack_is_read(value: float) -> None:
    encoded = msgpack.packb(value, use_single_float=True)
    assert encoded[0] == 0xCA
    assert colord_wire.unpackb(encoded) == value


def test_large_bin_round_trips_both_ways() -> None:
    payload = os.urandom(17 * 2**20)  # above 16 MiB: the bin32 form
    message = {"data": payload, "width": 2048}
    encoded = colord_wire.packb(message)
    assert encoded == reference_packb(message)
    assert colord_wire.unpackb(encoded)["data"] == payload
    assert colord_wire.unpackb(bytearray(reference_packb(message)))["data"] == payload


def test_memoryviews_pack_as_their_bytes() -> None:
    pixels = array("H", range(1000))  # 16-bit samples: a memoryview with itemsize 2
    view = memoryview(pixels)
    assert colord_wire.packb(view) == reference_packb(view) == reference_packb(pixels.tobytes())
    assert colord_wire.unpackb(memoryview(colord_wire.packb(view))) == pixels.tobytes()


def test_every_truncation_is_a_clear_error() -> None:
    encoded = colord_wire.packb({"v": 1, "op": "colorize", "data": b"\x01" * 300, "n": 2**40})
    for end in range(len(encoded)):
        with pytest.raises(colord_wire.WireFormatError, match="truncated"):
            colord_wire.unpackb(encoded[:end])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xc0\xc0", "left over"),
        (b"\xc1", "0xc1"),
        (b"\xd4\x01\x00", "0xd4"),  # fixext 1: no ext types in protocol v1
        (b"\xc7\x01\x05\x00", "0xc7"),  # ext 8
        (b"\xa2\xff\xfe", "UTF-8"),
        (b"\x81\x90\xc0", "key"),  # a map keyed by an array
        (b"\x91" * 200 + b"\xc0", "nested"),
    ],
)
def test_invalid_input_is_a_clear_error(data: bytes, match: str) -> None:
    with pytest.raises(colord_wire.WireFormatError, match=match):
        colord_wire.unpackb(data)


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1])
def test_integers_beyond_64_bits_are_refused_like_msgpack(value: int) -> None:
    with pytest.raises(colord_wire.WireFormatError, match="64 bits"):
        colord_wire.packb(value)
    with pytest.raises(OverflowError):
        reference_packb(value)


def test_values_outside_the_subset_are_refused() -> None:
    with pytest.raises(TypeError, match="set"):
        colord_wire.packb({1, 2})
    with pytest.raises(TypeError, match="object"):
        colord_wire.packb({"x": object()})
    with pytest.raises(colord_wire.WireFormatError, match="contiguous"):
        colord_wire.packb(memoryview(b"abcdef")[::2])
    deep: list = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(colord_wire.WireFormatError, match="nested"):
        colord_wire.packb(deep)
