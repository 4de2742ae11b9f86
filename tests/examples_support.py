"""What examples/README.md promises, read from its tables: the finding each request gives and
the findings of each line of claims.ndjson. Tests compare the service's answers with these."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"
_CODE = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class RequestExample:
    file: Path
    service_id: str
    needs_fhir: bool  # the "needs" column names the FHIR server
    topic: str  # the finding code the README says it answers


def _table_rows(heading: str, root: Path = ROOT) -> list[list[str]]:
    """The body rows of the first table after `heading` in `root`/examples/README.md."""
    text = (root / "examples" / "README.md").read_text(encoding="utf-8")
    section = text.split(heading, 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    end = next((i for i, line in enumerate(section.splitlines()) if line.startswith("## ")), None)
    if end is not None:
        rows = [line for line in section.splitlines()[:end] if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def request_examples(root: Path = ROOT) -> list[RequestExample]:
    out = []
    for file, service, needs, answers in _table_rows("## Requests", root):
        out.append(RequestExample(root / "examples" / "requests" / _CODE.search(file).group(1),
                                  _CODE.search(service).group(1), "FHIR server" in needs,
                                  _CODE.search(answers).group(1)))
    return out


def batch_expectations(root: Path = ROOT) -> dict[int, tuple[str, object]]:
    """line -> (claim id, sorted finding codes | ("error", path))."""
    out: dict[int, tuple[str, object]] = {}
    for line, claim, findings in _table_rows("## Batch", root):
        codes = _CODE.findall(findings)
        if "error" in findings:
            expected: object = ("error", codes[0])
        else:
            expected = sorted(codes)
        out[int(line)] = (_CODE.search(claim).group(1), expected)
    return out


def topics(answer: dict) -> list[str]:
    return sorted(c["source"]["topic"]["code"] for c in answer["cards"])
