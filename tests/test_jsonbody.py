"""gatewayd.runtime.jsonbody: the one reader that words a bad JSON document, for request
bodies and MQTT payloads (short) and for the files people edit or the hub keeps (located)."""

from __future__ import annotations

import math

import pytest

from gatewayd.runtime.jsonbody import MAX_DEPTH, BadBody, NotJson, loads, parse_json

DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(("raw", "located", "message", "not_json"), [
    ("{", False, "it is not JSON", True),
    ("{", True, "it is not JSON (line 1, column 2)", True),
    ('{\n  "a": 1,\n}', True, "it is not JSON (line 3, column 1)", True),
    (b"\xff{}", False, "it is not JSON", True),
    (b'{"a": "\xff"}', True, "it is not JSON (not UTF-8 text)", True),
    (DEEP, True, f"it nests deeper than {MAX_DEPTH} levels", False),
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), False,
     f"it nests deeper than {MAX_DEPTH} levels", False),
    ('{"n": ' + "1" * 5000 + "}", True, "it holds a number of more than 4300 digits", False),
    ('{"n": NaN}', False, "it holds NaN, which is not a finite number", False),
    ("[-Infinity]", False, "it holds -Infinity, which is not a finite number", False),
    ("[1e400]", True, "it holds 1e400, which is not a finite number", False),
])
def test_a_bad_document_is_refused_in_a_sentence_naming_what(
        raw: str | bytes, located: bool, message: str, not_json: bool) -> None:
    with pytest.raises(BadBody) as refused:
        loads(raw, "it", located=located)
    assert str(refused.value) == message
    assert isinstance(refused.value, NotJson) is not_json  # gatewayctl sends such VALUEs as text
    # after "<file>: ", as sim.json's and state.json's other problems are worded
    assert refused.value.in_file == message.removeprefix("it ").removeprefix("is ")


def test_what_is_json_and_within_bounds_is_read_as_json() -> None:
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads(nested, "it", located=True) is not None
    assert loads('{"n": ' + "1" * 4300 + ', "x": 1.5e300}', "it")["x"] == 1.5e300
    nan, inf = loads("[NaN, 1e400]", "it", finite_only=False)
    assert math.isnan(nan) and inf == math.inf  # a reader that names the key holding one
    assert parse_json(b"  \n") is None
    assert parse_json(b'{"a": [1, "b"]}') == {"a": [1, "b"]}
