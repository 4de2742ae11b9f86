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
_SQUARE = bytes.maketrans(b"{}", b"[]")  # only the depth matters, not the bracket's kind
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_STRING = re.compile(rb'"[^"]*"')  # a string once escapes are gone: its brackets go with it
_STEP = np.zeros(256, np.int8)  # "[" -> +1, "]" -> -1
_STEP[ord("[")], _STEP[ord("]")] = 1, -1
PASSES_UP_TO = 4096  # brackets left in step 4: above this, one vectorised running sum instead


def too_deep(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when the JSON text `data` nests arrays and objects more than `limit` deep.

    Checked on the bytes before parsing, so a deep document costs neither the parser's nor the
    validators' recursion (their limits end in RecursionError, and orjson cannot write more than
    254 levels back). C-level bytes operations, no Python loop over the body (bench_load's
    claim-review Bundle: ~19 us, where a numpy scan of the whole body took ~56 us and regular
    expressions ~300 us; a 16 MB body at most ~0.1 s):

    1. escaped backslashes, then escaped quotes, are dropped (a run of backslashes escapes in
       pairs from its start), so that every remaining quote opens or closes a string;
    2. everything but quotes and brackets is dropped and ``{}`` becomes ``[]`` (one pass over
       the body); at most `limit` opening brackets left: cannot be too deep (counted on what is
       left, a fraction of the body, rather than on the body twice: ~a third of the cost);
    3. adjacent quote pairs go (that keeps the quote parity before every bracket); strings
       that still hold a bracket are dropped with a regular expression over what is left
       (rarely needed);
    4. each ``replace(b"[]", b"")`` removes exactly the innermost level (the leaves: replace does
       not rescan what it joined), so brackets left after `limit` passes mean more than `limit`
       levels; a run of `limit` + 1 opening brackets answers at once. Past `PASSES_UP_TO`
       brackets, a running sum with numpy instead (passes could scan megabytes `limit` times).

    Bytes that are not JSON give some answer; the parser then refuses them."""
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    rest = data.translate(_SQUARE, _NOT_STRUCTURE)
    if rest.count(b"[") <= limit:
        return False
    rest = rest.replace(b'""', b"")
    if b'"' in rest:
        rest = _STRING.sub(b"", rest)
    run = b"[" * (limit + 1)
    if len(rest) > PASSES_UP_TO:
        return run in rest or int(np.cumsum(_STEP[np.frombuffer(rest, np.uint8)],
                                            dtype=np.int32).max(initial=0)) > limit
    for _ in range(limit):
        if run in rest:
            return True
        inner = rest.replace(b"[]", b"")
        if len(inner) == len(rest):  # empty, or not balanced (not JSON)
            return False
        rest = inner
    return b"[" in rest


def json_response(value: Any, status: int = 200) -> Response:
    """An application/json answer of `value`."""
    return Response(dumps(value), status=status, mimetype="application/json")
