"""zigpy's EUI64 hashed from its bytes (gatewayd/zigbee/eui64.py): the same equality,
no text formatted, installed before the radio library is imported, off on another zigpy."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import zigpy.types as t

from gatewayd.zigbee import eui64

IEEE = "00:12:4b:00:01:02:03:04"


def test_hashing_an_address_formats_no_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """zigpy's own hash is ``hash(repr(self))``: with repr refusing, it would raise."""
    address = t.EUI64.convert(IEEE)
    devices = {address: "plug"}

    def no_text(self: t.EUI64) -> str:
        raise AssertionError("an EUI64 was formatted as text")

    monkeypatch.setattr(t.EUI64, "__repr__", no_text)
    assert devices[t.EUI64.convert(IEEE)] == "plug"


def test_equal_addresses_hash_equal_however_they_were_made() -> None:
    from_text = t.EUI64.convert(IEEE)
    from_wire, rest = t.EUI64.deserialize(from_text.serialize() + b"\x99")
    assert rest == b"\x99"
    from_ints = t.EUI64([t.uint8_t(b) for b in bytes(from_text)])
    assert from_text == from_wire == from_ints
    assert hash(from_text) == hash(from_wire) == hash(from_ints)
    devices = {from_text: 1, t.EUI64.convert("00:12:4b:00:01:02:03:05"): 2}
    assert (devices[from_wire], devices[from_ints]) == (1, 1)
    assert len({from_text, from_wire, from_ints, t.EUI64.UNKNOWN}) == 2
    # The subclass for extended PAN ids inherits it.
    assert hash(t.ExtendedPanId.convert(IEEE)) == hash(from_text)


def run_fresh(script: str) -> str:
    """``script`` in a new interpreter, where nothing has hashed an EUI64 yet."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip()


def test_the_radio_library_is_imported_with_the_byte_hash_in_place() -> None:
    out = run_fresh("""
        import sys
        from gatewayd.zigbee import eui64, radio
        assert "zigpy" not in sys.modules
        radio.controller_class("virtual")
        import zigpy.types as t
        print(t.EUI64.__hash__ is eui64._hash)
    """)
    assert out == "True"


def test_zigpys_own_hash_on_a_zigpy_it_was_not_written_for() -> None:
    out = run_fresh("""
        import logging, sys
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
        from gatewayd.zigbee import eui64, pinned, radio
        pinned.ZIGPY_VERSION = "0.0.0"
        radio.controller_class("virtual")
        import zigpy.types as t
        print(t.EUI64.__hash__ is eui64._hash)
        print(hash(t.EUI64.convert("00:12:4b:00:01:02:03:04")) == hash("00:12:4b:00:01:02:03:04"))
    """)
    assert out.splitlines()[-2:] == ["False", "True"]
    assert "the EUI64 hash off: written for zigpy 0.0.0" in out


def test_install_twice_is_harmless() -> None:
    assert eui64.install() and eui64.install()
    assert t.EUI64.__hash__ is eui64._hash
