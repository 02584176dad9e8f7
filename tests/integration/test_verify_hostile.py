"""Every category of hostile bundle from DESIGN §4, each rejected with its exact code."""

from __future__ import annotations

import io
import json
import tarfile
import unicodedata

import pytest
import zstandard

from chalicelib.bundles.verify import verify_bundle
from chalicelib.config import BundleLimits
from chalicelib.errors import ExtError
from tests.bundle_factory import (
    Entry,
    bundle,
    files_tar,
    good_files,
    manifest_bytes,
    raw_header,
    raw_tar,
    std_tar,
    wasm,
    zero_filled_bundle,
    zst,
)

MiB = 1024 * 1024


def rejects(data: bytes, code: str, match: str = "", limits: BundleLimits | None = None, **kwargs: object) -> ExtError:
    with pytest.raises(ExtError) as caught:
        verify_bundle(io.BytesIO(data), limits, **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == code, f"{caught.value.code}: {caught.value.message}"
    assert match in caught.value.message
    return caught.value


def with_extra(*entries: Entry) -> bytes:
    return zst(raw_tar([*files_tar(good_files()), *entries]))


def test_a_good_bundle_passes() -> None:
    result = verify_bundle(io.BytesIO(bundle()))
    assert result.manifest.name == "com.acme.tools"
    assert {f.path for f in result.files} == {"manifest.json", "dist/main.wasm", "ui/index.html"}


# --- traversal in all its spellings ------------------------------------------------------

TRAVERSALS = [
    "../evil",
    "a/../../evil",
    "ui/../../evil",
    "./../evil",
    "/etc/passwd",
    "//etc/passwd",
    "a//b",
    "a/./b",
    ".",
    "ui\\..\\evil",
    "C:\\evil",
    "a\nb",
    "a\x1bb",
    "a\x7fb",
    "ui/\u202eevil.html",
    "ui/\u200fx",
]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_unsafe_member_paths_are_refused(name: str) -> None:
    rejects(with_extra(Entry(name=name, data=b"x")), "BUNDLE_UNSAFE_PATH")


def test_pax_path_cannot_smuggle_traversal_past_a_benign_name() -> None:
    rejects(with_extra(Entry(name="ui/ok.txt", data=b"x", pax={"path": "../../evil"})), "BUNDLE_UNSAFE_PATH")


def test_gnu_long_name_cannot_smuggle_traversal() -> None:
    long_name = b"../" * 40 + b"evil\0"
    entries = [Entry(name="././@LongLink", data=long_name, typeflag=b"L"), Entry(name="ui/ok.txt", data=b"x")]
    rejects(with_extra(*entries), "BUNDLE_UNSAFE_PATH")


def test_ustar_prefix_cannot_smuggle_traversal() -> None:
    header = bytearray(raw_header(Entry(name="evil", data=b"x")))
    header[345:347] = b".."
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    data = raw_tar(files_tar(good_files()), end=b"")
    tar = data + bytes(header) + b"x".ljust(512, b"\0") + b"\0" * 1024
    rejects(zst(tar), "BUNDLE_UNSAFE_PATH")


def test_non_utf8_names_are_refused() -> None:
    rejects(with_extra(Entry(name=b"ui/\xff.txt", data=b"x")), "BUNDLE_UNSAFE_PATH", "UTF-8")


def test_too_deep_and_too_long_paths_are_refused() -> None:
    rejects(with_extra(Entry(name="/".join(["d"] * 17), data=b"x")), "BUNDLE_UNSAFE_PATH", "levels deep")
    rejects(with_extra(Entry(name="ui/x", data=b"x", pax={"path": "ui/" + "x" * 240})), "BUNDLE_UNSAFE_PATH", "bytes")


# --- links and special files ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("typeflag", "what"),
    [
        (b"1", "hard link"),
        (b"2", "symbolic link"),
        (b"3", "character device"),
        (b"4", "block device"),
        (b"6", "FIFO"),
        (b"S", "sparse"),
        (b"V", "volume"),
        (b"Z", "unsupported tar entry type"),
    ],
)
def test_links_and_special_files_are_refused(typeflag: bytes, what: str) -> None:
    entry = Entry(name="ui/link", typeflag=typeflag, linkname=b"/etc/passwd")
    rejects(with_extra(entry), "BUNDLE_UNSUPPORTED_ENTRY", what)


def test_a_symlink_written_by_tarfile_is_refused() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in good_files().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("ui/passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    rejects(zst(buf.getvalue()), "BUNDLE_UNSUPPORTED_ENTRY", "symbolic link")


# --- duplicates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("ui/a.js", "ui/a.js"),
        ("ui/a.js", "./ui/a.js"),
        ("ui/a.js", "UI/A.JS"),
        (unicodedata.normalize("NFC", "ui/é.js"), unicodedata.normalize("NFD", "ui/é.js")),
        ("ui/a", "ui/a/b.js"),
    ],
)
def test_duplicates_after_normalization_are_refused(first: str, second: str) -> None:
    rejects(with_extra(Entry(name=first, data=b"1"), Entry(name=second, data=b"2")), "BUNDLE_DUPLICATE_ENTRY")


def test_a_file_and_a_directory_of_the_same_name_are_refused() -> None:
    rejects(with_extra(Entry(name="ui/a", data=b"1"), Entry(name="ui/a/", typeflag=b"5")), "BUNDLE_DUPLICATE_ENTRY")


def test_manifest_twice_is_refused() -> None:
    rejects(with_extra(Entry(name="manifest.json", data=manifest_bytes(version="9.9.9"))), "BUNDLE_DUPLICATE_ENTRY")


# --- bombs -------------------------------------------------------------------------------------


def test_a_huge_declared_file_is_refused_before_its_data_is_read() -> None:
    entry = Entry(name="ui/bomb.bin", size=600 * MiB)
    tar = raw_tar(files_tar(good_files()), end=b"") + raw_header(entry)
    rejects(zst(tar), "BUNDLE_UNPACKED_TOO_LARGE", "per file")


def test_total_unpacked_size_is_capped_before_the_data_is_read() -> None:
    limits = BundleLimits(max_unpacked_bytes=64 * 1024, max_file_bytes=64 * 1024)
    entries = [Entry(name=f"ui/z{i}.bin", data=b"\0" * 30_000) for i in range(3)]
    rejects(with_extra(*entries), "BUNDLE_UNPACKED_TOO_LARGE", "unpacks to more than", limits=limits)


def test_a_high_ratio_bomb_is_refused_by_the_unpacked_limit() -> None:
    limits = BundleLimits(max_unpacked_bytes=8 * MiB, max_file_bytes=8 * MiB)
    data = with_extra(*[Entry(name=f"ui/z{i}.bin", data=b"\0" * (3 * MiB)) for i in range(4)])
    assert len(data) < 64 * 1024
    rejects(data, "BUNDLE_UNPACKED_TOO_LARGE", limits=limits)


def test_too_many_entries_are_refused() -> None:
    entries = [Entry(name=f"ui/f{i}", data=b"") for i in range(5001)]
    rejects(with_extra(*entries), "BUNDLE_TOO_MANY_ENTRIES")


def test_zero_padding_after_the_end_marker_is_bounded() -> None:
    tar = raw_tar(files_tar(good_files())) + b"\0" * (2 * MiB)
    rejects(zst(tar), "BUNDLE_CORRUPT", "after the end-of-archive")


def test_a_compressed_bundle_over_the_cap_is_refused() -> None:
    rejects(bundle(), "BUNDLE_TOO_LARGE", limits=BundleLimits(max_compressed_bytes=100))


# --- zstd framing --------------------------------------------------------------------------------


def test_a_window_larger_than_the_limit_is_refused_without_decoding() -> None:
    # Frame header: magic, descriptor (no single segment, no checksum), window descriptor 2^26.
    header = b"\x28\xb5\x2f\xfd" + b"\x00" + bytes([(26 - 10) << 3])
    rejects(header + b"\xff" * 64, "BUNDLE_TOO_LARGE", "window")


def test_a_real_long_window_frame_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=26, write_checksum=True)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(out, closefd=False) as writer:
        writer.write(raw_tar(files_tar(good_files())))
    rejects(out.getvalue(), "BUNDLE_TOO_LARGE", "window")


def test_trailing_data_after_the_frame_is_refused() -> None:
    rejects(bundle() + b"junk", "BUNDLE_CORRUPT", "trailing data")


def test_concatenated_frames_are_refused() -> None:
    rejects(bundle() + zst(b"\0" * 1024), "BUNDLE_CORRUPT", "second zstd frame")


def test_a_skippable_frame_is_refused() -> None:
    rejects(b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"abcd" + bundle(), "BUNDLE_CORRUPT", "skippable")


def test_data_that_is_not_zstd_is_refused() -> None:
    rejects(b"\x1f\x8b\x08\x00" + b"\0" * 100, "BUNDLE_CORRUPT", "not a zstd")
    rejects(b"", "BUNDLE_CORRUPT")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_bundles_are_refused(keep: float) -> None:
    data = bundle()
    rejects(data[: int(len(data) * keep)], "BUNDLE_CORRUPT")


def test_flipped_bytes_in_the_compressed_data_are_refused() -> None:
    data = bytearray(bundle({**good_files(), "ui/big.txt": bytes(range(256)) * 400}))
    data[len(data) // 2] ^= 0xFF
    rejects(bytes(data), "BUNDLE_CORRUPT")


# --- tar structure that tarfile tolerates -------------------------------------------------------


def test_a_bad_header_after_the_first_member_is_refused() -> None:
    first = raw_tar(files_tar(good_files()), end=b"")
    bad = raw_header(Entry(name="ui/x.js", data=b"x"), checksum_delta=1) + b"x".ljust(512, b"\0")
    rejects(zst(first + bad + b"\0" * 1024), "BUNDLE_CORRUPT", "checksum")
    # tarfile itself stops silently at that header:
    with tarfile.open(fileobj=io.BytesIO(first + bad + b"\0" * 1024), mode="r|") as tar:
        assert "ui/x.js" not in [m.name for m in tar]


def test_an_archive_without_end_blocks_is_refused() -> None:
    rejects(zst(raw_tar(files_tar(good_files()), end=b"")), "BUNDLE_CORRUPT", "truncated")


def test_an_archive_with_a_single_end_block_is_refused() -> None:
    rejects(zst(raw_tar(files_tar(good_files()), end=b"\0" * 512)), "BUNDLE_CORRUPT")


def test_data_after_the_end_marker_is_refused() -> None:
    hidden = raw_header(Entry(name="ui/hidden.js", data=b"x")) + b"x".ljust(512, b"\0")
    rejects(zst(raw_tar(files_tar(good_files())) + hidden), "BUNDLE_CORRUPT", "end-of-archive")


def test_a_v7_header_is_refused() -> None:
    rejects(with_extra(Entry(name="ui/old.txt", data=b"x", magic=b"\0" * 8)), "BUNDLE_CORRUPT", "ustar")


def test_a_non_octal_size_is_refused() -> None:
    header = bytearray(raw_header(Entry(name="ui/x", data=b"")))
    header[124:136] = b"12abc\0\0\0\0\0\0\0"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    rejects(zst(raw_tar(files_tar(good_files()), end=b"") + bytes(header) + b"\0" * 1024), "BUNDLE_CORRUPT", "octal")


def test_a_malformed_pax_record_is_refused() -> None:
    pax = b"999 path=ui/x\n"
    tar = raw_tar(files_tar(good_files()), end=b"")
    tar += raw_header(Entry(name="PaxHeader", data=pax, typeflag=b"x")) + pax.ljust(512, b"\0")
    tar += raw_header(Entry(name="ui/x", data=b"")) + b"\0" * 1024
    rejects(zst(tar), "BUNDLE_CORRUPT", "pax")


def test_pax_size_override_is_honoured_so_members_cannot_hide() -> None:
    # The pax header says the member is 1024 bytes, so the "header" inside its data is data.
    inner = raw_header(Entry(name="../evil", data=b""))
    entry = Entry(name="ui/blob.bin", data=inner + b"\0" * 512, size=0, pax={"size": "1024"})
    result = verify_bundle(io.BytesIO(with_extra(entry)))
    assert result.file("ui/blob.bin") is not None
    assert result.file("ui/blob.bin").size == 1024  # type: ignore[union-attr]


# --- manifest attacks ---------------------------------------------------------------------------


def with_manifest(raw: bytes) -> bytes:
    return bundle({**good_files(), "manifest.json": raw})


def test_a_bundle_without_manifest_is_refused() -> None:
    files = good_files()
    del files["manifest.json"]
    rejects(bundle(files), "MANIFEST_MISSING")


def test_a_manifest_in_a_subfolder_does_not_count() -> None:
    files = good_files()
    files["nested/manifest.json"] = files.pop("manifest.json")
    rejects(bundle(files), "MANIFEST_MISSING")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b'{"name": "com.a.b", "name": "com.a.c"}', "duplicate key"),
        (b'{"name": "\xff"}', "UTF-8"),
        (b"\xef\xbb\xbf{}", "byte order mark"),
        (b"[" * 5000 + b"]" * 5000, "nests deeper"),
        (b'{"limits": {"timeout_ms": NaN}}', "NaN"),
        (b'{"x": 1e999}', "out of range"),
        (b"{", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"x": ' + b"1" * 5000 + b"}", "not valid JSON"),
    ],
)
def test_ambiguous_or_malformed_json_is_refused(raw: bytes, match: str) -> None:
    rejects(with_manifest(raw), "MANIFEST_INVALID", match)


def test_an_oversize_manifest_is_refused_before_reading_it() -> None:
    doc = json.loads(manifest_bytes())
    doc["description"] = "x" * 1000
    raw = json.dumps(doc).encode() + b" " * (64 * 1024)
    rejects(with_manifest(raw), "MANIFEST_INVALID", "limit 65536")


def test_schema_errors_name_the_field() -> None:
    rejects(with_manifest(manifest_bytes(version="1.0")), "MANIFEST_INVALID", "`version`")
    rejects(with_manifest(manifest_bytes(surprise=1)), "MANIFEST_INVALID", "unknown field: surprise")


def test_files_the_manifest_names_must_exist() -> None:
    files = good_files()
    del files["ui/index.html"]
    rejects(bundle(files), "MANIFEST_FILE_MISSING", "ui.entry")
    files = good_files()
    del files["dist/main.wasm"]
    rejects(bundle(files), "MANIFEST_FILE_MISSING", "`entry`")


def test_the_entry_must_be_a_file_not_a_directory() -> None:
    files = good_files()
    del files["dist/main.wasm"]
    rejects(with_extra_files(files, Entry(name="dist/main.wasm/", typeflag=b"5")), "MANIFEST_FILE_MISSING")


def with_extra_files(files: dict[str, bytes], *entries: Entry) -> bytes:
    return zst(raw_tar([*files_tar(files), *entries]))


# --- bad wasm -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "match"),
    [
        (b"not wasm at all", "bad magic"),
        (b"\0asm\x0d\0\x01\0", "component"),
        (b"\0asm\x01\0\0\0\x01\x05", "truncated"),
        (
            wasm('(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) i32.const 0))'),
            "does not export `handler`",
        ),
        (
            wasm(
                '(module (memory (export "memory") 1) (func (export "alloc") (result i32) i32.const 0)'
                ' (func (export "handler") (param i32 i32 i32) (result i32) i32.const 0))'
            ),
            "`alloc`",
        ),
        (
            wasm(
                '(module (import "env" "abort" (func)) (memory (export "memory") 1)'
                ' (func (export "alloc") (param i32) (result i32) i32.const 0)'
                ' (func (export "handler") (param i32 i32 i32) (result i32) i32.const 0))'
            ),
            "env.abort",
        ),
        (
            wasm(
                '(module (func (export "alloc") (param i32) (result i32) i32.const 0)'
                ' (func (export "handler") (param i32 i32 i32) (result i32) i32.const 0))'
            ),
            "`memory`",
        ),
        (
            wasm(
                '(module (memory (export "memory") 1 1 shared)'
                ' (func (export "alloc") (param i32) (result i32) i32.const 0)'
                ' (func (export "handler") (param i32 i32 i32) (result i32) i32.const 0))'
            ),
            "shared memory",
        ),
        (
            wasm(
                '(module (memory (export "memory") i64 1)'
                ' (func (export "alloc") (param i32) (result i32) i32.const 0)'
                ' (func (export "handler") (param i32 i32 i32) (result i32) i32.const 0))'
            ),
            "64-bit memory",
        ),
    ],
)
def test_an_entry_that_does_not_fit_the_runtime_is_refused(module: bytes, match: str) -> None:
    rejects(bundle({**good_files(), "dist/main.wasm": module}), "WASM_INVALID", match)


def test_an_entry_importing_the_host_functions_is_accepted() -> None:
    module = wasm(
        '(module (import "ext" "log" (func (param i32 i32 i32)))'
        ' (import "ext" "http_fetch" (func (param i32 i32 i32) (result i32)))'
        ' (import "ext" "kv" (func (param i32 i32 i32) (result i32)))'
        ' (import "ext" "secret_get" (func (param i32 i32 i32) (result i32)))'
        ' (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) i32.const 0)'
        ' (func (export "handler") (param i32 i32 i32) (result i32) i32.const 0))'
    )
    verify_bundle(io.BytesIO(bundle({**good_files(), "dist/main.wasm": module})))


def test_a_state_import_with_the_wrong_signature_is_refused_naming_it() -> None:
    module = wasm(
        '(module (import "ext" "kv" (func (param i32 i32) (result i32)))'
        ' (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) i32.const 0)'
        ' (func (export "handler") (param i32 i32 i32) (result i32) i32.const 0))'
    )
    rejects(bundle({**good_files(), "dist/main.wasm": module}), "WASM_INVALID", "imports ext.kv as")


def test_a_bundle_without_api_needs_no_entry() -> None:
    files = good_files(api=None)
    del files["dist/main.wasm"]
    assert verify_bundle(io.BytesIO(bundle(files))).entry_module is None


# --- hashes ---------------------------------------------------------------------------------------


def test_a_different_declared_hash_is_a_mismatch() -> None:
    rejects(bundle(), "HASH_MISMATCH", expected_hash="sha256:" + "0" * 64)


def test_standard_tar_formats_are_accepted() -> None:
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        verify_bundle(io.BytesIO(zst(std_tar(good_files(), fmt))))


def test_data_after_the_end_marker_is_found_beyond_the_read_buffer() -> None:
    hidden = raw_header(Entry(name="ui/hidden.js", data=b"x")) + b"x".ljust(512, b"\0")
    tar = raw_tar(files_tar(good_files()), end=b"\0" * 1024)
    padding = b"\0" * (1024 * 1024 - len(tar) % (1024 * 1024))
    rejects(zst(tar + padding + hidden), "BUNDLE_CORRUPT", "end-of-archive")


# --- the compression ratio (issue 9, item 5) ------------------------------------------------------


def test_a_small_bundle_that_unpacks_huge_is_refused_by_the_ratio_cap() -> None:
    # Within every size limit (one 60 MiB file, 60 MiB in all), yet thousands of times its compressed size.
    data = zero_filled_bundle(good_files(), {"data/zeros.bin": 60 * MiB})
    assert len(data) < 64 * 1024

    rejects(data, "BUNDLE_UNPACKED_TOO_LARGE", "times its compressed size")


def test_a_tiny_bundle_may_unpack_up_to_the_floor_whatever_its_ratio() -> None:
    data = zero_filled_bundle(good_files(), {"ui/zeros.bin": 12 * MiB})

    assert verify_bundle(io.BytesIO(data)).file("ui/zeros.bin") is not None


def test_generated_html_at_the_ratio_real_documentation_reaches_is_accepted() -> None:
    # Generated API documentation compresses about 50 times (rustdoc's pages for core measured 49):
    # the highest ratio of real content we found, so the cap must leave it room.
    rows = "".join(
        f'<tr><td class="n">{i}</td><td><a href="#m{i % 97}">method {i % 97}</a></td></tr>\n' for i in range(400_000)
    )
    data = bundle({**good_files(), "ui/docs/index.html": rows.encode()})
    ratio = len(rows) / len(data)
    assert 30 < ratio < 100, ratio

    assert verify_bundle(io.BytesIO(data)).file("ui/docs/index.html") is not None


def test_the_ratio_cap_and_its_floor_are_settings() -> None:
    data = zero_filled_bundle(good_files(), {"ui/zeros.bin": 2 * MiB})
    limits = BundleLimits(max_compression_ratio=10, compression_floor_bytes=1 * MiB)

    rejects(data, "BUNDLE_UNPACKED_TOO_LARGE", "10 times", limits=limits)
