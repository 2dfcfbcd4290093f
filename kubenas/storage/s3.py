"""S3 object storage through boto3 (the only module that imports boto3).

Create-only is ``PutObject`` with ``IfNoneMatch='*'`` (HTTP 412 when the key exists);
compare-and-swap is ``IfMatch=<etag>``. Credentials come from the environment or the
standard AWS chain (in a pod: env from a Secret) and are never logged or put in URLs.
"""

from __future__ import annotations

import os
from typing import Optional

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from kubenas.storage.base import (AlreadyExists, NotFound, ObjectStore, PreconditionFailed,
                                  StorageError)


def _code(exc: ClientError) -> str:
    err = exc.response.get("Error", {})
    return str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


class S3Store(ObjectStore):
    def __init__(self, bucket: str, prefix: str = "", endpoint_url: Optional[str] = None,
                 region: Optional[str] = None, create_bucket: bool = False,
                 max_attempts: int = 8) -> None:
        if not bucket:
            raise ValueError("s3 store: bucket name is empty")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or os.environ.get("KUBENAS_S3_ENDPOINT") or None
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=region or os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            # Standard retry mode rides out a restarting S3 server (connection refused,
            # 5xx, throttling) with exponential backoff before we ever see an error.
            config=Config(retries={"max_attempts": max_attempts, "mode": "standard"},
                          s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=30),
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

    def _k(self, key: str) -> str:
        key = key.lstrip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, fn, key: str, **kw):
        try:
            return fn(Bucket=self.bucket, **kw)
        except ClientError as exc:
            code = _code(exc)
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(key) from None
            if code in ("PreconditionFailed", "412"):
                raise PreconditionFailed(key) from None
            if code in ("ConditionalRequestConflict", "409"):
                raise PreconditionFailed(f"{key}: concurrent conditional write") from None
            raise StorageError(f"s3://{self.bucket}/{self._k(key)}: {code}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"s3://{self.bucket}/{self._k(key)}: {type(exc).__name__}: {exc}") from exc

    def put_new(self, key: str, data: bytes) -> str:
        try:
            resp = self._call(self.client.put_object, key, Key=self._k(key), Body=data, IfNoneMatch="*")
        except PreconditionFailed:
            raise AlreadyExists(key) from None
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
        resp = self._call(self.client.get_object, key, Key=self._k(key))
        return resp["Body"].read(), resp["ETag"].strip('"')

    def list(self, prefix: str = "") -> list[str]:
        full = self._k(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(f"{self.prefix}/") if self.prefix else 0
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"s3://{self.bucket}/{full}: list failed: {exc}") from exc
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._call(self.client.delete_object, key, Key=self._k(key))

    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
