"""JSON text exactly as JavaScript's ``JSON.stringify`` writes it, for bodies that Node receivers re-serialise.

    stringify({"learning_rate": 5e-05, "loss": 1.0})  →  '{"learning_rate":0.00005,"loss":1}'

A receiver written to the seed's webhook spec signs ``JSON.stringify(JSON.parse(body))``, so the bytes sent
must already be what that gives back: no spaces, non-ASCII as itself (UTF-8 once encoded), the keys in the
order JavaScript keeps them (array-index keys such as "2" first, ascending, then the others as inserted),
and numbers as ``Number.prototype.toString`` writes them: 5e-05 → 0.00005, 1e21 → 1e+21, 1.0 → 1, -0 → 0,
NaN and the infinities → null, integers beyond 2**53 rounded to the double JavaScript holds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

_MAX_INDEX = 2**32 - 2  # the largest array index: such keys come first in a JavaScript object
_SAFE_INTEGER = 2**53
_LITERALS = {None: "null", True: "true", False: "false"}
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def stringify(value: Any) -> str:
    """``JSON.stringify(value)`` for JSON-shaped Python values (dict, list, tuple, str, int, float, bool, None)."""
    if value is None or isinstance(value, bool):
        return _LITERALS[value]
    if isinstance(value, int):
        return str(value) if abs(value) < _SAFE_INTEGER else number(float(value))
    if isinstance(value, float):
        return number(value)
    if isinstance(value, str):
        return string(value)
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=_js_key_order)
        return "{" + ",".join(f"{string(str(key))}:{stringify(item)}" for key, item in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(stringify(item) for item in value) + "]"
    raise TypeError(f"{type(value).__name__} is not JSON (stringify takes dicts, lists, strings, numbers, None)")


def number(value: float) -> str:
    """``Number.prototype.toString()`` of a double, as JSON.stringify writes it (null for NaN and infinities)."""
    if not math.isfinite(value):
        return "null"
    if value == 0:
        return "0"  # -0 too
    sign = "-" if value < 0 else ""
    # repr is the shortest decimal that reads back as the same double, as ECMAScript's algorithm asks.
    exact = Decimal(repr(abs(value))).normalize()
    _, digit_tuple, exponent = exact.as_tuple()
    digits = "".join(map(str, digit_tuple))
    k = len(digits)
    n = k + int(exponent)  # the value is 0.<digits> × 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = f"{digits[:n]}.{digits[n:]}"
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
        text = f"{mantissa}e{'+' if n - 1 >= 0 else '-'}{abs(n - 1)}"
    return sign + text


def string(text: str) -> str:
    """A JSON string literal as JSON.stringify quotes it: control characters and lone surrogates escaped."""
    out = ['"']
    index = 0
    while index < len(text):
        char = text[index]
        code = ord(char)
        index += 1
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif 0xD800 <= code <= 0xDBFF and index < len(text) and 0xDC00 <= ord(text[index]) <= 0xDFFF:
            # A pair JavaScript reads as one character: written as that character.
            out.append(chr(0x10000 + ((code - 0xD800) << 10) + (ord(text[index]) - 0xDC00)))
            index += 1
        elif code < 0x20 or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _js_key_order(item: tuple[Any, Any]) -> tuple[int, int]:
    key = str(item[0])
    if key.isascii() and key.isdigit() and (key == "0" or not key.startswith("0")) and int(key) <= _MAX_INDEX:
        return (0, int(key))
    return (1, 0)  # sorted() is stable: the other keys keep their insertion order
