"""``extctl``: the developer CLI, a shell over the library.

It parses arguments, calls one library function per command, prints, and exits
in one place: errors print ``error: CODE: message`` on stderr and exit 1; usage
errors exit 2 (argparse).  Nothing below ``main`` prints or exits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from chalicelib.errors import ExtError, Internal

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace, TextIO], "int | None"]
"""A command: prints its result to the stream; returns its exit status (None: 0) or raises ``ExtError``."""


def _add_keygen(sub: Any) -> None:
    p = sub.add_parser("keygen", help="create an Ed25519 signing key pair")
    p.add_argument("--out", type=Path, default=Path("."), help="directory for the key files (default: .)")
    p.add_argument("--name", default="signing", help="base name of the key files (default: signing)")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    p.set_defaults(handler=_keygen)


def _add_init(sub: Any) -> None:
    p = sub.add_parser("init", help="create a working example extension project")
    p.add_argument("name", help="extension name, a reverse-domain id such as com.acme.hello")
    p.add_argument("--dir", type=Path, help="project directory (default: the last part of NAME)")
    p.add_argument(
        "--lang",
        choices=("c", "python", "js"),
        default="c",
        help="guest language (default: c; python and js make wasm-component@1 projects)",
    )
    p.set_defaults(handler=_init)


def _add_build(sub: Any) -> None:
    p = sub.add_parser("build", help="compile the guest from src/ into the manifest's entry")
    p.add_argument("dir", nargs="?", type=Path, default=Path("."), help="project directory (default: .)")
    p.set_defaults(handler=_build)


def _add_pack(sub: Any) -> None:
    p = sub.add_parser("pack", help="pack the project into a reproducible bundle.tar.zst")
    p.add_argument("dir", nargs="?", type=Path, default=Path("."), help="project directory (default: .)")
    p.add_argument("-o", "--output", type=Path, help="output file (default: DIR/bundle.tar.zst)")
    p.set_defaults(handler=_pack)


def _add_sign(sub: Any) -> None:
    p = sub.add_parser("sign", help="sign a bundle, writing BUNDLE.sig")
    p.add_argument("bundle", type=Path)
    p.add_argument("--key", type=Path, required=True, help="private key (PEM, Ed25519 or ECDSA P-256)")
    p.add_argument("-o", "--output", type=Path, help="signature file (default: BUNDLE.sig)")
    p.set_defaults(handler=_sign)


def _add_verify(sub: Any) -> None:
    p = sub.add_parser("verify", help="run every check finalize runs, offline")
    p.add_argument("bundle", type=Path)
    p.add_argument("--signature", type=Path, help="signature file (default: BUNDLE.sig when it exists)")
    p.add_argument(
        "--trust-bundle",
        help="trust bundle (path or inline PEM; default: $SIGNING_TRUST_BUNDLE). Set: signatures fail closed",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_verify)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="extctl",
        description="Build, pack, sign, verify and publish WebAssembly extensions.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_keygen, _add_init, _add_build, _add_pack, _add_sign, _add_verify):
        add(sub)
    from extctl import calls, dev, remote, state

    remote.add_commands(sub)
    state.add_commands(sub)
    calls.add_commands(sub, remote.add_connection_options)
    dev.add_command(sub)
    return parser


# --- handlers ----------------------------------------------------------------------------


def _keygen(args: argparse.Namespace, out: TextIO) -> None:
    from extctl.keys import write_keypair

    pair = write_keypair(args.out, args.name, force=args.force)
    print(f"private key: {pair.private_path} (keep it secret)", file=out)
    print(f"public key:  {pair.public_path}", file=out)
    print(pair.key_id, file=out)


def _init(args: argparse.Namespace, out: TextIO) -> None:
    from extctl.scaffold import init_project

    project = init_project(args.name, args.dir, args.lang)
    print(f"created {project.directory} ({project.name})", file=out)
    if args.lang == "c":
        print(f"next: extctl pack {project.directory} && extctl verify {project.directory}/bundle.tar.zst", file=out)
    else:
        setup = f"(cd {project.directory} && npm install) && " if args.lang == "js" else ""
        print(f"next: {setup}extctl build {project.directory} && extctl pack {project.directory}", file=out)


def _build(args: argparse.Namespace, out: TextIO) -> None:
    from extctl.build import build_project

    result = build_project(args.dir)
    print(f"built {result.output} ({result.size} bytes, sha256:{result.sha256})", file=out)


def _pack(args: argparse.Namespace, out: TextIO) -> None:
    from chalicelib.bundles.pack import pack_project
    from chalicelib.config import load_settings

    output = args.output or args.dir / "bundle.tar.zst"
    result = pack_project(args.dir, output, limits=load_settings().bundle_limits)
    manifest = result.bundle.manifest
    print(f"packed {manifest.name}@{manifest.version}: {len(result.bundle.files)} files, {result.size} bytes", file=out)
    print(f"wrote {result.output}", file=out)
    print(result.content_hash, file=out)


def _sign(args: argparse.Namespace, out: TextIO) -> None:
    from extctl.keys import sign_bundle_file

    signed = sign_bundle_file(args.bundle, args.key, args.output)
    print(f"signed {signed.content_hash} with {signed.key_id}", file=out)
    print(f"wrote {signed.path}", file=out)


def _verify(args: argparse.Namespace, out: TextIO) -> None:
    from extctl.checks import verify_offline

    trust = args.trust_bundle if args.trust_bundle is not None else os.environ.get("SIGNING_TRUST_BUNDLE", "")
    try:
        report = verify_offline(args.bundle, signature=args.signature, trust_bundle=trust or None)
    except ExtError as exc:
        if args.json:
            print(json.dumps({"valid": False, "error": exc.to_dict()["error"]}, indent=2), file=out)
        raise
    if args.json:
        print(json.dumps(report, indent=2), file=out)
        return
    print(f"valid: {report['manifest']['name']}@{report['manifest']['version']}", file=out)
    print(f"content hash: {report['content_hash']}", file=out)
    print(f"size: {report['size']} bytes ({report['unpacked_size']} unpacked, {len(report['files'])} files)", file=out)
    signature = report["signature"]
    key = f" by {signature['key_id']}" if signature.get("key_id") else ""
    print(f"signature: {signature['status']}{key}", file=out)


# --- the one place that prints errors and exits ----------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        status = handler(args, sys.stdout)
    except ExtError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: INTERRUPTED: stopped by the user", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"error: IO_ERROR: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except Exception as exc:
        if os.environ.get("EXTCTL_DEBUG"):
            raise
        error = Internal(f"{type(exc).__name__}: {exc} (set EXTCTL_DEBUG=1 for a traceback)")
        print(f"error: {error.code}: {error.message}", file=sys.stderr)
        return 1
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
