"""Where simulated events go: a Kafka topic (keyed by device), a JSONL file, or nowhere.

Every sink takes ``(key, value)`` byte pairs and counts delivery errors instead of swallowing
them; the simulator reports them and exits non-zero.
"""

from __future__ import annotations

import json
from pathlib import Path

Message = tuple[bytes, bytes]


def encode(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


class Sink:
    errors = 0
    first_error: str | None = None

    def send(self, messages: list[Message]) -> None:
        raise NotImplementedError

    def send_many(self, events: list[dict]) -> None:
        """Send event dicts (tests and small tools); keyed by device id."""
        self.send([(str(e.get("device_id", "")).encode(), encode(e)) for e in events])

    def close(self) -> None:
        pass


class NullSink(Sink):
    """Discards everything: measures generation and encoding alone."""

    def send(self, messages: list[Message]) -> None:
        pass


class FileSink(Sink):
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("wb")

    def send(self, messages: list[Message]) -> None:
        self._file.write(b"".join(value + b"\n" for _, value in messages))

    def close(self) -> None:
        self._file.close()


class KafkaSink(Sink):
    """librdkafka producer (confluent-kafka): batches in C, reports only failed deliveries."""

    def __init__(self, bootstrap: str, topic: str, partitions: int | None = None):
        from confluent_kafka import Producer

        from common.kafka_admin import ensure_topic
        from common.settings import Settings

        ensure_topic(bootstrap, topic, partitions or Settings.from_env().events_topic_partitions)
        self.topic = topic
        self.errors = 0
        self.first_error = None
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                # Each event lands once and in order, also when a broker restarts mid-send (a
                # retried batch is not written twice): duplicates would skew window features.
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 20,
                "batch.size": 1_000_000,
                "queue.buffering.max.messages": 500_000,
                "message.max.bytes": 1_000_000,
                # One Python callback per failed message only: per-message callbacks for
                # successes would cost more than producing.
                "delivery.report.only.error": True,
                "on_delivery": self._on_delivery,
            }
        )

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self.errors += 1
            if self.first_error is None:
                self.first_error = str(err)

    def send(self, messages: list[Message]) -> None:
        from confluent_kafka import KafkaException

        produce, topic = self._producer.produce, self.topic
        for key, value in messages:
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:  # local queue full: let librdkafka drain it
                    self._producer.poll(0.05)
                except KafkaException as exc:  # refused before sending, e.g. too large
                    self._on_delivery(exc.args[0], None)
                    break
        self._producer.poll(0)

    def send_to_every_partition(self, key: bytes, value: bytes) -> int:
        """The same message to each partition of the topic; returns how many."""
        meta = self._producer.list_topics(self.topic, timeout=10).topics[self.topic]
        for partition in sorted(meta.partitions):
            self._producer.produce(self.topic, value, key, partition=partition)
        self._producer.poll(0)
        return len(meta.partitions)

    def close(self) -> None:
        remaining = self._producer.flush(60)
        if remaining:
            self.errors += remaining
            self.first_error = self.first_error or f"{remaining} messages still queued after 60 s"


def open_sink(output: str, path: Path | None, bootstrap: str, topic: str) -> Sink:
    """The sink for an ``--output`` choice: kafka, file (needs ``path``) or null."""
    if output == "file":
        if path is None:
            raise ValueError("--output file needs --path")
        return FileSink(path)
    if output == "null":
        return NullSink()
    return KafkaSink(bootstrap, topic)
