"""wasm-component@1 bundles through the runner: the cache, the compile job and RunnerService.execute.

Components are compiled only by compile jobs, never on a call's path; the runner loads their ``.cwasm``
from its disk or the store like a core module's and runs them with the same capabilities, logs, limits and
errors. The tiny components come from ``wasm-tools`` (compiled here in milliseconds); the real ones are
built and compiled once per session (``component_artifacts``, the compile job's own child process), and
their ``.cwasm`` is put where the compile function leaves it.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from chalicelib.bundles.pack import pack_project
from chalicelib.errors import ExtensionFailed, ExtensionNotReady, ExtensionTimeout
from runner_container.compiled_code import CWASM_CONTENT_TYPE, CompileStatus, ModuleSource
from runner_container.component import OUTPUT_CAPTURE_BYTES, PreparedComponent
from runner_container.engine import WasmEngine
from runner_container.service import RunnerService
from tests.bundle_factory import bundle, good_files
from tests.components import FIXTURES, ROOT, ComponentArtifacts, dummy_component
from tests.integration.runner_fixtures import RunnerEnv, execute_payload

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("components")]

PYTHON_EXAMPLE = ROOT / "examples" / "hello-python"
HOSTILE = FIXTURES / "hostile-python"
COMPONENT = "wasm-component@1"
LOG = "cap:log.emit"


class RecordingJobs:
    """Compile jobs asked for, not run."""

    def __init__(self) -> None:
        self.requested: list[str] = []
        self._lock = threading.Lock()

    def request(self, content_hash: str) -> None:
        with self._lock:
            self.requested.append(content_hash)


def dummy_bundle(tmp_path: Path, name: str = "com.acme.dummy") -> bytes:
    """A component bundle whose ``handle`` traps (``wasm-tools component embed --dummy``)."""
    files = good_files(name=name, runtime=COMPONENT)
    files["dist/main.wasm"] = dummy_component(tmp_path)
    return bundle(files)


def published_project(env: RunnerEnv, project: Path, cwasm: Path, engine: WasmEngine, tmp_path: Path) -> str:
    """Publish a built project's bundle and its compile job's ``.cwasm``, as finalize and the compile function do."""
    content_hash = env.publish(pack_project(project, tmp_path / f"{project.name}.tar.zst").output.read_bytes())
    key = env.store.precompiled_key(content_hash, engine.fingerprint)
    with cwasm.open("rb") as body:
        env.store.put_immutable(key, body, CWASM_CONTENT_TYPE)
    return content_hash


def body_of(response: Any) -> Any:
    return json.loads(base64.b64decode(response.body_b64))


def compiles(service: RunnerService) -> int:
    return int(service.health()["cache"]["compiles"])


def test_a_component_is_never_compiled_on_a_calls_path_whatever_its_size(
    env: RunnerEnv, engine: WasmEngine, tmp_path: Path
) -> None:
    content_hash = env.publish(dummy_bundle(tmp_path))
    jobs = RecordingJobs()
    # Inline compiles allowed for code of any size, and time to spare: a core module would compile here.
    service = env.service(engine, compile_jobs=jobs, runner_inline_compile_max_bytes=1 << 30)

    with pytest.raises(ExtensionNotReady) as raised:
        service.execute({**execute_payload(content_hash, extension="com.acme.dummy"), "deadline_ms": 60_000})

    assert raised.value.details["retry_after"] >= 2
    assert jobs.requested == [content_hash]
    assert compiles(service) == 0


def test_the_compile_job_compiles_a_component_into_the_store_and_calls_then_run_it(
    env: RunnerEnv, engine: WasmEngine, tmp_path: Path
) -> None:
    content_hash = env.publish(dummy_bundle(tmp_path))
    service = env.service(engine, compile_jobs=RecordingJobs())

    job = service.precompile(content_hash)

    assert (job.status, job.source) == (CompileStatus.READY, ModuleSource.COMPILED)
    assert job.key is not None and env.object_exists(job.key)
    # The dummy's handle is `unreachable`: the call reached the component executor and failed alone.
    with pytest.raises(ExtensionFailed, match="extension trapped"):
        service.execute(execute_payload(content_hash, extension="com.acme.dummy"))
    assert compiles(service) == 1


@pytest.fixture(scope="module")
def python_cwasm(component_artifacts: ComponentArtifacts, engine: WasmEngine) -> Path:
    return component_artifacts.cwasm(PYTHON_EXAMPLE, engine)


def test_a_stored_component_answers_through_the_runner_with_the_calls_capabilities_and_logs(
    env: RunnerEnv, engine: WasmEngine, component_artifacts: ComponentArtifacts, python_cwasm: Path, tmp_path: Path
) -> None:
    project = component_artifacts.project(PYTHON_EXAMPLE)
    content_hash = published_project(env, project, python_cwasm, engine, tmp_path)
    service = env.service(engine, compile_jobs=RecordingJobs())
    hello = execute_payload(content_hash, extension="com.example.hello-python", query={"name": "Ada"}, granted=(LOG,))

    logged = service.execute(hello)
    unlogged = service.execute({**hello, "granted_capabilities": []})
    fetch = service.execute(execute_payload(content_hash, extension="com.example.hello-python", path="/fetch"))

    assert (logged.status, body_of(logged)) == (200, {"message": "Hello, Ada!"})
    assert [record.message for record in logged.logs] == ["GET /hello for Ada"]
    assert (unlogged.logs, unlogged.logs_dropped) == ((), 1)
    # cap:http.fetch is declared but not granted to this install: the host answers denied.
    assert body_of(fetch)["error"]["code"] == "denied"
    assert compiles(service) == 0


def test_other_runners_load_the_stored_component_and_a_restarted_one_its_local_copy(
    env: RunnerEnv, engine: WasmEngine, component_artifacts: ComponentArtifacts, python_cwasm: Path, tmp_path: Path
) -> None:
    project = component_artifacts.project(PYTHON_EXAMPLE)
    content_hash = published_project(env, project, python_cwasm, engine, tmp_path)

    first = env.cache(engine, compile_jobs=RecordingJobs()).get(content_hash, budget_s=10)
    restarted = env.cache(engine, compile_jobs=RecordingJobs()).get(content_hash, budget_s=10)

    assert first.module_source is ModuleSource.STORED
    assert restarted.module_source is ModuleSource.LOCAL
    assert isinstance(restarted.module, PreparedComponent) and restarted.module.body_stdio


@pytest.fixture(scope="module")
def hostile_project(component_artifacts: ComponentArtifacts) -> Path:
    return component_artifacts.project(HOSTILE)


def hostile_call(content_hash: str, what: str, **extra: Any) -> dict[str, Any]:
    payload = execute_payload(content_hash, extension="com.example.hostile-python", path=f"/{what}", granted=(LOG,))
    return {**payload, **extra}


def test_a_hostile_component_fails_its_own_calls_only_and_its_output_reaches_the_logs_bounded(
    env: RunnerEnv, engine: WasmEngine, component_artifacts: ComponentArtifacts, hostile_project: Path, tmp_path: Path
) -> None:
    content_hash = published_project(env, hostile_project, component_artifacts.cwasm(HOSTILE, engine), engine, tmp_path)
    service = env.service(engine, compile_jobs=RecordingJobs())

    with pytest.raises(ExtensionTimeout):
        service.execute(hostile_call(content_hash, "loop", deadline_ms=1000))
    with pytest.raises(ExtensionFailed, match="extension trapped"):
        service.execute(hostile_call(content_hash, "recursion"))
    with pytest.raises(ExtensionFailed, match="status must be an integer from 100 to 599"):
        service.execute(hostile_call(content_hash, "status_999"))
    flood = service.execute(hostile_call(content_hash, "stdout_flood"))
    serving = service.execute(hostile_call(content_hash, "log_flood"))

    assert flood.status == 200
    assert 0 < sum(len(record.message) for record in flood.logs) <= OUTPUT_CAPTURE_BYTES
    assert flood.logs[-1].truncated
    assert (serving.status, len(serving.logs), serving.logs_dropped) == (200, 100, 900)
