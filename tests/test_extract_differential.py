"""Opt-in differential test: extraction against another revision of the hooks package.

    EXTRACT_BASELINE=<git revision> PYTHONPATH=. python -m pytest -q tests/test_extract_differential.py

runs case_from_claim / case_from_orders / case_from_encounter (and the claim-review service's
split_claim_bundle, claim_references and follow_references) of this checkout and of the
baseline revision on randomly mutated scenario requests (seeded; EXTRACT_DIFF_CASES, default
5000) and requires the same Case (repr) or the same InvalidResource path and message. Use it when
changing extraction for speed (e.g. baseline = the commit before the change); it is skipped
without EXTRACT_BASELINE, since intended behaviour changes make revisions differ.
"""
from __future__ import annotations

import copy
import importlib
import io
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from nccidata.starter import starter
from tests.scenario_fixtures import NUMBERS, scenario

BASELINE = os.environ.get("EXTRACT_BASELINE")
pytestmark = pytest.mark.skipif(not BASELINE, reason="set EXTRACT_BASELINE=<git revision> to run")
REF = starter()
ROOT = Path(__file__).resolve().parent.parent


def _baseline_extract(tmp: Path):
    """hooks/ of the BASELINE revision, imported as the package ``hooks_baseline``."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE, "hooks"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp)
    (tmp / "hooks").rename(tmp / "hooks_baseline")
    sys.path.insert(0, str(tmp))
    try:
        return _api("hooks_baseline")
    finally:
        sys.path.remove(str(tmp))


# The modules that have held the extraction API over time (hooks/extract.py was split by job).
API_MODULES = ("extract", "extract.cases", "extract.bundle", "services.gather")
API_NAMES = ("case_from_claim", "case_from_orders", "case_from_encounter", "split_claim_bundle",
             "claim_references", "follow_references")


def _api(package: str) -> SimpleNamespace:
    """The API_NAMES of `package` (hooks or a baseline copy), each from the first module holding it."""
    found: dict[str, object] = {}
    for name in API_MODULES:
        try:
            module = importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{package}.{name}":
                raise
            continue
        for fn in API_NAMES:
            if fn not in found and hasattr(module, fn):
                found[fn] = getattr(module, fn)
    missing = set(API_NAMES) - set(found)
    assert not missing, f"{package} lacks {sorted(missing)}"
    return SimpleNamespace(**found)


# --- random mutations of scenario resources: the elements extraction reads, valid or not ----------
KEYS = ["status", "code", "coding", "system", "text", "reference", "id", "resourceType", "value", "unit",
        "component", "valueQuantity", "modifier", "quantity", "servicedDate", "servicedPeriod", "start", "end",
        "sequence", "diagnosisSequence", "bodySite", "subSite", "encounter", "locationReference",
        "locationCodeableConcept", "productOrService", "diagnosis", "diagnosisCodeableConcept",
        "diagnosisReference", "facility", "type", "item", "class", "location", "period", "name",
        "performedDateTime", "performedPeriod", "reasonCode", "reasonReference", "report", "conclusion",
        "conclusionCode", "resultsInterpreter", "imagingStudy", "media", "category", "occurrenceDateTime",
        "occurrencePeriod", "quantityQuantity", "entry", "resource"]
SYSTEMS = [None, "http://www.ama-assn.org/go/cpt", "urn:oid:2.16.840.1.113883.6.285", "http://dicom.nema.org/resources/ontology/DCM",
           "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set",
           "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "http://terminology.hl7.org/CodeSystem/v3-ActCode",
           "http://snomed.info/sct", "http://terminology.hl7.org/CodeSystem/claim-type", "", " ", 5]
CODES = ["76000", "29881", "20650", "77002", "j1234", "A1234", "59", "XS", "26", "xu", "LT", "113730", "113722",
         "113726", "21", "22", "24", "11", "99", "HOSP", "ASC", "asc", "IMP", "AMB", "institutional", "professional",
         "LAB", "lab", "RAD", " 76000 ", " ", "", None, 7, "M23.221", "72696002", "min", "s", "h", "Gy.m2", "HU"]
SCALARS = [None, "", "  ", " x ", "x", 0, -1, 1, 2, 1.5, 0.0, True, False, float("nan"), 1e7, "1",
           "2024-13-45", "2024-02-30", "2024", "2024-08", "2024-08-05", "2024-08-05T10:00:00Z",
           "2024-08-05T10:00:00", "2024-08-06T01:00:00+05:00", "Encounter/s01-encounter", "Location/s01-location",
           "https://h/fhir/Procedure/x/_history/2", "final", "cancelled", "entered-in-error", "not-done",
           "amended", "Claim", "Procedure", "Observation", "Location", "DiagnosticReport", "ImagingStudy",
           "Encounter", "ServiceRequest", "Bundle"]

def rcoding(rng):
    c = {}
    if rng.random() < 0.8: c["system"] = rng.choice(SYSTEMS)
    if rng.random() < 0.9: c["code"] = rng.choice(CODES)
    if rng.random() < 0.1: c["display"] = "d"
    return c if rng.random() < 0.95 else rng.choice([None, "x", 3, []])

def rconcept(rng):
    cc = {}
    if rng.random() < 0.85: cc["coding"] = [rcoding(rng) for _ in range(rng.randint(0, 3))] if rng.random() < 0.95 else rng.choice([{}, "x", None])
    if rng.random() < 0.3: cc["text"] = rng.choice(["knee", " ", "", 5, None, "Left Knee "])
    return cc if rng.random() < 0.95 else rng.choice([None, "x", 3, [], {}])

def rref(rng):
    if rng.random() < 0.1: return rng.choice([None, "Location/x", 3, {}, {"reference": 5}, {"reference": " "}, {"reference": ""}])
    return {"reference": rng.choice(["Encounter/s01-encounter", "Location/s01-location", "Procedure/s01-procedure-1",
                                     "DiagnosticReport/s01-report", "ImagingStudy/s01-imaging-study", "Observation/x",
                                     "https://h/fhir/Encounter/s04-encounter/_history/1", "urn:uuid:1234", "#c", "a/b/c",
                                     "Encounter/s04-encounter", "Location/s04-location", "Practitioner/p\n"])}

def rperiod(rng):
    p = {}
    for k in ("start", "end"):
        if rng.random() < 0.6: p[k] = rng.choice(SCALARS[16:24])
    return p if rng.random() < 0.95 else rng.choice(["x", 3, None])

def rqty(rng):
    q = {}
    if rng.random() < 0.9: q["value"] = rng.choice([1, 2, 4.5, 0.5, 0, -1, 30, 90, "4", True, None, 1e7, float("nan"), 0.00042])
    if rng.random() < 0.6: q["code"] = rng.choice(["min", "s", "h", "Gy.m2", "", " ", None, 3, "MIN "])
    if rng.random() < 0.5: q["unit"] = rng.choice(["min", "seconds", "hours", "x", " ", 4])
    return q if rng.random() < 0.95 else rng.choice(["x", 3, None, []])

def rlist(rng, gen):
    if rng.random() < 0.07: return rng.choice([None, {}, "x", 3])
    return [gen(rng) for _ in range(rng.randint(0, 3))]

def rvalue(rng, key):
    if key == "category" and rng.random() < 0.5: return [{"coding": [{"system": "x", "code": rng.choice(["LAB", "lab", "RAD", " lab "])}]}]
    if key in ("code", "productOrService", "locationCodeableConcept", "diagnosisCodeableConcept", "type", "category"):
        if key == "code" and rng.random() < 0.3: return rng.choice(CODES)
        if key == "type" and rng.random() < 0.3: return rlist(rng, rconcept)
        if key == "category" and rng.random() < 0.5: return rlist(rng, rconcept)
        return rconcept(rng)
    if key in ("modifier", "bodySite", "subSite", "reasonCode", "conclusionCode"):
        return rlist(rng, rconcept) if key != "bodySite" or rng.random() < 0.7 else rconcept(rng)
    if key == "coding": return rlist(rng, rcoding)
    if key in ("encounter", "report", "reasonReference", "resultsInterpreter", "imagingStudy"):
        return rlist(rng, rref) if rng.random() < 0.8 else rref(rng)
    if key in ("locationReference", "diagnosisReference", "facility"): return rref(rng)
    if key in ("servicedPeriod", "performedPeriod", "occurrencePeriod", "period"): return rperiod(rng)
    if key in ("quantity", "valueQuantity", "quantityQuantity"): return rqty(rng)
    if key == "diagnosisSequence": return rlist(rng, lambda r: r.choice([1, 2, 0, "1", 7, True]))
    if key == "sequence": return rng.choice([1, 2, 3, 0, -1, "1", True, None, 1.0])
    if key == "component": return rlist(rng, lambda r: {"code": rconcept(r) if r.random() < .5 else {"coding": [{"system": r.choice(SYSTEMS[3:4] + SYSTEMS), "code": r.choice(["113730", "113722", "113725", "x"])}]}, "valueQuantity": rqty(r)} if r.random() < .9 else r.choice([3, None, "x"]))
    if key == "media": return rlist(rng, lambda r: r.choice([{"link": {"reference": "Media/1"}}, {}, 3, None]))
    if key == "location": return rlist(rng, lambda r: {"location": rref(r)} if r.random() < .9 else r.choice([3, None])) if rng.random() < .8 else rref(rng)
    if key == "class": return rng.choice([{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": rng.choice(["IMP", "AMB", "EMER", 3, " ", None])}, {"code": 5}, {"system": 3}, "IMP", None])
    if key == "diagnosis": return rlist(rng, lambda r: {"sequence": r.choice([1, 2, 0, "1"]), "diagnosisCodeableConcept": rconcept(r)} if r.random() < .8 else {"sequence": r.choice([1, 2]), "diagnosisReference": rref(r)})
    return rng.choice(SCALARS)

def nodes(x, out, parent=None, key=None):
    out.append((parent, key, x))
    if isinstance(x, dict):
        for k, v in list(x.items()): nodes(v, out, x, k)
    elif isinstance(x, list):
        for i, v in enumerate(x): nodes(v, out, x, i)
    return out

TYPE_KEYS = {
    "Observation": ["code", "valueQuantity", "component", "status"],
    "DiagnosticReport": ["category", "conclusion", "conclusionCode", "resultsInterpreter", "imagingStudy", "media", "status", "id"],
    "Procedure": ["code", "report", "id", "performedDateTime", "performedPeriod", "reasonCode", "reasonReference", "bodySite", "status"],
    "Claim": ["id", "type", "diagnosis", "facility", "item"],
    "Encounter": ["class", "location", "period", "id", "status"],
    "Location": ["name", "type", "id"],
    "ImagingStudy": ["status", "id"],
    "ServiceRequest": ["id", "code", "occurrenceDateTime", "occurrencePeriod", "quantityQuantity", "reasonCode", "reasonReference", "bodySite"],
}
ITEM_KEYS = ["sequence", "productOrService", "modifier", "quantity", "servicedDate", "servicedPeriod", "locationCodeableConcept",
             "locationReference", "encounter", "diagnosisSequence", "bodySite", "subSite"]
DATES = ["2024-13-45", "2024-02-30", "2024", "2024-08", "2024-08-05", "2024-08-05T10:00:00Z", "2024-02-30T10:00:00Z",
         "2024-08-05T10:00:00", "2024-08-06T01:00:00+05:00", "2024-08-04", " ", "", 20240805, None]

def mutate(rng, root):
    if rng.random() < 0.35:
        targets = [d for _, _, d in nodes(root, []) if isinstance(d, dict) and (d.get("resourceType") in TYPE_KEYS or "productOrService" in d)]
        if targets:
            d = rng.choice(targets)
            k = rng.choice(TYPE_KEYS.get(d.get("resourceType"), ITEM_KEYS))
            d[k] = rng.choice(DATES) if ("Date" in k and rng.random() < 0.7) else rvalue(rng, k)
            if k == "category" and rng.random() < 0.6:
                d["id"] = "other-report"
            return
    ns = [n for n in nodes(root, []) if n[0] is not None]
    dicts = [n[2] for n in nodes(root, []) if isinstance(n[2], dict)]
    r = rng.random()
    if r < 0.45 and dicts:
        d = rng.choice(dicts); k = rng.choice(KEYS); d[k] = rvalue(rng, k)
    elif r < 0.65 and ns:
        parent, k, v = rng.choice(ns)
        if isinstance(parent, dict): del parent[k]
        else: parent.pop(k)
    elif r < 0.85 and ns:
        parent, k, v = rng.choice(ns)
        parent[k] = rvalue(rng, k if isinstance(k, str) else "x")
    elif ns:
        parent, k, v = rng.choice(ns)
        if isinstance(parent, list): parent.insert(k, copy.deepcopy(v))
        elif isinstance(v, str) and v: parent[k] = rng.choice([v.upper(), v.lower(), " " + v, v + "\n", v[:-1]])



def _case(rng):
    """(scenario, entry point, run(module)) for one randomly mutated request."""
    n = rng.choice([x for x in NUMBERS if x not in (16,)])
    s = scenario(n)
    if s.hook == "org.fluoro-cds.claim-review" and rng.random() < 0.8:
        claim, comps = copy.deepcopy(s.claim), copy.deepcopy(s.companions)
        if rng.random() < 0.2: comps = []
        for _ in range(rng.choice([0, 1, 1, 2, 3, 5])):
            mutate(rng, rng.choice([claim] + comps) if comps and rng.random() < .6 else claim)
        if comps and rng.random() < .1: rng.shuffle(comps)
        fv = rng.random() < 0.01
        r = rng.random()
        if r < 0.15:  # the claim-review service's own reads: the Bundle split and the references to fetch
            bundle = {"resourceType": "Bundle", "type": "collection",
                      "entry": [{"resource": x} for x in [claim] + comps]}
            for _ in range(rng.choice([0, 1, 2])):
                mutate(rng, bundle)
            return n, "split", (lambda m: lambda: m.split_claim_bundle(copy.deepcopy(bundle)))
        if r < 0.3:
            return n, "refs", (lambda m: lambda: (m.claim_references(copy.deepcopy(claim)),
                                                  m.follow_references(copy.deepcopy(comps))))
        return n, "claim", (lambda m: lambda: m.case_from_claim(copy.deepcopy(claim), copy.deepcopy(comps), REF, full_validation=fv))
    if s.hook != "order-sign":
        enc, comps, claim = copy.deepcopy(s.encounter), copy.deepcopy(s.companions), copy.deepcopy(s.claim)
        comps = [c for c in comps if c.get("id") != enc.get("id")] if rng.random() < 0.5 else comps
        if rng.random() < 0.4: claim = None
        for _ in range(rng.choice([0, 1, 2, 3])):
            mutate(rng, rng.choice([enc] + comps + ([claim] if claim else [])))
        return n, "enc", (lambda m: lambda: m.case_from_encounter(copy.deepcopy(enc), copy.deepcopy(comps), copy.deepcopy(claim), REF))
    drafts, comps = copy.deepcopy(s.draft_orders), copy.deepcopy(s.companions)
    for _ in range(rng.choice([0, 1, 2, 3])):
        mutate(rng, rng.choice([drafts] + comps))
    return n, "orders", (lambda m: lambda: m.case_from_orders(copy.deepcopy(drafts), copy.deepcopy(comps), REF))


def _outcome(fn):
    try:
        return ("ok", repr(fn()))
    except ValueError as e:  # InvalidResource of either package
        if not hasattr(e, "path"):
            raise
        return ("invalid", str(e), e.path)


def test_extraction_equals_the_baseline_revision(tmp_path):
    old = _baseline_extract(tmp_path)
    new = _api("hooks")
    rng = random.Random(20260510)
    count = int(os.environ.get("EXTRACT_DIFF_CASES", "5000"))
    mismatches = []
    for i in range(count):
        n, kind, mk = _case(rng)
        a, b = _outcome(mk(new)), _outcome(mk(old))
        if a != b:
            mismatches.append((i, n, kind, a, b))
    assert not mismatches, mismatches[:3]
