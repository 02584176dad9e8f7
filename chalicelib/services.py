"""Wiring: build every service from the settings, once per process.

Routes, the finalize worker and tests all get their collaborators here, so the
code under test is the code that runs; tests point it at moto with
``AWS_ENDPOINT_URL`` or in-process ``mock_aws``.  Storage is typed by its
protocols (:mod:`chalicelib.storage`); only this module names the S3 classes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.auth import TokenVerifier
from chalicelib.bundles.signing import TrustBundle
from chalicelib.config import Settings
from chalicelib.errors import SettingsInvalid, StorageError
from chalicelib.extension_logs import LogPage, LogQuery, LogReader, make_log_reader
from chalicelib.gateway.runner_client import CompileClient, RunnerClient, make_compile_client, make_runner_client
from chalicelib.gateway.service import GatewayService
from chalicelib.install_state import InstallStateService
from chalicelib.kv import KvService, make_kv_models
from chalicelib.logs import log_event
from chalicelib.registry import (
    ConcurrencyLimiter,
    InstallService,
    Models,
    RateLimiter,
    RegistryService,
    UploadService,
    make_models,
    utc_now,
)
from chalicelib.secrets import SecretsService, make_kms_client, make_secret_model
from chalicelib.storage.multipart import MultipartUploads, S3Multipart
from chalicelib.storage.presign import S3UploadSigner, UploadSigner
from chalicelib.storage.s3 import make_s3_client, make_s3_presign_client
from chalicelib.storage.store import BundleStore, S3BundleStore, StagingArea
from chalicelib.uploads.events import finalize_request
from chalicelib.uploads.pipeline import UploadPipeline

__all__ = ["Services"]


@dataclass
class Services:
    """Every collaborator, built lazily from one :class:`Settings`."""

    settings: Settings

    @cached_property
    def s3(self) -> Any:
        return make_s3_client(self.settings)

    @cached_property
    def _bucket_store(self) -> S3BundleStore:
        return S3BundleStore.from_settings(self.settings, self.s3)

    @cached_property
    def store(self) -> BundleStore:
        return self._bucket_store

    @cached_property
    def staging(self) -> StagingArea:
        return self._bucket_store

    @cached_property
    def multipart(self) -> MultipartUploads:
        return S3Multipart(self.s3, self.settings.storage_s3_bucket)

    @cached_property
    def signer(self) -> UploadSigner:
        return S3UploadSigner(make_s3_presign_client(self.settings), self.settings.storage_s3_bucket)

    @cached_property
    def models(self) -> Models:
        return make_models(self.settings)

    @cached_property
    def registry(self) -> RegistryService:
        return RegistryService(self.models, utc_now, self.trust)

    @cached_property
    def installs(self) -> InstallService:
        return InstallService(self.models, self.registry, utc_now, on_change=self._install_changed)

    def _install_changed(self, tenant: str, name: str) -> None:
        if "gateway" in self.__dict__:  # only a gateway already built holds cached installs
            self.gateway.forget_install(tenant, name)

    @cached_property
    def kv(self) -> KvService:
        return KvService(make_kv_models(self.settings), utc_now)

    @cached_property
    def secrets(self) -> SecretsService:
        kms = make_kms_client(self.settings)
        return SecretsService(make_secret_model(self.settings), kms, self.settings.secrets_kms_key_id, utc_now)

    @cached_property
    def state(self) -> InstallStateService:
        return InstallStateService(self.installs, self.registry, self.kv, self.secrets)

    @cached_property
    def uploads(self) -> UploadService:
        return UploadService(self.models, utc_now)

    @cached_property
    def limiter(self) -> RateLimiter:
        return RateLimiter(self.models)

    @cached_property
    def concurrency(self) -> ConcurrencyLimiter:
        return ConcurrencyLimiter(self.models)

    @cached_property
    def tokens(self) -> TokenVerifier:
        return TokenVerifier(self.settings)

    @cached_property
    def trust(self) -> TrustBundle | None:
        return TrustBundle.from_setting(self.settings.signing_trust_bundle)

    @cached_property
    def runner(self) -> RunnerClient:
        return make_runner_client(self.settings)

    @cached_property
    def compiler(self) -> CompileClient | None:
        """Who compiles a version right after its publish (the worker needs no runner function for it)."""
        return make_compile_client(self.settings)

    @cached_property
    def log_reader(self) -> LogReader | None:
        return make_log_reader(self.settings)

    def read_logs(self, query: LogQuery) -> LogPage:
        """The install's log lines (:mod:`chalicelib.extension_logs`); ``SETTINGS_INVALID`` without a source."""
        if self.log_reader is None:
            raise SettingsInvalid("no log source: set RUNNER_LOG_GROUP (AWS) or RUNNER_BASE_URL (HTTP runner)")
        return self.log_reader.read(query)

    def _precompile(self, content_hash: str) -> None:
        compiler = self.compiler
        if compiler is None:
            return
        try:
            compiler.precompile(content_hash)
        except Exception as exc:
            # The version is published; without this job the first call asks for one itself.
            log_event(
                "upload.precompile_request_failed",
                level=logging.WARNING,
                content_hash=content_hash,
                reason=f"{type(exc).__name__}: {exc}",
            )

    @cached_property
    def pipeline(self) -> UploadPipeline:
        return UploadPipeline(
            self.settings,
            store=self.store,
            staging=self.staging,
            multipart=self.multipart,
            signer=self.signer,
            registry=self.registry,
            uploads=self.uploads,
            limiter=self.limiter,
            trust=self.trust,
            clock=utc_now,
            on_published=self._precompile,
            request_finalize=self._request_finalize if self.settings.finalize_mode == "queue" else None,
        )

    @cached_property
    def sqs(self) -> Any:
        # Bounded like the S3 client: at most 5 requests a send, none waiting past 10 s for its answer.
        config = Config(retries={"mode": "standard", "total_max_attempts": 5}, connect_timeout=5, read_timeout=10)
        return boto3.client("sqs", region_name=self.settings.storage_s3_region, config=config)

    def _request_finalize(self, staging_key: str) -> None:
        if not self.settings.finalize_queue_url:
            raise SettingsInvalid("FINALIZE_MODE=queue needs FINALIZE_QUEUE_URL")
        body = finalize_request(self.settings.storage_s3_bucket, staging_key)
        try:
            self.sqs.send_message(QueueUrl=self.settings.finalize_queue_url, MessageBody=body)
        except (BotoCoreError, ClientError) as exc:
            # Nothing was queued: the upload stays as it was, and finalize sent again queues it then.
            raise StorageError(f"could not queue the finalize: {type(exc).__name__}") from exc

    @cached_property
    def gateway(self) -> GatewayService:
        return GatewayService(
            self.settings,
            installs=self.installs,
            registry=self.registry,
            limiter=self.limiter,
            concurrency=self.concurrency,
            runner=lambda: self.runner,
            clock=utc_now,
        )
