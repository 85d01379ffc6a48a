"""Where simulated events go: a Kafka topic (keyed by device) or a JSONL file."""

from __future__ import annotations

import json
from pathlib import Path

from common.kafka_admin import ensure_topic
from common.settings import Settings


def encode(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


class FileSink:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("wb")
        self.errors = 0
        self.first_error: str | None = None

    def send_many(self, events: list[dict]) -> None:
        self._file.write(b"".join(encode(e) + b"\n" for e in events))

    def close(self) -> None:
        self._file.close()


class KafkaSink:
    """Asynchronous producer; delivery failures are counted and reported, never swallowed."""

    def __init__(self, bootstrap: str, topic: str, partitions: int | None = None):
        from kafka import KafkaProducer

        ensure_topic(bootstrap, topic, partitions or Settings.from_env().events_topic_partitions)
        self.topic = topic
        self.errors = 0
        self.first_error: str | None = None
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks=1,
            linger_ms=20,
            batch_size=256 * 1024,
            retries=5,
        )

    def _on_error(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = repr(exc)

    def send_many(self, events: list[dict]) -> None:
        for event in events:
            future = self._producer.send(
                self.topic, key=event["device_id"].encode(), value=encode(event)
            )
            future.add_errback(self._on_error)

    def close(self) -> None:
        self._producer.flush(timeout=60)
        self._producer.close(timeout=10)
