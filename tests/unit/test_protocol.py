"""Edge cases of the wire codec (bus.protocol); the golden bytes themselves are in test_vectors.py."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest

from bus import protocol
from bus.errors import BadRequest, BusError, UnsupportedVersion
from bus.protocol import Kind

ID = "3f2a9c1b7d4e-1"


def pack(value: Any) -> bytes:
    return msgpack.packb(value)


def decode_header(header: list[Any], *bulk: bytes) -> protocol.Message:
    return protocol.decode([pack(header), *bulk])


def code_of(fn: Any, *args: Any) -> str:
    with pytest.raises(BusError) as info:
        fn(*args)
    return info.value.code


# A well-formed header of every command-channel kind, to mutate.
GOOD: dict[Kind, list[Any]] = {
    Kind.REQUEST: [1, 1, ID, "echo1", "add", 2.5, pack({"a": 1})],
    Kind.PROGRESS: [1, 2, ID, pack({"done": 1})],
    Kind.REPLY: [1, 3, ID, pack(3)],
    Kind.ERROR: [1, 4, ID, "busy", "queue full", {"queued": 5}],
    Kind.CANCEL: [1, 5, ID],
    Kind.READY: [1, 6, "echo1", {"kind": "echo"}],
    Kind.HEARTBEAT: [1, 7],
    Kind.DISCONNECT: [1, 8, "bye"],
    Kind.HELLO: [1, 10, [1], {}],
}


class TestConstants:
    def test_wire_numbers_of_kinds(self) -> None:
        """Kind numbers are part of the wire contract and never change."""
        assert {k.name: int(k) for k in Kind} == {
            "REQUEST": 1,
            "PROGRESS": 2,
            "REPLY": 3,
            "ERROR": 4,
            "CANCEL": 5,
            "READY": 6,
            "HEARTBEAT": 7,
            "DISCONNECT": 8,
            "EVENT": 9,
            "HELLO": 10,
        }

    def test_documented_constants(self) -> None:
        """Version, endpoints, bulk ext and limits match docs/PROTOCOL.md."""
        assert protocol.VERSION == 1
        assert protocol.SUPPORTED_VERSIONS == (1,)
        assert protocol.DEFAULT_COMMAND_ENDPOINT == "tcp://127.0.0.1:7750"
        assert protocol.DEFAULT_PUBLISH_ENDPOINT == "tcp://127.0.0.1:7751"
        assert protocol.DEFAULT_SUBSCRIBE_ENDPOINT == "tcp://127.0.0.1:7752"
        assert protocol.BROKER_SERVICE == "broker"
        assert protocol.BULK_EXT == 1
        assert protocol.BULK_THRESHOLD == 65536
        assert protocol.MAX_HEADER_BYTES == 1024 * 1024

    def test_heartbeat_is_three_bytes(self) -> None:
        """A heartbeat is the single frame 92 01 07."""
        assert protocol.encode_heartbeat() == [b"\x92\x01\x07"]


class TestHeaderFraming:
    @pytest.mark.parametrize(
        ("frame", "why"),
        [
            (b"", "empty frame"),
            (b"\xc1", "never-used msgpack byte"),
            (
                pack([1, 1, ID, "echo1", "add", 2.5, pack({})])[:9],
                "truncated inside msg_id",
            ),
            (
                pack([1, 1, ID, "echo1", "add", 2.5, pack({})])[:-1],
                "truncated inside args",
            ),
            (b"\x97\x01", "array header promising 7 elements, 1 present"),
            (pack([1, 7]) + b"\x00", "trailing bytes after the header"),
            (pack({"v": 1}), "a map instead of an array"),
            (pack("hello"), "a string"),
            (pack([]), "empty array"),
            (pack([1]), "version only"),
        ],
    )
    def test_malformed_header_is_bad_request(self, frame: bytes, why: str) -> None:
        """Anything but a msgpack array [version, kind, ...] is bad_request."""
        assert code_of(protocol.decode, [frame]) == "bad_request", why

    def test_no_frames_is_bad_request(self) -> None:
        """A message needs at least its header frame."""
        assert code_of(protocol.decode, []) == "bad_request"

    @pytest.mark.parametrize("version", [0, 2, 255, -1, 2**40])
    def test_other_integer_version_is_unsupported(self, version: int) -> None:
        """An integer version other than 1 is unsupported_version, naming the supported ones."""
        with pytest.raises(UnsupportedVersion) as info:
            decode_header([version, 7])
        assert info.value.code == "unsupported_version"
        assert info.value.details == {"supported": [1]}
        assert isinstance(info.value, BadRequest)

    @pytest.mark.parametrize("version", ["1", None, [1], b"\x01", 1.5])
    def test_non_integer_version_is_bad_request(self, version: Any) -> None:
        """A version that is not an integer is bad_request, not unsupported_version."""
        assert code_of(decode_header, [version, 7]) == "bad_request"

    @pytest.mark.parametrize("version", [True, 1.0])
    def test_bool_or_float_version_is_bad_request(self, version: Any) -> None:
        """Only the integer 1 is version 1."""
        assert code_of(decode_header, [version, 7]) == "bad_request"

    @pytest.mark.parametrize("kind", [0, 11, 42, -1, "request", None, 9])
    def test_unknown_or_misplaced_kind_is_bad_request(self, kind: Any) -> None:
        """Kinds outside 1-10, and EVENT (9) on the command channel, are bad_request."""
        assert code_of(decode_header, [1, kind, ID, "a", "b", None, b""]) == "bad_request"

    def test_version_is_checked_before_kind(self) -> None:
        """A version-2 header is unsupported_version even if its kind is unknown to v1."""
        assert code_of(decode_header, [2, 99]) == "unsupported_version"


class TestHeaderSize:
    def test_header_over_limit_is_bad_request(self) -> None:
        """A header frame over MAX_HEADER_BYTES is refused with reason header_too_large."""
        frame = pack([1, 6, "echo1", {"doc": "x" * protocol.MAX_HEADER_BYTES}])
        with pytest.raises(BadRequest) as info:
            protocol.decode([frame])
        assert info.value.details == {"reason": "header_too_large", "size": len(frame)}

    def test_header_at_limit_is_accepted(self) -> None:
        """A header frame of exactly MAX_HEADER_BYTES decodes."""
        base = len(pack([1, 6, "echo1", {"doc": "x" * 70000}]))
        padding = "x" * (70000 + protocol.MAX_HEADER_BYTES - base)
        frame = pack([1, 6, "echo1", {"doc": padding}])
        assert len(frame) == protocol.MAX_HEADER_BYTES
        assert protocol.decode([frame]).info == {"doc": padding}

    def test_size_is_checked_before_parsing(self) -> None:
        """An oversized frame is refused as too large even when it is not msgpack."""
        with pytest.raises(BadRequest) as info:
            protocol.decode([b"\xc1" * (protocol.MAX_HEADER_BYTES + 1)])
        assert info.value.details["reason"] == "header_too_large"


class TestArity:
    @pytest.mark.parametrize("kind", list(GOOD), ids=[k.name for k in GOOD])
    def test_every_kind_decodes(self, kind: Kind) -> None:
        """The reference header of each kind decodes to that kind."""
        assert decode_header(GOOD[kind]).kind is kind

    @pytest.mark.parametrize(
        "kind",
        [k for k in GOOD if len(GOOD[k]) > 2],
        ids=[k.name for k in GOOD if len(GOOD[k]) > 2],
    )
    def test_missing_element_is_bad_request(self, kind: Kind) -> None:
        """A header one element short of its kind's arity is bad_request."""
        with pytest.raises(BadRequest) as info:
            decode_header(GOOD[kind][:-1])
        assert f"{kind.name} header needs {len(GOOD[kind])} elements" in info.value.message

    @pytest.mark.parametrize("kind", list(GOOD), ids=[k.name for k in GOOD])
    def test_extra_trailing_elements_are_ignored(self, kind: Kind) -> None:
        """Extra trailing elements (a newer peer) decode exactly as without them."""
        plain = decode_header(GOOD[kind])
        extended = decode_header([*GOOD[kind], "future", {"x": [1, 2]}, None])
        assert extended == plain


class TestFieldTypes:
    @pytest.mark.parametrize(
        ("kind", "index", "value", "field"),
        [
            (Kind.REQUEST, 2, 17, "msg_id"),
            (Kind.REQUEST, 2, None, "msg_id"),
            (Kind.REQUEST, 2, b"id", "msg_id"),
            (Kind.REQUEST, 3, 1, "service"),
            (Kind.REQUEST, 4, None, "command"),
            (Kind.REQUEST, 5, "2.5", "ttl_s"),
            (Kind.REQUEST, 5, True, "ttl_s"),
            (Kind.REQUEST, 5, [2.5], "ttl_s"),
            (Kind.REQUEST, 6, {"a": 1}, "args"),
            (Kind.REQUEST, 6, "args", "args"),
            (Kind.REQUEST, 6, None, "args"),
            (Kind.PROGRESS, 2, 1, "msg_id"),
            (Kind.PROGRESS, 3, 5, "data"),
            (Kind.REPLY, 2, None, "msg_id"),
            (Kind.REPLY, 3, "3", "data"),
            (Kind.ERROR, 2, 1, "msg_id"),
            (Kind.ERROR, 3, 4, "code"),
            (Kind.ERROR, 4, None, "message"),
            (Kind.ERROR, 5, None, "details"),
            (Kind.ERROR, 5, [], "details"),
            (Kind.CANCEL, 2, 1, "msg_id"),
            (Kind.READY, 2, None, "service"),
            (Kind.READY, 3, [], "info"),
            (Kind.DISCONNECT, 2, 8, "reason"),
            (Kind.HELLO, 2, 1, "versions"),
            (Kind.HELLO, 2, ["1"], "versions"),
            (Kind.HELLO, 3, None, "info"),
        ],
    )
    def test_wrong_type_is_bad_request_naming_the_field(
        self, kind: Kind, index: int, value: Any, field: str
    ) -> None:
        """A field of the wrong msgpack type is bad_request, and the reason names the field."""
        header = list(GOOD[kind])
        header[index] = value
        with pytest.raises(BadRequest) as info:
            decode_header(header)
        assert info.value.code == "bad_request"
        assert field in info.value.details["reason"]

    @pytest.mark.parametrize(
        ("ttl", "expected"), [(None, None), (5, 5.0), (2.5, 2.5), (0, 0.0), (-1, -1.0)]
    )
    def test_ttl_accepts_int_float_and_nil(self, ttl: Any, expected: float | None) -> None:
        """ttl_s is any msgpack int or float, or nil; it is decoded as a float (range checks are the
        broker's).
        """
        header = list(GOOD[Kind.REQUEST])
        header[5] = ttl
        msg = decode_header(header)
        assert msg.ttl_s == expected
        assert expected is None or type(msg.ttl_s) is float

    @pytest.mark.parametrize("ttl", [math.nan, math.inf])
    def test_non_finite_ttl_is_bad_request(self, ttl: float) -> None:
        """A ttl_s that is not a finite number cannot be a deadline."""
        header = list(GOOD[Kind.REQUEST])
        header[5] = ttl
        assert code_of(decode_header, header) == "bad_request"

    def test_unknown_map_keys_are_kept_for_the_reader_to_ignore(self) -> None:
        """Unknown keys in info and details maps decode untouched (readers ignore what they do not know)."""
        msg = decode_header([1, 6, "echo1", {"kind": "echo", "from_the_future": {"x": 1}}])
        assert msg.info == {"kind": "echo", "from_the_future": {"x": 1}}

    @pytest.mark.parametrize("key", [1, -1, 1.5, None, True])
    def test_non_string_map_keys_are_bad_request(self, key: Any) -> None:
        """Map keys must be str (§4): another key type, in a header or a payload, is bad_request
        naming the problem."""
        with pytest.raises(BadRequest, match="map key is not a str"):
            decode_header([1, 4, ID, "busy", "full", {key: "one"}])
        with pytest.raises(BadRequest, match="map key is not a str") as info:
            protocol.unpack_small(msgpack.packb({"a": {key: "one"}}))
        assert info.value.details == {"reason": "invalid_payload", "problem": "map_key_not_str"}


class TestTimestamps:
    """msgpack-python decodes ext type -1 itself, never through ext_hook; the codec still
    refuses it everywhere (§4), without walking values that cannot hold one."""

    @pytest.mark.parametrize(
        "stamp",
        [msgpack.Timestamp(1), msgpack.Timestamp(1, 5), msgpack.Timestamp(2**40, 5)],
        ids=["fixext4", "fixext8", "ext8-12"],
    )
    def test_every_form_is_refused_at_any_depth(self, stamp: msgpack.Timestamp) -> None:
        for value in (stamp, {"a": [1, {"b": stamp}]}, [[[[[[stamp]]]]]]):
            data = msgpack.packb(value)
            for unpack in (protocol.unpack_small, protocol.unpack_value):
                with pytest.raises(BadRequest) as info:
                    unpack(data)
                assert info.value.details == {"reason": "invalid_payload", "problem": "ext_type"}
        with pytest.raises(BadRequest, match="timestamp"):
            decode_header([1, 4, ID, "busy", "full", {"at": stamp}])
        with pytest.raises(BadRequest, match="timestamp"):
            protocol.decode_event(b"a.b\0" + msgpack.packb([1, 9, "s", 1, 2, 0.5, [stamp]]))

    def test_timestamp_bytes_inside_a_bin_are_not_a_timestamp(self) -> None:
        """A bin or str that merely holds the bytes d6 ff is an ordinary value."""
        value = {"blob": b"\xd6\xff\x00\x00\x00\x01", "text": "\u00ff"}
        assert protocol.unpack_small(msgpack.packb(value)) == value
        assert protocol.unpack_value(msgpack.packb(value)) == value


class TestValues:
    def test_empty_payload_is_nil(self) -> None:
        """A zero-length bin decodes as nil."""
        assert protocol.unpack_value(b"") is None
        assert decode_header([1, 3, ID, b""]).value() is None

    def test_request_without_args_sends_an_empty_map(self) -> None:
        """encode_request with args None packs {} (0x80)."""
        header = msgpack.unpackb(protocol.encode_request(ID, "s", "c", None, None)[0])
        assert header == [1, 1, ID, "s", "c", None, b"\x80"]

    @pytest.mark.parametrize(
        ("payload", "why"),
        [
            (b"\xc1", "never-used byte"),
            (b"\x92\x01", "array missing an element"),
            (b"\x01\x02", "trailing bytes"),
            (b"\xd9\x05ab", "str8 cut short"),
            (b"\x81\xa1a\xff\xff" + b"\x00" * 1, "garbage after a map"),
        ],
    )
    def test_payload_that_is_not_msgpack_is_bad_request(self, payload: bytes, why: str) -> None:
        """A payload bin that does not hold exactly one msgpack value is bad_request on unpacking."""
        msg = decode_header([1, 3, ID, payload])  # the header itself is fine: payloads are opaque
        assert code_of(msg.value) == "bad_request", why

    def test_payload_with_invalid_utf8_string_is_bad_request(self) -> None:
        """A msgpack str must be UTF-8."""
        assert code_of(protocol.unpack_value, b"\xa2\xff\xfe") == "bad_request"

    @pytest.mark.parametrize(
        ("value", "encoded"),
        [
            (None, b"\xc0"),
            (True, b"\xc3"),
            (3, b"\x03"),
            ("a", b"\xa1a"),
            (b"\x00", b"\xc4\x01\x00"),
            (2.5, b"\xcb\x40\x04\x00\x00\x00\x00\x00\x00"),
        ],
    )
    def test_small_values_are_canonical_msgpack(self, value: Any, encoded: bytes) -> None:
        """Small values pack inline as plain msgpack: smallest int, float64, bin for bytes."""
        assert protocol.pack_value(value) == (encoded, [])
        assert protocol.unpack_value(encoded) == value

    def test_sets_and_memoryviews_are_encodable(self) -> None:
        """A set travels as an array, a memoryview as bin."""
        data, frames = protocol.pack_value({"s": {1}, "m": memoryview(b"ab")})
        assert frames == []
        assert protocol.unpack_value(data) == {"s": [1], "m": b"ab"}

    def test_unsupported_type_is_a_type_error(self) -> None:
        """An object msgpack cannot encode raises TypeError naming its type (a bug of the caller)."""
        with pytest.raises(TypeError, match="object"):
            protocol.pack_value({"x": object()})


class TestBulkFrames:
    T = protocol.BULK_THRESHOLD

    def test_just_below_threshold_stays_inline(self) -> None:
        """bytes of BULK_THRESHOLD - 1 stay inline as bin."""
        blob = b"a" * (self.T - 1)
        data, frames = protocol.pack_value({"data": blob})
        assert frames == []
        assert protocol.unpack_value(data) == {"data": blob}

    def test_at_threshold_is_lifted(self) -> None:
        """bytes of exactly BULK_THRESHOLD become bulk frame 1 and an ext-1 reference d6 01 00000001."""
        blob = b"a" * self.T
        data, frames = protocol.pack_value({"data": blob})
        assert frames == [blob]
        assert data == b"\x81\xa4data\xd6\x01\x00\x00\x00\x01"
        assert protocol.unpack_value(data, frames) == {"data": blob}

    def test_references_are_numbered_in_encoding_order(self) -> None:
        """Several large values become frames 1, 2, ... in the order they are packed, at any depth up to 4."""
        a, b, c = b"a" * self.T, b"b" * self.T, b"c" * self.T
        value = {"first": a, "nested": [{"deep": b}], "last": c}
        data, frames = protocol.pack_value(value)
        assert [bytes(f[:1]) for f in frames] == [b"a", b"b", b"c"]
        assert protocol.unpack_value(data, frames) == value

    def test_top_level_bytes_are_lifted(self) -> None:
        """A bulk-sized bytes result is itself a reference."""
        data, frames = protocol.pack_value(b"z" * self.T)
        assert data == b"\xd6\x01\x00\x00\x00\x01" and len(frames) == 1

    def test_values_deeper_than_four_levels_stay_inline(self) -> None:
        """Lifting looks 4 containers deep; deeper bytes stay inline (still valid, just copied)."""
        blob = b"d" * self.T
        value = [[[[[blob]]]]]
        data, frames = protocol.pack_value(value)
        assert frames == []
        assert protocol.unpack_value(data) == value

    def test_inline_large_bin_is_accepted(self) -> None:
        """A receiver accepts bulk-sized bytes sent inline (lifting is an optimisation of the sender)."""
        blob = b"i" * (self.T * 2)
        assert decode_header([1, 3, ID, pack({"data": blob})]).value() == {"data": blob}

    def test_request_bulk_frames_follow_the_header(self) -> None:
        """encode_request returns the header frame then the bulk frames; decode hands them back."""
        blob = b"f" * self.T
        frames = protocol.encode_request(ID, "fr1", "FR_SendFile", 2.5, {"data": blob})
        assert len(frames) == 2 and bytes(frames[1]) == blob
        msg = protocol.decode([bytes(f) for f in frames])
        assert msg.frames == [blob]
        assert msg.value() == {"data": blob}

    @pytest.mark.parametrize(
        ("ref", "nframes"),
        [
            (b"\x00\x00\x00\x00", 1),
            (b"\x00\x00\x00\x02", 1),
            (b"\x00\x00\x00\x01", 0),
            (b"\xff\xff\xff\xff", 3),
        ],
    )
    def test_reference_out_of_range_is_bad_request(self, ref: bytes, nframes: int) -> None:
        """A reference to index 0 or past the last bulk frame is bad_request."""
        payload = pack({"data": msgpack.ExtType(1, ref)})
        msg = decode_header([1, 3, ID, payload], *[b"x"] * nframes)
        with pytest.raises(BadRequest, match="bulk reference"):
            msg.value()

    @pytest.mark.parametrize("data", [b"\x01", b"\x00\x00\x01", b"\x00\x00\x00\x00\x01"])
    def test_reference_of_wrong_length_is_bad_request(self, data: bytes) -> None:
        """A bulk reference is exactly 4 bytes."""
        payload = pack(msgpack.ExtType(1, data))
        assert code_of(protocol.unpack_value, payload, [b"x"]) == "bad_request"

    @pytest.mark.parametrize("code", [0, 2, 5, 127])
    def test_other_ext_types_are_bad_request(self, code: int) -> None:
        """Only ext type 1 is defined."""
        assert (
            code_of(protocol.unpack_value, pack(msgpack.ExtType(code, b"\0\0\0\1")), [b"x"])
            == "bad_request"
        )

    def test_unreferenced_bulk_frames_are_ignored(self) -> None:
        """Bulk frames nobody references do not make a message invalid."""
        assert decode_header([1, 3, ID, pack(3)], b"spare").value() == 3

    def test_frame_objects_are_returned_as_bytes(self) -> None:
        """Bulk frames given as buffers (zmq.Frame, memoryview) resolve to bytes."""
        payload = pack(msgpack.ExtType(1, b"\0\0\0\1"))
        assert protocol.unpack_value(payload, [memoryview(b"abc")]) == b"abc"


class TestRoundTrip:
    @pytest.mark.parametrize(
        ("frames", "expected"),
        [
            (
                protocol.encode_request(ID, "echo1", "add", 2.5, {"a": 1}),
                {"msg_id": ID, "service": "echo1", "command": "add", "ttl_s": 2.5},
            ),
            (protocol.encode_progress(ID, {"done": 1}), {"msg_id": ID}),
            (protocol.encode_reply(ID, [1, 2]), {"msg_id": ID}),
            (
                protocol.encode_error(ID, "busy", "full", None),
                {"msg_id": ID, "code": "busy", "text": "full", "details": {}},
            ),
            (protocol.encode_cancel(ID), {"msg_id": ID}),
            (
                protocol.encode_ready("echo1", {"kind": "echo"}),
                {"service": "echo1", "info": {"kind": "echo"}},
            ),
            (protocol.encode_heartbeat(), {}),
            (protocol.encode_disconnect("bye"), {"text": "bye"}),
            (
                protocol.encode_hello([1, 2], {"c": 1}),
                {"versions": [1, 2], "info": {"c": 1}},
            ),
        ],
    )
    def test_encode_then_decode(self, frames: list[Any], expected: dict[str, Any]) -> None:
        """Each encoder's output decodes to the fields it was given."""
        msg = protocol.decode(frames)
        for name, value in expected.items():
            assert getattr(msg, name) == value

    def test_error_details_none_becomes_empty_map(self) -> None:
        """encode_error always sends a details map."""
        assert msgpack.unpackb(protocol.encode_error(ID, "busy", "x")[0])[5] == {}


class TestEvents:
    def test_frame_layout(self) -> None:
        """An event is topic, NUL, then msgpack [1, 9, src, epoch, seq, ts, data]."""
        frame = protocol.encode_event("echo1.tick", "echo1", 5, 7, 2.5, {"x": 1})
        topic, body = frame.split(b"\0", 1)
        assert topic == b"echo1.tick"
        assert msgpack.unpackb(body) == [1, 9, "echo1", 5, 7, 2.5, {"x": 1}]

    def test_prefix_plus_body_is_the_frame(self) -> None:
        """event_prefix + encode_event_body is exactly encode_event (publishers cache the prefix)."""
        whole = protocol.encode_event("a.b", "a", 1, 2, 3.5, None)
        assert (
            protocol.event_prefix("a.b") + protocol.encode_event_body("a", 1, 2, 3.5, None) == whole
        )

    def test_round_trip(self) -> None:
        """decode_event gives back every field."""
        epoch = 2**53 - 1
        frame = protocol.encode_event("presence.fr1", "broker", epoch, 1, 1.5, {"state": "up"})
        assert protocol.decode_event(frame) == protocol.Event(
            "presence.fr1", "broker", epoch, 1, 1.5, {"state": "up"}
        )

    def test_extra_trailing_elements_are_ignored(self) -> None:
        """Elements after data are ignored."""
        frame = b"t\0" + pack([1, 9, "s", 1, 2, 0.5, None, "future"])
        assert protocol.decode_event(frame) == protocol.Event("t", "s", 1, 2, 0.5, None)

    def test_topic_ends_at_the_first_nul(self) -> None:
        """The topic is everything before the first NUL byte."""
        frame = b"a.b\0" + pack([1, 9, "s", 1, 2, 0.5, "x\0y"])
        assert protocol.decode_event(frame).data == "x\0y"

    @pytest.mark.parametrize(
        ("frame", "why"),
        [
            (b"a.b" + pack([1, 9, "s", 1, 2, 0.5, None]), "no NUL"),
            (b"a.b\0", "no body"),
            (b"a.b\0\xc1", "body not msgpack"),
            (b"a.b\0" + pack([1, 9, "s", 1, 2, 0.5]), "six elements"),
            (b"a.b\0" + pack({"v": 1}), "body is a map"),
            (b"a.b\0" + pack([1, 3, "s", 1, 2, 0.5, None]), "kind 3"),
            (b"a.b\0" + pack([2, 9, "s", 1, 2, 0.5, None]), "version 2"),
            (b"\xff\xfe\0" + pack([1, 9, "s", 1, 2, 0.5, None]), "topic not UTF-8"),
        ],
    )
    def test_malformed_event_is_bad_request(self, frame: bytes, why: str) -> None:
        """Malformed event frames raise bad_request (also for another version, see PROTOCOL.md)."""
        assert code_of(protocol.decode_event, frame) == "bad_request", why


class TestNames:
    @pytest.mark.parametrize("name", ["fr1", "flux.p1", "a", "A-b_c.d", "9lives", "x" * 128])
    def test_valid_service_names(self, name: str) -> None:
        """1-128 of A-Z a-z 0-9 _ . - starting with a letter or digit."""
        assert protocol.validate_service_name(name) == name

    @pytest.mark.parametrize(
        "name", ["", ".hidden", "-x", "_x", "a b", "a/b", "é", "x" * 129, None, 5]
    )
    def test_invalid_service_names(self, name: Any) -> None:
        """Anything else is bad_request."""
        assert code_of(protocol.validate_service_name, name) == "bad_request"

    def test_id_prefix_is_twelve_hex_digits(self) -> None:
        """Message-id prefixes are 48 random bits in lower-case hex, different each time."""
        a, b = protocol.new_id_prefix(), protocol.new_id_prefix()
        assert len(a) == 12 and int(a, 16) >= 0 and a == a.lower()
        assert a != b

    @pytest.mark.skipif(not hasattr(protocol, "new_epoch"), reason="no new_epoch in this codec")
    def test_epoch_is_53_bits(self) -> None:
        """Publisher epochs are random and below 2**53 (exact in a JavaScript number)."""
        epochs = {protocol.new_epoch() for _ in range(20)}
        assert len(epochs) == 20
        assert all(0 <= e < 2**53 for e in epochs)
