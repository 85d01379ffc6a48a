"""How the bench's profile names where a TaskManager sample was taken: by task (the thread of
an operator chain, as the web UI names it) and by part of the pipeline."""

from __future__ import annotations

from bench.profile import JVM_PARTS, part_of, task_of

SOURCE_CHAIN = (
    "Source: telemetry_source[1] -> Calc[2] -> TableToDataSteam -> late events (watermark kept "
    "over restores) -> (*anonymous_datastream_source$2*[4] -> Calc[5] -> LocalWindowAggregate[6], "
    "*anonymous_datastream_source$2*[54] -> (Calc[55] -> Sink: dead_letters_sink[56], "
    "Calc[57] -> Sink: late_events_sink[58])) (1/1)#0"
)


def test_a_chain_is_named_by_its_first_and_last_operator():
    assert task_of(SOURCE_CHAIN) == "Source: telemetry_source[1] … Sink: late_events_sink[58]"
    assert task_of("GlobalWindowAggregate[8] -> Calc[9] -> TableToDataSteam (2/2)#3") == (
        "GlobalWindowAggregate[8] … TableToDataSteam"
    )


def test_other_threads_by_name_without_their_number():
    assert task_of("jdbc-upsert-output-format-thread-1") == "jdbc-upsert-output-format-thread"
    assert task_of("Kafka Fetcher (1/1)") == "Kafka Fetcher"
    assert task_of("") == "?"


def test_parts_by_the_first_matching_prefix():
    assert part_of("local.anomaly.flink.RecentMax.processElement", JVM_PARTS).endswith("(jvm/)")
    assert part_of("org.apache.kafka.clients.Fetcher.poll", JVM_PARTS) == "Kafka client"
    assert part_of("java.util.HashMap.get", JVM_PARTS) == "JDK"
    assert part_of("com.example.Unknown.run", JVM_PARTS) == "other"
