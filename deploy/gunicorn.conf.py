"""gunicorn configuration: `gunicorn -c deploy/gunicorn.conf.py 'service.app:create_app()'`.

The same defaults are used by `fluoro-cds serve` (service/gunicorn_app.py).
"""
from service.gunicorn_app import gunicorn_defaults

globals().update(gunicorn_defaults())
bind = "127.0.0.1:8080"
