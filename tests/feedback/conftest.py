"""Fixtures for the feedback tests: a real moto server (Kinesis over HTTP on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import free_port, wait_for

REGION = "us-east-1"


class KinesisServer:
    """A moto server on 127.0.0.1:<free port>; ``client()`` is a boto3 Kinesis client for it."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "kinesis",
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def create_stream(self, name: str, shards: int = 2) -> None:
        client = self.client()
        client.create_stream(StreamName=name, ShardCount=shards)
        wait_for(
            lambda: (
                client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
            ),
            timeout_s=10,
            what=f"stream {name} active",
        )

    def read_all(self, name: str) -> list[dict[str, Any]]:
        """Every record of every shard, each shard in sequence order: [{key, data, shard, seq}]."""
        client = self.client()
        out = []
        for shard in client.list_shards(StreamName=name)["Shards"]:
            it = client.get_shard_iterator(StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")[
                "ShardIterator"
            ]
            while it:
                resp = client.get_records(ShardIterator=it, Limit=10_000)
                for r in resp["Records"]:
                    out.append(
                        {
                            "key": r["PartitionKey"],
                            "data": r["Data"],
                            "shard": shard["ShardId"],
                            "seq": int(r["SequenceNumber"]),
                        }
                    )
                if not resp["Records"]:
                    break
                it = resp.get("NextShardIterator")
        return out

    def start(self) -> KinesisServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()


@pytest.fixture(scope="session")
def kinesis_server() -> Iterator[KinesisServer]:
    server = KinesisServer().start()
    yield server
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials for boto3 in the gateway (moto accepts any); never real ones."""
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
