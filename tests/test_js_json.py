"""engine.js_json writes what Node's ``JSON.stringify(JSON.parse(text))`` writes, byte for byte.

A fixed table (its right-hand side printed by Node 20) runs everywhere; where ``node`` is installed,
hypothesis also checks generated payloads against a live Node process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.js_json import stringify

# (value, what Node printed for JSON.stringify of it)
NODE_SAYS = [
    (5e-05, "0.00005"),
    (0.0002, "0.0002"),
    (1e21, "1e+21"),
    (1e-7, "1e-7"),
    (1.0, "1"),
    (-0.0, "0"),
    (123456789012345680000, "123456789012345680000"),
    (1e20, "100000000000000000000"),
    (0.1 + 0.2, "0.30000000000000004"),
    (1 / 3, "0.3333333333333333"),
    (2.5e-8, "2.5e-8"),
    (-1.5e300, "-1.5e+300"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (100, "100"),
    (0.000001, "0.000001"),
    (0.0000012345, "0.0000012345"),
    (123.456, "123.456"),
    (9007199254740993, "9007199254740992"),  # beyond 2**53: the double JavaScript holds
    (123e-20, "1.23e-18"),
    (4.35, "4.35"),
    (float("nan"), "null"),
    ([float("inf")], "[null]"),
    (True, "true"),
    (None, "null"),
    (
        json.loads('{"b":1,"2":2,"a":[1,null,true],"1":"x","01":0,"4294967295":1,"4294967294":2}'),
        '{"1":"x","2":2,"4294967294":2,"b":1,"a":[1,null,true],"01":0,"4294967295":1}',
    ),
    (
        'é\u2028\u0000\u001f\u007f"\\\b\f\n\r\t😀\ud800',
        '"é\u2028\\u0000\\u001f\u007f\\"\\\\\\b\\f\\n\\r\\t😀\\ud800"',
    ),
    ("\ud83d\ude00", '"😀"'),  # a surrogate pair is one character to JavaScript
]


@pytest.mark.parametrize(("value", "expected"), NODE_SAYS, ids=[str(i) for i in range(len(NODE_SAYS))])
def test_stringify_writes_what_node_writes(value: Any, expected: str) -> None:
    assert stringify(value) == expected


def test_a_webhook_body_is_compact_and_keeps_its_key_order() -> None:
    payload = {"job_id": "j", "status": "training", "metrics": {"learning_rate": 5e-05, "loss": 2.0}, "note": "ünï"}
    text = stringify(payload)
    assert text == '{"job_id":"j","status":"training","metrics":{"learning_rate":0.00005,"loss":2},"note":"ünï"}'
    assert json.loads(text) == payload
    assert "ünï".encode() in text.encode("utf-8")


def test_stringify_refuses_what_is_not_json() -> None:
    with pytest.raises(TypeError, match="set is not JSON"):
        stringify({1, 2})


# --- against a live Node ------------------------------------------------------------------------------

NODE_ECHO = """
const rl = require('readline').createInterface({input: process.stdin});
rl.on('line', (line) => process.stdout.write(JSON.stringify(JSON.parse(line)) + '\\n'));
"""


@pytest.fixture(scope="module")
def node() -> Iterator[subprocess.Popen[str]]:
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("node is not installed here (apt-get install nodejs): the fixed table above still runs")
    process = subprocess.Popen(
        [binary, "-e", NODE_ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8"
    )
    yield process
    process.terminate()
    process.wait(timeout=10)


def _through_node(node: subprocess.Popen[str], value: Any) -> str:
    assert node.stdin is not None and node.stdout is not None
    node.stdin.write(json.dumps(value) + "\n")  # ASCII-escaped: one line whatever the text holds
    node.stdin.flush()
    return node.stdout.readline().rstrip("\n")


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-1e-3, max_value=1e-3)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES)
def test_stringify_agrees_with_node(node: subprocess.Popen[str], value: Any) -> None:
    assert stringify(json.loads(json.dumps(value))) == _through_node(node, value)
