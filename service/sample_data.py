"""`fluoro-cds sample-data OUTDIR [--claims N] [--seed S] [--gzip]`: a synthetic FHIR Bulk Data export.

A realistic, deterministic (same seed, same bytes) export for tests, benchmarks and new users: a
``manifest.json`` (the ``$export`` status response: ``output[].type`` / ``url``) and one NDJSON file
per type (Patient, Coverage, Organization, Practitioner, Location, Encounter, Procedure, Observation,
DiagnosticReport, ImagingStudy, Claim, ExplanationOfBenefit). Nothing in it is a real person.

The mix (:data:`MIX`, weights per hundred claims; every code is in the CMS July 2024 tables, the
edits named are the practitioner PTP rows with 76000 as column 2):

- ``clean`` 20: 20650 (skeletal traction) + 76000-26 in an outpatient hospital (POS 22), complete
  documentation: no finding;
- ``ptp-bundled`` 10: 33289 + 76000 (PTP modifier indicator 0);
- ``ptp-modifier`` 10: a primary with an indicator-1 edit (36556, 49083, 50432, 43239, 31622, 36561),
  a third of them with 76000-XS;
- ``modifier-misuse`` 3: 33289 + 76000-26-XS (indicator 0: no modifier bypasses it);
- ``guidance`` 8: 20610 / 20600 (arthrocentesis) + 76000 in the office: the guidance code 77002;
- ``integral`` 7: 29881 knee arthroscopy + 76000 in an ASC (POS 24);
- ``modifier-26`` 10: 20650 + 76000 without 26 for a hospital outpatient (POS 22), some 76000-TC;
- ``documentation-gap`` 10: 76000 alone in the office, without fluoroscopy time, dose, report or
  images (one or more of them);
- ``mue`` 4: 20650 + 76000 x 4 units (MUE 3, MAI 3);
- ``split-pair`` 12: the pair billed on two claims of the same patient, rendering provider and date
  (76000 on one, 33289 or 36556 on the other): only the edits across claims find it (counts as two
  claims);
- ``no-fluoroscopy`` 6: 71045 (chest X-ray) alone.

Settings follow each kind (office POS 11 with an office Location, outpatient hospital POS 22 with a
hospital Location and an AMB Encounter, ASC POS 24); a tenth of the hospital claims are
institutional (type of bill 13x). 30% of the claims are written as ExplanationOfBenefit (CARIN Blue
Button professional: ``item.adjudication`` submitted, eligible (allowed, about the MPFS amount) and
paidtoprovider (80% of it)); 5% of the patients are covered by Medicaid (their claims get
``ncci-not-applied`` unless a Medicaid release is imported). References are relative
(``Encounter/e1``) but a tenth absolute (``https://payer.example.org/fhir/Encounter/e1``) and a tenth
``urn:uuid:<id>``. Fast: about 7,000 claims a second on one core (200,000 claims in well under a minute).
"""
from __future__ import annotations

import gzip
import os
import random
import sys
import uuid
from datetime import date, timedelta
from typing import IO

import orjson

CPT = "http://www.ama-assn.org/go/cpt"
POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
ADJ = "http://terminology.hl7.org/CodeSystem/adjudication"
C4BB = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudication"
C4BB_ROLE = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBClaimCareTeamRole"
CARE_ROLE = "http://terminology.hl7.org/CodeSystem/claimcareteamrole"
SOPT = "https://nahdo.org/sopt"
ABSOLUTE_BASE = "https://payer.example.org/fhir"
TYPES = ("Patient", "Organization", "Coverage", "Practitioner", "Location", "Encounter", "Procedure",
         "Observation", "DiagnosticReport", "ImagingStudy", "Claim", "ExplanationOfBenefit")

# kind: (weight, lines ((code, modifiers, units), ...), POS, documentation complete?)
MIX: dict[str, int] = {"clean": 20, "ptp-bundled": 10, "ptp-modifier": 10, "modifier-misuse": 3, "guidance": 8,
                       "integral": 7, "modifier-26": 10, "documentation-gap": 10, "mue": 4, "split-pair": 12,
                       "no-fluoroscopy": 6}
INDICATOR_1 = ("36556", "49083", "50432", "43239", "31622", "36561")
DIAGNOSES = {"20650": ("S72.321A", FEMUR := ("71341001", "Bone structure of femur")),
             "33289": ("I50.22", ("81040000", "Pulmonary artery structure")),
             "20610": ("M17.11", KNEE := ("72696002", "Knee region structure")),
             "20600": ("M19.041", ("85562004", "Hand structure")),
             "29881": ("M23.221", KNEE), "71045": ("R05.9", ("51185008", "Thoracic structure")),
             "76000": ("S82.201A", ("30021000", "Lower leg structure"))}
PRICE = {"76000": 42.61, "76000-26": 14.65, "76000-TC": 27.96}  # MPFS 2024 non-facility, CF 33.2875


def _cc(system: str, code: str) -> dict:
    return {"coding": [{"system": system, "code": code}]}


class _Writer:
    """One NDJSON file per type under `out` (gzip with `compress`)."""

    def __init__(self, out: str, compress: bool) -> None:
        self.names = {t: f"{t}.ndjson" + (".gz" if compress else "") for t in TYPES}
        self.files: dict[str, IO[bytes]] = {}
        for t, name in self.names.items():
            path = os.path.join(out, name)
            self.files[t] = gzip.open(path, "wb", compresslevel=1) if compress else open(path, "wb", buffering=1 << 20)
        self.counts = dict.fromkeys(TYPES, 0)

    def put(self, res: dict) -> None:
        t = res["resourceType"]
        self.files[t].write(orjson.dumps(res) + b"\n")
        self.counts[t] += 1

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class _Generator:
    def __init__(self, seed: int, writer: _Writer) -> None:
        self.rnd = random.Random(seed)
        self.w = writer
        self.n = 0
        self.payers = [{"resourceType": "Organization", "id": "payer-medicare", "name": "Medicare Part B"},
                       {"resourceType": "Organization", "id": "payer-medicaid", "name": "State Medicaid"}]
        for p in self.payers:
            writer.put(p)
        self.practitioners = []
        for i in range(60):
            pr = {"resourceType": "Practitioner", "id": f"pr{i}",
                  "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": f"{1000000000 + i * 7919}"}],
                  "name": [{"family": f"Provider{i}"}]}
            writer.put(pr)
            self.practitioners.append(pr)
        self.locations: dict[str, list[dict]] = {}
        for kind, (pos, typ) in {"office": ("11", _cc(POS, "11")), "hospital": ("22", _cc(ROLE, "HOSP")),
                                 "asc": ("24", _cc(POS, "24"))}.items():
            self.locations[kind] = []
            for i in range(10):
                loc = {"resourceType": "Location", "id": f"loc-{kind}-{i}", "status": "active",
                       "name": f"Sample {kind} {i}", "type": [typ]}
                writer.put(loc)
                self.locations[kind].append(loc)
        self.patients: list[tuple[dict, dict]] = []

    # ids and references ------------------------------------------------------------------------
    def _id(self, prefix: str, style: str) -> str:
        self.n += 1
        if style == "uuid":
            return str(uuid.UUID(int=self.rnd.getrandbits(128), version=4))
        return f"{prefix}{self.n}"

    @staticmethod
    def ref(res: dict, style: str) -> dict:
        if style == "uuid":
            return {"reference": f"urn:uuid:{res['id']}"}
        if style == "absolute":
            return {"reference": f"{ABSOLUTE_BASE}/{res['resourceType']}/{res['id']}"}
        return {"reference": f"{res['resourceType']}/{res['id']}"}

    def _style(self) -> str:
        r = self.rnd.random()
        return "uuid" if r < 0.1 else "absolute" if r < 0.2 else "relative"

    def _patient(self) -> tuple[dict, dict]:
        """A patient (new, or one seen before: patients have several claims) and its coverage."""
        if self.patients and self.rnd.random() < 0.5:
            return self.rnd.choice(self.patients)
        style = self._style()
        pat = {"resourceType": "Patient", "id": self._id("pat", style), "gender": self.rnd.choice(("female", "male")),
               "birthDate": f"{self.rnd.randint(1935, 1975)}-0{self.rnd.randint(1, 9)}-1{self.rnd.randint(0, 9)}"}
        medicaid = self.rnd.random() < 0.05
        payer = self.payers[1 if medicaid else 0]
        cov = {"resourceType": "Coverage", "id": self._id("cov", style), "status": "active",
               "type": _cc(SOPT, "2" if medicaid else "1"), "beneficiary": self.ref(pat, style),
               "payor": [self.ref(payer, "relative")]}
        self.w.put(pat)
        self.w.put(cov)
        if len(self.patients) < 5000:
            self.patients.append((pat, cov))
        else:
            self.patients[self.rnd.randrange(5000)] = (pat, cov)
        return pat, cov

    # one visit: encounter, procedures, documentation -----------------------------------------------
    def visit(self, pat: dict, prov: dict, day: date, codes: list[str], setting: str, docs: set[str],
              style: str) -> tuple[dict, dict]:
        """Write the Encounter and its clinical resources; returns (encounter, location)."""
        loc = self.rnd.choice(self.locations[setting])
        d = day.isoformat()
        enc = {"resourceType": "Encounter", "id": self._id("enc", style), "status": "finished",
               "class": {"system": ACT, "code": "AMB"}, "subject": self.ref(pat, style),
               "period": {"start": f"{d}T08:00:00Z", "end": f"{d}T12:00:00Z"},
               "location": [{"location": self.ref(loc, style)}]}
        self.w.put(enc)
        fluoro = None
        rep_id = self._id("rep", style) if "report" in docs else None
        for code in codes:
            site = DIAGNOSES.get(code, DIAGNOSES["76000"])[1]
            proc = {"resourceType": "Procedure", "id": self._id("proc", style), "status": "completed",
                    "code": _cc(CPT, code), "subject": self.ref(pat, style), "encounter": self.ref(enc, style),
                    "performedDateTime": f"{d}T10:00:00Z", "performer": [{"actor": self.ref(prov, "relative")}],
                    "reasonCode": [_cc(ICD10, DIAGNOSES.get(code, DIAGNOSES["76000"])[0])],
                    "bodySite": [{"coding": [{"system": SNOMED, "code": site[0], "display": site[1]}]}]}
            if code == "76000":
                fluoro = proc
                if rep_id is not None:  # Procedure.report: the report is about this fluoroscopy
                    proc["report"] = [self.ref({"resourceType": "DiagnosticReport", "id": rep_id}, style)]
            self.w.put(proc)
        if fluoro is None:
            return enc, loc
        common = {"status": "final", "subject": self.ref(pat, style), "encounter": self.ref(enc, style)}
        if "time" in docs:
            self.w.put({"resourceType": "Observation", "id": self._id("obs", style), **common,
                        "code": _cc(DCM, "113730"), "partOf": [self.ref(fluoro, style)],
                        "effectiveDateTime": f"{d}T10:30:00Z",
                        "valueQuantity": {"value": round(self.rnd.uniform(0.5, 12), 1), "unit": "min",
                                          "system": UCUM, "code": "min"}})
        if "dose" in docs:
            self.w.put({"resourceType": "Observation", "id": self._id("obs", style), **common,
                        "code": _cc(DCM, "113722"), "partOf": [self.ref(fluoro, style)],
                        "effectiveDateTime": f"{d}T10:30:00Z",
                        "valueQuantity": {"value": round(self.rnd.uniform(0.0001, 0.002), 5), "unit": "Gy.m2",
                                          "system": UCUM, "code": "Gy.m2"}})
        study = None
        if "images" in docs:
            study = {"resourceType": "ImagingStudy", "id": self._id("img", style), "status": "available",
                     "subject": self.ref(pat, style), "encounter": self.ref(enc, style),
                     "started": f"{d}T10:00:00Z", "procedureReference": self.ref(fluoro, style),
                     "modality": [{"system": DCM, "code": "RF"}], "numberOfSeries": 1, "numberOfInstances": 4}
            self.w.put(study)
        if "report" in docs:
            rep = {"resourceType": "DiagnosticReport", "id": rep_id, **common,
                   "code": _cc("http://loinc.org", "18748-4"), "effectiveDateTime": f"{d}T10:45:00Z",
                   "resultsInterpreter": [self.ref(prov, "relative")],
                   "conclusion": "Fluoroscopic guidance; hardware in satisfactory position."}
            if study is not None:
                rep["imagingStudy"] = [self.ref(study, style)]
            self.w.put(rep)
        return enc, loc

    # claims -------------------------------------------------------------------------------------------
    def claim(self, pat: dict, cov: dict, prov: dict, enc: dict, loc: dict, day: date,
              lines: list[tuple[str, tuple[str, ...], int]], pos: str, style: str, institutional: bool) -> None:
        eob = self.rnd.random() < 0.3
        rtype = "ExplanationOfBenefit" if eob else "Claim"
        dx = sorted({DIAGNOSES.get(c, DIAGNOSES["76000"])[0] for c, _m, _u in lines})
        items = []
        for seq, (code, mods, units) in enumerate(lines, start=1):
            item = {"sequence": seq, "careTeamSequence": [1],
                    "diagnosisSequence": [dx.index(DIAGNOSES.get(code, DIAGNOSES["76000"])[0]) + 1],
                    "productOrService": _cc(CPT, code), "servicedDate": day.isoformat(),
                    "locationCodeableConcept": _cc(POS, pos), "quantity": {"value": units},
                    "encounter": [self.ref(enc, style)]}
            if mods:
                item["modifier"] = [_cc(CPT, m) for m in mods]
            price = PRICE.get(f"{code}-{mods[0]}" if mods and mods[0] in ("26", "TC") else code,
                              round(self.rnd.uniform(40, 900), 2)) * units
            item["net"] = {"value": round(price * 2.5, 2), "currency": "USD"}
            if eob:
                allowed = round(price * self.rnd.uniform(0.85, 1.0), 2)
                item["adjudication"] = [
                    {"category": _cc(ADJ, "submitted"), "amount": {"value": round(price * 2.5, 2), "currency": "USD"}},
                    {"category": _cc(ADJ, "eligible"), "amount": {"value": allowed, "currency": "USD"}},
                    {"category": _cc(C4BB, "paidtoprovider"), "amount": {"value": round(allowed * 0.8, 2),
                                                                          "currency": "USD"}}]
            items.append(item)
        res = {"resourceType": rtype, "id": self._id("eob" if eob else "clm", "relative"), "status": "active",
               "type": _cc(CLAIM_TYPE, "institutional" if institutional else "professional"), "use": "claim",
               "patient": self.ref(pat, style), "created": (day + timedelta(days=7)).isoformat(),
               "provider": self.ref(prov, "relative"),
               "careTeam": [{"sequence": 1, "provider": self.ref(prov, "relative"),
                             "role": _cc(C4BB_ROLE, "rendering") if eob else _cc(CARE_ROLE, "primary")}],
               "diagnosis": [{"sequence": i + 1, "diagnosisCodeableConcept": _cc(ICD10, c)} for i, c in enumerate(dx)],
               "insurance": [{"sequence": 1, "focal": True, "coverage": self.ref(cov, style)}],
               "item": items}
        if institutional:
            res["subType"] = _cc("https://www.nubc.org/CodeSystem/TypeOfBill", "131")
            res["facility"] = self.ref(loc, style)
        if eob:
            res["outcome"] = "complete"
            res["insurer"] = {"display": "Sample payer"}
        else:
            res["priority"] = _cc("http://terminology.hl7.org/CodeSystem/processpriority", "normal")
        self.w.put(res)

    def one(self, kind: str) -> int:
        """Write the claim(s) of one `kind` of the mix; returns how many claims."""
        rnd = self.rnd
        pat, cov = self._patient()
        prov = rnd.choice(self.practitioners)
        day = date(2024, 7, 1) + timedelta(days=rnd.randrange(90))
        style = self._style()
        docs = {"time", "dose", "images", "report"}
        setting, pos = "hospital", "22"
        if kind == "clean":
            lines = [("20650", (), 1), ("76000", ("26",), 1)]
        elif kind == "ptp-bundled":
            lines = [("33289", (), 1), ("76000", (), 1)]
        elif kind == "modifier-misuse":
            lines = [("33289", (), 1), ("76000", ("26", "XS"), 1)]
        elif kind == "ptp-modifier":
            lines = [(rnd.choice(INDICATOR_1), (), 1), ("76000", ("26", "XS") if rnd.random() < 0.33 else ("26",), 1)]
        elif kind == "guidance":
            setting, pos = "office", "11"
            lines = [(rnd.choice(("20610", "20600")), (), 1), ("76000", (), 1)]
        elif kind == "integral":
            setting, pos = "asc", "24"
            lines = [("29881", (), 1), ("76000", ("26",), 1)]
        elif kind == "modifier-26":
            lines = [("20650", (), 1), ("76000", ("TC",) if rnd.random() < 0.2 else (), 1)]
        elif kind == "documentation-gap":
            setting, pos = "office", "11"
            lines = [("76000", (), 1)]
            docs -= set(rnd.sample(sorted(docs), rnd.randint(1, 3)))
        elif kind == "mue":
            setting, pos = "office", "11"
            lines = [("20650", (), 1), ("76000", (), 4)]
        elif kind == "no-fluoroscopy":
            setting, pos = "office", "11"
            lines = [("71045", (), 1)]
        elif kind == "split-pair":
            primary = rnd.choice(("33289", "36556"))
            enc, loc = self.visit(pat, prov, day, [primary, "76000"], setting, docs, style)
            self.claim(pat, cov, prov, enc, loc, day, [(primary, (), 1)], pos, style, False)
            self.claim(pat, cov, prov, enc, loc, day, [("76000", ("26",), 1)], pos, style, False)
            return 2
        else:
            raise ValueError(kind)
        enc, loc = self.visit(pat, prov, day, [c for c, _m, _u in lines], setting, docs, style)
        institutional = setting == "hospital" and rnd.random() < 0.1
        if institutional:  # the hospital's own claim: no professional component modifier
            lines = [(c, tuple(m for m in mods if m not in ("26", "TC")), u) for c, mods, u in lines]
        self.claim(pat, cov, prov, enc, loc, day, lines, pos, style, institutional)
        return 1


def write_export(out_dir: str, claims: int = 1000, seed: int = 1, compress: bool = False) -> dict:
    """Write a synthetic Bulk Data export of about `claims` claims (exactly `claims`) into `out_dir`;
    returns the manifest (also written as manifest.json)."""
    os.makedirs(out_dir, exist_ok=True)
    writer = _Writer(out_dir, compress)
    gen = _Generator(seed, writer)
    kinds, weights = list(MIX), list(MIX.values())
    made = 0
    try:
        while made < claims:
            kind = gen.rnd.choices(kinds, weights)[0]
            if kind == "split-pair" and claims - made < 2:
                kind = "clean"
            made += gen.one(kind)
    finally:
        writer.close()
    manifest = {"transactionTime": "2024-10-01T00:00:00Z",
                "request": f"{ABSOLUTE_BASE}/Group/sample/$export?_type=" + ",".join(TYPES),
                "requiresAccessToken": False,
                "output": [{"type": t, "url": f"{ABSOLUTE_BASE}/bulk/{writer.names[t]}", "count": writer.counts[t]}
                           for t in TYPES if writer.counts[t]],
                "error": []}
    with open(os.path.join(out_dir, "manifest.json"), "wb") as fh:
        fh.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return manifest


def command(args) -> int:
    if args.claims < 1:
        print("fluoro-cds sample-data: --claims must be at least 1", file=sys.stderr)
        return 2
    if os.path.exists(args.outdir) and (not os.path.isdir(args.outdir) or os.listdir(args.outdir)):
        print(f"fluoro-cds sample-data: {args.outdir} exists and is not an empty directory", file=sys.stderr)
        return 2
    manifest = write_export(args.outdir, args.claims, args.seed, args.gzip)
    counts = {o["type"]: o["count"] for o in manifest["output"]}
    sys.stderr.write(orjson.dumps({"out_dir": args.outdir, "claims": args.claims, "resources": counts}).decode() + "\n")
    return 0


def add_command(sub) -> None:
    p = sub.add_parser("sample-data", help="write a synthetic FHIR Bulk Data export (claims, EOBs, companions)")
    p.add_argument("outdir", help="directory to create (must not exist, or be empty)")
    p.add_argument("--claims", type=int, default=1000, help="claims to write (Claims and ExplanationOfBenefits)")
    p.add_argument("--seed", type=int, default=1, help="random seed (the same seed writes the same export)")
    p.add_argument("--gzip", action="store_true", help="gzip each NDJSON file")
    p.set_defaults(func=command)
