"""The documentation form's fields: what each one accepts, checked on the server (pure functions).

The page (static/app.js) checks the same ranges before it sends; this module is the one that
decides. A field is only read when its documentation element is missing (the form asks for
nothing else). Each problem names the field's JSON path and the expected form, never the value
sent (docs/smart-app.md#the-form).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from hooks.extract.evidence import MAX_PLAUSIBLE_MINUTES

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
_ICD10CM_CODE = re.compile(r"[A-TV-Z][0-9][0-9AB](?:\.[0-9A-TV-Z]{1,4})?")
MAX_TEXT = 200
MAX_FINDINGS = 4000
MAX_IMAGES = 100_000

# Dose: what the form offers (quantity -> unit -> (DICOM DCM code, display, highest value)).
# DCM 113722 "Dose Area Product Total" (CID 10050), in Gy.cm2 or mGy.cm2 (UCUM); DCM 113725
# "Dose (RP) Total", the air kerma at the reference point, in mGy. Highest values: far above any
# fluoroscopy (a DAP of 10,000 Gy.cm2, an air kerma of 100 Gy): a data-entry error, not a dose.
DOSE_UNITS: dict[str, dict[str, tuple[str, str, float]]] = {
    "dap": {"Gy.cm2": ("113722", "Dose Area Product Total", 10_000.0),
            "mGy.cm2": ("113722", "Dose Area Product Total", 10_000_000.0)},
    "air-kerma": {"mGy": ("113725", "Dose (RP) Total", 100_000.0)},
}
DOSE_EXPECTED = "one of Gy.cm2 or mGy.cm2 (dose-area product) or mGy (air kerma)"

# Body sites offered (SNOMED CT body structures), or a description in words.
BODY_SITES: dict[str, str] = {
    "122496007": "Lumbar spine structure",
    "122494005": "Cervical spine structure",
    "122495006": "Thoracic spine structure",
    "72696002": "Knee region structure",
    "24136001": "Hip joint structure",
    "16982005": "Shoulder region structure",
    "51185008": "Thoracic structure (chest)",
    "818983003": "Abdomen",
    "12921003": "Pelvis structure",
}


@dataclass(frozen=True)
class Problem:
    """One field refused: its JSON path and the form it must have."""

    path: str
    expected: str

    def as_json(self) -> dict:
        return {"field": self.path[2:], "path": self.path, "expected": self.expected}


@dataclass(frozen=True)
class Entry:
    """The valid documentation one save writes (only the missing elements are set)."""

    condition: str | None = None  # indication: "Condition/<id>", one of the encounter's diagnoses
    reason: tuple[str, str] | None = None  # indication: (ICD-10-CM code, description)
    minutes: float | None = None
    dose: tuple[str, float, str] | None = None  # (quantity, value, UCUM unit)
    site: tuple[str | None, str] | None = None  # (SNOMED CT code or None, text)
    findings: str | None = None
    images: int | None = None  # images retained: their number (0: not given)
    interpreter: str | None = None  # the signed interpretation's resultsInterpreter


@dataclass
class _Reader:
    body: dict
    problems: list[Problem] = field(default_factory=list)

    def fail(self, path: str, expected: str) -> None:
        self.problems.append(Problem(path, expected))

    def obj(self, key: str) -> dict | None:
        value = self.body.get(key)
        if not isinstance(value, dict):
            self.fail(f"$.{key}", "an object")
            return None
        return value

    def number(self, value, path: str, low_excl: float, high: float, what: str) -> float | None:
        expected = f"{what}: a number greater than {low_excl:g} and at most {high:g}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low_excl < value <= high:
            self.fail(path, expected)
            return None
        return float(value)

    def text(self, value, path: str, high: int, what: str, low: int = 1) -> str | None:
        if not isinstance(value, str) or not low <= len(value.strip()) <= high:
            self.fail(path, f"{what}: text of {low} to {high} characters")
            return None
        return value.strip()


def read_entry(body: object, missing: tuple[str, ...], *, conditions: tuple[str, ...],
               performers: tuple[str, ...]) -> tuple[Entry | None, list[Problem]]:
    """The form's JSON `body` as an Entry for the `missing` elements, or the problems found.

    `conditions`: the encounter's diagnoses the form offered for the indication; `performers`:
    the Procedure's performers the form offered as the interpreter who signs."""
    if not isinstance(body, dict):
        return None, [Problem("$", "a JSON object with the form's fields")]
    r = _Reader(body)
    out: dict = {}
    if "indication" in missing and (ind := r.obj("indication")) is not None:
        if "condition" in ind:
            if ind.get("condition") in conditions:
                out["condition"] = ind["condition"]
            else:
                r.fail("$.indication.condition", "one of the encounter's diagnoses the form offers")
        else:
            code = ind.get("code")
            if not isinstance(code, str) or not _ICD10CM_CODE.fullmatch(code.strip().upper()):
                r.fail("$.indication.code", "an ICD-10-CM code such as M54.17")
            text = r.text(ind.get("text"), "$.indication.text", MAX_TEXT, "the indication")
            if isinstance(code, str) and _ICD10CM_CODE.fullmatch(code.strip().upper()) and text:
                out["reason"] = (code.strip().upper(), text)
    if "fluoroscopy-time" in missing:
        minutes = r.number(body.get("fluoroscopyMinutes"), "$.fluoroscopyMinutes", 0,
                           MAX_PLAUSIBLE_MINUTES, "total fluoroscopy time in minutes")
        if minutes is not None:
            out["minutes"] = minutes
    if "radiation-dose" in missing and (dose := r.obj("dose")) is not None:
        units = DOSE_UNITS.get(dose.get("quantity"))  # type: ignore[arg-type]
        if units is None:
            r.fail("$.dose.quantity", "dap (dose-area product) or air-kerma")
        else:
            unit = dose.get("unit")
            if unit not in units:
                r.fail("$.dose.unit", DOSE_EXPECTED + " matching the quantity")
            else:
                value = r.number(dose.get("value"), "$.dose.value", 0, units[unit][2], f"the dose in {unit}")
                if value is not None:
                    out["dose"] = (dose["quantity"], value, unit)
    if "body-site" in missing and (site := r.obj("bodySite")) is not None:
        code = site.get("code")
        if code is not None:
            if code in BODY_SITES:
                out["site"] = (code, BODY_SITES[code])
            else:
                r.fail("$.bodySite.code", "one of the SNOMED CT body sites the form offers")
        else:
            text = r.text(site.get("text"), "$.bodySite.text", MAX_TEXT, "the body site", low=2)
            if text:
                out["site"] = (None, text)
    report_needed = "findings" in missing or "signed-interpretation" in missing
    if report_needed:
        text = r.text(body.get("findings"), "$.findings", MAX_FINDINGS, "the findings")
        if text:
            out["findings"] = text
    if "images-retained" in missing and (images := r.obj("imagesRetained")) is not None:
        if images.get("retained") is not True:
            r.fail("$.imagesRetained.retained", "true (the box ticked): the images of the fluoroscopy are retained")
        count = images.get("count")
        if count is not None and (type(count) is not int or not 1 <= count <= MAX_IMAGES):
            r.fail("$.imagesRetained.count", f"a whole number of images from 1 to {MAX_IMAGES}, or absent")
        elif images.get("retained") is True:
            out["images"] = count or 0
    if "signed-interpretation" in missing:
        if body.get("sign") is not True:
            r.fail("$.sign", "true (the box ticked): the interpreting physician signs the interpretation")
        if body.get("interpreter") not in performers:
            r.fail("$.interpreter", "one of the Procedure's performers the form offers")
        elif body.get("sign") is True:
            out["interpreter"] = body["interpreter"]
    if r.problems:
        return None, r.problems
    return Entry(**out), []
