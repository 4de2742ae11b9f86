"""Where the SMART documentation app lives under the service (docs/smart-app.md)."""
from __future__ import annotations

from werkzeug.wsgi import get_current_url

SMART_PREFIX = "/smart"
SMART_LAUNCH_PATH = SMART_PREFIX + "/launch"  # EHR launch (iss, launch) and standalone launch
SMART_CALLBACK_PATH = SMART_PREFIX + "/callback"  # the OAuth 2.0 redirect_uri


_ROOTS: dict[tuple, str] = {}  # (scheme, Host, script root) -> launch URL, for the Host values seen
_MAX_ROOTS = 64


def launch_url(environ: dict) -> str:
    """The launch URL of the cards' smart link when none is configured (FLUORO_CDS_SMART_LAUNCH_URL,
    FLUORO_CDS_BASE_URL): this request's root + /smart/launch. Called on every hook call: the root
    is built by werkzeug (7 us) once per Host value, then looked up (0.6 us; a bounded table: past
    64 Host values it is built each time)."""
    key = (environ.get("wsgi.url_scheme"), environ.get("HTTP_HOST"), environ.get("SCRIPT_NAME"))
    url = _ROOTS.get(key)
    if url is None:
        url = get_current_url(environ, root_only=True).rstrip("/") + SMART_LAUNCH_PATH
        if len(_ROOTS) < _MAX_ROOTS:
            _ROOTS[key] = url
    return url
