"""The contract lives in the repository: nothing cites a design document outside it.

Every tracked file is read. A citation of the design or of the scenarios must point at
docs/contract.md (with an anchor that exists) or docs/scenarios.md; reading data from ../shared
(the CMS tables in ../shared/ncci, the sandbox build in ../shared/clients) is fine.
"""
from __future__ import annotations

import posixpath
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / "docs" / "contract.md"

# Built from parts so that this file does not match its own patterns.
_OUTSIDE_DESIGN = re.compile("DESIGN" + r"\.md|\bDESIGN\b\s+s(ection|\.)\s*\d")
_SHARED_DESIGN = re.compile(r"shared/(?!ncci\b|clients\b)[\w.-]+")
_SCENARIOS = re.compile(r"(?<![\w/.-])(?:[\w./-]*/)?" + "scenarios" + r"\.md")
_CONTRACT_ANCHOR = re.compile(r"contract\.md#([\w-]+)")


def tracked_files() -> list[Path]:
    """The files git tracks in this checkout."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [ROOT / name for name in out.stdout.decode().split("\0") if name]


def _texts():
    for path in tracked_files():
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        yield path.relative_to(ROOT).as_posix(), text


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a markdown heading: lower case, punctuation dropped, '-' for ' '."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def contract_anchors() -> set[str]:
    return {github_slug(line.lstrip("#")) for line in CONTRACT.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")}


def test_github_slug_of_headings():
    assert github_slug("Where the facts live in FHIR") == "where-the-facts-live-in-fhir"
    assert github_slug("Reference-data facts") == "reference-data-facts"


def test_contract_has_the_sections_the_code_cites():
    assert {"services", "card-topics", "actions", "configuration", "where-the-facts-live-in-fhir",
            "reference-data-facts"} <= contract_anchors()


def test_no_file_cites_a_design_outside_the_repository():
    bad = []
    for name, text in _texts():
        for n, line in enumerate(text.splitlines(), 1):
            for pattern in (_OUTSIDE_DESIGN, _SHARED_DESIGN):
                if m := pattern.search(line):
                    bad.append(f"{name}:{n}: {m.group(0)}")
    assert not bad, "cite docs/contract.md or docs/scenarios.md instead:\n" + "\n".join(bad)


def test_scenario_citations_point_into_docs():
    bad = []
    for name, text in _texts():
        for n, line in enumerate(text.splitlines(), 1):
            for m in _SCENARIOS.finditer(line):
                cited = m.group(0)
                relative = posixpath.normpath(posixpath.join(posixpath.dirname(name), cited))
                if "docs/scenarios.md" not in (cited, relative):  # as a path, or a relative link
                    bad.append(f"{name}:{n}: {cited}")
    assert not bad, "cite docs/scenarios.md:\n" + "\n".join(bad)


def test_every_contract_anchor_cited_exists():
    anchors = contract_anchors()
    bad = [f"{name}: #{a}" for name, text in _texts() for a in _CONTRACT_ANCHOR.findall(text)
           if a not in anchors]
    assert not bad, "no such section in docs/contract.md:\n" + "\n".join(bad)
