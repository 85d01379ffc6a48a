"""The catalogue's agent names and counters, and the sources setting: what the telemetry-json
format is handed (jvm/ AgentMapping reads the same JSON)."""

from __future__ import annotations

import pytest

from common.catalogue import CatalogueError
from common.catalogue import load as load_catalogue
from common.settings import Settings, SettingsError


def write(tmp_path, metrics: str):
    path = tmp_path / "c.yaml"
    path.write_text(f"name: c\ninterval_ms: 1000\nmetrics:\n{metrics}")
    load_catalogue.cache_clear()
    return load_catalogue(path)


def test_the_host_catalogue_maps_each_agent_and_marks_its_counters():
    host = load_catalogue("host")
    assert host.counters == ("net_rx_bytes", "net_tx_bytes", "net_rx_packets")
    collectd = host.agent_mapping("collectd")
    assert ["load.load.shortterm", {}, "load1"] in collectd["names"]
    assert ["interface-lo.if_octets.rx", {}, "net_rx_bytes"] in collectd["names"]
    assert collectd["counters"] == list(host.counters)
    telegraf = host.agent_mapping("telegraf")
    assert ["cpu.usage_user", {"cpu": "cpu-total"}, "cpu_user"] in telegraf["names"]
    otlp = host.agent_mapping("otlp")
    assert [
        "system.network.io",
        {"device": "lo", "direction": "receive"},
        "net_rx_bytes",
    ] in otlp["names"]
    # Every metric is named for every agent.
    for agent in ("collectd", "telegraf", "otlp"):
        named = {metric for _, _, metric in host.agent_mapping(agent)["names"]}
        assert named == set(host.metric_names), agent


def test_agent_names_parse_tags_and_refuse_what_cannot_be_mapped(tmp_path):
    cat = write(
        tmp_path,
        '  - {name: a, agents: {telegraf: "net.bytes_recv{ interface = lo ,host=h}"}}\n'
        "  - {name: b, counter: true}\n",
    )
    assert cat.metrics[0].agents == (
        ("telegraf", "net.bytes_recv", (("host", "h"), ("interface", "lo"))),
    )
    assert cat.metrics[1].counter and cat.counters == ("b",)
    with pytest.raises(CatalogueError, match=r"agents\.statsd: no such input"):
        write(tmp_path, "  - {name: a, agents: {statsd: x}}\n")
    with pytest.raises(CatalogueError, match="collectd names carry no tags"):
        write(tmp_path, '  - {name: a, agents: {collectd: "load.load{x=1}"}}\n')
    with pytest.raises(CatalogueError, match="is not tag=value"):
        write(tmp_path, '  - {name: a, agents: {otlp: "m{x}"}}\n')
    with pytest.raises(CatalogueError, match="is not `name` or"):
        write(tmp_path, '  - {name: a, agents: {otlp: "m{x=1"}}\n')
    load_catalogue.cache_clear()


def test_sources_name_one_input_per_topic():
    assert Settings().source_list == (("telemetry-events", "flat"),)
    settings = Settings(sources="telemetry-events:flat, metrics.host:collectd,otel:otlp")
    assert settings.source_list == (
        ("telemetry-events", "flat"),
        ("metrics.host", "collectd"),
        ("otel", "otlp"),
    )
    with pytest.raises(SettingsError, match=r"'metrics:statsd' is not topic:input"):
        Settings(sources="metrics:statsd")
    with pytest.raises(SettingsError, match="a topic is named twice"):
        Settings(sources="a:collectd,a:telegraf")
