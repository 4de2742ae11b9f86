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
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # int8: opening +1, closing -1
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_OPEN = b"\x01"
_STRING = re.compile(rb'"[^"]*"')  # a string once escapes are gone: its brackets go with it


def too_deep(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when the JSON text `data` nests arrays and objects more than `limit` deep.

    Checked on the bytes before parsing, so a deep document costs neither the parser's nor the
    validators' recursion (their limits end in RecursionError, and orjson cannot write more than
    254 levels back). C-level bytes operations and one numpy running sum, no Python loop over
    the body (bench_load's claim-review Bundle: ~183 k instructions, ~14 us; the body scanned
    by numpy took ~56 us, regular expressions ~300 us; a 16 MB body at most ~0.1 s):

    1. escaped backslashes, then escaped quotes, are dropped (a run of backslashes escapes in
       pairs from its start), so that every remaining quote opens or closes a string;
    2. everything but quotes and brackets is dropped and each bracket becomes its step, an
       opening one the byte +1 and a closing one -1 as int8 (one pass over the body); at most
       `limit` opening brackets left: cannot be too deep (counted on what is left, a fraction
       of the body);
    3. adjacent quote pairs go (that keeps the quote parity before every bracket); strings
       that still hold a bracket are dropped with a regular expression over what is left
       (rarely needed), and a quote left unpaired (not JSON) with them;
    4. the depth is the running sum's maximum (numpy ``cumsum``, on a few hundred bytes for a
       CDS request: fewer instructions than the ``replace(b"[]", b"")`` passes, one a level,
       that were here before).

    Bytes that are not JSON give some answer; the parser then refuses them."""
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    rest = data.translate(_STEPS, _NOT_STRUCTURE)
    if rest.count(_OPEN) <= limit:
        return False
    rest = rest.replace(b'""', b"")
    if b'"' in rest:
        rest = _STRING.sub(b"", rest).replace(b'"', b"")
    return int(np.frombuffer(rest, np.int8).cumsum(dtype=np.int32).max(initial=0)) > limit


def json_response(value: Any, status: int = 200) -> Response:
    """An application/json answer of `value`."""
    return Response(dumps(value), status=status, mimetype="application/json")
