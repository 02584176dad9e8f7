"""The runner's bundle cache against moto S3 and real wasmtime: verify before use, fetch once,
compiled code shared through S3, and a disk budget kept by LRU eviction."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chalicelib.bundles.signing import SignatureStatus
from chalicelib.errors import (
    BadRequest,
    ExtensionNotReady,
    HashMismatch,
    NotFound,
    RunnerBusy,
    SignatureInvalid,
    SignatureMissing,
    SignatureUntrusted,
)
from chalicelib.storage.store import (
    BUNDLE_OBJECT,
    PUBLISH_RECORD_OBJECT,
    SIGNATURE_OBJECT,
    ReadableStream,
    S3BundleStore,
)
from runner_container.cache import BundleCache
from runner_container.compiled_code import CompileStatus, ModuleSource
from runner_container.engine import WasmEngine
from tests.integration.runner_fixtures import (
    EXAMPLE,
    CountingStore,
    RunnerEnv,
    content_hash_of,
    example_bundle,
    make_certificate_signer,
    make_signer,
    ui_bundle,
)

MiB = 1024 * 1024
CALL_BUDGET_S = 30.0
"""What a call has left when it loads a bundle: enough for the inline compile of small code."""


def cache_entries(cache_dir: Path) -> list[str]:
    """What the cache holds on disk, scratch folders included when they are not empty."""
    names = [p.name for p in cache_dir.iterdir() if not p.name.startswith(".")]
    names += [
        f"{p.parent.name}/{p.name}" for scratch in (".incoming", ".trash") for p in (cache_dir / scratch).iterdir()
    ]
    return sorted(names)


def random_ui(size: int) -> dict[str, bytes]:
    """A UI file that does not compress, so the bundle's disk size is predictable."""
    return {"ui/blob.bin": os.urandom(size)}


# --- verified loading --------------------------------------------------------------------------


def test_a_cold_get_verifies_unpacks_and_compiles_the_bundle(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(example_bundle())
    cache = env.cache(engine)

    loaded = cache.get(content_hash, budget_s=CALL_BUDGET_S)

    assert loaded.manifest.name == "com.example.hello"
    assert loaded.module is not None
    assert loaded.module_source is ModuleSource.COMPILED
    main_wasm = (loaded.root / "dist" / "main.wasm").read_bytes()
    assert loaded.files["dist/main.wasm"].sha256 == hashlib.sha256(main_wasm).hexdigest()
    # Every file is verified and listed, but a call's entry unpacks only the code.
    index_html = (EXAMPLE / "ui" / "index.html").read_bytes()
    assert loaded.files["ui/index.html"].sha256 == hashlib.sha256(index_html).hexdigest()
    assert not (loaded.root / "ui").exists()
    entry = env.root / "cache" / content_hash.split(":")[1]
    assert json.loads((entry / "index.json").read_text())["content_hash"] == content_hash
    assert (entry / f"{engine.fingerprint}.cwasm").is_file()
    assert loaded.size > 0
    assert cache.stats().entries == 1


def test_a_second_get_reuses_the_module_in_memory_without_touching_s3(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(example_bundle())
    store = CountingStore(env.store)
    cache = env.cache(engine, store=store)
    first = cache.get(content_hash, budget_s=CALL_BUDGET_S)

    second = cache.get(content_hash, budget_s=CALL_BUDGET_S)

    assert second.module is first.module
    assert second.module_source is ModuleSource.MEMORY
    assert store.opened[env.store.object_key(content_hash, BUNDLE_OBJECT)] == 1


def test_concurrent_cold_requests_for_one_hash_fetch_and_compile_it_once(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(example_bundle())
    store = CountingStore(env.store, delay_s=0.2)
    cache = env.cache(engine, store=store)
    start = threading.Barrier(6)
    modules: list[object] = []

    def cold_request() -> None:
        start.wait()
        modules.append(cache.get(content_hash, budget_s=CALL_BUDGET_S).module)

    threads = [threading.Thread(target=cold_request) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(modules) == 6
    assert all(module is modules[0] for module in modules)
    assert store.opened[env.store.object_key(content_hash, BUNDLE_OBJECT)] == 1
    assert cache.stats().compiles == 1


def test_a_slow_fetch_of_one_hash_does_not_hold_up_another(env: RunnerEnv, engine: WasmEngine) -> None:
    slow = env.publish(ui_bundle("com.acme.slow"))
    fast = env.publish(ui_bundle("com.acme.fast"))
    store = CountingStore(env.store)
    gate = threading.Event()
    store.gates[env.store.object_key(slow, BUNDLE_OBJECT)] = gate
    cache = env.cache(engine, store=store)
    slow_loader = threading.Thread(target=cache.get, args=(slow,))
    slow_loader.start()
    deadline = time.monotonic() + 10
    while store.opened[env.store.object_key(slow, BUNDLE_OBJECT)] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    names: list[str] = []
    fast_loader = threading.Thread(target=lambda: names.append(cache.get(fast).manifest.name))

    # With one global lock this would wait for the gated fetch, which only opens afterwards.
    fast_loader.start()
    fast_loader.join(5)
    finished_while_slow_was_blocked = not fast_loader.is_alive()
    gate.set()
    slow_loader.join(10)

    assert finished_while_slow_was_blocked
    assert names == ["com.acme.fast"]
    assert cache.stats().entries == 2


def test_a_tampered_bundle_object_is_refused_before_load_and_leaves_nothing(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(example_bundle())
    env.overwrite(env.store.object_key(content_hash, BUNDLE_OBJECT), ui_bundle("com.example.hello"))
    cache = env.cache(engine)

    with pytest.raises(HashMismatch, match="not the declared"):
        cache.get(content_hash, budget_s=CALL_BUDGET_S)

    assert cache_entries(env.root / "cache") == []
    assert cache.stats().entries == 0


def test_a_tampered_signature_is_refused_when_a_trust_bundle_is_configured(env: RunnerEnv, engine: WasmEngine) -> None:
    signer = make_signer()
    data = example_bundle()
    content_hash = env.publish(data, signature=signer.sign(content_hash_of(data)))
    envelope = json.loads(signer.sign(content_hash))
    envelope["signature"] = json.loads(make_signer().sign(content_hash))["signature"]
    env.overwrite(env.store.object_key(content_hash, SIGNATURE_OBJECT), json.dumps(envelope).encode())
    cache = env.cache(engine, trust=signer.trust)

    with pytest.raises(SignatureInvalid, match="does not verify"):
        cache.get(content_hash, budget_s=CALL_BUDGET_S)

    assert cache_entries(env.root / "cache") == []


def test_a_missing_signature_is_refused_when_a_trust_bundle_is_configured(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(example_bundle())
    cache = env.cache(engine, trust=make_signer().trust)

    with pytest.raises(SignatureMissing):
        cache.get(content_hash, budget_s=CALL_BUDGET_S)

    assert cache_entries(env.root / "cache") == []


def test_a_good_signature_is_accepted_and_recorded(env: RunnerEnv, engine: WasmEngine) -> None:
    signer = make_signer("com.example.*")
    data = example_bundle()
    content_hash = env.publish(data, signature=signer.sign(content_hash_of(data)))
    cache = env.cache(engine, trust=signer.trust)

    with cache.lease(content_hash) as cached:
        assert cached.signature_status is SignatureStatus.VERIFIED


# --- certificates: checked at the publish time finalize recorded (issue 9, item 6) -------------


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def test_a_bundle_signed_under_a_certificate_keeps_loading_after_the_certificate_expires(
    env: RunnerEnv, engine: WasmEngine
) -> None:
    signer = make_certificate_signer(days_ago(30), days_ago(1))
    data = ui_bundle()
    content_hash = env.publish(data, signature=signer.sign(content_hash_of(data)), published_at=days_ago(10))

    with env.cache(engine, trust=signer.trust).lease(content_hash) as cached:
        assert cached.signature_status is SignatureStatus.VERIFIED


def test_a_certificate_that_was_not_yet_valid_at_publish_time_is_refused(env: RunnerEnv, engine: WasmEngine) -> None:
    signer = make_certificate_signer(days_ago(5), days_ago(-30))
    data = ui_bundle()
    content_hash = env.publish(data, signature=signer.sign(content_hash_of(data)), published_at=days_ago(10))

    with pytest.raises(SignatureUntrusted, match="is not valid before"):
        env.cache(engine, trust=signer.trust).get(content_hash)
    assert cache_entries(env.root / "cache") == []


def test_removing_the_key_from_the_trust_bundle_stops_its_bundles_loading(env: RunnerEnv, engine: WasmEngine) -> None:
    signer = make_certificate_signer(days_ago(30), days_ago(1))
    data = ui_bundle()
    content_hash = env.publish(data, signature=signer.sign(content_hash_of(data)), published_at=days_ago(10))
    env.cache(engine, trust=signer.trust).get(content_hash)

    # The runner restarts with a trust bundle that no longer holds the key: the cached entry is not reused.
    with pytest.raises(SignatureUntrusted, match="is not in the trust bundle"):
        env.cache(engine, trust=make_signer().trust).get(content_hash)
    assert cache_entries(env.root / "cache") == []


def test_without_a_publish_record_a_certificate_is_checked_at_the_current_time(
    env: RunnerEnv, engine: WasmEngine
) -> None:
    signer = make_certificate_signer(days_ago(30), days_ago(1))
    data = ui_bundle()
    content_hash = env.publish(data, signature=signer.sign(content_hash_of(data)))

    with pytest.raises(SignatureUntrusted, match="expired at"):
        env.cache(engine, trust=signer.trust).get(content_hash)


def test_a_publish_record_of_another_bundle_is_refused(env: RunnerEnv, engine: WasmEngine) -> None:
    signer = make_certificate_signer(days_ago(30), days_ago(1))
    data, other = ui_bundle(), ui_bundle("com.acme.other")
    content_hash = env.publish(data, signature=signer.sign(content_hash_of(data)))
    other_hash = env.publish(other, published_at=days_ago(10))
    copied = env.store.get_bytes(env.store.object_key(other_hash, PUBLISH_RECORD_OBJECT), 64 * 1024)
    env.overwrite(env.store.object_key(content_hash, PUBLISH_RECORD_OBJECT), copied)

    with pytest.raises(SignatureInvalid, match="publish record"):
        env.cache(engine, trust=signer.trust).get(content_hash)
    assert cache_entries(env.root / "cache") == []


@pytest.mark.parametrize(
    "record",
    [b"not json", b"[]", b'{"format": "ext-publish-record/v1"}', b"{" + b" " * 70_000 + b"}"],
    ids=["not json", "not an object", "fields missing", "too large"],
)
def test_a_malformed_publish_record_is_refused(env: RunnerEnv, engine: WasmEngine, record: bytes) -> None:
    signer = make_certificate_signer(days_ago(30), days_ago(1))
    data = ui_bundle()
    content_hash = env.publish(data, signature=signer.sign(content_hash_of(data)))
    env.overwrite(env.store.object_key(content_hash, PUBLISH_RECORD_OBJECT), record)

    with pytest.raises(SignatureInvalid, match="publish record"):
        env.cache(engine, trust=signer.trust).get(content_hash)


def test_without_a_trust_bundle_an_unsigned_bundle_is_accepted_as_unsigned(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(ui_bundle())

    with env.cache(engine).lease(content_hash) as cached:
        assert cached.signature_status is SignatureStatus.UNSIGNED


def test_a_hash_the_store_does_not_hold_is_not_found(env: RunnerEnv, engine: WasmEngine) -> None:
    with pytest.raises(NotFound):
        env.cache(engine).get("sha256:" + "0" * 64)


def test_a_malformed_hash_is_a_bad_request(env: RunnerEnv, engine: WasmEngine) -> None:
    with pytest.raises(BadRequest):
        env.cache(engine).get("sha256:ABC")


def test_a_bundle_without_api_has_no_module_and_nothing_to_precompile(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(ui_bundle())
    cache = env.cache(engine)

    assert cache.get(content_hash, budget_s=CALL_BUDGET_S).module is None
    result = cache.precompile(content_hash)
    assert (result.key, result.source, result.compiled) == (None, None, False)


# --- the disk cache across restarts and under a budget ------------------------------------------


def test_a_restarted_cache_serves_its_entries_from_disk(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(ui_bundle())
    with env.cache(engine).lease(content_hash):
        pass
    env.cache(engine).get(content_hash, budget_s=CALL_BUDGET_S)
    store = CountingStore(env.store)

    restarted = env.cache(engine, store=store)

    with restarted.lease(content_hash) as cached:
        assert cached.manifest.name == "com.acme.tools"
        assert (cached.root / "ui" / "index.html").is_file()
    assert restarted.get(content_hash).manifest.name == "com.acme.tools"
    assert sum(store.opened.values()) == 0
    assert restarted.stats().entries == 2


def test_a_restarted_cache_verifies_again_under_another_trust_bundle(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(ui_bundle())
    env.cache(engine).get(content_hash, budget_s=CALL_BUDGET_S)

    with pytest.raises(SignatureMissing):
        env.cache(engine, trust=make_signer().trust).get(content_hash, budget_s=CALL_BUDGET_S)
    assert cache_entries(env.root / "cache") == []


def ui_entry(content_hash: str) -> str:
    """The name of a hash's UI entry in the cache dir."""
    return content_hash.split(":")[1] + ".ui"


def load_ui(cache: BundleCache, content_hash: str) -> None:
    with cache.lease(content_hash):
        pass


def test_eviction_keeps_the_cache_under_its_budget_dropping_the_least_recently_used(
    env: RunnerEnv, engine: WasmEngine
) -> None:
    first, second, third = (env.publish(ui_bundle(f"com.acme.t{n}", random_ui(200_000))) for n in range(3))
    store = CountingStore(env.store)
    cache = env.cache(engine, store=store, runner_cache_max_bytes=500_000)

    load_ui(cache, first)
    load_ui(cache, second)
    load_ui(cache, first)
    load_ui(cache, third)

    on_disk = cache_entries(env.root / "cache")
    assert on_disk == sorted(ui_entry(h) for h in (first, third))
    assert cache.stats().bytes <= 500_000
    load_ui(cache, second)
    assert store.opened[env.store.object_key(second, BUNDLE_OBJECT)] == 2


def test_eviction_never_removes_a_bundle_in_use_and_a_load_that_needs_its_room_is_busy(
    env: RunnerEnv, engine: WasmEngine
) -> None:
    first, second = (env.publish(ui_bundle(f"com.acme.u{n}", random_ui(200_000))) for n in range(2))
    cache = env.cache(engine, runner_cache_max_bytes=250_000)

    with cache.lease(first) as leased:
        with pytest.raises(RunnerBusy):
            load_ui(cache, second)
        assert (leased.root / "ui" / "blob.bin").is_file()
        assert cache_entries(env.root / "cache") == [ui_entry(first)]
    load_ui(cache, second)

    assert cache_entries(env.root / "cache") == [ui_entry(second)]


# --- compiled code shared through S3 -------------------------------------------------------------


def test_precompile_compiles_and_writes_the_cwasm_to_s3(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(example_bundle())
    cache = env.cache(engine)

    result = cache.precompile(content_hash)

    assert result.compiled
    assert result.key == env.store.precompiled_key(content_hash, engine.fingerprint)
    local = env.root / "cache" / content_hash.split(":")[1] / f"{engine.fingerprint}.cwasm"
    assert env.store.get_bytes(result.key, 64 * 1024 * 1024) == local.read_bytes()
    assert cache.precompile(content_hash).source is ModuleSource.MEMORY


def test_a_compile_job_after_a_ui_request_unpacks_the_code_it_compiles_beside_the_ui_entry(
    env: RunnerEnv, engine: WasmEngine
) -> None:
    content_hash = env.publish(example_bundle())
    cache = env.cache(engine)
    load_ui(cache, content_hash)

    result = cache.precompile(content_hash)

    assert (result.status, result.compiled) == (CompileStatus.READY, True)
    hex_digest = content_hash.split(":")[1]
    assert (env.root / "cache" / hex_digest / "bundle" / "dist" / "main.wasm").is_file()
    assert (env.root / "cache" / hex_digest / f"{engine.fingerprint}.cwasm").is_file()
    assert not (env.root / "cache" / ui_entry(content_hash) / "bundle" / "dist").exists()
    assert cache.stats().entries == 2


def test_a_cold_runner_uses_the_stored_cwasm_instead_of_compiling(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(example_bundle())
    env.cache(engine).precompile(content_hash)

    cold = env.cache(engine, cache_dir=env.root / "cold")
    loaded = cold.get(content_hash, budget_s=CALL_BUDGET_S)

    assert loaded.module_source is ModuleSource.STORED
    assert cold.stats().compiles == 0
    assert (env.root / "cold" / content_hash.split(":")[1] / f"{engine.fingerprint}.cwasm").is_file()


def test_precompile_on_a_cold_runner_reports_the_stored_artifact(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(example_bundle())
    env.cache(engine).precompile(content_hash)

    result = env.cache(engine, cache_dir=env.root / "cold").precompile(content_hash)

    assert result.source is ModuleSource.STORED
    assert not result.compiled


def test_an_unusable_stored_cwasm_is_a_miss_and_the_runner_compiles(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(example_bundle())
    env.overwrite(env.store.precompiled_key(content_hash, engine.fingerprint), b"\x7fELF not really")

    loaded = env.cache(engine).get(content_hash, budget_s=CALL_BUDGET_S)

    assert loaded.module_source is ModuleSource.COMPILED
    assert loaded.module is not None


def test_a_restarted_runner_loads_its_local_cwasm(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(example_bundle())
    first = env.cache(engine)
    first.get(content_hash, budget_s=CALL_BUDGET_S)

    restarted = env.cache(engine, store=CountingStore(env.store))

    assert restarted.get(content_hash, budget_s=CALL_BUDGET_S).module_source is ModuleSource.LOCAL
    assert (first.stats().compiles, restarted.stats().compiles) == (1, 0)


# --- loads in progress and cold-load slots (issue 9, item 5) -----------------------------------------


class _PausingStream:
    """A stream that stops once ``after`` bytes are read, until ``resume`` is set (``paused`` says when)."""

    def __init__(self, inner: ReadableStream, after: int, paused: threading.Event, resume: threading.Event) -> None:
        self._inner = inner
        self._after = after
        self._read = 0
        self._paused = paused
        self._resume = resume

    def read(self, amt: int | None = None) -> bytes:
        if self._read >= self._after and not self._resume.is_set():
            self._paused.set()
            assert self._resume.wait(10), "the paused load was never resumed"
        data = self._inner.read(amt)
        self._read += len(data)
        return data

    def close(self) -> None:
        self._inner.close()


class PausingStore(CountingStore):
    """The store, with the bundle of one hash pausing mid-download."""

    def __init__(self, inner: S3BundleStore, content_hash: str, after: int) -> None:
        super().__init__(inner)
        self._key = inner.object_key(content_hash, BUNDLE_OBJECT)
        self._after = after
        self.paused = threading.Event()
        self.resume = threading.Event()

    def open_stream(self, key: str) -> ReadableStream:
        stream = super().open_stream(key)
        if key != self._key:
            return stream
        return _PausingStream(stream, self._after, self.paused, self.resume)


def test_a_load_in_progress_holds_its_room_in_the_budget(env: RunnerEnv, engine: WasmEngine) -> None:
    first, second = (env.publish(ui_bundle(f"com.acme.l{n}", random_ui(3 * MiB))) for n in range(2))
    store = PausingStore(env.store, first, after=MiB)
    cache = env.cache(engine, store=store, runner_cache_max_bytes=4 * MiB)
    loader = threading.Thread(target=load_ui, args=(cache, first))
    loader.start()
    assert store.paused.wait(10)

    # The first load has reserved its 3 MiB before writing them: the second does not fit beside it.
    with pytest.raises(RunnerBusy):
        load_ui(cache, second)
    store.resume.set()
    loader.join(10)

    assert cache_entries(env.root / "cache") == [ui_entry(first)]
    assert cache.stats().bytes <= 4 * MiB


def test_a_downloaded_cwasm_is_reserved_in_the_budget_before_it_is_written(env: RunnerEnv, engine: WasmEngine) -> None:
    held = env.publish(ui_bundle("com.acme.held", random_ui(3 * MiB)))
    content_hash = env.publish(example_bundle())
    env.overwrite(env.store.precompiled_key(content_hash, engine.fingerprint), os.urandom(2 * MiB))
    cache = env.cache(engine, runner_cache_max_bytes=4 * MiB)

    # 3 MiB in use and 2 MiB of .cwasm to download: it may not reach the disk uncounted.
    with cache.lease(held), pytest.raises(RunnerBusy):
        cache.get(content_hash, budget_s=CALL_BUDGET_S)

    assert not list((env.root / "cache" / content_hash.split(":")[1]).glob("*.cwasm"))
    assert cache.stats().compiles == 0


def test_a_compile_reserves_the_room_for_its_output_before_it_starts(env: RunnerEnv, engine: WasmEngine) -> None:
    held = env.publish(ui_bundle("com.acme.held", random_ui(3 * MiB)))
    content_hash = env.publish(example_bundle())
    cache = env.cache(engine, runner_cache_max_bytes=4 * MiB)

    # The compiled code may take up to 8x its wasm plus 1 MiB: there is no such room beside 3 MiB in use.
    with cache.lease(held):
        with pytest.raises(RunnerBusy):
            cache.get(content_hash, budget_s=CALL_BUDGET_S)
        with pytest.raises(RunnerBusy):
            cache.precompile(content_hash)

    assert cache.stats().compiles == 0
    assert cache.get(content_hash, budget_s=CALL_BUDGET_S).module_source is ModuleSource.COMPILED
    assert cache.stats().bytes <= 4 * MiB


def test_cold_loads_past_the_cap_are_busy_and_ui_loads_never_take_the_slots_of_calls(
    env: RunnerEnv, engine: WasmEngine
) -> None:
    slow, other, called = (env.publish(ui_bundle(f"com.acme.c{n}")) for n in range(3))
    store = CountingStore(env.store)
    gate = threading.Event()
    store.gates[env.store.object_key(slow, BUNDLE_OBJECT)] = gate
    cache = env.cache(engine, store=store, runner_max_cold_loads=1)
    cache.load_wait_s = 0.2
    loader = threading.Thread(target=load_ui, args=(cache, slow))
    loader.start()
    deadline = time.monotonic() + 10
    while store.opened[env.store.object_key(slow, BUNDLE_OBJECT)] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)

    with pytest.raises(RunnerBusy):
        load_ui(cache, other)
    loaded_for_a_call = cache.get(called).manifest.name
    gate.set()
    loader.join(10)

    assert loaded_for_a_call == "com.acme.c2"
    load_ui(cache, other)


class RecordedJobs:
    """Compile jobs that are only written down, so a test sees what the request path asked for."""

    def __init__(self) -> None:
        self.requested: list[str] = []

    def request(self, content_hash: str) -> None:
        self.requested.append(content_hash)


def test_a_call_that_waited_for_a_load_slot_has_only_what_is_left_to_compile_inline(
    env: RunnerEnv, engine: WasmEngine
) -> None:
    budget_s = 4.0
    content_hash = env.publish(example_bundle())
    busy = env.publish(ui_bundle("com.acme.busy"))
    store = CountingStore(env.store)
    gate = threading.Event()
    store.gates[env.store.object_key(busy, BUNDLE_OBJECT)] = gate
    jobs = RecordedJobs()
    cache = env.cache(engine, store=store, compile_jobs=jobs, runner_max_cold_loads=1)
    cache.load_wait_s = 3 * budget_s
    holder = threading.Thread(target=cache.get, args=(busy,))
    holder.start()
    deadline = time.monotonic() + 10
    while store.opened[env.store.object_key(busy, BUNDLE_OBJECT)] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    # The only load slot frees once the call's whole budget has gone by: nothing is left to compile in.
    release = threading.Timer(budget_s, gate.set)
    release.start()

    with pytest.raises(ExtensionNotReady):
        cache.get(content_hash, budget_s=budget_s)
    holder.join(10)

    assert cache.stats().compiles == 0
    assert jobs.requested == [content_hash]
