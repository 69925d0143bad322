"""Protocol v1 without sockets: encoding, decoding, validation order and error codes."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colord.daemon import protocol
from colord.daemon.protocol import ColorizeArgs, Limits, ProtocolError, WireImage

TOKEN = "0123456789abcdef0123456789abcdef"
LIMITS = Limits(max_side=64, queue_size=2, max_working_size=48)


def image_message(width=4, height=3, image_format="RGBA8", data=None) -> dict:
    if data is None:
        data = bytes(width * height * protocol.bytes_per_pixel(image_format))
    return {"width": width, "height": height, "format": image_format, "data": data}


def request_message(**overrides) -> dict:
    message = {
        "v": 1,
        "id": 7,
        "op": "colorize",
        "token": TOKEN,
        "args": {"line_art": image_message(), "reference": None, "options": {}},
    }
    message.update(overrides)
    return message


def decode(message: dict) -> protocol.Request:
    return protocol.decode_request(msgpack.packb(message), token=TOKEN, limits=LIMITS)


def error_of(body: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        protocol.decode_request(body, token=TOKEN, limits=LIMITS)
    return caught.value


def with_args(**args) -> dict:
    base = {"line_art": image_message(), "reference": None, "options": {}}
    base.update(args)
    return request_message(args=base)


def with_image(name: str = "line_art", **fields) -> bytes:
    image = {**image_message(), **fields}
    return msgpack.packb(with_args(**{name: image}))


def with_options(**options) -> bytes:
    return msgpack.packb(with_args(options=options))


def packed(**overrides) -> bytes:
    return msgpack.packb(request_message(**overrides))


ERROR_CASES = {  # name -> (body, code)
    "not msgpack": (b"\xc1", protocol.MALFORMED),
    "truncated": (packed()[:-3], protocol.MALFORMED),
    "trailing bytes": (packed() + b"\x00", protocol.MALFORMED),
    "not a map": (msgpack.packb([1, 2, 3]), protocol.MALFORMED),
    "empty": (b"", protocol.MALFORMED),
    "ext type": (msgpack.packb({"v": msgpack.ExtType(1, b"x")}), protocol.MALFORMED),
    "int key": (msgpack.packb({1: 1}), protocol.MALFORMED),
    "bad utf-8": (b"\x81\xa1v\xa2\xff\xfe", protocol.MALFORMED),
    "no version": (msgpack.packb({"id": 1}), protocol.VERSION),
    "version 2": (packed(v=2), protocol.VERSION),
    "version true": (packed(v=True), protocol.VERSION),
    "no id": (msgpack.packb({"v": 1, "op": "ping", "token": TOKEN}), protocol.BAD_REQUEST),
    "float id": (packed(id=1.5), protocol.BAD_REQUEST),
    "long id": (packed(id="x" * 257), protocol.BAD_REQUEST),
    "no token": (msgpack.packb({"v": 1, "id": 1, "op": "ping"}), protocol.UNAUTHORIZED),
    "wrong token": (packed(token="f" * 32), protocol.UNAUTHORIZED),
    "token prefix": (packed(token=TOKEN[:-1]), protocol.UNAUTHORIZED),
    "bytes token": (packed(token=TOKEN.encode()), protocol.UNAUTHORIZED),
    "unknown op": (packed(op="paint"), protocol.UNKNOWN_OP),
    "op not str": (packed(op=3), protocol.UNKNOWN_OP),
    "no args": (packed(args=None), protocol.BAD_REQUEST),
    "args list": (packed(args=[1]), protocol.BAD_REQUEST),
    "ping args list": (packed(op="ping", args=[1]), protocol.BAD_REQUEST),
    "no line art": (packed(args={}), protocol.BAD_REQUEST),
    "options list": (msgpack.packb(with_args(options=[])), protocol.BAD_REQUEST),
    "working size 500": (with_options(working_size=500), protocol.BAD_REQUEST),
    "working size 0": (with_options(working_size=0), protocol.BAD_REQUEST),
    "working size above the cap": (with_options(working_size=64), protocol.TOO_LARGE),
    "working size list": (with_options(working_size=[16]), protocol.BAD_REQUEST),
    "keep_lines int": (with_options(keep_lines=1), protocol.BAD_REQUEST),
    "result format": (with_options(result_format="RGB8"), protocol.BAD_REQUEST),
    "result format list": (with_options(result_format=["RGBA8"]), protocol.BAD_REQUEST),
    "result format map": (with_options(result_format={"a": 1}), protocol.BAD_REQUEST),
    "result format bin": (with_options(result_format=b"RGBA8"), protocol.BAD_REQUEST),
    "image not map": (msgpack.packb(with_args(line_art=b"pixels")), protocol.BAD_IMAGE),
    "unknown format": (with_image(format="CMYK8"), protocol.BAD_IMAGE),
    "format list": (with_image(format=["RGBA8"]), protocol.BAD_IMAGE),
    "format map": (with_image(format={"RGBA8": 1}), protocol.BAD_IMAGE),
    "format bin": (with_image(format=b"RGBA8"), protocol.BAD_IMAGE),
    "token after args": (
        msgpack.packb({"v": 1, "id": 1, "op": "ping", "args": {}, "token": TOKEN}),
        protocol.UNAUTHORIZED,
    ),
    "header past 4 KiB": (
        msgpack.packb({"v": 1, "id": 1, "pad": "x" * 5000, "op": "ping", "token": TOKEN}),
        protocol.MALFORMED,
    ),
    "map of 4 G entries": (b"\xdf\xff\xff\xff\xff" + packed()[1:], protocol.MALFORMED),
    "array of empty maps": (
        msgpack.packb(request_message(args={"line_art": [{}] * 100})),
        protocol.MALFORMED,
    ),
    "zero width": (with_image(width=0, data=b""), protocol.BAD_IMAGE),
    "str width": (with_image(width="4"), protocol.BAD_IMAGE),
    "data as str": (with_image(data="abc"), protocol.BAD_IMAGE),
    "length mismatch": (with_image(data=b"\x00" * 47), protocol.BAD_IMAGE),
    "bad reference": (with_image("reference", format="RGB8"), protocol.BAD_IMAGE),
    "too wide": (with_image(width=65, height=1, data=bytes(260)), protocol.TOO_LARGE),
}


@pytest.mark.parametrize(("body", "code"), ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_each_bad_request_gets_its_code(body: bytes, code: str) -> None:
    error = error_of(body)
    assert error.code == code
    assert error.message.endswith(".")


def test_error_carries_the_id_once_it_is_valid() -> None:
    assert error_of(msgpack.packb(request_message(id="abc", token="x"))).request_id == "abc"
    assert error_of(msgpack.packb(request_message(id=1.5))).request_id is None
    assert error_of(msgpack.packb(request_message(v=9, id=3))).request_id is None
    error = error_of(msgpack.packb(with_args(line_art=image_message(width=0))))
    assert error.request_id == 7


def test_checks_run_in_the_documented_order() -> None:
    # wrong token and unknown op: unauthorized wins; bad version beats everything after it
    assert error_of(msgpack.packb(request_message(op="x", token="y"))).code == "unauthorized"
    assert error_of(msgpack.packb(request_message(v=2, token="y"))).code == "version"


def test_valid_colorize_request_decodes_with_defaults() -> None:
    request = decode(request_message())
    assert request.op == "colorize" and request.id == 7
    assert request.args.working_size is None
    assert request.args.keep_lines is True
    assert request.args.result_format == "RGBA8"
    assert request.args.reference is None
    assert bytes(request.args.line_art.data) == bytes(48)


def test_ping_and_info_need_no_args_and_unknown_keys_are_ignored() -> None:
    assert decode({"v": 1, "id": "p", "op": "ping", "token": TOKEN}).op == "ping"
    assert decode({"v": 1, "id": 0, "op": "info", "token": TOKEN, "future": [1]}).op == "info"


def test_request_encoder_round_trips_through_the_decoder() -> None:
    line_art = np.arange(20 * 30 * 4, dtype=np.uint32).astype(np.uint8).reshape(20, 30, 4)
    reference = np.full((10, 12, 3), 200, np.uint8)
    args = ColorizeArgs(
        protocol.array_to_image(line_art),
        protocol.array_to_image(reference),
        working_size=32,
        keep_lines=False,
        result_format="BGRA8",
    )
    body = protocol.encode_request("job-1", "colorize", TOKEN, args)
    request = decode(msgpack.unpackb(body))  # the encoding is plain msgpack
    assert request.id == "job-1"
    assert (request.args.working_size, request.args.keep_lines) == (32, False)
    assert request.args.result_format == "BGRA8"
    np.testing.assert_array_equal(protocol.image_to_array(request.args.line_art), line_art)
    np.testing.assert_array_equal(protocol.image_to_array(request.args.reference), reference)


def test_large_buffers_encode_like_msgpack() -> None:
    data = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8)
    message = {"a": 1, "image": {"data": memoryview(data), "tail": "x"}, "small": b"ab"}
    expected = {"a": 1, "image": {"data": data.tobytes(), "tail": "x"}, "small": b"ab"}
    assert protocol.encode(message) == msgpack.packb(expected)


def test_replies_round_trip() -> None:
    ok = protocol.decode_reply(protocol.encode_ok(3, {"pong": True}))
    assert (ok.id, ok.ok, ok.result) == (3, True, {"pong": True})
    error = protocol.decode_reply(protocol.encode_error(None, "busy", "Try later."))
    assert (error.id, error.ok, error.error_code, error.error_message) == (
        None, False, "busy", "Try later.",
    )  # fmt: skip
    with pytest.raises(ProtocolError):
        protocol.decode_reply(msgpack.packb({"v": 1, "ok": True}))


@pytest.mark.parametrize(
    ("shape", "dtype", "image_format"),
    [
        ((5, 7), np.uint8, "GRAY8"),
        ((5, 7, 1), np.uint8, "GRAY8"),
        ((5, 7, 2), np.uint8, "GRAYA8"),
        ((5, 7, 3), np.uint8, "RGB8"),
        ((5, 7, 4), np.uint8, "RGBA8"),
        ((5, 7, 4), np.uint16, "RGBA16"),
    ],
)
def test_arrays_travel_in_their_natural_format(shape, dtype, image_format) -> None:
    array = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    image = protocol.array_to_image(array)
    assert (image.width, image.height, image.format) == (7, 5, image_format)
    assert len(image.data) == 35 * protocol.bytes_per_pixel(image_format)
    np.testing.assert_array_equal(protocol.image_to_array(image), array.reshape(5, 7, -1).squeeze())


def test_bgra_swaps_red_and_blue_both_ways() -> None:
    rgba = np.array([[[10, 20, 30, 40]]], np.uint8)
    image = protocol.array_to_image(rgba, "BGRA8")
    assert bytes(image.data) == bytes([30, 20, 10, 40])
    np.testing.assert_array_equal(protocol.image_to_array(image), rgba)


def test_rgba16_is_little_endian_and_other_uint16_shapes_expand() -> None:
    grey = np.array([[258]], np.uint16)
    image = protocol.array_to_image(grey)
    assert image.format == "RGBA16"
    assert bytes(image.data) == bytes([2, 1, 2, 1, 2, 1, 255, 255])
    grey_alpha = protocol.image_to_array(protocol.array_to_image(np.array([[[5, 9]]], np.uint16)))
    np.testing.assert_array_equal(grey_alpha, [[[5, 5, 5, 9]]])


@pytest.mark.parametrize(
    "array", [np.zeros((2, 2), np.float32), np.zeros((2, 2, 5), np.uint8), np.zeros(3, np.uint8)]
)
def test_arrays_that_cannot_travel_raise(array) -> None:
    with pytest.raises(ValueError):
        protocol.array_to_image(array)


def test_nothing_past_the_header_is_decoded_without_the_token(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the body was decoded before the token was checked")

    pixels = image_message(width=64, height=64, image_format="RGBA16")
    body = msgpack.packb(request_message(token="f" * 32, args={"line_art": pixels}))
    monkeypatch.setattr(protocol.msgpack, "unpackb", refuse)
    error = error_of(body)
    assert (error.code, error.request_id) == (protocol.UNAUTHORIZED, 7)


def test_the_largest_valid_request_fits_the_message_limit() -> None:
    side = LIMITS.max_side
    widest = max(protocol.FORMATS, key=protocol.bytes_per_pixel)
    image = WireImage(side, side, widest, bytes(side * side * protocol.bytes_per_pixel(widest)))
    body = protocol.encode_request("x" * 256, "colorize", TOKEN, ColorizeArgs(image, image, 48))
    assert len(body) <= LIMITS.max_message_bytes
    assert decode(msgpack.unpackb(body)).args.working_size == 48


def test_a_wrong_typed_field_error_names_the_request() -> None:
    error = error_of(with_image(format=["RGBA8"]))
    assert (error.code, error.request_id) == (protocol.BAD_IMAGE, 7)
    assert "format" in error.message


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["line_art", "reference", "options", "x"]), msgpack_values))
def test_any_args_decode_or_get_a_stable_code(args: dict) -> None:
    try:
        decode(request_message(args=args))
    except ProtocolError as error:
        assert error.code in protocol.ERROR_CODES and error.code != protocol.INTERNAL
        assert error.request_id == 7


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_get_a_stable_code(body: bytes) -> None:
    try:
        protocol.decode_request(body, token=TOKEN, limits=LIMITS)
    except ProtocolError as error:
        assert error.code in protocol.ERROR_CODES and error.code != protocol.INTERNAL


def test_large_messages_are_written_into_a_reusable_buffer() -> None:
    pixels = np.random.default_rng(2).integers(0, 256, 2 << 20, dtype=np.uint8)
    message = {"id": 1, "image": {"data": memoryview(pixels)}}
    first = protocol.encode(message)
    assert isinstance(first, memoryview) and isinstance(first.obj, bytearray)
    second = protocol.encode(message, into=first.obj)
    assert second.obj is first.obj  # the same memory again
    assert bytes(second) == msgpack.packb({"id": 1, "image": {"data": pixels.tobytes()}})
    small = protocol.encode({"id": 1}, into=first.obj)
    assert isinstance(small, bytes)
