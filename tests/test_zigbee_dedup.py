"""The duplicate filter (gatewayd/zigbee/dedup.py) decides as zigpy's own ``Debouncer``.

Both filters get the same packets at the same (made-up) times, with zigpy's 10 s window
and the odd other one; every answer must be the same, through bursts that fill the
filter and quiet spells that empty it, and when the interner is full.
"""

from __future__ import annotations

import random

import pytest
import zigpy.types as t
from zigpy.datastructures import Debouncer

from gatewayd.zigbee import dedup
from gatewayd.zigbee.dedup import CompactDebouncer, Shared


class _Clock:
    """The one thing a Debouncer asks of its event loop: the time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def _packet(src: int, value: int, cluster: int = 0x0B04) -> t.ZigbeePacket:
    return t.ZigbeePacket(
        src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(src)),
        src_ep=t.uint8_t(1),
        dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0)),
        dst_ep=t.uint8_t(1), tsn=None, profile_id=t.uint16_t(0x0104),
        cluster_id=t.uint16_t(cluster),
        data=t.SerializableBytes(b"\x18\x01\x0a\x0b\x05\x29" + value.to_bytes(2, "little")),
        tx_options=t.TransmitOptions.NONE, lqi=None, rssi=None)


def _pair() -> tuple[Debouncer, CompactDebouncer, _Clock]:
    clock = _Clock()
    zigpys, ours = Debouncer(), CompactDebouncer(Shared())
    zigpys._loop = ours._loop = clock  # type: ignore[assignment]
    return zigpys, ours, clock


@pytest.mark.parametrize("interner_full", [False, True])
def test_filters_exactly_what_zigpys_filter_filters(interner_full: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    if interner_full:  # keys then keep the parts themselves: the answers must not change
        monkeypatch.setattr(dedup, "INTERN_MAX", 0)
    zigpys, ours, clock = _pair()
    rng = random.Random(19)
    answers = 0
    for phase in range(12):
        burst = phase % 3 != 2
        for _ in range(rng.randrange(200, 1500) if burst else rng.randrange(1, 20)):
            clock.now += rng.random() * (0.002 if burst else 3.0)
            packet = _packet(rng.choice((0x1234, 0x1235)), rng.randrange(40))
            window = 10.0 if rng.random() < 0.9 else rng.choice((0.5, 4.0, 30.0))
            expected = zigpys.filter(obj=packet.replace(), expire_in=window)
            assert ours.filter(obj=packet.replace(), expire_in=window) == expected, \
                (phase, clock.now)
            answers += expected
        probe = _packet(0x1234, rng.randrange(40))
        assert ours.is_filtered(probe) == zigpys.is_filtered(probe.replace())
        clock.now += rng.choice((0.0, 5.0, 10.0, 10.001, 60.0))  # between bursts
    assert 0 < answers  # some packets were duplicates, and were filtered


def test_a_packet_is_filtered_for_its_window_and_not_after() -> None:
    _, ours, clock = _pair()
    packet = _packet(0x1234, 7)
    assert not ours.filter(obj=packet, expire_in=10.0)
    clock.now += 10.0
    assert ours.filter(obj=packet.replace(), expire_in=10.0)  # the window's last instant
    assert not ours.filter(obj=_packet(0x1234, 8), expire_in=10.0)
    clock.now += 0.001
    assert not ours.filter(obj=packet.replace(), expire_in=10.0)  # expired: passes again


def test_it_keeps_only_what_has_not_expired_after_a_burst() -> None:
    """A burst fills the filter; once its window has passed, the next packet leaves
    only itself behind (the set and lists rebuilt small, not just emptied)."""
    _, ours, clock = _pair()
    for value in range(5000):
        clock.now += 0.0001
        assert not ours.filter(obj=_packet(0x1234, value % 30000, 0x0B04 + value // 60000),
                               expire_in=10.0)
    shared = ours.shared
    assert len(shared) == 5000
    clock.now += 11.0
    assert not ours.filter(obj=_packet(0x1234, 1), expire_in=10.0)
    assert len(shared) == 1 and len(shared._order) == 1 and len(shared._expiry) == 1
    assert ours.filter(obj=_packet(0x1234, 1), expire_in=10.0)


def test_devices_sharing_the_window_do_not_filter_each_others_packets() -> None:
    """One device's packet is no duplicate of another's, even with the same address (a
    device that took over a departed one's NWK within the window)."""
    clock = _Clock()
    shared = Shared()
    first, second = CompactDebouncer(shared), CompactDebouncer(shared)
    first._loop = second._loop = clock  # type: ignore[assignment]
    packet = _packet(0x1234, 7)
    assert not first.filter(obj=packet, expire_in=10.0)
    assert not second.filter(obj=packet.replace(), expire_in=10.0)
    assert first.filter(obj=packet.replace(), expire_in=10.0)
    assert second.filter(obj=packet.replace(), expire_in=10.0)


def test_a_full_window_drops_the_key_that_expires_soonest_and_stays_bounded() -> None:
    """Past ``max_keys`` a faster burst is filtered over a shorter window: the newest keys
    still filter their duplicates, the oldest no longer do, and the window never grows."""
    clock = _Clock()
    ours = CompactDebouncer(Shared(max_keys=100))
    ours._loop = clock  # type: ignore[assignment]
    for value in range(250):
        clock.now += 0.001
        assert not ours.filter(obj=_packet(0x1234, value), expire_in=10.0)
        assert len(ours.shared) <= 100
    assert len(ours.shared) == 100 and ours.shared.evicted == 150
    assert ours.filter(obj=_packet(0x1234, 249), expire_in=10.0)  # newest: a duplicate
    assert ours.filter(obj=_packet(0x1234, 150), expire_in=10.0)  # oldest kept
    assert not ours.filter(obj=_packet(0x1234, 149), expire_in=10.0)  # dropped: passes
    assert ours.shared.evicted == 151  # it took the place of the soonest to expire (150)
    assert not ours.filter(obj=_packet(0x1234, 150), expire_in=10.0)
    clock.now += 11.0  # and the window still empties as it did
    assert not ours.filter(obj=_packet(0x1234, 1), expire_in=10.0)
    assert len(ours.shared) == 1

