"""The emulator's ASH codec (UG101): golden bytes from real NCPs, round trips, stuffing,
CRC errors, data randomization, and the streaming decoder's reserved bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.simulator.ncp import ash

# Byte sequences recorded from real NCPs (and the frames a host sent them), as quoted in
# zigbee-herdsman's tests: test/adapter/ember/consts.ts (Koenkk/zigbee-herdsman).
SEND_RST_BYTES = bytes((0x1A, 0xC0, 0x38, 0xBC, 0x7E))
RECD_RSTACK_BYTES = bytes((0x1A, 0xC1, 0x02, 0x0B, 0x0A, 0x52, 0x7E))
SEND_ACK_FIRST_BYTES = bytes((0x81, 0x60, 0x59, 0x7E))
ASH_ACK_FIRST_BYTES = bytes((0x80, 0x70, 0x78, 0x7E))
RECD_ERROR_ACK_TIMEOUT_BYTES = bytes((0xC2, 0x02, 0x51, 0xA8, 0xBD, 0x7E))
RCED_ERROR_WATCHDOG_BYTES = bytes((0xC2, 0x02, 0x03, 0xD2, 0x0A, 0x7E))
RCED_DATA_WITH_CRC_ERROR = bytes.fromhex(
    "b658904124ab5593499cdd93623cd29874f5de5083f97b1e66efc9af417e")
RCED_DATA_RETRY = bytes.fromhex(
    "0eafb1a96b2a7d334fa674eb04aaa760499d4e27cdd9ce6192f2c46989fcfb817e")
SEND_DATA_VERSION = bytes.fromhex("004221a8597c057e")  # desiredProtocolVersion: 13
RCED_DATA_VERSION = bytes.fromhex("0142a1a8592805c6a8777e")  # 13, stack type 2, 0x7410
SEND_UNICAST_REPLY_FN0_ASH_RAW = bytes.fromhex("0065a1a9602a15b25994d0954c7e")
SEND_UNICAST_REPLY_FN0_EZSP = bytes.fromhex("2780013400000000009a")
MESSAGE_SENT_HANDLER_FN1_ASH_RAW = bytes.fromhex(
    "1065b1a96b2a15b259944afb6351934f9c4f26ebfcce677d31fec66357897e")
MESSAGE_SENT_HANDLER_FN1_EZSP = bytes.fromhex(
    "2790013f000000000000dec9040106000101401100009a030000")
INCOMING_MESSAGE_HANDLER_FN2_ASH_RAW = bytes.fromhex(
    "2065b1a97d312a15b658924a24ab5593499c3ef962edce678bfdc6638903813ca7edcdde6f8ae7c3d0d5d2"
    "6b68937e")
INCOMING_MESSAGE_HANDLER_FN2_EZSP = bytes.fromhex(
    "2790014500000401060001010001000070dec90000000000000000ffff0300060000000518040b000002")
SET_POLICY_ASH_RAW = bytes.fromhex("700d21a9012a15b0f5667e")
SET_POLICY_REPLY_FN1_ASH_RAW = bytes.fromhex("100da1a9012a15b259944fb87e")
SET_POLICY_REPLY_FN1_EZSP = bytes.fromhex("4f8001550000000000")


def decode_all(data: bytes) -> list[ash.Frame | ash.BadFrame]:
    return list(ash.Decoder().feed(data))


def test_crc_ccitt_check_value() -> None:
    # CRC-16/CCITT-FALSE's standard check value
    assert ash.crc_ccitt(b"123456789") == 0x29B1


def ug101_crc(data: bytes, crc: int = 0xFFFF) -> int:
    """UG101's CRC, bit by bit: the definition the emulator's (the C one in binascii)
    is checked against."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def ug101_stuff(frame: bytes) -> bytes:
    out = bytearray()
    for byte in frame:
        out += bytes((ash.ESCAPE, byte ^ ash.ESCAPE_XOR)) if byte in ash.RESERVED else \
            bytes((byte,))
    return bytes(out)


def ug101_randomize(data: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, ash.PSEUDO_RANDOM, strict=False))


# Reserved bytes are what stuffing is about: draw them often.
WIRE_BYTES = st.lists(st.sampled_from(sorted(ash.RESERVED)) | st.integers(0, 255),
                      max_size=ash.MAX_FRAME_LEN).map(bytes)


@given(WIRE_BYTES, st.integers(0, 0xFFFF))
def test_the_codec_computes_what_ug101_defines(data: bytes, start: int) -> None:
    assert ash.crc_ccitt(data, start) == ug101_crc(data, start)
    assert ash.crc_ccitt(data) == ug101_crc(data)
    assert ash.stuff(data) == ug101_stuff(data)
    payload = data[:ash.MAX_DATA_LEN]
    assert ash.randomize(payload) == ug101_randomize(payload)


def test_a_payload_longer_than_the_sequence_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        ash.randomize(bytes(ash.MAX_DATA_LEN + 1))
    assert ash.randomize(b"") == b""
    assert ash.randomize(bytes(ash.MAX_DATA_LEN)) == ash.PSEUDO_RANDOM


def test_pseudo_random_sequence_starts_as_ug101_says() -> None:
    # UG101 section 4.3: the sequence begins 0x42, 0x21, 0xA8, 0x54, 0x2A
    assert ash.PSEUDO_RANDOM[:5] == bytes((0x42, 0x21, 0xA8, 0x54, 0x2A))
    data = bytes(range(100))
    assert ash.randomize(ash.randomize(data)) == data
    assert ash.randomize(bytes(5)) == ash.PSEUDO_RANDOM[:5]


@pytest.mark.parametrize(("raw", "frame"), [
    (SEND_RST_BYTES, ash.Rst()),
    (RECD_RSTACK_BYTES, ash.RstAck(reset_code=ash.ResetCode.SOFTWARE)),
    (SEND_ACK_FIRST_BYTES, ash.Ack(ack_num=1)),
    (ASH_ACK_FIRST_BYTES, ash.Ack(ack_num=0)),
    (RECD_ERROR_ACK_TIMEOUT_BYTES,
     ash.Error(reset_code=ash.ResetCode.EXCEEDED_MAXIMUM_ACK_TIMEOUT_COUNT)),
    (RCED_ERROR_WATCHDOG_BYTES, ash.Error(reset_code=ash.ResetCode.WATCHDOG)),
    (SEND_DATA_VERSION, ash.Data(frm_num=0, ack_num=0, payload=bytes((0, 0, 0, 13)))),
    (RCED_DATA_VERSION, ash.Data(frm_num=0, ack_num=1,
                                 payload=bytes.fromhex("0080000d021074"))),
    (SEND_UNICAST_REPLY_FN0_ASH_RAW,
     ash.Data(frm_num=0, ack_num=0, payload=SEND_UNICAST_REPLY_FN0_EZSP)),
    (MESSAGE_SENT_HANDLER_FN1_ASH_RAW,
     ash.Data(frm_num=1, ack_num=0, payload=MESSAGE_SENT_HANDLER_FN1_EZSP)),
    (INCOMING_MESSAGE_HANDLER_FN2_ASH_RAW,
     ash.Data(frm_num=2, ack_num=0, payload=INCOMING_MESSAGE_HANDLER_FN2_EZSP)),
    (SET_POLICY_ASH_RAW, ash.Data(frm_num=7, ack_num=0,
                                  payload=bytes.fromhex("4f000155000002"))),
    (SET_POLICY_REPLY_FN1_ASH_RAW,
     ash.Data(frm_num=1, ack_num=0, payload=SET_POLICY_REPLY_FN1_EZSP)),
])
def test_golden_frames_decode_and_encode_byte_for_byte(raw: bytes, frame: ash.Frame) -> None:
    assert decode_all(raw) == [frame]
    # A leading Cancel byte (hosts and NCPs send one before RST/RSTACK) is not encoded.
    assert ash.encode(frame) == raw.removeprefix(bytes((ash.CANCEL,)))


def test_recorded_retransmission_has_the_retx_bit() -> None:
    [frame] = decode_all(RCED_DATA_RETRY)
    assert isinstance(frame, ash.Data)
    assert (frame.frm_num, frame.re_tx, frame.ack_num) == (0, True, 6)
    assert ash.encode(frame) == RCED_DATA_RETRY


def test_recorded_crc_error_is_reported_not_dropped() -> None:
    [bad] = decode_all(RCED_DATA_WITH_CRC_ERROR)
    assert isinstance(bad, ash.BadFrame)
    assert bad.reason == "bad CRC"


def test_every_reserved_byte_is_stuffed() -> None:
    payload = bytes((0x7E, 0x7D, 0x11, 0x13, 0x18, 0x1A, 0x00))
    # Find a frame whose randomized payload contains every reserved byte: randomize
    # the reserved bytes themselves so the wire carries them.
    frame = ash.Data(frm_num=3, ack_num=5, payload=ash.randomize(payload))
    wire = ash.encode(frame)
    body = wire[:-1]
    assert ash.FLAG not in body
    for byte in (0x7E, 0x11, 0x13, 0x18, 0x1A):
        assert bytes((ash.ESCAPE, byte ^ 0x20)) in body
    assert decode_all(wire) == [frame]


def test_cancel_discards_the_frame_in_progress() -> None:
    good = ash.encode(ash.Ack(ack_num=2))
    assert decode_all(b"\x12\x34" + bytes((ash.CANCEL,)) + good) == [ash.Ack(ack_num=2)]


def test_substitute_spoils_the_frame_until_the_flag() -> None:
    data = ash.encode(ash.Data(frm_num=1, ack_num=1, payload=b"\x01\x02\x03"))
    spoiled = data[:2] + bytes((ash.SUBSTITUTE,)) + data[2:]
    [bad] = decode_all(spoiled + ash.encode(ash.Ack(ack_num=0)))[:1]
    assert isinstance(bad, ash.BadFrame) and bad.reason == "substitute byte"
    assert bad.looks_like_data
    assert decode_all(spoiled + ash.encode(ash.Ack(ack_num=0)))[1] == ash.Ack(ack_num=0)


def test_xon_xoff_are_ignored_and_empty_frames_are_nothing() -> None:
    wire = ash.encode(ash.Nak(ack_num=4, not_ready=True))
    noisy = bytes((ash.FLAG, ash.FLAG, ash.XON)) + wire[:1] + bytes((ash.XOFF,)) + wire[1:]
    assert decode_all(noisy) == [ash.Nak(ack_num=4, not_ready=True)]


def test_escape_then_flag_and_short_frames_are_bad() -> None:
    frames = decode_all(bytes((0x80, ash.ESCAPE, ash.FLAG, 0x80, ash.FLAG)))
    assert [f.reason for f in frames if isinstance(f, ash.BadFrame)] == [
        "escape before flag", "too short"]


def test_unknown_control_byte_and_wrong_lengths() -> None:
    def framed(body: bytes) -> bytes:
        return ash.stuff(body + ash.crc_ccitt(body).to_bytes(2, "big")) + b"\x7e"

    reasons = [f.reason for f in decode_all(framed(b"\xc3") + framed(b"\xc1\x02")
                                            + framed(b"\x81\x00"))
               if isinstance(f, ash.BadFrame)]
    assert reasons == ["unknown control byte 0xC3", "RSTACK/ERROR of the wrong length",
                       "ACK/NAK with data"]


@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7), st.booleans(),
                          st.binary(min_size=3, max_size=ash.MAX_DATA_LEN)), max_size=6),
       st.integers(1, 17))
def test_round_trip_through_any_chunking(frames: list[tuple[int, int, bool, bytes]],
                                         chunk: int) -> None:
    sent = [ash.Data(frm_num=f, ack_num=a, re_tx=r, payload=p) for f, a, r, p in frames]
    wire = b"".join(ash.encode(f) for f in sent)
    decoder = ash.Decoder()
    got = [f for i in range(0, len(wire), chunk) for f in decoder.feed(wire[i:i + chunk])]
    assert got == sent


@given(st.binary(min_size=3, max_size=60), st.integers(0, 7 * 8), st.integers(0, 7))
def test_a_flipped_bit_is_never_a_valid_different_frame(payload: bytes, position: int,
                                                        bit: int) -> None:
    frame = ash.Data(frm_num=2, ack_num=3, payload=payload)
    wire = bytearray(ash.encode(frame))
    index = position % (len(wire) - 1)
    wire[index] ^= 1 << bit
    for got in decode_all(bytes(wire) + bytes((ash.FLAG,))):
        assert got == frame or isinstance(got, ash.BadFrame)
