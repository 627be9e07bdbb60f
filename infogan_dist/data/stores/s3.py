"""S3 and S3-compatible stores (s3://bucket/key) through boto3/botocore, maintained by AWS:
the standard credential chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN,
AWS_PROFILE, ~/.aws/config and credentials, SSO, instance/container roles) and botocore's
own endpoint variables AWS_ENDPOINT_URL_S3 and AWS_ENDPOINT_URL; `data.s3_endpoint_url`
overrides them. Reading is in-process and safe: no `pipe:` commands, nothing unpickled."""

from __future__ import annotations

from typing import Any

from .base import Options, Permanent, StoreError, Transient, client, dirname, redact
from .network import Body, RemoteStore, status_fault


def _make_client(o: Options) -> Any:
    import boto3
    from botocore.config import Config

    cfg = Config(
        retries={"total_max_attempts": 1},  # our loop retries (and resumes bodies)
        connect_timeout=o.connect_timeout_s, read_timeout=o.read_timeout_s,
        max_pool_connections=32, tcp_keepalive=True,
    )
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=o.s3_endpoint_url or None, config=cfg)


def _s3() -> Any:
    return client("s3", _make_client)


def _endpoint() -> str:
    """The endpoint this process's client talks to, credentials masked."""
    try:
        return redact(str(_s3().meta.endpoint_url))
    except Exception:
        return "the S3 endpoint"


def bucket_key(url: str) -> tuple[str, str]:
    rest = url[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise Permanent("no bucket in the URL; write s3://BUCKET/PREFIX")
    return bucket, key


class S3Body(Body):
    def __init__(self, url: str, offset: int, etag: str | None):
        bucket, key = bucket_key(url)
        kw = {"Range": f"bytes={offset}-"} if offset else {}
        if etag and offset:
            kw["IfMatch"] = etag
        r = _s3().get_object(Bucket=bucket, Key=key, **kw)
        self.etag = r.get("ETag", etag)
        self.length = int(r["ContentLength"]) + offset
        self._stream = r["Body"]

    def _read(self, n: int) -> bytes:
        return self._stream.read(n)

    def close(self) -> None:
        try:
            self._stream.close()
        except Exception:
            pass


class S3Store(RemoteStore):
    writable = True

    def body(self, url: str, offset: int, etag: str | None) -> Body:
        return S3Body(url, offset, etag)

    def head(self, url: str) -> int | None:
        bucket, key = bucket_key(url)
        try:
            return int(_s3().head_object(Bucket=bucket, Key=key)["ContentLength"])
        except Exception as e:
            fault = self.fault(e)
            if isinstance(fault, Permanent) and fault.missing:
                return None
            raise fault from None

    def fault(self, e: BaseException) -> Exception:
        """botocore's exceptions reduced to Transient/Permanent with a one-line cause. Their
        text can name endpoints and signed request details, so only the code is kept."""
        import botocore.exceptions as be
        import urllib3

        if isinstance(e, Transient | Permanent):
            return e
        if isinstance(e, be.ClientError):
            meta = e.response.get("ResponseMetadata", {})
            status = int(meta.get("HTTPStatusCode") or 0)
            code = str(e.response.get("Error", {}).get("Code", "")) or "error"
            if status == 0:
                return Transient(code)
            if code == "NoSuchBucket":  # not "no such object": the bucket itself is missing
                return Permanent(f"HTTP {status} NoSuchBucket: the bucket does not exist at "
                                 f"this endpoint ({_endpoint()}); check the bucket name and "
                                 "the endpoint, or create the bucket and upload the shards "
                                 "with `infogan prepare-data --out s3://BUCKET/PREFIX`")
            return status_fault(status, "" if code == str(status) else code)
        if isinstance(e, be.NoCredentialsError | be.PartialCredentialsError):
            return Permanent("no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                             "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or ~/.aws/credentials")
        if isinstance(e, be.ProfileNotFound):
            return Permanent("the AWS profile in AWS_PROFILE does not exist in ~/.aws/config")
        if isinstance(e, be.ParamValidationError):
            return Permanent("invalid S3 request parameters (bucket or key name)")
        if isinstance(e, be.EndpointConnectionError):  # name it: a typo looks like an outage
            return Transient(f"{type(e).__name__}: cannot connect to {_endpoint()}")
        if isinstance(e, be.BotoCoreError | OSError | urllib3.exceptions.HTTPError):
            return Transient(type(e).__name__)  # connection, timeout, incomplete body
        return Permanent(type(e).__name__)

    def http_url(self, url: str) -> str:
        """Presigned by this process's client (the standard credential chain); the signed
        URL is a secret: read-ahead never logs it."""
        bucket, key = bucket_key(url)
        return _s3().generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)

    def sizes(self, urls: list[str]) -> dict[str, int | None]:
        """One LIST per 1000 keys; a HEAD per object if listing is not allowed (403)."""
        listed = self._list_sizes(urls) if urls else {}
        return listed if listed is not None else super().sizes(urls)

    def _list_sizes(self, urls: list[str]) -> dict[str, int | None] | None:
        found: dict[str, int] = {}
        for prefix in {dirname(u) for u in urls}:
            bucket, key = bucket_key(prefix + "/")

            def page(token: str | None, bucket: str = bucket, key: str = key) -> dict:
                kw = {"ContinuationToken": token} if token else {}
                return _s3().list_objects_v2(Bucket=bucket, Prefix=key, **kw)

            token = None
            while True:
                try:
                    r = self.retrying(prefix, lambda token=token: page(token),
                                      verb="listing of")
                except StoreError as e:  # e.g. 403 on ListBucket: HEAD each object
                    if "HTTP 403" in str(e):
                        return None
                    raise
                for obj in r.get("Contents", []):
                    found[f"s3://{bucket}/{obj['Key']}"] = int(obj["Size"])
                if not r.get("IsTruncated"):
                    break
                token = r["NextContinuationToken"]
        return {u: found.get(u) for u in urls}

    def upload(self, local_path: str, url: str) -> None:
        """Put a local file at the URL (one PUT: up to 5 GB, far above any shard)."""
        bucket, key = bucket_key(url)

        def put() -> None:
            with open(local_path, "rb") as f:
                _s3().put_object(Bucket=bucket, Key=key, Body=f)

        self.retrying(url, put, verb="upload to")

    def delete(self, url: str) -> None:
        bucket, key = bucket_key(url)
        self.retrying(url, lambda: _s3().delete_object(Bucket=bucket, Key=key),
                      verb="delete of")
