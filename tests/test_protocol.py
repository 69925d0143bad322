"""Protocol v1 without sockets: encoding (byte for byte), decoding, validation order and error
codes, and the contract's rules in colord_protocol."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colord.daemon import protocol
from colord.daemon.job import Job
from colord.daemon.protocol import WireImage
from colord.model import SIZE_MULTIPLE
from colord.plugins.wire import colord_protocol as wire
from colord.plugins.wire.colord_protocol import Limits, ProtocolError

TOKEN = "0123456789abcdef0123456789abcdef"
LIMITS = Limits(max_side=64, queue_size=2, max_working_size=48)


def image_message(width=4, height=3, image_format="RGBA8", data=None) -> dict:
    if data is None:
        data = bytes(width * height * wire.BYTES_PER_PIXEL[image_format])
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
    "not msgpack": (b"\xc1", wire.MALFORMED),
    "truncated": (packed()[:-3], wire.MALFORMED),
    "trailing bytes": (packed() + b"\x00", wire.MALFORMED),
    "not a map": (msgpack.packb([1, 2, 3]), wire.MALFORMED),
    "empty": (b"", wire.MALFORMED),
    "ext type": (msgpack.packb({"v": msgpack.ExtType(1, b"x")}), wire.MALFORMED),
    "int key": (msgpack.packb({1: 1}), wire.MALFORMED),
    "bad utf-8": (b"\x81\xa1v\xa2\xff\xfe", wire.MALFORMED),
    "no version": (msgpack.packb({"id": 1}), wire.VERSION),
    "version 2": (packed(v=2), wire.VERSION),
    "version true": (packed(v=True), wire.VERSION),
    "no id": (msgpack.packb({"v": 1, "op": "ping", "token": TOKEN}), wire.BAD_REQUEST),
    "float id": (packed(id=1.5), wire.BAD_REQUEST),
    "long id": (packed(id="x" * 257), wire.BAD_REQUEST),
    "no token": (msgpack.packb({"v": 1, "id": 1, "op": "ping"}), wire.UNAUTHORIZED),
    "wrong token": (packed(token="f" * 32), wire.UNAUTHORIZED),
    "token prefix": (packed(token=TOKEN[:-1]), wire.UNAUTHORIZED),
    "bytes token": (packed(token=TOKEN.encode()), wire.UNAUTHORIZED),
    "unknown op": (packed(op="paint"), wire.UNKNOWN_OP),
    "op not str": (packed(op=3), wire.UNKNOWN_OP),
    "no args": (packed(args=None), wire.BAD_REQUEST),
    "args list": (packed(args=[1]), wire.BAD_REQUEST),
    "ping args list": (packed(op="ping", args=[1]), wire.BAD_REQUEST),
    "no line art": (packed(args={}), wire.BAD_REQUEST),
    "options list": (msgpack.packb(with_args(options=[])), wire.BAD_REQUEST),
    "working size 500": (with_options(working_size=500), wire.BAD_REQUEST),
    "working size 0": (with_options(working_size=0), wire.BAD_REQUEST),
    "working size above the cap": (with_options(working_size=64), wire.TOO_LARGE),
    "working size list": (with_options(working_size=[16]), wire.BAD_REQUEST),
    "keep_lines int": (with_options(keep_lines=1), wire.BAD_REQUEST),
    "result format": (with_options(result_format="RGB8"), wire.BAD_REQUEST),
    "result format list": (with_options(result_format=["RGBA8"]), wire.BAD_REQUEST),
    "result format map": (with_options(result_format={"a": 1}), wire.BAD_REQUEST),
    "result format bin": (with_options(result_format=b"RGBA8"), wire.BAD_REQUEST),
    "unknown option": (with_options(sparkle=True), wire.BAD_REQUEST),
    "flats unknown": (with_options(flats="all"), wire.BAD_REQUEST),
    "flats true": (with_options(flats=True), wire.BAD_REQUEST),
    "flats gap negative": (with_options(flats="only", flats_gap=-1), wire.BAD_REQUEST),
    "flats gap too wide": (with_options(flats="only", flats_gap=33), wire.BAD_REQUEST),
    "flats gap float": (with_options(flats="only", flats_gap=3.0), wire.BAD_REQUEST),
    "flats palette int": (with_options(flats="only", flats_palette=1), wire.BAD_REQUEST),
    "flats ground": (with_options(flats="only", flats_ground="white"), wire.BAD_REQUEST),
    "ground": (with_options(ground="white"), wire.BAD_REQUEST),
    "ground bool": (with_options(ground=True), wire.BAD_REQUEST),
    "flats gap without flats": (with_options(flats_gap=4), wire.BAD_REQUEST),
    "flats palette without a reference": (
        with_options(flats="only", flats_palette=True),
        wire.BAD_REQUEST,
    ),
    "image not map": (msgpack.packb(with_args(line_art=b"pixels")), wire.BAD_IMAGE),
    "unknown format": (with_image(format="CMYK8"), wire.BAD_IMAGE),
    "format list": (with_image(format=["RGBA8"]), wire.BAD_IMAGE),
    "format map": (with_image(format={"RGBA8": 1}), wire.BAD_IMAGE),
    "format bin": (with_image(format=b"RGBA8"), wire.BAD_IMAGE),
    "token after args": (
        msgpack.packb({"v": 1, "id": 1, "op": "ping", "args": {}, "token": TOKEN}),
        wire.UNAUTHORIZED,
    ),
    "header past 4 KiB": (
        msgpack.packb({"v": 1, "id": 1, "pad": "x" * 5000, "op": "ping", "token": TOKEN}),
        wire.MALFORMED,
    ),
    "map of 4 G entries": (b"\xdf\xff\xff\xff\xff" + packed()[1:], wire.MALFORMED),
    "array of empty maps": (
        msgpack.packb(request_message(args={"line_art": [{}] * 100})),
        wire.MALFORMED,
    ),
    "zero width": (with_image(width=0, data=b""), wire.BAD_IMAGE),
    "str width": (with_image(width="4"), wire.BAD_IMAGE),
    "data as str": (with_image(data="abc"), wire.BAD_IMAGE),
    "length mismatch": (with_image(data=b"\x00" * 47), wire.BAD_IMAGE),
    "bad reference": (with_image("reference", format="RGB8"), wire.BAD_IMAGE),
    "too wide": (with_image(width=65, height=1, data=bytes(260)), wire.TOO_LARGE),
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
    assert request.args.options == {
        "working_size": None,
        "keep_lines": True,
        "result_format": "RGBA8",
        "flats": None,
        "flats_gap": None,
        "flats_palette": None,
        "flats_ground": None,
        "ground": None,
    }
    assert request.args.reference is None
    assert bytes(request.args.line_art.data) == bytes(48)


def test_ping_and_info_need_no_args_and_unknown_keys_are_ignored() -> None:
    assert decode({"v": 1, "id": "p", "op": "ping", "token": TOKEN}).op == "ping"
    assert decode({"v": 1, "id": 0, "op": "info", "token": TOKEN, "future": [1]}).op == "info"


def test_request_encoder_round_trips_through_the_decoder() -> None:
    line_art = np.arange(20 * 30 * 4, dtype=np.uint32).astype(np.uint8).reshape(20, 30, 4)
    reference = np.full((10, 12, 3), 200, np.uint8)
    sent = Job(line_art, reference, working_size=32, keep_lines=False, result_format="BGRA8")
    args, _, _ = protocol.colorize_request_args(sent)
    body = protocol.encode_request("job-1", "colorize", TOKEN, args)
    request = decode(msgpack.unpackb(body))  # the encoding is plain msgpack
    assert request.id == "job-1"
    job = request.args.to_job()  # the record the engine gets: every option, the pixels as arrays
    assert job.options() == sent.options()
    np.testing.assert_array_equal(job.line_art, line_art)
    np.testing.assert_array_equal(job.reference, reference)


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
    assert len(image.data) == 35 * wire.BYTES_PER_PIXEL[image_format]
    np.testing.assert_array_equal(image.to_array(), array.reshape(5, 7, -1).squeeze())


def test_bgra_swaps_red_and_blue_both_ways() -> None:
    rgba = np.array([[[10, 20, 30, 40]]], np.uint8)
    image = protocol.array_to_image(rgba, "BGRA8")
    assert bytes(image.data) == bytes([30, 20, 10, 40])
    np.testing.assert_array_equal(image.to_array(), rgba)


def test_rgba16_is_little_endian_and_other_uint16_shapes_expand() -> None:
    grey = np.array([[258]], np.uint16)
    image = protocol.array_to_image(grey)
    assert image.format == "RGBA16"
    assert bytes(image.data) == bytes([2, 1, 2, 1, 2, 1, 255, 255])
    grey_alpha = protocol.array_to_image(np.array([[[5, 9]]], np.uint16)).to_array()
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
    assert (error.code, error.request_id) == (wire.UNAUTHORIZED, 7)


def test_the_largest_valid_request_fits_the_message_limit() -> None:
    side = LIMITS.max_side
    widest = max(wire.FORMATS, key=wire.BYTES_PER_PIXEL.__getitem__)
    image = WireImage(side, side, widest, bytes(side * side * wire.BYTES_PER_PIXEL[widest]))
    args = wire.colorize_args(image.to_message(), image.to_message(), {"working_size": 48})
    body = protocol.encode_request("x" * 256, "colorize", TOKEN, args)
    assert len(body) <= LIMITS.max_message_bytes
    assert decode(msgpack.unpackb(body)).args.options["working_size"] == 48


def test_a_wrong_typed_field_error_names_the_request() -> None:
    error = error_of(with_image(format=["RGBA8"]))
    assert (error.code, error.request_id) == (wire.BAD_IMAGE, 7)
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
        assert error.code in wire.ERROR_CODES and error.code != wire.INTERNAL
        assert error.request_id == 7


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_or_get_a_stable_code(body: bytes) -> None:
    try:
        protocol.decode_request(body, token=TOKEN, limits=LIMITS)
    except ProtocolError as error:
        assert error.code in wire.ERROR_CODES and error.code != wire.INTERNAL


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


# --- the wire bytes, pinned ---------------------------------------------------------------------

PING_BYTES = bytes.fromhex(
    "84a17601a2696401a26f70a470696e67a5746f6b656ed920"
    "3031323334353637383961626364656630313233343536373839616263646566"
)
COLORIZE_BYTES = bytes.fromhex(
    "85a17601a2696407a26f70a8636f6c6f72697a65a5746f6b656ed920"
    "3031323334353637383961626364656630313233343536373839616263646566"
    "a46172677383a76f7074696f6e7382aa6b6565705f6c696e6573c3ad726573756c745f666f726d6174a5524742"
    "4138a97265666572656e6365c0a86c696e655f61727484a5776964746802a668656967687403a6666f726d6174"
    "a55247424138a464617461c418" + bytes(range(24)).hex()
)
OK_BYTES = bytes.fromhex(
    "84a17601a2696403a26f6bc3a6726573756c7482a774696d696e677383a871756575655f6d73cb3ff80000000000"
    "00a9656e67696e655f6d73cb4000000000000000a8746f74616c5f6d73cb4010000000000000a5696d61676584a5"
    "776964746802a668656967687403a6666f726d6174a54247524138a464617461c418" + bytes(range(24)).hex()
)
ERROR_BYTES = bytes.fromhex(
    "84a17601a26964c0a26f6bc2a56572726f7282a4636f6465a462757379a76d657373616765aa547279206c617465"
    "722e"
)


def test_requests_and_replies_are_these_bytes() -> None:
    pixels = np.arange(24, dtype=np.uint8).reshape(3, 2, 4)
    assert protocol.encode_request(1, "ping", TOKEN) == PING_BYTES
    args, _, _ = protocol.colorize_request_args(Job(pixels))
    assert protocol.encode_request(7, "colorize", TOKEN, args) == COLORIZE_BYTES
    timings = {"queue_ms": 1.5, "engine_ms": 2.0, "total_ms": 4.0}
    image = protocol.array_to_image(pixels[..., [2, 1, 0, 3]], "BGRA8").to_message()
    assert protocol.encode_ok(3, {"timings": timings, "image": image}) == OK_BYTES
    assert protocol.encode_error(None, "busy", "Try later.") == ERROR_BYTES


def test_options_travel_in_the_contract_order_and_none_stays_home() -> None:
    args = wire.colorize_args({}, None, {"working_size": 64, "result_format": "BGRA8"})
    assert list(args) == ["options", "reference", "line_art"]  # pixels last
    assert args["options"] == {"keep_lines": True, "result_format": "BGRA8", "working_size": 64}
    every = {"working_size": 64, "flats_ground": "opaque", "flats": "only", "flats_gap": 0}
    every |= {"flats_palette": False, "ground": "transparent"}
    sent = wire.colorize_args({}, {}, every)["options"]
    assert list(sent) == list(wire.COLORIZE_OPTIONS)
    assert "working_size" not in wire.colorize_args({}, None, {})["options"]
    with pytest.raises(ProtocolError) as caught:
        wire.colorize_args({}, None, {"working_size": 100})
    assert caught.value.code == wire.BAD_REQUEST


def test_an_unknown_option_is_refused_by_name() -> None:
    error = error_of(with_options(flats_sparkle=1))
    assert (error.code, error.request_id) == (wire.BAD_REQUEST, 7)
    assert "'flats_sparkle'" in error.message and "flats_gap" in error.message


def test_flats_options_decode_into_the_request() -> None:
    options = {"flats": "with_colour", "flats_gap": 3, "flats_palette": True}
    reference = image_message()
    request = decode(with_args(options={**options, "flats_ground": "opaque"}, reference=reference))
    assert request.args.options == {
        "keep_lines": True,
        "result_format": "RGBA8",
        "working_size": None,
        **options,
        "flats_ground": "opaque",
        "ground": None,
    }
    job = request.args.to_job()
    assert (job.flats, job.flats_gap, job.flats_palette, job.flats_ground) == (
        "with_colour", 3, True, "opaque",
    )  # fmt: skip


def test_a_daemon_lists_its_features() -> None:
    assert wire.has_feature({"features": ["flats"]}, "flats")
    assert not wire.has_feature({"version": "0.1.0"}, "flats")  # a daemon older than the list
    assert not wire.has_feature({"features": "flats"}, "flats")
    assert "flats" in wire.FEATURES


def test_the_job_record_holds_every_option_with_the_protocols_default() -> None:
    job = Job(np.zeros((2, 2), np.uint8))
    assert job.options() == {name: option.default for name, option in wire.COLORIZE_OPTIONS.items()}


def test_the_message_limit_follows_from_the_side_limit() -> None:
    assert Limits().max_message_bytes == (1 << 30) + wire.REQUEST_OVERHEAD_BYTES
    assert wire.max_message_bytes(64) == 2 * 64 * 64 * 8 + wire.REQUEST_OVERHEAD_BYTES
    assert Limits(max_side=64, max_working_size=48).to_message() == {
        "max_side": 64,
        "max_message_bytes": wire.max_message_bytes(64),
        "max_working_size": 48,
        "queue_size": wire.DEFAULT_QUEUE_SIZE,
    }


def test_oversize_requests_are_named_before_sending() -> None:
    limits = Limits(max_side=64).to_message()
    assert (
        wire.oversize_message({"line art": (64, 64, 64 * 64 * 4), "reference": None}, limits)
        is None
    )
    too_wide = wire.oversize_message({"line art": (65, 1, 260)}, limits)
    assert too_wide is not None and "65x1" in too_wide and "--max-side" in too_wide
    heavy = wire.oversize_message({"line art": (64, 64, limits["max_message_bytes"])}, limits)
    assert heavy is not None and "bytes" in heavy


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"v": 1, "id": 1, "ok": True, "result": {"a": 1}}, None),
        ({"v": 1, "id": 1, "ok": False, "error": {"code": "busy", "message": "Later."}}, "busy"),
        ({"v": 2, "id": 1, "ok": True, "result": {}}, wire.VERSION),
        ({"v": 1, "id": 1, "ok": True}, wire.PROTOCOL),
        ({"v": 1, "id": 1, "ok": "yes", "error": {}}, wire.PROTOCOL),
        ([1], wire.PROTOCOL),
    ],
)
def test_reading_a_reply(message: object, error: str | None) -> None:
    if error is None:
        assert wire.read_reply(message) == {"a": 1}
        return
    with pytest.raises(wire.ColordError) as caught:
        wire.read_reply(message)
    assert caught.value.code == error
    assert isinstance(caught.value, wire.ErrorReply) == (error == "busy")


def test_the_contracts_working_sizes_are_sizes_the_model_takes() -> None:
    """The wire rule (colord_protocol cannot import the model) gives sizes the model accepts."""
    assert wire.WORKING_SIZE_MULTIPLE % SIZE_MULTIPLE == 0
