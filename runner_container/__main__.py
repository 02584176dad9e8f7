"""``python -m runner_container --host 127.0.0.1 --port P``: the runner in HTTP mode.

Settings come from the environment (``chalicelib.config``); logs are JSON lines on stderr.  Stops cleanly on
SIGINT or SIGTERM.  Exit status 1 with ``error: CODE: message`` when it cannot start.
"""

from __future__ import annotations

import argparse
import sys

from chalicelib.config import load_settings
from chalicelib.errors import ExtError
from runner_container.server import serve
from runner_container.service import configure_process_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runner_container", description="Run the runner in HTTP mode.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port to bind; 0 picks a free one (default 8081)")
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve /v1/execute without RUNNER_AUTH_TOKEN (local development only)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_process_logging(settings.log_level)
        serve(settings, args.host, args.port, insecure_no_auth=args.insecure_no_auth)
    except ExtError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: CANNOT_BIND: {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
