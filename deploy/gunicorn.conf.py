"""gunicorn configuration: `gunicorn -c deploy/gunicorn.conf.py 'service.app:create_app()'`.

The same defaults are used by `fluoro-cds serve` (service/gunicorn_app.py), and the same settings
checks: an invalid FLUORO_CDS_... value stops gunicorn before it forks, exit code 2. Run this way,
gunicorn has no front: put it behind a reverse proxy that bounds slow clients (docs/service.md).
"""
import sys

from service.gunicorn_app import gunicorn_defaults
from service.settings import Settings, SettingsError

try:
    Settings.from_env(serving=True)
except SettingsError as exc:
    print(f"fluoro-cds: configuration error: {exc}", file=sys.stderr)
    sys.exit(2)

globals().update(gunicorn_defaults())
bind = "127.0.0.1:8080"
