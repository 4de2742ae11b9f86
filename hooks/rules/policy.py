"""The versioned policy data files of the rules (``hooks/policy/``): which procedures include
fluoroscopy, which guidance add-on replaces 76000 for which primary, which procedure codes have a
sibling that includes imaging guidance, and the billing facts cited.

Each file carries a version; each entry its source. The rules cite entries with
:func:`PolicyEntry.citation`. Data, not if-chains: change the files, not the code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from importlib import resources

from nccidata.starter import expand_codes

from ..findings import Citation


@dataclass(frozen=True)
class PolicyEntry:
    policy: str  # "integral" | "guidance" | "siblings"
    version: str
    codes_spec: str  # as written in the file, e.g. "29800-29999"
    codes: frozenset[str]
    category: str
    description: str
    source: str
    add_on: str | None = None  # guidance entries: the add-on code; siblings: the with-guidance code

    def citation(self) -> Citation:
        """The entry's citation, built on first use and kept on the (immutable) entry."""
        try:
            return self.__dict__["_citation"]
        except KeyError:
            citation = self.__dict__["_citation"] = self._build_citation()
            return citation

    def _build_citation(self) -> Citation:
        if self.policy == "siblings":
            what = f"{self.codes_spec} has the with-guidance sibling {self.add_on}"
        elif self.add_on:
            what = f"add-on {self.add_on} for primaries {self.codes_spec}"
        else:
            what = f"{self.codes_spec} ({self.category})"
        return Citation(kind="policy",
                        text=f"fluoro-cds policy '{self.policy}' v{self.version}: {what}: {self.description}. "
                             f"Source: {self.source}",
                        release=f"{self.policy}@{self.version}", starter=False,
                        details=(("policy", self.policy), ("version", self.version),
                                 ("codes", self.codes_spec), ("category", self.category),
                                 ("source", self.source)))


@dataclass(frozen=True)
class Fact:
    key: str
    version: str
    text: str
    source: str

    def citation(self) -> Citation:
        """The fact's citation, built on first use and kept on the (immutable) fact."""
        try:
            return self.__dict__["_citation"]
        except KeyError:
            citation = self.__dict__["_citation"] = Citation(
                kind="policy", text=f"{self.text} Source: {self.source}", release=f"facts@{self.version}",
                details=(("policy", "facts"), ("entry", self.key), ("version", self.version),
                         ("source", self.source)))
            return citation


@dataclass(frozen=True)
class DeletedCode:
    """A code not valid on a date of service on or after ``deleted`` (hooks/policy/deleted.tsv)."""

    code: str
    deleted: date
    use: str  # what is reported instead, e.g. 76000 for 76001
    description: str
    source: str
    version: str

    def citation(self) -> Citation:
        """The entry's citation, built on first use and kept on the (immutable) entry."""
        try:
            return self.__dict__["_citation"]
        except KeyError:
            citation = self.__dict__["_citation"] = Citation(
                kind="policy",
                text=(f"fluoro-cds policy 'deleted' v{self.version}: {self.code} not valid on or after "
                      f"{self.deleted.isoformat()}: {self.description}. Source: {self.source}"),
                release=f"deleted@{self.version}",
                details=(("policy", "deleted"), ("version", self.version), ("codes", self.code),
                         ("deleted", self.deleted.isoformat()), ("source", self.source)))
            return citation


@dataclass(frozen=True)
class Policy:
    integral: dict[str, PolicyEntry]  # code -> entry
    guidance: dict[str, PolicyEntry]  # primary code -> entry
    guidance_add_ons: tuple[str, ...]
    facts: dict[str, Fact]
    siblings: dict[str, PolicyEntry]  # code without guidance -> entry (add_on: the with-guidance code)
    versions: dict[str, str]
    deleted: dict[str, DeletedCode]  # code -> deletion (hooks/policy/deleted.tsv)


def _read(name: str) -> str:
    return resources.files("hooks.policy").joinpath(name).read_text(encoding="utf-8")


def _tsv(name: str) -> tuple[str, list[dict[str, str]]]:
    version = ""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in _read(name).splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            if line[1:].strip().lower().startswith("version:"):
                version = line.split(":", 1)[1].strip()
            continue
        cells = line.split("\t")
        if header is None:
            header = cells
            continue
        if len(cells) != len(header):
            raise ValueError(f"hooks/policy/{name}: row has {len(cells)} cells, expected {len(header)}: {line!r}")
        rows.append(dict(zip(header, cells)))
    if not version:
        raise ValueError(f"hooks/policy/{name}: missing '# version:' line")
    for row in rows:
        if not row.get("source", "").strip():
            raise ValueError(f"hooks/policy/{name}: entry without a source: {row}")
    return version, rows


@lru_cache(maxsize=1)
def policy() -> Policy:
    """The policy in service (loaded once; immutable)."""
    integral: dict[str, PolicyEntry] = {}
    version_i, rows = _tsv("integral.tsv")
    for row in rows:
        entry = PolicyEntry("integral", version_i, row["codes"], frozenset(expand_codes(row["codes"])),
                            row["category"], row["description"], row["source"])
        for code in entry.codes:
            integral.setdefault(code, entry)
    guidance: dict[str, PolicyEntry] = {}
    add_ons: list[str] = []
    version_g, rows = _tsv("guidance.tsv")
    for row in rows:
        entry = PolicyEntry("guidance", version_g, row["primaries"], frozenset(expand_codes(row["primaries"])),
                            "guidance", row["description"], row["source"], add_on=row["add_on"])
        add_ons.append(entry.add_on)
        for code in entry.codes:
            guidance.setdefault(code, entry)
    siblings: dict[str, PolicyEntry] = {}
    version_s, rows = _tsv("siblings.tsv")
    for row in rows:
        siblings[row["code"]] = PolicyEntry("siblings", version_s, row["code"], frozenset({row["code"]}),
                                            "with-guidance-sibling", row["description"], row["source"],
                                            add_on=row["with_guidance"])
    version_d, rows = _tsv("deleted.tsv")
    deleted = {row["code"]: DeletedCode(row["code"], date.fromisoformat(row["deleted"]), row["use"],
                                        row["description"], row["source"], version_d) for row in rows}
    raw = json.loads(_read("facts.json"))
    facts = {k: Fact(k, raw["version"], v["text"], v["source"]) for k, v in raw["entries"].items()}
    return Policy(integral=integral, guidance=guidance, guidance_add_ons=tuple(add_ons), facts=facts,
                  siblings=siblings, deleted=deleted,
                  versions={"integral": version_i, "guidance": version_g, "siblings": version_s,
                            "deleted": version_d, "facts": raw["version"]})
