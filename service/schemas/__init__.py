"""JSON Schemas (Draft 2020-12) of the CDS Hooks 2.0 messages, written by the project from the
specification (https://cds-hooks.hl7.org/2.0/). Loaded and compiled by service.validation."""
