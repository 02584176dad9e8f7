"""Compilation off the request path: bounded compile jobs, outcomes recorded once in the store, calls that
wait at most a share of their time, and a runner that never outlives its caller's deadline.

Regressions of issue 9 item 1: a call compiled any module inline with no time or memory bound and did not
remember a failure, so every call compiled again.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
import wasmtime

from chalicelib.config import load_settings
from chalicelib.errors import ExtensionFailed, ExtensionNotReady, ExtensionTimeout, RunnerBusy
from runner_container.compile_jobs import LambdaJobs
from runner_container.compiled_code import CompileStatus, ModuleSource
from runner_container.compiler import ArtifactKind, CompileLimits, Compiler, FailureKind
from runner_container.component import ComponentEngine
from runner_container.engine import WasmEngine
from runner_container.lambda_handler import RunnerLambda
from runner_container.restore_plan import RESTORABLE_MARKER
from runner_container.service import RunnerService
from tests.bundle_factory import TYPE_MISMATCH_WAT, bundle, good_files, slow_to_compile_wasm, wasm
from tests.components import dummy_component
from tests.integration.fake_lambda import FakeLambda
from tests.integration.runner_fixtures import RunnerEnv, example_bundle, execute_payload, wat_bundle

NAME = "com.acme.tools"
T = TypeVar("T")


def code_bundle(module: bytes, **manifest: Any) -> bytes:
    files = good_files(**manifest)
    files["dist/main.wasm"] = module
    return bundle(files)


def eventually(attempt: Callable[[], T], *, within_s: float = 120.0) -> T:
    """``attempt()``'s first answer that is not ``EXTENSION_NOT_READY``: what a client retrying would get."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return attempt()
        except ExtensionNotReady:
            assert time.monotonic() < deadline, "the compile job never finished"
            time.sleep(0.1)


def compiles(service: RunnerService) -> int:
    return int(service.health()["cache"]["compiles"])


@pytest.fixture
def fake_lambda() -> Iterator[FakeLambda]:
    with FakeLambda().running() as fake:
        yield fake


# --- code that is not compiled yet ------------------------------------------------------------------


def test_code_over_the_inline_size_is_not_ready_until_its_compile_job_ran(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(example_bundle())
    service = env.service(engine, runner_inline_compile_max_bytes=1024)

    with pytest.raises(ExtensionNotReady, match="being compiled") as raised:
        service.execute(execute_payload(content_hash))

    assert raised.value.details["retry_after"] >= 1
    answer = eventually(lambda: service.execute(execute_payload(content_hash)))
    assert answer.status == 200
    assert env.object_exists(env.store.precompiled_key(content_hash, engine.fingerprint))


def test_a_compile_bomb_small_enough_to_inline_is_cut_at_half_the_calls_time_and_fails_once_as_a_job(
    env: RunnerEnv, engine: WasmEngine
) -> None:
    content_hash = env.publish(code_bundle(slow_to_compile_wasm(300_000)))
    service = env.service(engine, runner_compile_timeout_ms=1000)
    call = {**execute_payload(content_hash, extension=NAME), "deadline_ms": 1000}

    # Unbounded, this compile takes ~25 s and ~2 GB; the call may spend half its second on it.
    with pytest.raises(ExtensionNotReady):
        service.execute(call)

    with pytest.raises(ExtensionFailed, match="did not compile: compiling took longer than 1 s"):
        eventually(lambda: service.execute(call))
    failure_key = env.store.compile_failure_key(
        content_hash, engine.fingerprint, CompileLimits.from_settings(service.settings).limits_id
    )
    assert env.object_exists(failure_key)


def test_a_failed_compile_is_recorded_once_and_every_runner_answers_it_without_compiling(
    env: RunnerEnv, engine: WasmEngine
) -> None:
    content_hash = env.publish(code_bundle(wasm(TYPE_MISMATCH_WAT)))
    first = env.service(engine)

    with pytest.raises(ExtensionFailed, match=r"did not compile: .*type mismatch"):
        first.execute(execute_payload(content_hash, extension=NAME))
    with pytest.raises(ExtensionFailed, match="type mismatch"):
        first.execute(execute_payload(content_hash, extension=NAME))
    other_runner = env.service(engine, runner_cache_dir=str(env.root / "other-runner"))
    with pytest.raises(ExtensionFailed, match="type mismatch"):
        other_runner.execute(execute_payload(content_hash, extension=NAME))

    assert (compiles(first), compiles(other_runner)) == (1, 0)


def test_a_compile_job_over_its_memory_limit_is_stopped_and_recorded(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(code_bundle(slow_to_compile_wasm(100_000)))
    cache = env.cache(engine, runner_compile_memory_mb=200)

    first = cache.precompile(content_hash)
    again = cache.precompile(content_hash)

    assert first.status is CompileStatus.FAILED and first.failure is not None
    assert first.failure.kind is FailureKind.MEMORY_LIMIT
    assert "more than 200.0 MiB" in first.failure.reason
    assert again.status is CompileStatus.FAILED
    assert cache.stats().compiles == 1


def test_code_over_the_compile_size_limit_fails_without_a_compiler_and_a_raised_limit_retries_it(
    env: RunnerEnv, engine: WasmEngine
) -> None:
    content_hash = env.publish(example_bundle())
    strict = env.cache(engine, runner_compile_max_wasm_bytes=1024)

    refused = strict.precompile(content_hash)

    assert refused.status is CompileStatus.FAILED and refused.failure is not None
    assert refused.failure.kind is FailureKind.TOO_LARGE
    assert "compile jobs take at most 1024 bytes" in refused.failure.reason
    assert strict.stats().compiles == 0
    relaxed = env.cache(engine, cache_dir=env.root / "relaxed").precompile(content_hash)
    assert (relaxed.status, relaxed.source) == (CompileStatus.READY, ModuleSource.COMPILED)


def test_code_a_compile_job_made_keeps_its_instances_between_calls(
    env: RunnerEnv, engine: WasmEngine, tmp_path: Path
) -> None:
    content_hash = env.publish(example_bundle())
    assert env.cache(engine).precompile(content_hash).to_dict()["status"] == "ready"

    loaded = env.cache(engine, cache_dir=tmp_path / "another-runner").get(content_hash)

    assert loaded.module_source is ModuleSource.STORED
    assert isinstance(loaded.module, wasmtime.Module)
    assert RESTORABLE_MARKER in {exported.name for exported in loaded.module.exports}


def test_a_compile_job_reports_what_it_cost(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(example_bundle())

    answer = env.cache(engine).precompile(content_hash).to_dict()

    assert answer["status"] == "ready"
    assert answer["compile"]["peak_rss_bytes"] > 0
    assert answer["compile"]["cpu_ms"] > 0
    assert answer["compile"]["wasm_bytes"] > 0


def test_the_request_path_asks_the_compile_function_once_and_does_not_compile(
    env: RunnerEnv, engine: WasmEngine, fake_lambda: FakeLambda
) -> None:
    content_hash = env.publish(example_bundle())
    client = boto3.client("lambda", region_name="us-east-1", endpoint_url=fake_lambda.url)
    jobs = LambdaJobs(client, "ext-compiler", cooldown_s=300)
    service = env.service(engine, compile_jobs=jobs, runner_inline_compile_max_bytes=1024)

    for _ in range(3):
        with pytest.raises(ExtensionNotReady):
            service.execute(execute_payload(content_hash))

    asked = fake_lambda.invoked("Event")
    assert [(i.function, i.payload) for i in asked] == [
        ("ext-compiler", {"action": "precompile", "content_hash": content_hash})
    ]
    assert compiles(service) == 0


def test_a_lambda_answer_while_the_code_compiles_carries_retry_after(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(example_bundle())
    app = RunnerLambda(lambda: env.service(engine, runner_inline_compile_max_bytes=1024))

    answer = app({"action": "execute", **execute_payload(content_hash)}, None)

    assert answer["ok"] is False
    assert (answer["status"], answer["error"]["code"]) == (503, "EXTENSION_NOT_READY")
    assert answer["retry_after"] >= 1


# --- the compiler's child: components, and the room for its output ---------------------------------------


def test_a_component_compiles_in_the_bounded_child_and_a_core_module_is_not_a_component(
    engine: WasmEngine, tmp_path: Path
) -> None:
    compiler, limits = Compiler(engine.config_settings), CompileLimits.from_settings(load_settings({}))
    (tmp_path / "component.wasm").write_bytes(dummy_component(tmp_path))
    (tmp_path / "module.wasm").write_bytes(wasm())

    component = compiler.run(
        tmp_path / "component.wasm", tmp_path / "component.cwasm", limits, kind=ArtifactKind.COMPONENT
    )
    module = compiler.run(tmp_path / "module.wasm", tmp_path / "module.cwasm", limits, kind=ArtifactKind.COMPONENT)

    assert component is not None and component.artifact is not None
    assert ComponentEngine(engine).deserialize_file(component.artifact).body_stdio is False
    assert module is not None and module.failure is not None
    assert module.failure.kind is FailureKind.INVALID
    assert not (tmp_path / "module.cwasm").exists()


def test_the_compilers_child_writes_no_more_native_code_than_the_room_reserved_for_it(
    engine: WasmEngine, tmp_path: Path
) -> None:
    compiler, limits = Compiler(engine.config_settings), CompileLimits.from_settings(load_settings({}))
    source = tmp_path / "main.wasm"
    source.write_bytes(wasm())

    result = compiler.run(source, tmp_path / "main.cwasm", limits, max_output_bytes=1000)

    assert result is not None and result.failure is not None
    assert result.failure.kind is FailureKind.TOO_LARGE
    assert "more than the 1000 bytes it may take" in result.failure.reason
    assert not (tmp_path / "main.cwasm").exists()


def test_a_compile_job_that_finds_every_slot_taken_waits_for_one(engine: WasmEngine, tmp_path: Path) -> None:
    """Without a deadline a compile waits for a slot as long as it takes (a job never gets "no slot")."""
    compiler, limits = Compiler(engine.config_settings), CompileLimits.from_settings(load_settings({}))
    (tmp_path / "slow.wasm").write_bytes(slow_to_compile_wasm(20_000))
    (tmp_path / "small.wasm").write_bytes(wasm())
    first: list[Any] = []
    holder = threading.Thread(
        target=lambda: first.append(compiler.run(tmp_path / "slow.wasm", tmp_path / "slow.cwasm", limits))
    )
    holder.start()
    deadline = time.monotonic() + 60
    while compiler.started == 0:  # the first compile holds the only slot once its child has started
        assert time.monotonic() < deadline, "the first compile never started"
        time.sleep(0.01)

    waited = compiler.run(tmp_path / "small.wasm", tmp_path / "small.cwasm", limits, within_s=None)
    holder.join(timeout=120)

    assert waited is not None and waited.artifact is not None
    assert first and first[0] is not None and first[0].artifact is not None
    assert compiler.started == 2


# --- the caller's deadline and the runner's capacity ---------------------------------------------------


def test_the_call_stops_at_the_callers_deadline_not_at_the_manifests_limit(env: RunnerEnv, engine: WasmEngine) -> None:
    loop = env.publish(wat_bundle("infinite_loop.wat", name="com.acme.loop", limits={"timeout_ms": 5000}))
    service = env.service(engine)
    service.precompile(loop)

    with pytest.raises(ExtensionTimeout) as raised:
        service.execute({**execute_payload(loop, extension="com.acme.loop"), "deadline_ms": 1500})

    limit_ms = int(re.search(r"time limit of (\d+) ms", raised.value.message).group(1))  # type: ignore[union-attr]
    assert limit_ms <= 1500


def test_a_call_whose_caller_already_gave_up_does_not_run(env: RunnerEnv, engine: WasmEngine) -> None:
    content_hash = env.publish(example_bundle())
    gone = int(time.time() * 1000) - 1000

    with pytest.raises(ExtensionTimeout, match="deadline passed"):
        env.service(engine).execute({**execute_payload(content_hash), "deadline_at_ms": gone})


def test_a_runner_at_its_call_limit_answers_runner_busy(env: RunnerEnv, engine: WasmEngine) -> None:
    hello = env.publish(example_bundle())
    loop = env.publish(wat_bundle("infinite_loop.wat", name="com.acme.loop", limits={"timeout_ms": 3000}))
    service = env.service(engine, runner_max_concurrent_calls=1)
    service.execute(execute_payload(hello))

    def slow_call() -> None:
        while True:
            try:
                service.execute(execute_payload(loop, extension="com.acme.loop"))
            except RunnerBusy:
                continue
            except ExtensionTimeout:
                return

    slow = threading.Thread(target=slow_call)
    slow.start()
    refused: RunnerBusy | None = None
    deadline = time.monotonic() + 60
    while refused is None and time.monotonic() < deadline:
        try:
            service.execute(execute_payload(hello))
        except RunnerBusy as exc:
            refused = exc
    slow.join()

    assert refused is not None, "a second call ran beside the first"
    assert refused.details["retry_after"] == 1
    assert service.execute(execute_payload(hello)).status == 200


def test_a_call_that_finds_the_runner_full_waits_briefly_for_a_slot_instead_of_failing(
    env: RunnerEnv, engine: WasmEngine
) -> None:
    hello = env.publish(example_bundle())
    loop = env.publish(wat_bundle("infinite_loop.wat", name="com.acme.loop", limits={"timeout_ms": 200}))
    service = env.service(engine, runner_max_concurrent_calls=1)
    service.execute(execute_payload(hello))
    started = threading.Event()
    outcome: list[str] = []

    def short_call() -> None:
        started.set()
        try:
            service.execute(execute_payload(loop, extension="com.acme.loop"))
        except ExtensionTimeout:
            outcome.append("timed out")

    holder = threading.Thread(target=short_call)
    holder.start()
    started.wait()
    answers = [service.execute(execute_payload(hello)).status for _ in range(3)]
    holder.join()

    assert outcome == ["timed out"]
    assert answers == [200, 200, 200]
