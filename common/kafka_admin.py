"""Small Kafka helpers shared by the stack, the simulator and the tests."""

from __future__ import annotations

import time
from collections.abc import Iterator

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError


def ensure_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    timeout_s: float = 30.0,
    max_message_bytes: int | None = None,
) -> bool:
    """Create ``topic`` unless it exists; True when it was created now.

    ``max_message_bytes`` (default: the settings') is the largest message the broker accepts
    on it: a bigger one is refused to its producer and never reaches the job.
    """
    if max_message_bytes is None:
        from common.settings import Settings

        max_message_bytes = Settings.from_env().max_message_bytes
    configs = {"max.message.bytes": str(max_message_bytes)}
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        admin = None
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap, client_id="anomaly-admin", request_timeout_ms=5000
            )
            if topic in admin.list_topics():
                return False
            admin.create_topics(
                [
                    NewTopic(
                        topic,
                        num_partitions=partitions,
                        replication_factor=1,
                        topic_configs=configs,
                    )
                ]
            )
            return True
        except TopicAlreadyExistsError:
            return False
        except KafkaError as exc:
            last_error = exc
            time.sleep(0.5)
        finally:
            if admin is not None:
                admin.close()
    raise RuntimeError(
        f"could not create Kafka topic {topic!r} at {bootstrap} within {timeout_s:.0f} s "
        f"({last_error!r}): is the broker running? `make status` tells, `make up` starts it"
    )


def delete_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> bool:
    """Delete ``topic`` and wait for the broker's answer; True when it was deleted, False when
    it did not exist. The admin client sends the request in the background and fails it when
    the client is destroyed first: one dropped right after ``delete_topics`` never deletes, and
    the topic's data stays on the broker's disk."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})  # no info lines
    future = admin.delete_topics([topic], operation_timeout=timeout_s)[topic]
    try:
        future.result(timeout=timeout_s)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return False
        raise RuntimeError(f"could not delete Kafka topic {topic!r} at {bootstrap}: {exc}") from exc
    return True


def messages_in(bootstrap: str, topic: str) -> int:
    """Messages the topic holds now (0 when it does not exist yet)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        parts = [TopicPartition(topic, p) for p in partitions]
        if not parts:
            return 0
        end = consumer.end_offsets(parts)
        begin = consumer.beginning_offsets(parts)
        return sum(end[p] - begin[p] for p in parts)
    finally:
        consumer.close()


def read_to_end(consumer, topic: str, partitions) -> Iterator:
    """Every message of ``topic`` on ``partitions`` from its earliest offset to the end it has
    now, through ``consumer`` (a confluent_kafka Consumer, assigned here). Messages with an
    error are yielded too: the caller decides."""
    from confluent_kafka import TopicPartition

    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions
    }
    consumer.assign([TopicPartition(topic, p, low) for p, (low, _) in ends.items()])
    left = {p for p, (low, high) in ends.items() if high > low}
    unread = sum(high - low for low, high in ends.values())
    while left:
        # At most what is left: consume() waits out its timeout for a larger batch.
        for msg in consumer.consume(min(10_000, max(1, unread)), timeout=5):
            unread -= 1
            if msg.error() is None and msg.offset() + 1 >= ends[msg.partition()][1]:
                left.discard(msg.partition())
            yield msg


def consume_all(bootstrap: str, topic: str, partitions: int) -> list[tuple[bytes, bytes]]:
    """Every message of the topic, (key, value), read from the start to the current end."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False}
    )
    out = []
    try:
        for msg in read_to_end(consumer, topic, range(partitions)):
            assert msg.error() is None, msg.error()
            out.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    return out
