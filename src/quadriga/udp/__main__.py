"""`python -m quadriga.udp --config <udp.json> --socket <status socket> --pid-file <pid file>`: an engine's UDP
proxy (`quadriga.udp.proxy`), run by the agent in the engine's network namespace."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from quadriga.udp.proxy import ConfigError, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quadriga.udp", description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--pid-file", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(serve(args.config, args.socket, args.pid_file))
    except ConfigError as exc:
        logging.getLogger("quadriga.udp").error("event=exit error=%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
