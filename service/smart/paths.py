"""Where the SMART documentation app lives under the service (docs/smart-app.md)."""
from __future__ import annotations

SMART_PREFIX = "/smart"
SMART_LAUNCH_PATH = SMART_PREFIX + "/launch"  # EHR launch (iss, launch) and standalone launch
SMART_CALLBACK_PATH = SMART_PREFIX + "/callback"  # the OAuth 2.0 redirect_uri
