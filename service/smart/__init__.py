"""The SMART on FHIR documentation app (docs/smart-app.md): launch, form, save."""
