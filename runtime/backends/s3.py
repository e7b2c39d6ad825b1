"""S3 adapter: `S3ObjectStore`, the ObjectStore port of one region on an S3 endpoint (Ceph radosgw).

Owns one aiobotocore client (asyncio only: aiobotocore runs on aiohttp) with path-style
addressing, opened and closed by the async context manager. The store's `region` is
the project's region (GEO-1); the S3 signing region is a separate setting, since a
radosgw zonegroup accepts any.

Storage classes are real S3 storage classes: radosgw accepts any class its placement
target defines, and `.ci/ceph-start.sh` defines WARM and COLD beside STANDARD
(`radosgw-admin zonegroup/zone placement add --storage-class`). An endpoint without
them refuses the PUT (`InvalidArgument`), which maps to `InvalidRequest`.

Refusals are those of `runtime.storage`, with the sim model's exceptions. S3 itself
does not refuse some of them, so they are checked first (a check and its change are
two requests, like the libvirt adapter's state checks): creating a bucket you already
own succeeds on radosgw (`Conflict` here), deleting a missing key succeeds (`NotFound`
here), and a HEAD that finds nothing does not say whether the bucket or the key is
missing. Connection failures, timeouts and 502/503/504 are `StoreUnavailable`; every
request is bounded by `connect_timeout_s`, `read_timeout_s` and `max_attempts`. botocore
retries after a timeout too: a delete whose first attempt succeeded unseen then
answers `NotFound` (use `max_attempts=1` where that matters more than a retry).
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any

import aiohttp
import botocore.exceptions
import botocore.handlers
from aiobotocore.session import get_session
from botocore.config import Config

from runtime.errors import BackendError, Conflict, InvalidRequest, NotFound
from runtime.storage import ObjectInfo, StorageClass, StoreUnavailable

_UNAVAILABLE_STATUS = frozenset({502, 503, 504})
_NO_ANSWER = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.HTTPClientError,
)


class S3ObjectStore:
    """ObjectStore port for region `region` on the S3 endpoint `endpoint_url`.

    Use as `async with S3ObjectStore(...) as store:`; calls outside it raise RuntimeError.
    """

    def __init__(self, endpoint_url: str, access_key: str, secret_key: str, region: str, *,
                 signing_region: str = "us-east-1", connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 30.0, max_attempts: int = 3) -> None:
        self._endpoint = endpoint_url
        self._region = region
        self._credentials = (access_key, secret_key)
        self._signing_region = signing_region
        self._config = Config(
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},  # botocore's max_attempts counts retries
        )
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    @property
    def region(self) -> str:
        return self._region

    async def __aenter__(self) -> S3ObjectStore:
        stack = contextlib.AsyncExitStack()
        self._client = await stack.enter_async_context(get_session().create_client(
            "s3", endpoint_url=self._endpoint, region_name=self._signing_region,
            aws_access_key_id=self._credentials[0], aws_secret_access_key=self._credentials[1],
            config=self._config,
        ))
        # A PUT would wait for "100 Continue" before its body, and aiohttp bounds that wait
        # by no timeout: a gateway that accepted the connection and hangs would hang us.
        self._client.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)
        self._stack = stack
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def create_bucket(self, bucket: str) -> None:
        if await self._bucket_exists(bucket):
            raise Conflict(f"bucket {bucket!r} already exists in {self._region}; pick another name")
        await self._call("create_bucket", bucket, None, Bucket=bucket)

    async def delete_bucket(self, bucket: str) -> None:
        await self._call("delete_bucket", bucket, None, Bucket=bucket)

    async def list_buckets(self) -> list[str]:
        reply = await self._call("list_buckets", None, None)
        return sorted(b["Name"] for b in reply.get("Buckets", []))

    async def put_object(self, bucket: str, key: str, data: bytes,
                         storage_class: StorageClass = StorageClass.STANDARD) -> ObjectInfo:
        await self._call("put_object", bucket, None, Bucket=bucket, Key=key, Body=data,
                         StorageClass=storage_class.value)
        return ObjectInfo(bucket, key, len(data), storage_class)

    async def get_object(self, bucket: str, key: str) -> bytes:
        reply = await self._call("get_object", bucket, key, Bucket=bucket, Key=key)
        try:
            async with reply["Body"] as body:
                data: bytes = await body.read()
        except (*_NO_ANSWER, aiohttp.ClientError, TimeoutError) as exc:  # the body is read after the reply came
            raise self._unavailable(exc) from exc
        return data

    async def head_object(self, bucket: str, key: str) -> ObjectInfo:
        reply = await self._head(bucket, key)
        return ObjectInfo(bucket, key, int(reply["ContentLength"]), _storage_class(reply.get("StorageClass")))

    async def delete_object(self, bucket: str, key: str) -> None:
        await self._head(bucket, key)
        await self._call("delete_object", bucket, key, Bucket=bucket, Key=key)

    async def list_objects(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            reply = await self._call("list_objects_v2", bucket, None, Bucket=bucket, Prefix=prefix, **extra)
            found += [ObjectInfo(bucket, o["Key"], int(o["Size"]), _storage_class(o.get("StorageClass")))
                      for o in reply.get("Contents", [])]
            if not reply.get("IsTruncated"):
                return sorted(found, key=lambda info: info.key)
            token = reply["NextContinuationToken"]

    async def _bucket_exists(self, bucket: str) -> bool:
        try:
            await self._call("head_bucket", bucket, None, Bucket=bucket)
        except NotFound:
            return False
        return True

    async def _head(self, bucket: str, key: str) -> Any:
        try:
            return await self._call("head_object", bucket, key, Bucket=bucket, Key=key)
        except NotFound as exc:
            # A HEAD's 404 has no body, so no code saying which of the two is missing.
            if not await self._bucket_exists(bucket):
                raise NotFound("bucket", bucket) from exc
            raise

    async def _call(self, operation: str, bucket: str | None, key: str | None, **params: Any) -> Any:
        if self._client is None:
            raise RuntimeError("S3ObjectStore used outside `async with`")
        try:
            return await getattr(self._client, operation)(**params)
        except botocore.exceptions.ClientError as exc:
            _refuse(exc, self._region, bucket, key)
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in _UNAVAILABLE_STATUS:
                raise self._unavailable(exc) from exc
            raise BackendError(f"S3 at {self._endpoint} refused {operation}: {exc}") from exc
        except _NO_ANSWER as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"{self._region} (object storage)", f"{self._endpoint}: {exc}")


def _refuse(exc: botocore.exceptions.ClientError, region: str, bucket: str | None, key: str | None) -> None:
    """Raise the port's refusal for an S3 error code, or return if it is none of them."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "NoSuchBucket":
        raise NotFound("bucket", str(bucket)) from exc
    if code == "NoSuchKey" or status == 404:
        if key is not None:
            raise NotFound("object", f"{bucket}/{key}") from exc
        if bucket is not None:
            raise NotFound("bucket", bucket) from exc
    if code in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
        raise Conflict(f"bucket {bucket!r} already exists in {region}; pick another name") from exc
    if code == "BucketNotEmpty":
        raise Conflict(f"bucket {bucket!r} is not empty; delete its objects first") from exc
    if code in ("InvalidBucketName", "InvalidArgument", "InvalidStorageClass", "KeyTooLongError"):
        raise InvalidRequest(f"S3 refused the request for {bucket}/{key or ''}: {code}") from exc


def _storage_class(name: str | None) -> StorageClass:
    try:
        return StorageClass(name or "STANDARD")
    except ValueError as exc:
        raise BackendError(f"object storage class {name!r} is not one of ours (STANDARD, WARM, COLD)") from exc
