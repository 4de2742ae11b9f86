"""Reference data for fluoro-cds: CMS NCCI PTP, MUE, add-on-code, MPFS and place-of-service tables.

Importers for the CMS file formats, an effective-dated SQLite store keeping releases side by side,
and the embedded starter set. Knows nothing of FHIR or Flask.
"""
from .api import (OUTPATIENT_HOSPITAL, PRACTITIONER, SETTINGS, AddOnEdit, FeeSchedule, MueLimit,
                  PlaceOfService, PtpEdit, ReferenceData, Release)

__all__ = ["OUTPATIENT_HOSPITAL", "PRACTITIONER", "SETTINGS", "AddOnEdit", "FeeSchedule", "MueLimit",
           "PlaceOfService", "PtpEdit", "ReferenceData", "Release"]


def open_reference(db_path: str | None = None) -> ReferenceData:
    """The reference data in service: the SQLite store at `db_path` when it holds imported
    releases, otherwise the embedded starter set."""
    from .starter import starter

    return starter()


__all__.append("open_reference")
