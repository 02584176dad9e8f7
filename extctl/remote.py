"""The commands that talk to the platform: publish, install and friends."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from chalicelib.errors import UsageError
from extctl.api import ApiClient, dumps, with_retries
from extctl.state import confirm_purge

__all__ = ["add_commands", "add_connection_options"]


def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(args.api, args.token)


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """``--api`` and ``--token``, from the environment by default (else the running ``extctl dev``'s)."""
    parser.add_argument("--api", default=os.environ.get("EXT_API_URL"), help="API base URL (default: $EXT_API_URL)")
    parser.add_argument("--token", default=os.environ.get("EXT_TOKEN"), help="bearer token (default: $EXT_TOKEN)")


_common = add_connection_options


def add_commands(sub: Any) -> None:
    p = sub.add_parser("publish", help="upload, verify and register a bundle (resumable)")
    p.add_argument("bundle", type=Path)
    p.add_argument("--signature", type=Path, help="signature file (default: BUNDLE.sig when it exists)")
    p.add_argument("--install", action="store_true", help="also install the published version in your tenant")
    _common(p)
    p.set_defaults(handler=_publish)

    p = sub.add_parser("install", help="install a version in your tenant (or switch to it)")
    p.add_argument("name")
    p.add_argument("--version", required=True)
    p.add_argument(
        "--config",
        help="the install's config, a JSON object fitting the version's config_schema; @FILE reads a file",
    )
    _common(p)
    p.set_defaults(handler=_install)

    for command, text in (("uninstall", "remove the install"), ("enable", "enable"), ("disable", "disable")):
        p = sub.add_parser(command, help=f"{text} an extension in your tenant")
        p.add_argument("name")
        if command == "uninstall":
            p.add_argument(
                "--purge",
                action="store_true",
                help="also delete the install's KV data and secrets (kept otherwise, for a reinstall)",
            )
            p.add_argument("--yes", action="store_true", help="purge without asking")
        _common(p)
        p.set_defaults(handler=_change, change=command)

    p = sub.add_parser("rollback", help="go back to the previous (or a given) installed version")
    p.add_argument("name")
    p.add_argument("--version", help="a version from the install's history (default: the previous one)")
    _common(p)
    p.set_defaults(handler=_rollback)

    p = sub.add_parser("extensions", help="list the registry's extensions")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(handler=_extensions)

    p = sub.add_parser("installs", help="list your tenant's installs")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(handler=_installs)

    p = sub.add_parser("transfer", help="operators: give an extension name to another owner (audited)")
    p.add_argument("name")
    owner = p.add_mutually_exclusive_group(required=True)
    owner.add_argument("--to-publisher", help="a publisher of the trust bundle (when one is configured)")
    owner.add_argument("--to-tenant", help="a tenant id (when no trust bundle is configured)")
    p.add_argument("--reason", required=True, help="why the name changes hands; kept in the audit log")
    _common(p)
    p.set_defaults(handler=_transfer)

    p = sub.add_parser("audit", help="operators: every change of an extension name's owner")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(handler=_audit)


def _publish(args: argparse.Namespace, out: TextIO) -> None:
    # Imported here: rich and the bundle verifier cost more start-up time than every other command needs.
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    from extctl.publish import publish_bundle

    api = _client(args)
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress("[progress.description]{task.description}", *columns, transient=True, console=None) as bar:
        task = bar.add_task(f"uploading {args.bundle.name}", total=None)

        def on_total(total: int, done: int) -> None:
            bar.update(task, total=total, completed=done)

        published = publish_bundle(
            api,
            args.bundle,
            signature=args.signature,
            progress=lambda n: bar.advance(task, n),
            on_total=on_total,
        )
    if published.resumed:
        print("resumed an interrupted upload", file=sys.stderr)
    result: dict[str, Any] = dict(published.result)
    if args.install:
        body = {"extension": result["extension"], "version": result["version"]}
        result["install"] = with_retries(lambda: api.post("/installs", body))
    print(dumps(result), file=out)


def _install(args: argparse.Namespace, out: TextIO) -> None:
    body: dict[str, Any] = {"extension": args.name, "version": args.version}
    if args.config is not None:
        body["config"] = _config_option(args.config)
    print(dumps(_client(args).post("/installs", body)), file=out)


def _config_option(value: str) -> Any:
    """``--config``'s JSON (``@FILE``: the file's); :class:`UsageError` when it is unreadable or not JSON.

    Whether it is an object that fits the version's schema is the platform's to say.
    """
    source = "--config"
    if value.startswith("@"):
        source = value[1:]
        try:
            value = Path(source).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--config: cannot read {source}: {exc}") from None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise UsageError(f"{source} is not JSON: {exc}") from None


def _change(args: argparse.Namespace, out: TextIO) -> None:
    api = _client(args)
    path = f"/installs/{args.name}"
    if args.change == "uninstall":
        if args.purge and not args.yes:
            confirm_purge(args.name)
        print(dumps(api.delete(path + ("?purge=true" if args.purge else ""))), file=out)
    else:
        print(dumps(api.patch(path, {"enabled": args.change == "enable"})), file=out)


def _rollback(args: argparse.Namespace, out: TextIO) -> None:
    body = {"version": args.version} if args.version else {}
    print(dumps(_client(args).post(f"/installs/{args.name}/rollback", body)), file=out)


def _extensions(args: argparse.Namespace, out: TextIO) -> None:
    extensions = _client(args).get("/extensions")["extensions"]
    if args.json:
        print(dumps(extensions), file=out)
        return
    for ext in extensions:
        mine = " (yours)" if ext.get("owned") else ""
        print(f"{ext['name']}\t{ext.get('latest_version') or '-'}\t{ext['publisher']}{mine}", file=out)


def _installs(args: argparse.Namespace, out: TextIO) -> None:
    installs = _client(args).get("/installs")["installs"]
    if args.json:
        print(dumps(installs), file=out)
        return
    for item in installs:
        state = "enabled" if item["enabled"] else "disabled"
        print(f"{item['extension']}\t{item['version']}\t{state}\t{item['content_hash']}", file=out)


def _transfer(args: argparse.Namespace, out: TextIO) -> None:
    target = {"to_publisher": args.to_publisher} if args.to_publisher else {"to_tenant": args.to_tenant}
    answer = _client(args).post(f"/extensions/{args.name}/transfer", {**target, "reason": args.reason})
    print(dumps(answer), file=out)


def _owner(owner: dict[str, str]) -> str:
    return next(f"{kind} {value}" for kind, value in owner.items())


def _audit(args: argparse.Namespace, out: TextIO) -> None:
    events = _client(args).get(f"/extensions/{args.name}/audit")["events"]
    if args.json:
        print(dumps(events), file=out)
        return
    for event in events:
        actor = f"{event['actor']['sub']}@{event['actor']['tenant']}"
        change = f"{_owner(event['from'])} -> {_owner(event['to'])}"
        print(f"{event['at']}\t{event['action']}\t{actor}\t{change}\t{event['reason']}", file=out)
