"""The fluoroscopy CDS services: FHIR extraction, pure billing rules, card rendering, service metadata.

Depends on :mod:`nccidata`; knows nothing of Flask or HTTP.
"""
