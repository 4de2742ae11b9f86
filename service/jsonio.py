"""Fast JSON in and out (orjson), and the nesting-depth limit of request bodies."""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson
from flask import Response


def dumps(value: Any) -> bytes:
    """`value` as JSON; dict keys that are not strings are written as strings.

    Plain orjson first: OPT_NON_STR_KEYS takes a slower path (~3.6 us instead of ~2.1 us for a
    claim-review response) and only matters for keys that are not ``str``, which orjson refuses
    with a TypeError without it. For ``str`` keys both give the same bytes."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


MAX_DEPTH = 64  # arrays and objects nested in a request body (a CDS request with a Bundle: ~20)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes included
_BRACKET = re.compile(rb"[\[\]{}]")
_STEP = np.zeros(256, np.int8)  # byte -> +1 for an opening bracket, -1 for a closing one
_STEP[list(b"{[")], _STEP[list(b"}]")] = 1, -1
_QUOTE = ord('"')


def too_deep(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when the JSON text `data` nests arrays and objects more than `limit` deep.

    Checked on the bytes before parsing, so a deep document costs neither the parser's nor the
    validators' recursion (their limits end in RecursionError, and orjson cannot write more than
    254 levels back). A body with at most `limit` brackets cannot be too deep: that count is the
    fast path. Otherwise brackets inside strings are ignored and the others counted in order:
    vectorised with numpy when the body has no backslash (every quote then opens or closes a
    string; a claim-review Bundle costs ~15 us instead of ~300 us with regular expressions), by
    :func:`_too_deep_escaped` when it has one. Bytes that are not JSON give some answer; the
    parser then refuses them."""
    if data.count(b"{") + data.count(b"[") <= limit:
        return False
    if b"\\" in data:
        return _too_deep_escaped(data, limit)
    raw = np.frombuffer(data, np.uint8)
    steps = _STEP[raw]
    at = np.flatnonzero(steps)  # where the brackets are
    quotes_before = np.searchsorted(np.flatnonzero(raw == _QUOTE), at)
    outside = at[(quotes_before & 1) == 0]  # an even number of quotes before: not in a string
    return int(np.cumsum(steps[outside], dtype=np.int32).max(initial=0)) > limit


def _too_deep_escaped(data: bytes, limit: int) -> bool:
    """:func:`too_deep` for a body with escapes: strings removed by a regular expression, then
    the brackets counted one by one."""
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub(b"", data)):
        if match.group() in (b"{", b"["):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def json_response(value: Any, status: int = 200) -> Response:
    """An application/json answer of `value`."""
    return Response(dumps(value), status=status, mimetype="application/json")
