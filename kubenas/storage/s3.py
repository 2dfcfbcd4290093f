"""S3 object storage through boto3 (the only module that imports boto3).

Create-only is ``PutObject`` with ``IfNoneMatch='*'`` (HTTP 412 when the key exists);
compare-and-swap is ``IfMatch=<etag>``. Credentials come from the environment or the
standard AWS chain (in a pod: env from a Secret) and are never logged or put in URLs.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (BotoCoreError, ClientError, ConnectionClosedError,
                                 ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError,
                                 ResponseStreamingError)

from kubenas.storage.base import (READ_WORKERS, AlreadyExists, NotFound, ObjectStore,
                                  PreconditionFailed, StorageError)


def _code(exc: ClientError) -> str:
    err = exc.response.get("Error", {})
    return str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


T = TypeVar("T")
_TRANSIENT_ERRORS = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError,
                     ReadTimeoutError, ResponseStreamingError)
_TRANSIENT_CODES = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable",
                    "SlowDown", "RequestTimeout"}


def _transient(exc: BaseException) -> bool:
    """The server is unreachable or momentarily failing (restarting): worth another try."""
    if isinstance(exc, ClientError):
        return _code(exc) in _TRANSIENT_CODES
    return isinstance(exc, _TRANSIENT_ERRORS)


class S3Store(ObjectStore):
    def __init__(self, bucket: str, prefix: str = "", endpoint_url: Optional[str] = None,
                 region: Optional[str] = None, create_bucket: bool = False,
                 max_attempts: int = 8, access_key_id: Optional[str] = None,
                 secret_access_key: Optional[str] = None, page_size: int = 1000,
                 retry_seconds: Optional[float] = None) -> None:
        """``max_attempts``: botocore's attempts per request. ``retry_seconds``: beyond those,
        keep retrying while the server is unreachable or answers 5xx for this long (default
        4 s per allowed retry: 28 s for the default 8 attempts, 0 for ``max_attempts=1``), so
        that a restarting S3 server is ridden out whatever botocore's random backoff drew."""
        if not bucket:
            raise ValueError("s3 store: bucket name is empty")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.page_size = page_size  # keys per ListObjectsV2 request (S3 caps it at 1000)
        self.retry_seconds = (4.0 * max(0, max_attempts - 1) if retry_seconds is None
                              else retry_seconds)
        self.endpoint_url = endpoint_url or os.environ.get("KUBENAS_S3_ENDPOINT") or None
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=region or os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            # explicit credentials (e.g. the operator reading an Experiment's Secret); None:
            # the environment / standard chain
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
            # Standard retry mode rides out a restarting S3 server (connection refused,
            # 5xx, throttling) with exponential backoff before we ever see an error.
            config=Config(retries={"max_attempts": max_attempts, "mode": "standard"},
                          s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=30,
                          max_pool_connections=READ_WORKERS),   # get_many's threads
        )
        if create_bucket:
            self.ensure_bucket()

    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise StorageError(f"s3://{self.bucket}: cannot create bucket: {_code(exc)}") from exc
            except BotoCoreError as exc:
                raise StorageError(f"s3://{self.bucket}: cannot create bucket: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"s3://{self.bucket}: unreachable: {exc}") from exc

    def _k(self, key: str) -> str:
        key = key.lstrip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _retrying(self, fn: Callable[[], T], tries: Optional[list] = None) -> T:
        """fn(), retried on transient failures until ``retry_seconds`` have passed. Every
        failed try is appended to ``tries`` (a caller may need to know it was retried)."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.2
        while True:
            try:
                return fn()
            except (ClientError, BotoCoreError) as exc:
                if tries is not None:
                    tries.append(exc)
                if not _transient(exc) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _call(self, fn, key: str, **kw):
        try:
            return self._retrying(lambda: fn(Bucket=self.bucket, **kw))
        except (ClientError, BotoCoreError) as exc:
            err = self._translate(exc, key)
            if isinstance(err, StorageError):
                raise err from exc
            raise err from None

    def _translate(self, exc: Exception, key: str) -> Exception:
        if isinstance(exc, BotoCoreError):
            return StorageError(f"s3://{self.bucket}/{self._k(key)}: {type(exc).__name__}: {exc}")
        code = _code(exc)
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFound(key)
        if code in ("PreconditionFailed", "412"):
            return PreconditionFailed(key)
        if code in ("ConditionalRequestConflict", "409"):
            return PreconditionFailed(f"{key}: concurrent conditional write")
        return StorageError(f"s3://{self.bucket}/{self._k(key)}: {code}")

    def put_new(self, key: str, data: bytes) -> str:
        tries: list = []
        try:
            resp = self._retrying(lambda: self.client.put_object(
                Bucket=self.bucket, Key=self._k(key), Body=data, IfNoneMatch="*"), tries)
        except ClientError as exc:
            if _code(exc) not in ("PreconditionFailed", "412"):
                raise self._translate(exc, key) from exc
            # A 412 after a retried attempt may be our own first attempt, applied by the server
            # while its answer was lost (e.g. the server restarted): then the stored object is
            # byte-for-byte ours and this write is the one that created it.
            if len(tries) > 1 or exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) > 0:
                try:
                    current, etag = self.get_with_etag(key)
                except NotFound:
                    current, etag = None, ""
                if current == data:
                    return etag
            raise AlreadyExists(key) from None
        except BotoCoreError as exc:
            raise self._translate(exc, key) from exc
        return resp["ETag"].strip('"')

    def put(self, key: str, data: bytes) -> str:
        resp = self._call(self.client.put_object, key, Key=self._k(key), Body=data)
        return resp["ETag"].strip('"')

    def put_if_match(self, key: str, data: bytes, etag: Optional[str]) -> str:
        if etag is None:
            try:
                return self.put_new(key, data)
            except AlreadyExists:
                raise PreconditionFailed(f"{key}: exists") from None
        resp = self._call(self.client.put_object, key, Key=self._k(key), Body=data,
                          IfMatch=f'"{etag}"')
        return resp["ETag"].strip('"')

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        def get_and_read(Bucket: str, Key: str) -> tuple[bytes, str]:
            # reading the body is part of the try: a server going away mid-stream is transient
            resp = self.client.get_object(Bucket=Bucket, Key=Key)
            return resp["Body"].read(), resp["ETag"].strip('"')

        return self._call(get_and_read, key, Key=self._k(key))

    def head(self, key: str) -> str:
        resp = self._call(self.client.head_object, key, Key=self._k(key))
        return resp["ETag"].strip('"')

    def list(self, prefix: str = "", start_after: Optional[str] = None) -> list[str]:
        full = self._k(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(f"{self.prefix}/") if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        after = {"StartAfter": self._k(start_after)} if start_after else {}

        def list_all() -> list[str]:  # retried as a whole: a listing is restarted from scratch
            keys: list[str] = []
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full, **after,
                                           PaginationConfig={"PageSize": self.page_size}):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
            return keys

        try:
            return sorted(self._retrying(list_all))
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"s3://{self.bucket}/{full}: list failed: {exc}") from exc

    def delete(self, key: str) -> None:
        self._call(self.client.delete_object, key, Key=self._k(key))

    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
