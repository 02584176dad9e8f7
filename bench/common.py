"""Shared helpers: timing, child-process peak RSS, and test trees."""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

MiB = 1024 * 1024


def best_of(runs: int, func: Callable[[], object]) -> float:
    """The fastest of ``runs`` timings, in seconds: the least noisy estimate on a shared VM."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def median_of(runs: int, func: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def child_peak_rss_mib(code: str, *args: str) -> tuple[float, dict[str, object]]:
    """Run ``code`` in a fresh interpreter; return its peak RSS and the JSON it printed."""
    # VmHWM belongs to the process image, so unlike ru_maxrss it does not carry the
    # parent's peak across fork + exec.
    wrapper = code + "\nprint('RSS', open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"
    done = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True, check=True)
    lines = done.stdout.strip().splitlines()
    rss_kib = int(lines[-1].split()[1])
    payload: dict[str, object] = json.loads(lines[-2]) if len(lines) > 1 else {}
    return rss_kib / 1024, payload


def make_tree(root: Path, total_bytes: int, *, seed: int = 7) -> Path:
    """A project tree of mixed content: half incompressible, half text-like.

    The compressible half repeats a vocabulary of words, so it compresses about
    as well as JavaScript and JSON assets do.
    """
    rng = random.Random(seed)
    (root / "dist").mkdir(parents=True, exist_ok=True)
    (root / "ui" / "assets").mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(
        json.dumps(
            {
                "name": "com.bench.big",
                "publisher": "Bench",
                "version": "1.0.0",
                "runtime": "wasm-core@1",
                "ui": {"type": "iframe", "entry": "ui/index.html"},
            }
        )
    )
    (root / "ui" / "index.html").write_text("<!doctype html><title>bench</title>")
    words = [f"{rng.choice(['const', 'let', 'function', 'return', 'import'])}_{i}" for i in range(2000)]
    file_size = 8 * MiB
    written, index = 0, 0
    while written < total_bytes:
        size = min(file_size, total_bytes - written)
        if index % 2 == 0:
            data = os.urandom(size)
        else:
            text = " ".join(rng.choice(words) for _ in range(size // 6))
            data = (text.encode() * 2)[:size]
        (root / "ui" / "assets" / f"blob{index:03d}.bin").write_bytes(data)
        written += size
        index += 1
    return root
