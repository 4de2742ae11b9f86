"""Typed, validating accessors over FHIR R4 JSON: every read checks the element it reads.

The rules read a few dozen elements of a Claim and its companions. Validating a whole Claim with
``fhir.resources.R4B`` costs ~0.5 ms (1.7 ms for a 10-line Claim, 2 ms for a Bundle), so on the
hot path extraction validates *exactly the elements it reads*, with the FHIR R4 rules of their
datatypes (date / dateTime regular expressions of the R4 spec plus a calendar check, positiveInt,
decimal, string, CodeableConcept / Coding / Reference / Quantity / Period shapes). A violation
raises :class:`hooks.context.InvalidResource` with the FHIR path of the element, e.g.
``Claim.item[1].servicedDate``. Elements the rules do not read are not checked on this path;
:func:`validate_full` runs the complete R4B model validation for callers that want it (and maps
pydantic's error location to the same FHIR path form).
"""
from __future__ import annotations

import re
from datetime import date
from functools import lru_cache
from typing import Any, Iterator, Sequence

from .context import InvalidResource

# FHIR R4 primitive regular expressions (http://hl7.org/fhir/R4/datatypes.html).
_DATE_RE = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?")
_DATETIME_RE = re.compile(
    r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?")


# The memo of the date parsers keeps valid texts only: these lengths bound what it holds (a
# dateTime's fraction of a second has no length limit in the R4 pattern; nanoseconds suffice).
MAX_DATETIME_CHARS = 35


def invalid(path: str, message: str) -> InvalidResource:
    return InvalidResource(f"{path}: {message}", path)


def _join(path: str, key: str | None, index: int | None = None) -> str:
    """The FHIR path ``path.key[index]``: element `key` of the element at `path` (`path` itself when
    key is None), item `index` of it when given (an item of a repeating element)."""
    if key is not None:
        path = f"{path}.{key}"
    return path if index is None else f"{path}[{index}]"


# Every accessor takes the element, the FHIR path of the element (or of its parent), an optional
# `key`: the element's name in its parent (or its path relative to `path`, e.g.
# "valueQuantity.value"), and an optional `index`: its position in a repeating element. The
# element's path, ``path.key[index]``, is only formatted when the element is invalid (hot path: a
# valid element costs no string building).

def obj(node: Any, path: str, key: str | None = None, index: int | None = None, *,
        required: bool = False) -> dict | None:
    """A JSON object (FHIR complex element) or None when absent."""
    if type(node) is dict:
        return node
    if node is None:
        if required:
            raise invalid(_join(path, key, index), "is required")
        return None
    if not isinstance(node, dict):
        raise invalid(_join(path, key, index), f"must be a JSON object, got {type(node).__name__}")
    return node


def elements(node: Any, path: str, key: str | None = None) -> Sequence[Any]:
    """The items of a FHIR repeating element (absent = empty); only the JSON array is checked.

    Item ``i`` is at ``path.key[i]``: callers hand (path, key, i) on to the accessors, which
    format that path only for an invalid item.
    """
    if type(node) is list:
        return node
    if node is None:
        return ()
    if not isinstance(node, list):
        raise invalid(_join(path, key), f"must be a JSON array, got {type(node).__name__}")
    return node


def items(node: Any, path: str, key: str | None = None) -> Sequence[tuple[str, Any]]:
    """(path[i], element) of a FHIR repeating element (absent = empty)."""
    if node is None:
        return ()
    base = _join(path, key)
    return [(f"{base}[{i}]", element) for i, element in enumerate(elements(node, path, key))]


def objects(node: Any, path: str, key: str | None = None) -> Iterator[tuple[str, dict]]:
    """(path[i], object) of a repeating complex element; each is checked as it is reached."""
    array = elements(node, path, key)
    if not array:
        return
    base = _join(path, key)
    for i, element in enumerate(array):
        if type(element) is not dict:
            obj(element, base, None, i, required=True)
        yield f"{base}[{i}]", element


def string(node: Any, path: str, key: str | None = None, index: int | None = None, *,
           required: bool = False) -> str | None:
    """A FHIR string: a JSON string, empty or not blank."""
    if type(node) is str:
        if node and not node.strip():
            raise invalid(_join(path, key, index), "must not be blank")
        return node
    if node is None:
        if required:
            raise invalid(_join(path, key, index), "is required")
        return None
    if not isinstance(node, str):
        raise invalid(_join(path, key, index), f"must be a string, got {type(node).__name__}")
    if node.strip() == "" and node != "":
        raise invalid(_join(path, key, index), "must not be blank")
    return node


def positive_int(node: Any, path: str, key: str | None = None, index: int | None = None, *,
                 required: bool = False) -> int | None:
    """A FHIR positiveInt: a JSON integer >= 1 (not a boolean)."""
    if type(node) is int and node >= 1:
        return node
    if node is None:
        if required:
            raise invalid(_join(path, key, index), "is required")
        return None
    if isinstance(node, bool) or not isinstance(node, int) or node < 1:
        raise invalid(_join(path, key, index), "must be a positiveInt (a JSON integer >= 1)")
    return node


def decimal(node: Any, path: str, key: str | None = None) -> float | None:
    """A FHIR decimal: a JSON number (not a boolean, not NaN), as a float."""
    if node is None:
        return None
    if isinstance(node, bool) or not isinstance(node, (int, float)) or node != node:
        raise invalid(_join(path, key), "must be a decimal number (a JSON number)")
    return float(node)


def fhir_date(node: Any, path: str, key: str | None = None) -> date | None:
    """A FHIR ``date``; partial dates (YYYY, YYYY-MM) give None (not a day of service)."""
    text = string(node, path, key)
    if text is None:
        return None
    try:
        return _date_day(text)
    except ValueError as err:
        raise invalid(_join(path, key), str(err)) from None


def fhir_datetime_date(node: Any, path: str, key: str | None = None) -> date | None:
    """The calendar date of a FHIR ``dateTime`` (None for partial dates)."""
    text = string(node, path, key)
    if text is None:
        return None
    try:
        return _datetime_day(text)
    except ValueError as err:
        raise invalid(_join(path, key), str(err)) from None


# The two parsers below are pure functions of the text: the days of the last texts read are kept
# (dates repeat within a request and across requests); an invalid text raises every time.
@lru_cache(maxsize=1024)
def _date_day(text: str) -> date | None:
    """The day of a FHIR ``date`` text (None when partial); ValueError(message) when invalid."""
    if len(text) > 10 or not _DATE_RE.fullmatch(text):
        raise ValueError("is not a valid FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)")
    return _calendar(text)


@lru_cache(maxsize=1024)
def _datetime_day(text: str) -> date | None:
    """The day of a FHIR ``dateTime`` text (None when partial); ValueError(message) when invalid."""
    if len(text) > MAX_DATETIME_CHARS or not _DATETIME_RE.fullmatch(text):
        raise ValueError("is not a valid FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD or "
                         "YYYY-MM-DDThh:mm:ss[.fff]+zz:zz)")
    return _calendar(text[:10])


def _calendar(text: str) -> date | None:
    """The day of a "YYYY-MM-DD..." text that matched a date pattern (None when shorter)."""
    if len(text) < 10:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise ValueError("is not a calendar date (the day does not exist in that month)") from None


def period_start(node: Any, path: str, key: str | None = None) -> date | None:
    """The day of a Period's start, else of its end (both are validated as dateTime)."""
    period = obj(node, path, key)
    if period is None:
        return None
    path = _join(path, key)
    start = fhir_datetime_date(period.get("start"), path, "start")
    end = fhir_datetime_date(period.get("end"), path, "end")
    return start or end


def codings(node: Any, path: str, key: str | None = None, index: int | None = None) -> list[tuple[str | None, str]]:
    """(system, code) of each Coding of a CodeableConcept (codings without code are skipped).

    Validated: the concept is an object, its text a string, its coding an array of objects whose
    system and code are strings, each code not blank (returned stripped).
    """
    if type(node) is dict:
        # Hot path: a well-formed concept. Anything else (an invalid element, or shapes this loop
        # does not take, e.g. no coding array) goes to _checked_codings, which decides. Of the
        # JSON types only an object has .get and only a string .strip: a coding that is not an
        # object, or a code that is not a string, ends the loop with AttributeError.
        cs = node.get("coding")
        text = node.get("text")
        if type(cs) is list and (text is None or type(text) is str):
            out = []
            try:
                for c in cs:
                    system = c.get("system")
                    code = c.get("code")
                    if system is not None and type(system) is not str:
                        break
                    if code is None:
                        continue
                    stripped = code.strip()
                    if stripped:
                        out.append((system, stripped))
                    elif code:  # blank
                        break
                else:
                    return out
            except AttributeError:
                pass
    return _checked_codings(node, path, key, index)


def _checked_codings(node: Any, path: str, key: str | None = None,
                     index: int | None = None) -> list[tuple[str | None, str]]:
    """codings(), element by element: the first invalid element raises (paths formatted here)."""
    if node is None:
        return []
    if type(node) is not dict:
        obj(node, path, key, index)
    text = node.get("text")
    if text is not None and type(text) is not str:
        string(text, _join(path, key, index), "text")
    cs = node.get("coding")
    if cs is None:
        return []
    if type(cs) is not list:
        raise invalid(f"{_join(path, key, index)}.coding", f"must be a JSON array, got {type(cs).__name__}")
    out = []
    for i, c in enumerate(cs):
        if type(c) is not dict:
            obj(c, f"{_join(path, key, index)}.coding[{i}]", required=True)
        system = c.get("system")
        code = c.get("code")
        if (system is not None and type(system) is not str) or (code is not None and type(code) is not str):
            string(system, f"{_join(path, key, index)}.coding[{i}].system")
            string(code, f"{_join(path, key, index)}.coding[{i}].code")
        if code:
            code = code.strip()
            if not code:
                raise invalid(f"{_join(path, key, index)}.coding[{i}].code", "must not be blank")
            out.append((system, code))
    return out


def concept_text(node: Any, path: str, key: str | None = None, index: int | None = None) -> str | None:
    """The text of a CodeableConcept (an object; text a string)."""
    if type(node) is dict:  # hot path: no text, or a non-blank one (no path formatted)
        text = node.get("text")
        if text is None or (type(text) is str and text.strip()):
            return text
    cc = obj(node, path, key, index)
    return string(cc.get("text"), _join(path, key, index), "text") if cc else None


def reference(node: Any, path: str, key: str | None = None, index: int | None = None) -> str | None:
    """The literal reference of a Reference, normalized to "Type/id" where possible."""
    if type(node) is dict:
        value = node.get("reference")
        if type(value) is str and value.strip():  # hot path: a valid, non-blank reference
            # "Type/id" as it is (normalize_reference's own first test, without the call)
            return value if value.count("/") == 1 and value[-1:] != "\n" else normalize_reference(value)
    r = obj(node, path, key, index)
    if r is None:
        return None
    value = string(r.get("reference"), _join(path, key, index), "reference")
    return normalize_reference(value) if value else None


def references(node: Any, path: str, key: str | None = None) -> list[str]:
    """The literal references (normalized, empty ones left out) of a repeating Reference element."""
    out: list[str] = []
    if node is None:
        return out
    for i, r in enumerate(elements(node, path, key)):
        value = r.get("reference") if type(r) is dict else None
        if type(value) is str and value.strip():  # hot path, as in reference()
            out.append(value if value.count("/") == 1 and value[-1:] != "\n" else normalize_reference(value))
        else:
            value = reference(r, path, key, i)
            if value:
                out.append(value)
    return out


_REF_RE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def normalize_reference(value: str) -> str:
    """"Encounter/1", "https://x/fhir/Encounter/1/_history/2" -> "Encounter/1"; others unchanged."""
    if value.count("/") == 1 and value[-1:] != "\n":
        # Hot path, "Type/id": with one slash a match can only be the whole value (its "$" is the
        # end: no trailing newline), and no match leaves the value unchanged too.
        return value
    m = _REF_RE.search(value)
    return f"{m.group(1)}/{m.group(2)}" if m else value


def resource_type(resource: Any, path: str, expected: str | tuple[str, ...] | None = None, *,
                  index: int | None = None) -> str:
    """The resourceType of a resource (an object with a non-blank resourceType, one of `expected`
    when given); the resource is at `path`, or at ``path[index]`` when index is given."""
    if type(resource) is dict:  # hot path: a valid resourceType
        rtype = resource.get("resourceType")
        if type(rtype) is str and rtype.strip() and (
                expected is None or rtype == expected or (type(expected) is tuple and rtype in expected)):
            return rtype
    path = _join(path, None, index)
    res = obj(resource, path, required=True)
    rtype = string(res.get("resourceType"), f"{path}.resourceType", required=True)
    if expected is not None:
        allowed = (expected,) if isinstance(expected, str) else expected
        if rtype not in allowed:
            raise invalid(f"{path}.resourceType", f"must be {' or '.join(allowed)}")
    return rtype


def key_of(resource: dict) -> str | None:
    rid = resource.get("id")
    rtype = resource.get("resourceType")
    if isinstance(rid, str) and isinstance(rtype, str):
        return f"{rtype}/{rid}"
    return None


def validate_full(resource: dict) -> None:
    """Full ``fhir.resources.R4B`` validation; the first error becomes an InvalidResource with a FHIR path."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(rtype, str):
        raise invalid("resourceType", "is required")
    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError, AttributeError):
        raise invalid("resourceType", "is not a FHIR R4 resource type") from None
    try:
        model.model_validate(resource)
    except ValidationError as err:
        first = err.errors()[0]
        path = rtype + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]
                               if not str(p).startswith("function-"))
        raise InvalidResource(f"{path}: {first['msg']}", path) from None
