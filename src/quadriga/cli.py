"""The `quadriga` command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from quadriga import config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quadriga", description="Load balancing as a service (Octavia v2 API).")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the APIs and the controller in one process (the embedded shape)")
    serve.add_argument("--config", type=Path, help="TOML config file")
    serve.add_argument("--state-dir", type=Path, help="where the database and generated files live")
    serve.add_argument("--host", help="address both APIs listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="load-balancer API port (default 9876)")
    serve.add_argument("--network-port", type=int, help="networking API port (default 9696)")
    serve.add_argument(
        "--database-url", help="e.g. postgresql://user:pw@127.0.0.1/quadriga (default: SQLite in the state dir)"
    )
    serve.add_argument("--auth-strategy", choices=["noauth", "header"], help="default noauth")
    serve.add_argument("--default-project", help="project for noauth requests that name none (default demo)")
    serve.add_argument("--provider", help="default provider (default noop)")
    serve.add_argument("--provider-delay", type=float, help="seconds the noop provider takes per change (default 0)")
    serve.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    return parser


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # per-plugin chatter at every start


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _logging(args.log_level)
    if args.command == "serve":
        from quadriga.server import serve

        overrides = {k: v for k, v in vars(args).items() if k not in ("command", "config", "log_level")}
        try:
            settings = config.load(args.config, overrides)
        except config.ConfigError as exc:
            print(f"quadriga: {exc}", file=sys.stderr)
            return 2
        serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
