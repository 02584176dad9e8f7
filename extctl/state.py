"""``extctl kv`` and ``extctl secrets``: an install's state, for its tenant's admins, over HTTP.

Secret values are read from stdin or a prompt that does not echo (or ``--value-file``), never from the
command line unless ``--value`` is given explicitly: a command line is visible to other users of the
machine and lands in shell history.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import os
import sys
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlencode

from chalicelib.errors import UsageError
from extctl.api import ApiClient, dumps

__all__ = ["add_commands", "confirm_purge"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", default=os.environ.get("EXT_API_URL"), help="API base URL (default: $EXT_API_URL)")
    parser.add_argument("--token", default=os.environ.get("EXT_TOKEN"), help="bearer token (default: $EXT_TOKEN)")


def _install_path(name: str, *rest: str, **query: Any) -> str:
    path = "/installs/" + "/".join(quote(part, safe="") for part in (name, *rest))
    given = {key: value for key, value in query.items() if value is not None}
    return path + ("?" + urlencode(given) if given else "")


def add_commands(sub: Any) -> None:
    kv = sub.add_parser("kv", help="read and write an install's key-value data (admins of your tenant)")
    kv_sub = kv.add_subparsers(dest="kv_command", required=True, metavar="COMMAND")

    p = kv_sub.add_parser("get", help="print a key's value")
    p.add_argument("name", help="the installed extension")
    p.add_argument("key")
    p.add_argument("--json", action="store_true", help="print {key, value_b64, revision}")
    _common(p)
    p.set_defaults(handler=_kv_get)

    p = kv_sub.add_parser("set", help="store a value under a key")
    p.add_argument("name", help="the installed extension")
    p.add_argument("key")
    p.add_argument("value", nargs="?", help="the value as text (default: read from stdin)")
    p.add_argument("--value-file", type=Path, help="read the value's bytes from this file")
    p.add_argument("--if-revision", type=int, help="write only over this revision (0: only a new key)")
    _common(p)
    p.set_defaults(handler=_kv_set)

    p = kv_sub.add_parser("list", help="list keys in order, every page")
    p.add_argument("name", help="the installed extension")
    p.add_argument("--prefix", default="", help="only keys starting with this")
    p.add_argument("--json", action="store_true", help="print {keys, usage}")
    _common(p)
    p.set_defaults(handler=_kv_list)

    p = kv_sub.add_parser("delete", help="delete a key")
    p.add_argument("name", help="the installed extension")
    p.add_argument("key")
    _common(p)
    p.set_defaults(handler=_kv_delete)

    secrets = sub.add_parser("secrets", help="set, list and delete an install's secrets (write-only values)")
    secrets_sub = secrets.add_subparsers(dest="secrets_command", required=True, metavar="COMMAND")

    p = secrets_sub.add_parser("set", help="set a declared secret: the value comes from stdin or a prompt")
    p.add_argument("name", help="the installed extension")
    p.add_argument("secret", help="a name the installed version declares, such as API_KEY")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--value-file", type=Path, help="read the value from this file (one trailing newline dropped)")
    source.add_argument("--value", help="the value itself (visible to other users and in shell history: prefer stdin)")
    _common(p)
    p.set_defaults(handler=_secrets_set)

    p = secrets_sub.add_parser("list", help="the declared secrets and whether each is set (never values)")
    p.add_argument("name", help="the installed extension")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(handler=_secrets_list)

    p = secrets_sub.add_parser("delete", help="delete a stored secret")
    p.add_argument("name", help="the installed extension")
    p.add_argument("secret")
    _common(p)
    p.set_defaults(handler=_secrets_delete)


# --- KV ---------------------------------------------------------------------------------------------


def _kv_get(args: argparse.Namespace, out: TextIO) -> None:
    answer = ApiClient(args.api, args.token).get(_install_path(args.name, "kv", "entry", key=args.key))
    if args.json:
        print(dumps(answer), file=out)
        return
    value = base64.b64decode(answer["value_b64"])
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"the value ({len(value)} bytes) is not UTF-8 text: use --json for its base64") from None
    out.write(text)
    if text and not text.endswith("\n") and out.isatty():
        out.write("\n")


def _kv_set(args: argparse.Namespace, out: TextIO) -> None:
    if args.value is not None and args.value_file is not None:
        raise UsageError("give the value or --value-file, not both")
    if args.value_file is not None:
        body: dict[str, Any] = {"value_b64": base64.b64encode(args.value_file.read_bytes()).decode("ascii")}
    elif args.value is not None:
        body = {"value": args.value}
    else:
        body = {"value_b64": base64.b64encode(sys.stdin.buffer.read()).decode("ascii")}
    body["key"] = args.key
    if args.if_revision is not None:
        body["if_revision"] = args.if_revision
    answer = ApiClient(args.api, args.token).request("PUT", _install_path(args.name, "kv", "entry"), body)
    print(f"revision {answer['revision']}", file=out)


def _kv_list(args: argparse.Namespace, out: TextIO) -> None:
    api = ApiClient(args.api, args.token)
    keys: list[str] = []
    cursor: str | None = None
    while True:
        page = api.get(_install_path(args.name, "kv", prefix=args.prefix or None, cursor=cursor))
        keys += page["keys"]
        cursor = page["cursor"]
        if cursor is None:
            break
    if args.json:
        print(dumps({"keys": keys, "usage": page["usage"]}), file=out)
        return
    for key in keys:
        print(key, file=out)
    usage = page["usage"]
    print(f"{len(keys)} keys listed; the install stores {usage['keys']} keys, {usage['bytes']} bytes", file=sys.stderr)


def _kv_delete(args: argparse.Namespace, out: TextIO) -> None:
    ApiClient(args.api, args.token).delete(_install_path(args.name, "kv", "entry", key=args.key))
    print(f"deleted {args.key}", file=out)


# --- secrets ------------------------------------------------------------------------------------------


def _secret_value(args: argparse.Namespace) -> str:
    """The value from ``--value``, ``--value-file``, a prompt without echo (a terminal) or stdin (a pipe)."""
    if args.value is not None:
        print("warning: --value puts the secret in your shell history; prefer stdin or a prompt", file=sys.stderr)
        return str(args.value)
    text: str
    if args.value_file is not None:
        text = Path(args.value_file).read_text("utf-8")
    elif sys.stdin.isatty():
        text = getpass.getpass(f"value of {args.secret} (not shown): ")
    else:
        text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text


def _secrets_set(args: argparse.Namespace, out: TextIO) -> None:
    value = _secret_value(args)
    if not value:
        raise UsageError("the value is empty: nothing was stored")
    path = _install_path(args.name, "secrets", args.secret)
    answer = ApiClient(args.api, args.token).request("PUT", path, {"value": value})
    print(f"set {answer['name']} for {args.name} at {answer['updated_at']}", file=out)


def _secrets_list(args: argparse.Namespace, out: TextIO) -> None:
    listed = ApiClient(args.api, args.token).get(_install_path(args.name, "secrets"))["secrets"]
    if args.json:
        print(dumps(listed), file=out)
        return
    for secret in listed:
        if not secret["declared"]:
            state = "set, no longer declared"
        elif secret["missing"]:
            state = "MISSING (required)"
        else:
            state = ("set" if secret["set"] else "not set") + (", required" if secret["required"] else "")
        print(f"{secret['name']}\t{state}\t{secret['updated_at'] or '-'}", file=out)


def _secrets_delete(args: argparse.Namespace, out: TextIO) -> None:
    answer = ApiClient(args.api, args.token).delete(_install_path(args.name, "secrets", args.secret))
    print(f"deleted {answer['name']} of {args.name}", file=out)


# --- uninstall --purge -----------------------------------------------------------------------------------


def confirm_purge(name: str) -> None:
    """Ask before ``uninstall --purge`` deletes data for good; :class:`UsageError` unless the answer is yes."""
    if not sys.stdin.isatty():
        raise UsageError("--purge deletes the install's KV data and secrets for good: add --yes to confirm")
    print(f"This uninstalls {name} and deletes its KV data and secrets for good.", file=sys.stderr)
    print("(A plain `extctl uninstall` keeps them for a reinstall.)", file=sys.stderr)
    if input(f"Type the extension name ({name}) to confirm: ").strip() != name:
        raise UsageError("not confirmed: nothing was changed")
