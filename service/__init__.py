"""The web and command-line faces of fluoro-cds: Flask app, CDS Hooks protocol, CLI, batch."""
