"""Upload benchmarks against a moto server in its own process.

- ``finalize_vs_get``: finalize of a ~100 MiB bundle / a plain streaming GET of the
  same staged object, in the same child process.
- ``finalize_vs_floor``: finalize / (that GET + the same server-side copy done bare: one multipart
  upload of ``UploadPartCopy`` parts, as the store copies, straight from boto3).  The floor is what any
  finalize must do (read the bytes once, copy them once on the S3 side), so the ratio is our overhead
  rather than moto's copy speed.
- ``finalize_peak_rss_mib``: peak RSS of a child that finalizes a ~200 MiB bundle
  (moto runs elsewhere, so its copy of the object does not count).
- ``publish_mib_per_s``: ``extctl``'s publish (initiate → parallel parts → finalize)
  of the ~100 MiB bundle through the API served over HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench.common import MiB, child_peak_rss_mib, make_tree
from chalicelib.bundles.pack import pack_project
from devstack.ports import free_port

STAGE_CHILD = """
import json, os, sys
from pathlib import Path
import requests
from chalicelib.config import load_settings
from chalicelib.registry import Actor
from chalicelib.services import Services
from chalicelib.storage.multipart import UploadedPart
from chalicelib.uploads.messages import InitiateRequest
from devstack.provision import provision

bundle = Path(sys.argv[1])
settings = load_settings()
provision(settings)
services = Services(settings)
target = services.pipeline.initiate(Actor("bench", "bench"), InitiateRequest(size=bundle.stat().st_size))
parts = []
with bundle.open("rb") as handle:
    for part in target.parts:
        handle.seek((part.part_number - 1) * target.part_size)
        put = requests.put(part.url, data=handle.read(target.part_size), timeout=120)
        parts.append(UploadedPart(part.part_number, put.headers["ETag"]))
session = services.uploads.get(target.upload_id, "bench")
services.multipart.complete(session.staging_key, session.multipart_upload_id, parts)
print(json.dumps({"upload_id": target.upload_id}))
"""

FINALIZE_CHILD = """
import json, sys, time
from chalicelib.config import load_settings
from chalicelib.registry import Actor
from chalicelib.services import Services
from chalicelib.uploads.messages import FinalizeRequest

settings = load_settings()
services = Services(settings)
session = services.uploads.get(sys.argv[1], "bench")
start = time.perf_counter()
body = services.staging.open_stream(session.staging_key)
while body.read(1024 * 1024):
    pass
body.close()
get_s = time.perf_counter() - start
s3, bucket = services.s3, settings.storage_s3_bucket
start = time.perf_counter()
upload = s3.create_multipart_upload(Bucket=bucket, Key="floor/bundle")["UploadId"]
copied = s3.upload_part_copy(
    Bucket=bucket, Key="floor/bundle", UploadId=upload, PartNumber=1,
    CopySource={"Bucket": bucket, "Key": session.staging_key},
)
s3.complete_multipart_upload(
    Bucket=bucket, Key="floor/bundle", UploadId=upload,
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": copied["CopyPartResult"]["ETag"]}]},
)
copy_s = time.perf_counter() - start
s3.delete_object(Bucket=bucket, Key="floor/bundle")
start = time.perf_counter()
result = services.pipeline.finalize(Actor("bench", "bench"), FinalizeRequest(upload_id=session.upload_id))
finalize_s = time.perf_counter() - start
assert result.status == "finalized", result
print(json.dumps({"get_s": get_s, "copy_s": copy_s, "finalize_s": finalize_s}))
"""

PUBLISH_CHILD = """
import json, os, sys, threading, time
from pathlib import Path
from chalicelib.auth import issue_token
from chalicelib.config import load_settings
from devstack.provision import provision
from devstack.servers import ApiServer
from extctl.api import ApiClient
from extctl.publish import publish_bundle
import app as app_module

settings = load_settings()
provision(settings)
server = ApiServer(app_module.app, 0)
threading.Thread(target=server.serve_forever, daemon=True).start()
token = issue_token(os.environ["EXT_AUTH_SECRET"], sub="bench", tenant="bench", roles=["admin"])
api = ApiClient(server.url, token)
start = time.perf_counter()
result = publish_bundle(api, Path(sys.argv[1])).result
seconds = time.perf_counter() - start
assert result["status"] == "finalized", result
print(json.dumps({"publish_s": seconds}))
server.shutdown()
server.close()
"""


def _moto_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(url + "/moto-api/", timeout=1)
            return server, url
        except requests.ConnectionError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("moto_server did not start")


def _env(endpoint: str, work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "STORAGE_S3_BUCKET": "ext-bench",
        "STORAGE_S3_FORCE_PATH_STYLE": "true",
        "EXT_AUTH_SECRET": "bench-secret-0123456789-abcdefghij",
        "TMPDIR": str(work),
        "UPLOAD_RATE_LIMIT_PER_MINUTE": "0",
    }


def _child(code: str, argument: str, env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    previous = dict(os.environ)
    os.environ.update(env)
    try:
        return child_peak_rss_mib(code, argument)
    finally:
        os.environ.clear()
        os.environ.update(previous)


def _finalize(bundle: Path, env: dict[str, str], endpoint: str) -> tuple[float, dict[str, Any]]:
    """Stage ``bundle`` in one process, then finalize it in a fresh one (whose peak RSS is finalize's)."""
    requests.post(endpoint + "/moto-api/reset", timeout=30)
    _, staged = _child(STAGE_CHILD, str(bundle), env)
    return _child(FINALIZE_CHILD, str(staged["upload_id"]), env)


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-uploads-") as tmp:
        work = Path(tmp)
        b100 = pack_project(make_tree(work / "t100", 150 * MiB), work / "b100.tar.zst").output
        b200 = pack_project(make_tree(work / "t200", 300 * MiB, seed=11), work / "b200.tar.zst").output
        server, endpoint = _moto_server()
        try:
            env = _env(endpoint, work)
            _, timing = _finalize(b100, env, endpoint)
            rss, _ = _finalize(b200, env, endpoint)
            requests.post(endpoint + "/moto-api/reset", timeout=30)
            _, published = _child(PUBLISH_CHILD, str(b100), env)
        finally:
            server.terminate()
            server.wait(timeout=30)
        size_mib = b100.stat().st_size / MiB
        return {
            "finalize_vs_get": round(float(timing["finalize_s"]) / float(timing["get_s"]), 3),
            "finalize_seconds": round(float(timing["finalize_s"]), 3),
            "get_seconds": round(float(timing["get_s"]), 3),
            "finalize_vs_floor": round(
                float(timing["finalize_s"]) / (float(timing["get_s"]) + float(timing["copy_s"])), 3
            ),
            "floor_copy_seconds": round(float(timing["copy_s"]), 3),
            "finalize_bundle_mib": round(size_mib, 1),
            "finalize_peak_rss_mib": round(rss, 1),
            "finalize_rss_bundle_mib": round(b200.stat().st_size / MiB, 1),
            "publish_mib_per_s": round(size_mib / float(published["publish_s"]), 1),
        }
