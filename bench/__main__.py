"""``make bench``: run every benchmark and print one JSON object of results."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from bench import bundles, components, loop, runner, state, uploads

SUITES: dict[str, Callable[[], dict[str, Any]]] = {
    "bundles": bundles.run,
    "uploads": uploads.run,
    "runner": runner.run,
    "components": components.run,
    "state": state.run,
    "loop": loop.run,
}


def main(argv: list[str]) -> int:
    chosen = argv or list(SUITES)
    results: dict[str, Any] = {}
    for name in chosen:
        print(f"running {name}…", file=sys.stderr)
        results[name] = SUITES[name]()
        print(json.dumps({name: results[name]}), file=sys.stderr)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
