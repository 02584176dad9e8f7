"""A 600 MiB decompression bomb is verified in bounded memory (measured in a child process)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from tests.bundle_factory import Entry, files_tar, good_files, raw_header, raw_tar

MiB = 1024 * 1024

CHILD = """
import json, sys
from pathlib import Path
from chalicelib.bundles.verify import verify_file
from chalicelib.config import BundleLimits
from chalicelib.errors import ExtError
limits = BundleLimits(**json.loads(sys.argv[2]))
try:
    result = verify_file(Path(sys.argv[1]), limits)
    outcome = {"ok": True, "unpacked": result.unpacked_size}
except ExtError as exc:
    outcome = {"ok": False, "code": exc.code}
# VmHWM, unlike ru_maxrss, does not carry the parent's peak across fork + exec.
outcome["peak_rss_mib"] = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps(outcome))
"""


def _write_bomb(path: Path, files: int, file_size: int) -> None:
    zeros = b"\0" * MiB
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True)
    with path.open("wb") as out, compressor.stream_writer(out) as writer:
        writer.write(raw_tar(files_tar(good_files()), end=b""))
        for i in range(files):
            writer.write(raw_header(Entry(name=f"ui/zeros{i}.bin", size=file_size)))
            for _ in range(file_size // MiB):
                writer.write(zeros)
        writer.write(b"\0" * 1024)


def _verify_in_child(path: Path, **limits: int) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), json.dumps(limits)], capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.slow
def test_a_600_mib_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.tar.zst"
    _write_bomb(bomb, files=10, file_size=60 * MiB)
    assert bomb.stat().st_size < 1 * MiB
    outcome = _verify_in_child(bomb)
    assert outcome["code"] == "BUNDLE_UNPACKED_TOO_LARGE"
    assert float(outcome["peak_rss_mib"]) < 150  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_600_mib_bundle_within_raised_limits_verifies_in_bounded_memory(tmp_path: Path) -> None:
    bomb = tmp_path / "big.tar.zst"
    _write_bomb(bomb, files=1, file_size=600 * MiB)
    # Zeros compress thousands of times over: the ratio cap is raised with the rest to stream all 600 MiB.
    outcome = _verify_in_child(
        bomb, max_unpacked_bytes=1024 * MiB, max_file_bytes=1024 * MiB, max_compression_ratio=10**9
    )
    assert outcome["ok"] is True and outcome["unpacked"] == 600 * MiB + sum(map(len, good_files().values()))
    assert float(outcome["peak_rss_mib"]) < 150  # type: ignore[arg-type]


def test_the_child_sees_tarfile_agreeing_on_the_bomb_layout(tmp_path: Path) -> None:
    bomb = tmp_path / "small.tar.zst"
    _write_bomb(bomb, files=2, file_size=MiB)
    raw = zstandard.ZstdDecompressor().decompress(bomb.read_bytes(), max_output_size=16 * MiB)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert [m.size for m in tar.getmembers()][-2:] == [MiB, MiB]
    assert _verify_in_child(bomb)["ok"] is True
