"""`fluoro-cds state ...`: the state database's upkeep (retention). Errors: stderr, exit 2."""
from __future__ import annotations

import argparse
import sys
import time

from .jsonio import dumps


def _prune(args: argparse.Namespace) -> int:
    """Delete audit, cards-shown and feedback rows older than the retention (days), and the
    expired JWT replay entries; prints the rows deleted per table as JSON."""
    from .settings import Settings, SettingsError
    from .state import StateError, StateStore, utc_now

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"fluoro-cds: configuration error: {exc}", file=sys.stderr)
        return 2
    days = settings.state_retention_days if args.days is None else args.days
    if days < 0:
        print("fluoro-cds state prune: --days must not be negative", file=sys.stderr)
        return 2
    try:
        store = StateStore(settings.state_db_path)
        if days == 0:  # keep rows forever: only the expired replay-cache entries go
            deleted = {"audit": 0, "card_shown": 0, "feedback": 0, "jwt_seen": store.purge_jti()}
            cutoff = None
        else:
            cutoff = utc_now(time.time() - days * 86400)
            deleted = store.prune(cutoff)
    except StateError as exc:
        print(f"fluoro-cds: state database error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(dumps({"retention_days": days, "before": cutoff, "deleted": deleted}).decode()
                     + "\n")
    return 0


def add_command(sub) -> None:
    p = sub.add_parser("state", help="state database upkeep (feedback, audit, JWT replay cache)")
    state_sub = p.add_subparsers(dest="state_command", required=True)
    prune = state_sub.add_parser("prune", help="delete rows older than the retention period")
    prune.add_argument("--days", type=int, default=None,
                       help="keep this many days (default FLUORO_CDS_STATE_RETENTION_DAYS; 0 keeps all)")
    prune.set_defaults(func=_prune)
