"""``make load``: the gateway under a real load tool (Locust, headless) on the local stack.

The stack (moto, the API, the runner, the pump) runs in a child process of its own, the serving
process, with the C example (``examples/hello``) published and installed; Locust runs in another.
Figures: for concurrency 4, 16 and 64, each for ``LOAD_SECONDS`` (20 s), requests/s, p50/p99 (ms) and
errors, resets and 5xx among them; then ``LOAD_CALLS`` (20 000) calls at concurrency 16, with the serving
process's resident memory before and after.  The gateway's rate limit and tenant cap are off: this
measures what the platform serves, not what it refuses (the limiter's cost is ``make bench``'s).
Prints one JSON document.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hello"
CALL = "/api/ext/com.example.hello/hello?name=load"


def serve() -> None:
    """The serving process: start the stack, publish and install the example, print where it answers
    (one JSON line), and serve until stdin closes."""
    from chalicelib.bundles.pack import pack_project
    from devstack.stack import LocalStack, StackConfig
    from extctl.api import ApiClient
    from extctl.publish import publish_bundle

    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        work = Path(tmp)
        limits_off = {"EXT_GATEWAY_RATE_LIMIT_PER_MINUTE": "0", "EXT_GATEWAY_TENANT_CONCURRENCY": "0"}
        with LocalStack(StackConfig(cache_dir=work / "cache", settings=limits_off)) as urls:
            bundle = pack_project(EXAMPLE, work / "hello.tar.zst").output
            api = ApiClient(urls.api, urls.token)
            result = publish_bundle(api, bundle).result
            api.post("/installs", {"extension": result["extension"], "version": result["version"]})
            print(json.dumps({"api": urls.api, "token": urls.token}), flush=True)
            sys.stdin.read()


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def _locust(api: str, token: str, users: int, work: Path, *, seconds: int, calls: int = 0) -> dict[str, Any]:
    """One headless Locust run of ``users`` concurrent callers; its figures."""
    env = {**os.environ, "LOAD_PATH": CALL, "LOAD_TOKEN": token, "LOAD_CALLS": str(calls)}
    command = [
        *(sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), "--headless"),
        *("--host", api, "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--stop-timeout", "5"),
        *("--only-summary", "--loglevel", "ERROR"),
    ]
    env["LOAD_REPORT"] = str(report := work / f"run-{users}-{calls}.json")
    with (work / "locust.log").open("ab") as log:
        subprocess.run(command, env=env, check=False, stdout=log, stderr=log)
    return {"concurrency": users, **json.loads(report.read_text())}


def run() -> dict[str, Any]:
    seconds = int(os.environ.get("LOAD_SECONDS", "20"))
    calls = int(os.environ.get("LOAD_CALLS", "20000"))
    log = Path(tempfile.gettempdir()) / "ext-load-stack.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.load", "serve"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sink,
        )
    try:
        assert server.stdout is not None
        where = json.loads(server.stdout.readline())
        with tempfile.TemporaryDirectory(prefix="load-runs-") as tmp:
            work = Path(tmp)
            runs = [_locust(where["api"], where["token"], users, work, seconds=seconds) for users in (4, 16, 64)]
            time.sleep(2)
            before = _rss_mib(server.pid)
            long = _locust(where["api"], where["token"], 16, work, seconds=3600, calls=calls)
            time.sleep(2)
            after = _rss_mib(server.pid)
        return {
            "runs": runs,
            "calls_run": long,
            "serving_rss_mib": {
                "before": round(before, 1),
                "after": round(after, 1),
                "growth": round(after / before - 1, 3),
            },
        }
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        serve()
        return 0
    print(json.dumps(run(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
