"""Reference data for fluoro-cds: CMS NCCI PTP, MUE, add-on-code, MPFS and place-of-service tables.

Importers for the CMS file formats, an effective-dated SQLite store keeping releases side by side,
and the embedded starter set. Knows nothing of FHIR or Flask.
"""
from .api import (DME, MEDICAID, MEDICARE, OUTPATIENT_HOSPITAL, PRACTITIONER, PROGRAM_NAMES, PROGRAMS,
                  SETTINGS, AddOnEdit, FeeSchedule, MueLimit, PlaceOfService, PtpEdit, ReferenceData, Release)

__all__ = ["DME", "MEDICAID", "MEDICARE", "OUTPATIENT_HOSPITAL", "PRACTITIONER", "PROGRAM_NAMES", "PROGRAMS",
           "SETTINGS", "AddOnEdit", "FeeSchedule", "MueLimit", "PlaceOfService", "PtpEdit", "ReferenceData",
           "Release"]


def open_reference(db_path: str | None = None) -> ReferenceData:
    """The reference data in service: the SQLite store at `db_path` when it holds imported
    releases (table kinds it lacks are answered by the starter set, as describe() says),
    otherwise the embedded starter set. Opening reads only the small catalog."""
    from .starter import starter
    from .store import SqliteStore

    if db_path:
        store = SqliteStore(db_path)
        if store.has_releases():
            return store
    return starter()


__all__.append("open_reference")


def program_reference(reference: ReferenceData, program: str) -> ReferenceData | None:
    """The reference data of NCCI `program`: `reference` itself for Medicare; for another program
    (Medicaid) the store's view of that program's releases (``SqliteStore.for_program``), or None
    when `reference` holds none of that program (the starter set is Medicare's: it never answers
    for another program)."""
    if program == MEDICARE:
        return reference
    view = getattr(reference, "for_program", None)
    if view is None:
        return None
    out = view(program)
    return out if getattr(reference, "programs", lambda: [])().count(program) else None


__all__.append("program_reference")
