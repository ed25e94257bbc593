"""What our S3 client sends over HTTPS, as Google Cloud Storage's XML API must accept it.

boto3 ≥ 1.36 uploads with ``Content-Encoding: aws-chunked`` and a streaming checksum trailer by
default; GCS refuses that, SeaweedFS does not. So the request is recorded and checked here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from backend.storage.s3 import S3Storage
from tests.photos import photo_jpeg
from tests.storage.recording_s3 import recording_s3


async def test_put_object_is_a_plain_signed_put(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = photo_jpeg(1.0)
    with recording_s3(tmp_path) as s3:
        # botocore verifies TLS against this bundle: the endpoint's own certificate.
        monkeypatch.setenv("AWS_CA_BUNDLE", str(s3.ca_file))
        storage = S3Storage(
            bucket="atelier",
            endpoint_url=s3.url,
            region="auto",
            access_key="GOOG1EXAMPLEHMACKEY",
            secret_key="example-hmac-secret",
        )
        try:
            await storage.put("originals/a.jpg", data, content_type="image/jpeg")
            await storage.check()
        finally:
            await storage.close()

    put, head = s3.requests
    assert (put.method, put.path) == ("PUT", "/atelier/originals/a.jpg")
    assert "aws-chunked" not in put.headers.get("content-encoding", "")
    assert "transfer-encoding" not in put.headers
    assert "x-amz-trailer" not in put.headers
    assert "x-amz-decoded-content-length" not in put.headers
    assert not put.headers["x-amz-content-sha256"].startswith("STREAMING-")
    assert not any(name.startswith("x-amz-checksum-") for name in put.headers)
    # The body is the file itself, its length declared and its hash signed.
    assert int(put.headers["content-length"]) == len(data)
    assert put.body == data
    assert put.headers["x-amz-content-sha256"] == hashlib.sha256(data).hexdigest()
    signed = put.headers["authorization"]
    assert signed.startswith("AWS4-HMAC-SHA256 Credential=GOOG1EXAMPLEHMACKEY/")
    assert "x-amz-content-sha256" in signed
    assert put.headers["content-type"] == "image/jpeg"
    # HeadBucket, the readiness check, is a bare signed HEAD of the bucket.
    assert (head.method, head.path) == ("HEAD", "/atelier")


async def test_presigned_post_is_the_documented_v4_hmac_form() -> None:
    """GCS's XML API takes HTML-form uploads signed AWS4-HMAC-SHA256 with an HMAC key and a
    base64 policy document; nothing else (no checksum or session-token field) may appear."""
    import base64
    import json

    storage = S3Storage(
        bucket="atelier-demo",
        endpoint_url="https://storage.googleapis.com",
        region="auto",
        access_key="GOOG1EXAMPLEHMACKEY",
        secret_key="example-hmac-secret",
    )
    try:
        form = await storage.presign_post(
            "staging/u/1", content_type="image/png", max_bytes=1000, expires_in=300
        )
    finally:
        await storage.close()
    assert form.url == "https://storage.googleapis.com/atelier-demo"
    assert set(form.fields) == {
        "key",
        "Content-Type",
        "policy",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-signature",
    }
    assert form.fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert form.fields["x-amz-credential"].startswith("GOOG1EXAMPLEHMACKEY/")
    assert form.fields["x-amz-credential"].endswith("/auto/s3/aws4_request")
    policy = json.loads(base64.b64decode(form.fields["policy"]))
    conditions = policy["conditions"]
    assert {"bucket": "atelier-demo"} in conditions
    assert {"key": "staging/u/1"} in conditions
    assert {"Content-Type": "image/png"} in conditions
    assert ["content-length-range", 1, 1000] in conditions
