"""An S3 stand-in for the tests: moto's server on 127.0.0.1, buckets whose avatars anyone can read."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"
REGION = "us-east-1"


@dataclass
class S3Bucket:
    """A fresh bucket on the moto server, and a client to look inside it."""

    endpoint: str
    name: str
    client: Any

    def env(self) -> dict[str, str]:
        """The settings that put avatars in this bucket (as environment variables)."""
        return {
            "AVATAR_STORAGE": "s3",
            "S3_ENDPOINT_URL": self.endpoint,
            "S3_BUCKET": self.name,
            "S3_ACCESS_KEY_ID": ACCESS_KEY,
            "S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "S3_REGION": REGION,
        }

    def settings(self) -> dict[str, Any]:
        """The same, as :class:`~app.config.Settings` field overrides."""
        return {name.lower(): value for name, value in self.env().items()}

    def object_keys(self) -> list[str]:
        """Every key in the bucket, sorted."""
        listing = self.client.list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in listing.get("Contents", []))


def start_server() -> ThreadedMotoServer:
    """Start moto's S3 server on a free local port (no network beyond 127.0.0.1)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    return server


def new_bucket(server: ThreadedMotoServer) -> S3Bucket:
    """A new bucket whose ``avatars/`` objects are publicly readable, like an operator sets one up."""
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )
    name = f"avatars-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{name}/avatars/*",
            }
        ],
    }
    client.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))
    return S3Bucket(endpoint, name, client)


def serving() -> Iterator[ThreadedMotoServer]:
    """Body of a fixture: a moto server for the duration."""
    server = start_server()
    try:
        yield server
    finally:
        server.stop()
