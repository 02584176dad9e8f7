"""Bundle benchmarks: verify against its floor, verify memory, pack speed."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import zstandard

from bench.common import MiB, best_of, child_peak_rss_mib, make_tree
from chalicelib.bundles.pack import PACK_LEVEL, collect_members, pack_project, write_bundle
from chalicelib.bundles.verify import verify_file

VERIFY_CHILD = """
import json, sys
from pathlib import Path
from chalicelib.bundles.verify import verify_file
result = verify_file(Path(sys.argv[1]))
print(json.dumps({"files": len(result.files)}))
"""


def _floor(path: Path) -> None:
    """What any verifier must do at least: hash the compressed bytes and decompress them."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MiB):
            digest.update(chunk)
    with path.open("rb") as handle, zstandard.ZstdDecompressor().stream_reader(handle) as reader:
        while reader.read(MiB):
            pass


def _tree_bundle(work: Path, unpacked_mib: int, name: str) -> tuple[Path, Path, float]:
    tree = make_tree(work / f"tree-{name}", unpacked_mib * MiB)
    out = work / f"{name}.tar.zst"
    pack_seconds = best_of(1, lambda: pack_project(tree, out))
    return tree, out, pack_seconds


def _level_table(tree: Path, work: Path) -> dict[str, dict[str, float]]:
    members = collect_members(tree)
    table = {}
    unpacked = sum(m.source.stat().st_size for m in members if m.source is not None)
    for level in (3, PACK_LEVEL, 19):
        out = work / f"level{level}.tar.zst"

        def pack(level: int = level, out: Path = out) -> None:
            with out.open("wb") as handle:
                write_bundle(members, handle, level=level)

        seconds = best_of(1, pack)
        table[str(level)] = {
            "mib_per_s": round(unpacked / MiB / seconds, 1),
            "ratio": round(unpacked / out.stat().st_size, 3),
        }
    return table


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-bundles-") as tmp:
        work = Path(tmp)
        tree, bundle100, pack_seconds = _tree_bundle(work, 150, "b100")
        compressed = bundle100.stat().st_size
        floor = best_of(3, lambda: _floor(bundle100))
        verify = best_of(3, lambda: verify_file(bundle100))
        unpacked = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file())
        small_tree = make_tree(work / "levels", 24 * MiB, seed=3)
        levels = _level_table(small_tree, work)
        _, bundle200, _ = _tree_bundle(work, 300, "b200")
        rss, _ = child_peak_rss_mib(VERIFY_CHILD, str(bundle200))
        return {
            "verify_vs_floor": round(verify / floor, 3),
            "verify_seconds": round(verify, 3),
            "verify_floor_seconds": round(floor, 3),
            "verify_bundle_mib": round(compressed / MiB, 1),
            "verify_peak_rss_mib": round(rss, 1),
            "verify_rss_bundle_mib": round(bundle200.stat().st_size / MiB, 1),
            "pack_mib_per_s": round(unpacked / MiB / pack_seconds, 1),
            "pack_level": PACK_LEVEL,
            "pack_levels_24mib_tree": levels,
        }
