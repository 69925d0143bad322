"""Hypothesis throws random frames, truncated requests and random field values at a real daemon:
every message gets a well-formed reply with a stable code, and the daemon still answers ping."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from daemon_helpers import RunningDaemon, raw_dealer, start_daemon
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from colord.daemon import protocol
from colord.plugins.wire import colord_protocol as wire

FUZZ_SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def daemon(tiny_checkpoint: Path) -> Iterator[RunningDaemon]:
    with start_daemon(tiny_checkpoint) as running:
        yield running


@pytest.fixture(scope="module")
def sock(daemon: RunningDaemon) -> Iterator[zmq.Socket]:
    with raw_dealer(daemon.endpoint) as dealer:
        yield dealer


def exchange(sock: zmq.Socket, frames: list[bytes]) -> protocol.Reply:
    """Send one message and return its reply, which must be a valid protocol reply."""
    sock.send_multipart(frames)
    reply = protocol.decode_reply(sock.recv_multipart()[-1])
    if not reply.ok:
        assert reply.error_code in wire.ERROR_CODES
        assert reply.error_message
    return reply


def assert_still_serving(sock: zmq.Socket, token: str) -> None:
    reply = exchange(sock, [protocol.encode_request("alive?", "ping", token)])
    assert (reply.id, reply.ok) == ("alive?", True)


@FUZZ_SETTINGS
@given(frames=st.lists(st.binary(max_size=300), min_size=1, max_size=3))
def test_random_frames(daemon: RunningDaemon, sock: zmq.Socket, frames: list[bytes]) -> None:
    reply = exchange(sock, frames)
    assert not reply.ok  # random bytes are never a valid request


def valid_requests(token: str) -> st.SearchStrategy[bytes]:
    line_art = protocol.array_to_image(np.full((8, 8, 4), 255, np.uint8))
    colorize = wire.colorize_args(line_art.to_message(), None, {"working_size": 16})
    return st.sampled_from(
        [
            protocol.encode_request(1, "ping", token),
            protocol.encode_request("info", "info", token),
            protocol.encode_request(2, "colorize", token, colorize),
        ]
    )


@FUZZ_SETTINGS
@given(data=st.data())
def test_truncated_requests(daemon: RunningDaemon, sock: zmq.Socket, data: st.DataObject) -> None:
    body = data.draw(valid_requests(daemon.token))
    cut = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    reply = exchange(sock, [body[:cut]])
    assert (reply.ok, reply.error_code) == (False, "malformed")


msgpack_ints = st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)  # what msgpack encodes

scalars = st.one_of(
    st.none(),
    st.booleans(),
    msgpack_ints,
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
sides = st.one_of(
    st.integers(min_value=-2, max_value=12), st.sampled_from([16385, 1 << 40]), scalars
)
formats = st.one_of(st.sampled_from([*wire.FORMATS, "RGBA32", ""]), scalars)


@st.composite
def images(draw: st.DrawFn) -> object:
    if draw(st.integers(0, 9)) == 0:
        return draw(scalars)
    image = {"width": draw(sides), "height": draw(sides), "format": draw(formats)}
    exact = (
        isinstance(image["width"], int)
        and isinstance(image["height"], int)
        and image["format"] in wire.FORMATS
        and 0 < image["width"] <= 12
        and 0 < image["height"] <= 12
    )
    if exact and draw(st.booleans()):
        size = image["width"] * image["height"] * wire.BYTES_PER_PIXEL[image["format"]]
        image["data"] = draw(st.binary(min_size=size, max_size=size))
    else:
        image["data"] = draw(st.one_of(st.binary(max_size=600), scalars))
    for key in draw(st.sets(st.sampled_from(list(image)), max_size=1)):
        del image[key]
    return image


@st.composite
def requests(draw: st.DrawFn, token: str) -> dict:
    options = {
        "working_size": draw(st.one_of(st.sampled_from([16, 32, 48, 100]), scalars)),
        "keep_lines": draw(st.one_of(st.booleans(), scalars)),
        "result_format": draw(st.one_of(st.sampled_from(["RGBA8", "BGRA8", "RGB8"]), scalars)),
    }
    args = {"line_art": draw(images()), "reference": draw(images()), "options": options}
    message = {
        "v": draw(st.sampled_from([1, 1, 1, 2, "1", None, True])),
        "id": draw(st.one_of(msgpack_ints, st.text(max_size=300), scalars)),
        "op": draw(st.sampled_from(["colorize", "colorize", "ping", "info", "Ping", 7])),
        "token": draw(st.sampled_from([token, token, token, token.upper(), "", None])),
        "args": draw(st.one_of(st.just(args), st.just(args), scalars)),
    }
    for key in draw(st.sets(st.sampled_from(list(message)), max_size=1)):
        del message[key]
    return message


def header_error(message: dict, token: str) -> str | None:
    """The error code the header fields alone decide, checked in docs/protocol.md's order:
    version, id, token, op (and a non-map `args` for ping and info); None when they pass."""
    version, request_id = message.get("v"), message.get("id")
    if type(version) is not int or version != 1:
        return "version"
    id_ok = (type(request_id) is int and -(1 << 63) <= request_id < 1 << 64) or (
        isinstance(request_id, str) and len(request_id.encode()) <= 256
    )
    if not id_ok:
        return "bad_request"
    if message.get("token") != token:
        return "unauthorized"
    if message.get("op") not in ("ping", "info", "colorize"):
        return "unknown_op"
    if message["op"] != "colorize" and not isinstance(message.get("args"), dict | None):
        return "bad_request"
    return None


@FUZZ_SETTINGS
@given(data=st.data())
def test_random_field_values(daemon: RunningDaemon, sock: zmq.Socket, data: st.DataObject) -> None:
    message = data.draw(requests(daemon.token))
    reply = exchange(sock, [msgpack.packb(message)])
    event(f"{message.get('op')}: {'ok' if reply.ok else reply.error_code}")
    assert reply.ok or reply.error_code != "internal", reply.error_message
    expected = header_error(message, daemon.token)
    if expected is not None:  # e.g. a wrong token is refused, whatever else the message holds
        assert (reply.ok, reply.error_code) == (False, expected), reply.error_message
    elif message["op"] != "colorize":
        assert reply.ok, reply.error_message
    if reply.ok and message.get("op") == "colorize":
        line_art = message["args"]["line_art"]
        result = reply.result["image"]
        assert (result["width"], result["height"]) == (line_art["width"], line_art["height"])


@pytest.mark.parametrize("op", ["ping", "info", "colorize"])
def test_every_op_refuses_a_wrong_or_missing_token(
    daemon: RunningDaemon, sock: zmq.Socket, op: str
) -> None:
    # the fuzzer above meets a ping with a wrong token about once a run: every op and every kind
    # of wrong token here, each time
    one_off = daemon.token[:-1] + ("1" if daemon.token.endswith("0") else "0")
    line_art = {"width": 1, "height": 1, "format": "GRAY8", "data": b"\0"}
    upper = daemon.token.upper()  # hex: it differs unless the token has no letter at all
    for token in (one_off, *([upper] if upper != daemon.token else []), "", None, "missing"):
        message = {"v": 1, "id": 3, "op": op, "token": token, "args": {"line_art": line_art}}
        if token == "missing":
            del message["token"]
        reply = exchange(sock, [msgpack.packb(message)])
        assert (reply.id, reply.ok, reply.error_code) == (3, False, "unauthorized"), token


@st.composite
def valid_images(draw: st.DrawFn) -> dict:
    """Any format and size from 1x1 to 12x12; random pixels, or the shapes that stress the line
    handling: no lines, all lines, one line pixel, a transparent layer."""
    width, height = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    image_format = draw(st.sampled_from(list(wire.FORMATS)))
    size = width * height * wire.BYTES_PER_PIXEL[image_format]
    pattern = draw(st.sampled_from(["random", "random", "paper", "ink", "one line", "clear"]))
    if pattern == "random":
        data = draw(st.binary(min_size=size, max_size=size))
    else:
        channels, channel_bytes = wire.FORMATS[image_format]
        full = 0xFFFF if channel_bytes == 2 else 0xFF
        pixels = np.full((height, width, channels), full, "<u2" if channel_bytes == 2 else "u1")
        has_alpha = channels in (2, 4)
        colour = slice(0, channels - 1) if has_alpha else slice(None)
        if pattern == "ink":
            pixels[..., colour] = 0
        elif pattern == "one line":
            row, column = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
            pixels[row, column, colour] = 0
        elif pattern == "clear" and has_alpha:
            pixels[..., -1] = 0
        data = pixels.tobytes()
    return {"width": width, "height": height, "format": image_format, "data": data}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    line_art=valid_images(),
    reference=st.one_of(st.none(), valid_images()),
    options=st.fixed_dictionaries(
        {},
        optional={
            "working_size": st.sampled_from([16, 32, 64]),
            "keep_lines": st.booleans(),
            "result_format": st.sampled_from(wire.RESULT_FORMATS),
        },
    ),
)
def test_random_valid_colorize_requests_succeed(
    daemon: RunningDaemon, sock: zmq.Socket, line_art: dict, reference: dict | None, options: dict
) -> None:
    args = {"line_art": line_art, "reference": reference, "options": options}
    message = {"v": 1, "id": 9, "op": "colorize", "token": daemon.token, "args": args}
    reply = exchange(sock, [msgpack.packb(message)])
    assert reply.ok, reply.error_message
    image = reply.result["image"]
    assert (image["width"], image["height"]) == (line_art["width"], line_art["height"])
    assert image["format"] == options.get("result_format", "RGBA8")
    assert len(image["data"]) == line_art["width"] * line_art["height"] * 4


def test_daemon_survives_the_fuzzing(daemon: RunningDaemon, sock: zmq.Socket) -> None:
    assert_still_serving(sock, daemon.token)
    assert daemon.process.poll() is None
