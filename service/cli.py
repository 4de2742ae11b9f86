"""The `fluoro-cds` command line: serve, ncci ..., batch. Bad usage exits with code 2; every
--help shows the defaults; a closed stdout (``| head``) ends the command quietly with code 141,
as a command killed by SIGPIPE."""
from __future__ import annotations

import argparse
import os
import sys

from nccidata.cli import Parser
from nccidata.cli import add_commands as add_ncci_commands

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command ended by a closed pipe


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
    from .app import MAX_BODY_BYTES
    from .front import FrontSettings
    from .gunicorn_app import run_gunicorn

    front = None if args.direct else FrontSettings(
        header_timeout=settings.client_header_timeout, body_timeout=settings.client_body_timeout,
        max_body=MAX_BODY_BYTES)
    return run_gunicorn(host=args.host, port=args.port, workers=args.workers, front=front)


def version() -> str:
    """The installed distribution's version (pyproject.toml)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("fluoro-cds")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fluoro-cds",
                    description="CDS Hooks service for CPT 76000 (fluoroscopy) billing")
    parser.add_argument("--version", action="version", version=f"fluoro-cds {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the CDS Hooks service")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="TCP port")
    serve.add_argument("--workers", type=int, default=None,
                       help="gunicorn worker processes (default: deploy/gunicorn.conf.py's)")
    serve.add_argument("--dev", action="store_true", help="Flask development server")
    serve.add_argument("--direct", action="store_true",
                       help="gunicorn alone, without the nginx front (only behind another reverse "
                            "proxy that bounds slow clients)")
    serve.set_defaults(func=_serve)
    add_ncci_commands(sub)
    from .batch import add_command as add_batch_command

    add_batch_command(sub)
    from .sample_data import add_command as add_sample_data_command

    add_sample_data_command(sub)
    _add_ops_commands(sub)
    return parser


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor
        pass


def _add_ops_commands(sub) -> None:
    """Operations: `state prune` (retention), `report feedback`."""
    from .report import add_command as add_report_command
    from .state_cli import add_command as add_state_command

    add_state_command(sub)
    add_report_command(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)  # --help and --version print and exit here
            code = int(args.func(args) or 0)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`| head`): stop, no traceback
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
