"""``extctl dev``: the local stack (:mod:`devstack`) in the foreground, with the example already installed."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from chalicelib.errors import UsageError
from extctl.watch import start_dev_loop

if TYPE_CHECKING:
    from devstack.stack import StackUrls

__all__ = ["SERVER_INSTALL", "add_command", "publish_example"]

SERVER_INSTALL = "pip install 'ext-platform[server]'"
"""What adds the platform's own packages (Chalice, moto, wasmtime…) to a CLI-only install."""
_OWN_PACKAGES = frozenset({"app", "chalicelib", "devstack", "extctl", "runner_container"})


def add_command(sub: Any) -> None:
    p = sub.add_parser("dev", help="run the whole platform locally (moto, API, runner) in the foreground")
    p.add_argument("--port", type=int, default=8700, help="API port; the runner uses PORT+1, moto PORT+2 (0: any)")
    p.add_argument("--trust-bundle", help="trust bundle (path or PEM): signatures fail closed")
    p.add_argument("--key", type=Path, help="key that signs the example extension (needed with --trust-bundle)")
    p.add_argument("--no-example", action="store_true", help="do not publish and install the example")
    p.add_argument(
        "--watch",
        type=Path,
        metavar="DIR",
        help="rebuild, repack, republish (as <version>-dev.<n>) and reinstall DIR on every change",
    )
    p.set_defaults(handler=run_dev)


def publish_example(urls: StackUrls, key: Path | None) -> dict[str, Any]:
    """Pack, optionally sign, publish and install ``examples/hello`` through the API."""
    from chalicelib.bundles.pack import pack_project
    from chalicelib.bundles.signing import load_private_key, sign_content_hash
    from extctl.api import ApiClient
    from extctl.publish import publish_bundle
    from extctl.scaffold import TEMPLATE

    with tempfile.TemporaryDirectory(prefix="ext-example-") as tmp:
        bundle = Path(tmp) / "bundle.tar.zst"
        packed = pack_project(TEMPLATE, bundle)
        if key is not None:
            envelope = sign_content_hash(packed.content_hash, load_private_key(key.read_bytes()))
            (Path(tmp) / "bundle.tar.zst.sig").write_text(envelope.to_json(), "utf-8")
        api = ApiClient(urls.api, urls.token)
        result = publish_bundle(api, bundle).result
        api.post("/installs", {"extension": result["extension"], "version": result["version"]})
        return result


def _require_server_packages() -> None:
    """Import :mod:`devstack.stack`, or raise a usage error naming the install command when the platform's
    own packages are missing (the CLI installs without them)."""
    try:
        import devstack.stack  # noqa: F401 - only whether it imports
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] in _OWN_PACKAGES:
            raise
        raise UsageError(
            f"extctl dev runs the whole platform, which needs packages this install lacks ({exc.name}): "
            f"{SERVER_INSTALL} (in a checkout: make venv)"
        ) from None


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _StopRequested(Exception):
    """SIGINT or SIGTERM arrived while the stack runs."""


def _request_stop(signum: int, frame: FrameType | None) -> None:
    """Stop by raising in the main thread: a handler that takes a lock (``Event.set``) can deadlock when
    the signal lands while the main thread holds that same lock."""
    raise _StopRequested


def run_dev(args: argparse.Namespace, out: TextIO) -> None:
    if args.trust_bundle and not args.key and not args.no_example:
        raise UsageError("with --trust-bundle, pass --key to sign the example (or --no-example)")
    _require_server_packages()
    from devstack.stack import LocalStack, StackConfig

    # The platform's settings a developer exported (egress allow-list, limits…) apply to the stack too.
    stack = LocalStack(StackConfig(port=args.port, trust_bundle=args.trust_bundle, environment=dict(os.environ)))
    previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    stack_exit = ExitStack()
    try:
        urls = stack.start()
        if os.environ.get("EXT_AUTH_SECRET"):
            print("tokens: HS256 with EXT_AUTH_SECRET from the environment", file=sys.stderr)
        if not args.no_example:
            example = publish_example(urls, args.key)
            print(
                f"installed {example['extension']}@{example['version']} ({example['signature_status']}): "
                f"{urls.api}/api/ext/{example['extension']}/hello?name=you",
                file=sys.stderr,
            )
        print(f"EXT_API_URL={urls.api}", file=out)
        print(f"EXT_RUNNER_URL={urls.runner}", file=out)
        print(f"EXT_TOKEN={urls.token}", file=out)
        print(f"EXT_ADMIN_URL={urls.admin}", file=out)
        out.flush()
        loop = start_dev_loop(urls, args.watch, args.key, lambda line: print(line, file=sys.stderr, flush=True))
        stack_exit.callback(loop.stop)
        # Until here Ctrl-C interrupts start-up as usual; from now on it (and SIGTERM) stops the stack.
        for sig in _STOP_SIGNALS:
            signal.signal(sig, _request_stop)
        print("ready; press Ctrl-C to stop", file=sys.stderr)
        while True:
            signal.pause()
    except _StopRequested:
        pass
    finally:
        # A second Ctrl-C while stopping interrupts the stop, as usual.
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("stopping…", file=sys.stderr)
        stack_exit.close()
        stack.stop()
