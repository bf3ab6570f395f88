"""`s3://bucket/prefix` store through boto3 (AWS S3, MinIO, moto).

Every S3 client of the project comes from `s3_client`, so the operator (which reads the
ModelEngine's Secret itself) and a builder pod (which gets the same Secret's keys through
`envFrom`) resolve one Secret to the same endpoint, region and credentials: the standard
AWS_* keys, read from the given mapping or else from the process environment, with the
spec's endpoint winning when it names one. Without keys, boto3's usual chain (IRSA,
instance profiles) applies. Credentials are never part of the store URI, a message or a
log line. Single PUTs and multipart uploads are both atomic on S3: an object appears
whole or not at all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelengine.errors import first_line
from modelengine.store.base import InvalidStoreConfig, NotFound, StoreError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


DEFAULT_REGION = "us-east-1"


def s3_client(
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    credentials: Mapping[str, str] | None = None,
) -> S3Client:
    """A boto3 S3 client from the keys a Secret holds (or this process's environment).

    Honoured keys: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
    AWS_REGION / AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL. An explicit
    `endpoint_url` or `region` (from the spec) wins over the keys.
    """
    import boto3
    from botocore.config import Config

    keys = os.environ if credentials is None else credentials
    endpoint = endpoint_url or keys.get("AWS_ENDPOINT_URL_S3") or keys.get("AWS_ENDPOINT_URL") or None
    region_name = region or keys.get("AWS_REGION") or keys.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    access_key = keys.get("AWS_ACCESS_KEY_ID") or None
    session = boto3.session.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=keys.get("AWS_SECRET_ACCESS_KEY") if access_key else None,
        aws_session_token=(keys.get("AWS_SESSION_TOKEN") or None) if access_key else None,
        region_name=region_name,
    )
    return session.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10),
    )


# S3's bucket naming rules (the part a client can check before any request).
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+")


def bucket_name_problem(bucket: str) -> str | None:
    """What is wrong with a bucket name, or None when S3 accepts it."""
    if not 3 <= len(bucket) <= 63:
        return f"it has {len(bucket)} characters (3 to 63 allowed)"
    if not BUCKET_NAME.fullmatch(bucket):
        return "only lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit"
    if ".." in bucket or _IP_ADDRESS.fullmatch(bucket):
        return "no two dots in a row, and not an IP address"
    return None


def _reason(err: Exception) -> str:
    response: dict[str, Any] = getattr(err, "response", {}) or {}
    code = response.get("Error", {}).get("Code")
    message = response.get("Error", {}).get("Message")
    if code:
        return f"{code}: {message}" if message else str(code)
    # botocore's ParamValidationError puts the cause on the lines after a generic header
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return " ".join(lines[1:])
    return first_line(err)


class S3Store:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: S3Client | None = None,
    ) -> None:
        problem = bucket_name_problem(bucket)
        if problem is not None:
            raise InvalidStoreConfig(f"invalid bucket name {bucket[:80]!r}: {problem}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        try:
            self._client: S3Client = client or s3_client(endpoint_url=endpoint_url, region=region)
        except ValueError as err:  # botocore: an endpoint URL or region it cannot use
            raise InvalidStoreConfig(f"cannot use S3 endpoint/region: {first_line(err)}") from None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def client(self) -> S3Client:
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def url_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as err:
            if _reason(err).startswith(("404", "NoSuchKey", "NotFound")):
                return False
            raise StoreError(f"cannot reach {self.url_for(key)}: {_reason(err)}") from None

    def size(self, key: str) -> int:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as err:
            if _reason(err).startswith(("404", "NoSuchKey", "NotFound")):
                raise NotFound(f"{self.url_for(key)} does not exist") from None
            raise StoreError(f"cannot reach {self.url_for(key)}: {_reason(err)}") from None
        return int(head["ContentLength"])

    def get_bytes(self, key: str) -> bytes:
        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            return obj["Body"].read()
        except Exception as err:
            if _reason(err).startswith(("NoSuchKey", "404")):
                raise NotFound(f"{self.url_for(key)} does not exist") from None
            raise StoreError(f"cannot read {self.url_for(key)}: {_reason(err)}") from None

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as err:
            raise StoreError(f"upload to {self.url_for(key)} failed: {_reason(err)}") from None

    def put_file(self, key: str, src: Path) -> None:
        try:
            self._client.upload_file(str(src), self.bucket, self._key(key))
        except Exception as err:
            raise StoreError(f"upload to {self.url_for(key)} failed: {_reason(err)}") from None

    def get_file(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            self._client.download_file(self.bucket, self._key(key), str(tmp))
        except Exception as err:
            tmp.unlink(missing_ok=True)
            if _reason(err).startswith(("404", "NoSuchKey", "NotFound")):
                raise NotFound(f"{self.url_for(key)} does not exist") from None
            raise StoreError(f"download of {self.url_for(key)} failed: {_reason(err)}") from None
        tmp.replace(dest)

    def list(self, prefix: str) -> Iterator[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    yield obj["Key"][strip:]
        except Exception as err:
            raise StoreError(f"cannot list {self.url_for(prefix)}: {_reason(err)}") from None

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as err:
            raise StoreError(f"cannot delete {self.url_for(key)}: {_reason(err)}") from None
