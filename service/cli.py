"""The `fluoro-cds` command line: serve, ncci ... . Bad usage exits with code 2."""
from __future__ import annotations

import argparse
import sys

from nccidata.cli import add_commands as add_ncci_commands


def _serve(args: argparse.Namespace) -> int:
    from .settings import Settings, SettingsError

    try:
        settings = Settings.from_env(serving=True)  # fail fast, before gunicorn forks workers
    except SettingsError as exc:
        print(f"fluoro-cds: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.dev:
        from .app import create_app

        create_app(settings).run(host=args.host, port=args.port, debug=False)
        return 0
    from .gunicorn_app import run_gunicorn

    return run_gunicorn(host=args.host, port=args.port, workers=args.workers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fluoro-cds",
                                     description="CDS Hooks service for CPT 76000 (fluoroscopy) billing")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the CDS Hooks service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=None, help="gunicorn worker processes")
    serve.add_argument("--dev", action="store_true", help="Flask development server")
    serve.set_defaults(func=_serve)
    add_ncci_commands(sub)
    from .batch import add_command as add_batch_command

    add_batch_command(sub)
    _add_ops_commands(sub)
    return parser


def _add_ops_commands(sub) -> None:
    """Operations: `state prune` (retention)."""
    from .state_cli import add_command as add_state_command

    add_state_command(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
