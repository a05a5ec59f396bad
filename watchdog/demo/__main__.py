"""``python -m watchdog.demo``: run the reference service standalone."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

from watchdog.demo.faults import Faults
from watchdog.demo.flag import DEFAULT_FLAG_KEY, DEFAULT_POLL_INTERVAL_S, write_flag_file
from watchdog.demo.server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m watchdog.demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--flag",
        type=Path,
        help="flagd flag file deciding the YAML/DB split, read through OpenFeature's flagd provider "
        "(in-process, file); without it every request reads YAML",
    )
    parser.add_argument("--flag-key", default=DEFAULT_FLAG_KEY)
    parser.add_argument(
        "--flag-poll-ms",
        type=int,
        default=round(DEFAULT_POLL_INTERVAL_S * 1000),
        metavar="MS",
        help="how often the flagd provider looks for a changed --flag file (default: %(default)s, its own)",
    )
    parser.add_argument(
        "--init-flag",
        type=float,
        metavar="PERCENT",
        help="create the --flag file at this DB percent if it does not exist yet",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or None,
        help="PostgreSQL DSN for the DB path (default: $DATABASE_URL; else embedded SQLite)",
    )
    parser.add_argument("--sqlite", type=Path, help="SQLite file for the DB path (default: a temporary one)")
    parser.add_argument("--no-rate-limits", action="store_true", help="disable the 10/100 per minute limits")
    parser.add_argument("--db-error-rate", type=float, default=0.0)
    parser.add_argument("--db-latency-ms", type=float, default=0.0)
    parser.add_argument("--discovery-unavailable", action="store_true")
    parser.add_argument("--environment", default="development")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if not 1 <= args.flag_poll_ms <= 60_000:
        parser.error("--flag-poll-ms must be within 1..60000")
    if args.init_flag is not None:
        if args.flag is None:
            parser.error("--init-flag needs --flag")
        if not args.flag.exists():
            try:
                write_flag_file(args.flag, args.init_flag, flag_key=args.flag_key)
            except ValueError as exc:
                parser.error(f"--init-flag: {exc}")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        faults = Faults(
            db_error_rate=args.db_error_rate,
            db_latency_ms=args.db_latency_ms,
            discovery_unavailable=args.discovery_unavailable,
        )
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(
        serve(
            args.host,
            args.port,
            log_level=args.log_level,
            flag_path=args.flag,
            flag_key=args.flag_key,
            flag_poll_interval_s=args.flag_poll_ms / 1000.0,
            database_url=args.database_url,
            sqlite_path=args.sqlite if not args.database_url else None,
            faults=faults,
            rate_limits=not args.no_rate_limits,
            environment=args.environment,
        )
    )


if __name__ == "__main__":
    main()
