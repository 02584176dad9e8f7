"""Crash consistency of finalize: the worker, a real process, is killed (SIGKILL) when its log says a
stage of finalize has ended, then the event is delivered again; the end state is an uninterrupted run's.

No test seam in the code: the kill lands at the stage's log line or a moment after it, which is what a
crash is.  The redelivery comes after the killed worker's claim has lapsed, as in AWS, where the queue's
visibility timeout (720 s) is longer than the finalize lease (300 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

import pytest

import app as app_module
from chalicelib.registry import UploadState
from chalicelib.uploads.events import finalize_request
from chalicelib.uploads.pipeline import UploadPipeline
from tests.bundle_factory import bundle, good_files
from tests.integration.stack import BUCKET, AwsStack, upload

_LEASE_SECONDS = 300
"""The finalize lease (``chalicelib.uploads.pipeline``): a killed worker's claim lapses after it."""

_WORKER = """
import sys
import app
from devstack.pump import sqs_event
message = {"MessageId": "m", "ReceiptHandle": "r", "Body": sys.argv[1]}
app.finalize_worker(sqs_event(message, "arn:aws:sqs:us-east-1:123456789012:q"), None)
"""

# The stages, in the order finalize runs them: after the claim (and the size check), after verify,
# after the registry write, after the copy into sha256/ (the store), and after the whole finalize.
STAGES = ["finalize.receive", "finalize.verify", "finalize.register", "finalize.store", "upload.finalize"]


def _run_worker(stack: AwsStack, key: str, kill_after: str | None) -> int:
    """The worker in a process of its own; SIGKILLed once it logs the end of ``kill_after``."""
    env = {**os.environ, **stack.env}
    body = finalize_request(BUCKET, key)
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, body], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert worker.stderr is not None
    for line in worker.stderr:
        if kill_after is not None and _event(line) == kill_after:
            worker.send_signal(signal.SIGKILL)
            break
    worker.stderr.close()
    return worker.wait(timeout=60)


def _event(line: str) -> str | None:
    try:
        return str(json.loads(line).get("event"))
    except ValueError:
        return None


def _redeliver(key: str) -> None:
    """The event delivered again, once the killed worker's claim has lapsed."""
    services = app_module.services()
    later = UploadPipeline(
        services.settings,
        store=services.store,
        staging=services.staging,
        multipart=services.multipart,
        signer=services.signer,
        registry=services.registry,
        uploads=services.uploads,
        limiter=services.limiter,
        trust=services.trust,
        clock=lambda: datetime.now().astimezone() + timedelta(seconds=_LEASE_SECONDS + 1),
    )
    later.finalize_staging_object(key, requested=True)


_OWN = {"upload_id", "content_hash", "extension", "size", "status"}
"""What differs between two uploads' answers by construction (checked separately)."""


def _staging_key(target: dict[str, Any]) -> str:
    return app_module.services().uploads.get(target["upload_id"], "acme").staging_key


def _end_state(stack: AwsStack, target: dict[str, Any], name: str, data: bytes) -> dict[str, Any]:
    """What a finalize left, with the upload's own ids and hash taken out so two uploads compare."""
    session = app_module.services().uploads.get(target["upload_id"], "acme")
    replay = stack.call("POST", "/ext-bundles/finalize", {"upload_id": target["upload_id"]})
    hex_digest = replay.json["content_hash"].split(":", 1)[1]
    extension = stack.call("GET", f"/extensions/{name}")
    multipart = stack.s3.list_multipart_uploads(Bucket=BUCKET, Prefix=session.staging_key).get("Uploads", [])
    return {
        "state": session.state,
        "status": replay.json["status"],
        "named": (replay.json["extension"], replay.json["size"]) == (name, len(data)),
        "replay": (
            replay.status_code,
            {k: v for k, v in replay.json.items() if k not in _OWN},
        ),
        "objects": [key.removeprefix(f"sha256/{hex_digest}/") for key in stack.keys(f"sha256/{hex_digest}/")],
        "staging": stack.keys(session.staging_key),
        "multipart": multipart,
        "versions": [
            (v["version"], v["content_hash"] == replay.json["content_hash"]) for v in extension.json["versions"]
        ],
    }


@pytest.mark.parametrize("kill_after", STAGES)
def test_a_worker_killed_at_a_stage_of_finalize_leaves_what_an_uninterrupted_run_does(
    stack: AwsStack, kill_after: str
) -> None:
    base_bundle, crash_bundle = bundle(good_files(name="com.acme.base")), bundle(good_files(name="com.acme.crash"))
    base = upload(stack, base_bundle)
    assert _run_worker(stack, _staging_key(base), None) == 0
    expected = _end_state(stack, base, "com.acme.base", base_bundle)
    assert expected["state"] is UploadState.FINALIZED and expected["named"]
    assert expected["versions"] == [("1.0.0", True)]
    assert expected["status"] == "finalized"

    crashed = upload(stack, crash_bundle)
    key = _staging_key(crashed)
    assert _run_worker(stack, key, kill_after) == -signal.SIGKILL
    _redeliver(key)
    after_crash = _end_state(stack, crashed, "com.acme.crash", crash_bundle)
    assert {**after_crash, "status": None} == {**expected, "status": None}
    # No orphan: sha256/ holds the two registered hashes and nothing else; staging/ is empty.
    assert len({key.split("/")[1] for key in stack.keys("sha256/")}) == 2
    assert stack.keys("staging/") == []
    # After the registry write the retry finds the version its own killed attempt registered (the version
    # names its upload): it answers as the uninterrupted run did, not as a second upload of the same bytes.
    assert after_crash["status"] == expected["status"]
