"""The element checks of one companion resource on its own: the readers the case builders apply
to a resource of its type, run before the resource is used.

For data the service fetched (issue 12): a resource from the FHIR server that fails them is not
the caller's fault, so it must not reach the case builders (whose InvalidResource is a 400 naming
the request); hooks/services/gather.py ``check_fetched`` runs these checks on every fetched
resource and the service layer records a failing one as "could not be checked". A resource that
passes them is read by the case builders without an InvalidResource (tests/test_fetched_data.py).
"""
from __future__ import annotations

from .. import fhir_read as fr
from .cases import _claim_parts
from .companions import Index, active, parse_procedure
from .program import program_of
from .evidence import _observation_facts, _report_facts, fluoroscopy_report_code, report_links, study_facts
from .setting import _encounter_facility, encounter_location_refs, location_types


def check_companion(resource: dict, path: str) -> None:
    """Raise InvalidResource (with the FHIR path under `path`) when an element of `resource` that
    the case builders read for its type is invalid: resourceType and id (index_companions); an
    Encounter's location, class and period (setting, date of service); a Location's name and type
    (setting); an active Procedure as parse_procedure reads it; an active Observation's codes and
    values, an active DiagnosticReport's code, basedOn and report facts (evidence); an active
    ImagingStudy's procedureReference, basedOn and modalities (evidence); a Claim as the claim builder reads it (lines, diagnoses, care team, facility, and the
    insurance its NCCI program is read from)."""
    rtype = fr.resource_type(resource, path)
    fr.string(resource.get("id"), path, "id")
    if rtype == "Encounter":
        encounter_location_refs(resource, path)
        _encounter_facility(resource, path)
        fr.period_start(resource.get("period"), path, "period")
    elif rtype == "Location":
        location_types(resource, path)
    elif rtype == "Claim":
        _claim_parts(resource, Index())
        program_of(resource, Index())
    elif rtype in ("Procedure", "Observation", "DiagnosticReport", "ImagingStudy"):
        if not active([(path, resource)]):
            return
        if rtype == "Procedure":
            parse_procedure(path, resource)
        elif rtype == "Observation":
            _observation_facts(resource, path)
        elif rtype == "DiagnosticReport":
            fluoroscopy_report_code(resource, path)
            report_links(resource, path)
            _report_facts(resource, path)
        else:
            study_facts(resource, path)


__all__ = ["check_companion"]
