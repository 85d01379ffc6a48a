"""The telemetry-json format's agent inputs (collectd, Telegraf, OTLP/JSON) case by case, by
value, through the real format: jvm/ FormatCheck runs TelemetryJsonDeserializer on each message
(one JVM per input, run side by side) with the mapping the catalogue generates
(Catalogue.agent_mapping), and prints the rows it emits. Each case is a row of README's mapping
tables: the message, the rows (device, ts_ms, the metrics it has points of, problem), and where
it matters the points kept and ignored."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.catalogue import load as load_catalogue
from common.settings import REPO_ROOT
from common.sql import format_limits

HOST = load_catalogue("host")
METRICS = list(HOST.metric_names)
JAR = REPO_ROOT / ".deps" / "jars" / "anomaly-flink.jar"

T_S = 1_700_000_000  # 2023-11-14 22:13:20 UTC
T_MS = T_S * 1000
T_NS = T_MS * 1_000_000 + 123_456_789  # OTLP: .123456789 s past T_S


@dataclass
class Case:
    id: str
    message: object  # a dict or list (sent as JSON), or the message's text
    rows: list  # [(device_id, ts_ms, {metric: value} of the non-NULL ones, problem)]
    counters: tuple | None = None  # (pointsKept, pointsIgnored) the message added

    @property
    def text(self) -> str:
        return self.message if isinstance(self.message, str) else json.dumps(self.message)


def row(device, ts, **metrics):
    return (device, ts, metrics, None)


def problem(text):
    return (None, None, {}, text)


def mapping(agent: str, *extra) -> dict:
    """The catalogue's mapping for an agent, with extra [name, tags, metric] entries (metrics
    the host catalogue does not have, to test more of the naming)."""
    generated = HOST.agent_mapping(agent)
    return {
        "names": generated["names"] + [list(e) for e in extra],
        "counters": generated["counters"],
    }


# --- collectd ------------------------------------------------------------------------------

_MISSING = object()


def vl(plugin, type_, values, dstypes, dsnames=("value",), *, host="h1", time=T_S + 0.25,
       plugin_instance="", type_instance="", interval=2.0):  # fmt: skip
    """One value list as write_kafka's Format JSON writes it."""
    out = {
        "values": list(values),
        "dstypes": list(dstypes),
        "dsnames": list(dsnames),
        "time": time,
        "interval": interval,
        "host": host,
        "plugin": plugin,
        "plugin_instance": plugin_instance,
        "type": type_,
        "type_instance": type_instance,
    }
    if host is _MISSING:
        del out["host"]
    return out


def load(values=(0.5, 0.75, 1.25), **kw):
    return vl("load", "load", values, ["gauge"] * 3, ["shortterm", "midterm", "longterm"], **kw)


def cpu(state, value, dstype="gauge", **kw):
    return vl("cpu", "percent", [value], [dstype], type_instance=state, **kw)


def interface(type_, rx, tx, dstype, **kw):
    return vl("interface", type_, [rx, tx], [dstype] * 2, ["rx", "tx"], plugin_instance="lo", **kw)


T1 = T_MS + 250  # the value lists' time, T_S + 0.25 s
COLLECTD = [
    Case(
        "gauge_load_names_each_data_source",
        [load()],
        [row("h1", T1, load1=0.5, load5=0.75, load15=1.25)],
        (3, 0),
    ),
    Case(
        "single_data_source_value_drops_its_name",
        [
            vl("memory", "memory", [123456789.0], ["gauge"], type_instance="used"),
            cpu("user", 12.5),
            vl("memory", "memory", [5.0], ["gauge"], type_instance="free"),
        ],
        [row("h1", T1, mem_used=123456789.0, cpu_user=12.5)],
        (2, 1),
    ),
    Case(
        "plugin_instance_derive_of_a_counter_is_the_raw_total",
        [interface("if_octets", 1000, 2000, "derive")],
        [row("h1", T1, net_rx_bytes=1000.0, net_tx_bytes=2000.0)],
        (2, 0),
    ),
    Case(
        "counter_of_a_counter_is_the_raw_total",
        [interface("if_packets", 5, 6, "counter")],
        [row("h1", T1, net_rx_packets=5.0)],
        (1, 1),
    ),
    Case(
        "fractional_time_is_rounded_to_the_millisecond",
        [cpu("user", 1.0, time=T_S + 0.1237), cpu("system", 2.0, time=T_S + 0.9996)],
        [row("h1", T_MS + 124, cpu_user=1.0), row("h1", T_MS + 1000, cpu_system=2.0)],
    ),
    Case(
        "derive_of_a_gauge_metric_is_a_problem_and_the_good_points_go_on",
        [cpu("user", 100, "derive"), load()],
        [
            row("h1", T1, load1=0.5, load5=0.75, load15=1.25),
            problem(
                "cpu_user: collectd derive cpu.percent-user is a running total: "
                "mark the metric counter: true in the catalogue"
            ),
        ],
    ),
    Case(
        "gauge_of_a_counter_metric_is_a_problem",
        [interface("if_octets", 1, 2, "gauge")],
        [
            problem(
                "net_rx_bytes: collectd gauge interface-lo.if_octets.rx is not a running "
                "total, but the catalogue marks the metric a counter"
            )
        ],
    ),
    Case(
        "absolute_is_divided_by_the_interval",
        [cpu("system", 30, "absolute", interval=10.0)],
        [row("h1", T1, cpu_system=3.0)],
    ),
    Case(
        "absolute_without_an_interval_is_a_problem",
        [cpu("system", 30, "absolute", interval=0)],
        [problem("cpu_system: collectd absolute cpu.percent-system without a positive interval")],
    ),
    Case(
        "null_value_is_a_problem",
        [cpu("idle", None)],
        [problem("cpu_idle: not a finite number (collectd cpu.percent-idle)")],
        (0, 0),
    ),
    Case(
        "a_message_of_ignored_names_emits_nothing",
        [
            vl("df", "df_complex", [1e9], ["gauge"], plugin_instance="root", type_instance="free"),
            interface("if_errors", 0, 0, "derive"),
            cpu("steal", 0.0),
        ],
        [],
        (0, 4),
    ),
    Case(
        "values_and_dsnames_of_different_lengths_are_a_problem",
        [vl("load", "load", [0.5, 0.75], ["gauge"] * 3, ["shortterm", "midterm", "longterm"])],
        [problem("collectd: values, dsnames and dstypes are not arrays of one length")],
    ),
    Case(
        "missing_host_is_a_problem",
        [load(host=_MISSING)],
        [problem("collectd: host: missing or null")],
    ),
    Case(
        "empty_host_is_a_problem",
        [load(host="  ")],
        [problem("collectd: host (device_id): empty")],
    ),
    Case("not_json_is_a_problem", "load 0.5 0.75\n1.25", [problem("collectd: not JSON")]),
    Case(
        "an_object_not_an_array_is_a_problem",
        load(),
        [problem("collectd: not a JSON array of value lists")],
    ),
    Case(
        "two_hosts_in_one_array_are_two_rows",
        [load(host="h1"), load((2.0, 3.0, 4.0), host="h2"), cpu("user", 7.0, host="h1")],
        [
            row("h1", T1, load1=0.5, load5=0.75, load15=1.25, cpu_user=7.0),
            row("h2", T1, load1=2.0, load5=3.0, load15=4.0),
        ],
    ),
    Case(
        "a_value_below_the_minimum_is_a_problem",
        [cpu("user", -5.0), load()],
        [
            row("h1", T1, load1=0.5, load5=0.75, load15=1.25),
            problem("cpu_user: below its minimum 0"),
        ],
        (3, 0),  # the point out of range is a dead letter, not kept
    ),
]

# --- Telegraf ------------------------------------------------------------------------------


def tmetric(name, fields, tags=None, timestamp=T_S):
    """One metric as Telegraf's JSON serializer writes it."""
    return {
        "fields": fields,
        "name": name,
        "tags": {"host": "h1"} if tags is None else tags,
        "timestamp": timestamp,
    }


ALL_TELEGRAF = [
    tmetric("cpu", {"usage_user": 12.5, "usage_system": 3.5, "usage_idle": 84.0},
            {"host": "h1", "cpu": "cpu-total"}),
    tmetric("cpu", {"usage_user": 50.0, "usage_system": 10.0, "usage_idle": 40.0},
            {"host": "h1", "cpu": "cpu0"}),
    tmetric("system", {"load1": 0.5, "load5": 0.6, "n_cpus": 4}),
    tmetric("mem", {"used": 1_000_000_000, "total": 8_000_000_000}),
    tmetric("net", {"bytes_recv": 1000, "bytes_sent": 2000, "packets_recv": 10, "packets_sent": 11},
            {"host": "h1", "interface": "lo"}),
    tmetric("net", {"bytes_recv": 5, "bytes_sent": 6, "packets_recv": 7},
            {"host": "h1", "interface": "eth0"}),
]  # fmt: skip

TELEGRAF = [
    Case(
        "single_metric",
        tmetric("system", {"load1": 0.5, "load5": 0.6, "n_cpus": 4, "uptime_format": "1 day"}),
        [row("h1", T_MS, load1=0.5)],
        (1, 3),
    ),
    Case(
        "batch_with_tag_filters",
        {"metrics": ALL_TELEGRAF},
        [
            row(
                "h1",
                T_MS,
                cpu_user=12.5,
                cpu_system=3.5,
                cpu_idle=84.0,
                load1=0.5,
                mem_used=1e9,
                net_rx_bytes=1000.0,
                net_tx_bytes=2000.0,
                net_rx_packets=10.0,
            )
        ],
        (8, 10),
    ),
    Case(
        "tag_filter_keeps_only_cpu_total",
        {
            "metrics": [
                tmetric("cpu", {"usage_user": 50.0}, {"host": "h1", "cpu": "cpu0"}),
                tmetric("cpu", {"usage_user": 12.5}, {"host": "h1", "cpu": "cpu-total"}),
                tmetric("cpu", {"usage_user": 60.0}, {"host": "h1", "cpu": "cpu1"}),
                tmetric("cpu", {"usage_user": 70.0}, {"host": "h1"}),
            ]
        },
        [row("h1", T_MS, cpu_user=12.5)],
        (1, 3),
    ),
    *[
        Case(
            f"timestamp_in_{unit}",
            tmetric("system", {"load1": 0.5}, timestamp=ts),
            [row("h1", T_MS, load1=0.5)],
        )
        for unit, ts in [("s", T_S), ("ms", T_MS), ("us", T_MS * 1000), ("ns", T_MS * 1_000_000)]
    ],
    *[
        Case(
            f"timestamp_in_{unit}_keeps_milliseconds",
            tmetric("system", {"load1": 0.5}, timestamp=ts),
            [row("h1", T_MS + 123, load1=0.5)],
        )
        for unit, ts in [
            ("ms", T_MS + 123),
            ("us", (T_MS + 123) * 1000 + 456),
            ("ns", (T_MS + 123) * 1_000_000 + 456_789),
        ]
    ],
    Case(
        "two_hosts_in_a_batch_are_two_rows",
        {
            "metrics": [
                tmetric("system", {"load1": 0.5}),
                tmetric("system", {"load1": 1.5}, {"host": "h2"}),
                tmetric("mem", {"used": 7}),
            ]
        },
        [row("h1", T_MS, load1=0.5, mem_used=7.0), row("h2", T_MS, load1=1.5)],
    ),
    Case(
        "missing_host_tag_is_a_problem",
        tmetric("cpu", {"usage_user": 1.0}, {"cpu": "cpu-total"}),
        [problem("telegraf: tag host: missing or null")],
    ),
    Case(
        "non_numeric_field_of_a_kept_metric_is_a_problem",
        tmetric("mem", {"used": "lots", "total": 8e9}),
        [problem("mem_used: not a finite number (telegraf mem.used)")],
    ),
    Case(
        "boolean_field_of_a_kept_metric_is_a_problem_and_the_good_points_go_on",
        {"metrics": [tmetric("mem", {"used": True}), tmetric("system", {"load1": 0.5})]},
        [row("h1", T_MS, load1=0.5), problem("mem_used: not a finite number (telegraf mem.used)")],
    ),
    Case(
        "a_value_below_the_minimum_is_a_problem",
        tmetric(
            "cpu", {"usage_user": -1.0, "usage_system": 2.0}, {"host": "h1", "cpu": "cpu-total"}
        ),
        [row("h1", T_MS, cpu_system=2.0), problem("cpu_user: below its minimum 0")],
        (1, 0),
    ),
    Case("not_json_is_a_problem", "cpu usage_user=1", [problem("telegraf: not JSON")]),
    Case(
        "an_array_is_a_problem",
        [tmetric("system", {"load1": 0.5})],
        [problem("telegraf: not a JSON object")],
    ),
    Case(
        "a_metric_without_fields_is_a_problem",
        {"name": "system", "tags": {"host": "h1"}, "timestamp": T_S},
        [problem("telegraf: not a metric with name and fields")],
    ),
]

# --- OTLP/JSON -----------------------------------------------------------------------------


def attr(key, value):
    return {"key": key, "value": {"stringValue": value}}


def dp(value, *, as_int=False, t=T_NS, start=None, **attributes):
    """One number data point (OTLP/JSON: 64-bit integers as strings)."""
    point = {"attributes": [attr(k, v) for k, v in attributes.items()], "timeUnixNano": str(t)}
    if start is not None:
        point["startTimeUnixNano"] = str(start)
    point["asInt" if as_int else "asDouble"] = value
    return point


def gauge(name, *points):
    return {"name": name, "unit": "1", "gauge": {"dataPoints": list(points)}}


def sum_(name, *points, temporality=2, monotonic=True):
    return {
        "name": name,
        "unit": "By",
        "sum": {
            "dataPoints": list(points),
            "aggregationTemporality": temporality,
            "isMonotonic": monotonic,
        },
    }


def resource(*metrics, host="h1"):
    attributes = [attr("os.type", "linux")] + ([attr("host.name", host)] if host else [])
    return {
        "resource": {"attributes": attributes},
        "scopeMetrics": [{"scope": {"name": "hostmetricsreceiver"}, "metrics": list(metrics)}],
    }


def request(*resources):
    return {"resourceMetrics": list(resources)}


TO = T_MS + 123  # T_NS in ms
LOAD = gauge("system.cpu.load_average.1m", dp(0.5))

OTLP = [
    Case(
        "gauge_as_double_with_attribute_filters",
        request(
            resource(
                gauge(
                    "system.cpu.utilization",
                    dp(0.125, state="user"),
                    dp(0.05, state="system"),
                    dp(0.8, state="idle"),
                    dp(0.025, state="wait"),
                ),
                LOAD,
                gauge("system.cpu.load_average.5m", dp(0.6)),
            )
        ),
        [row("h1", TO, cpu_user=0.125, cpu_system=0.05, cpu_idle=0.8, load1=0.5)],
        (4, 2),
    ),
    Case(
        "monotonic_cumulative_sum_of_a_counter_with_as_int_as_string",
        request(
            resource(
                sum_(
                    "system.network.io",
                    dp("123456", as_int=True, device="lo", direction="receive"),
                    dp(654321, as_int=True, device="lo", direction="transmit"),
                    dp("5", as_int=True, device="eth0", direction="receive"),
                ),
                sum_(
                    "system.network.packets",
                    dp("42", as_int=True, device="lo", direction="receive"),
                ),
            )
        ),
        [row("h1", TO, net_rx_bytes=123456.0, net_tx_bytes=654321.0, net_rx_packets=42.0)],
        (3, 1),
    ),
    Case(
        "delta_sum_is_divided_by_the_seconds_since_its_start",
        request(
            resource(
                sum_(
                    "system.disk.operations",
                    dp(100, as_int=True, start=T_NS - 4_000_000_000, direction="read"),
                    dp(100, as_int=True, start=T_NS - 4_000_000_000, direction="write"),
                    temporality=1,
                )
            )
        ),
        [row("h1", TO, disk_ops=25.0)],
        (1, 1),
    ),
    Case(
        "delta_sum_without_a_start_is_a_problem",
        request(resource(sum_("system.disk.operations", dp(1, direction="read"), temporality=1))),
        [
            problem(
                "disk_ops: otlp delta sum system.disk.operations without a start before its time"
            )
        ],
    ),
    Case(
        "delta_sum_of_a_counter_metric_is_a_problem",
        request(
            resource(
                sum_(
                    "system.network.packets",
                    dp(5, start=T_NS - 10**9, device="lo", direction="receive"),
                    temporality=1,
                )
            )
        ),
        [
            problem(
                "net_rx_packets: otlp delta sum system.network.packets is not a running total, "
                "but the catalogue marks the metric a counter"
            )
        ],
    ),
    Case(
        "non_monotonic_sum_is_a_gauge",
        request(
            resource(
                sum_(
                    "system.memory.usage",
                    dp("8000000000", as_int=True, state="used"),
                    dp("1000", as_int=True, state="free"),
                    monotonic=False,
                )
            )
        ),
        [row("h1", TO, mem_used=8e9)],
        (1, 1),
    ),
    Case(
        "monotonic_cumulative_sum_of_a_gauge_metric_is_a_problem",
        request(resource(sum_("system.cpu.utilization", dp(0.1, state="user")))),
        [
            problem(
                "cpu_user: otlp monotonic cumulative sum system.cpu.utilization is a running "
                "total: mark the metric counter: true in the catalogue"
            )
        ],
    ),
    Case(
        "gauge_of_a_counter_metric_is_a_problem",
        request(resource(gauge("system.network.io", dp(1.0, device="lo", direction="receive")))),
        [
            problem(
                "net_rx_bytes: otlp gauge system.network.io is not a running total, but the "
                "catalogue marks the metric a counter"
            )
        ],
    ),
    Case(
        "histogram_of_a_kept_name_is_a_problem_and_the_good_points_go_on",
        request(
            resource(
                {
                    "name": "system.cpu.load_average.1m",
                    "histogram": {
                        "dataPoints": [
                            {
                                "timeUnixNano": str(T_NS),
                                "count": "1",
                                "sum": 0.5,
                                "bucketCounts": ["1"],
                                "explicitBounds": [],
                            }
                        ],
                        "aggregationTemporality": 2,
                    },
                },
                gauge("system.cpu.utilization", dp(0.25, state="user")),
            )
        ),
        [
            row("h1", TO, cpu_user=0.25),
            problem(
                "load1: otlp histogram system.cpu.load_average.1m is not mapped "
                "(gauges and sums are)"
            ),
        ],
    ),
    Case(
        "missing_device_attribute_is_a_problem",
        request(resource(LOAD, host=None)),
        [problem("otlp: resource attribute host.name: missing or null")],
    ),
    Case(
        "two_resources_are_two_rows",
        request(resource(LOAD, host="h1"), resource(gauge(LOAD["name"], dp(2.0)), host="h2")),
        [row("h1", TO, load1=0.5), row("h2", TO, load1=2.0)],
    ),
    Case(
        "only_unmatched_attributes_emit_nothing",
        request(
            resource(
                gauge("system.cpu.utilization", dp(0.1, state="wait"), dp(0.2, state="steal")),
                gauge("process.cpu.time", dp(1.0), dp(2.0)),
            )
        ),
        [],
        (0, 4),
    ),
    Case(
        "a_value_below_the_minimum_is_a_problem",
        request(resource(gauge("system.cpu.utilization", dp(-0.1, state="user")), LOAD)),
        [row("h1", TO, load1=0.5), problem("cpu_user: below its minimum 0")],
    ),
    Case("not_json_is_a_problem", "{resourceMetrics", [problem("otlp: not JSON")]),
    Case(
        "not_a_request_is_a_problem",
        {"resourceSpans": []},
        [problem("otlp: not an ExportMetricsServiceRequest (no resourceMetrics array)")],
    ),
]

# --- flat ----------------------------------------------------------------------------------

EVENT = {
    "device_id": "d1",
    "ts_ms": T_MS,
    **{m: float(i + 1) for i, m in enumerate(METRICS)},
    "labels": {"site": "x"},
}
FLAT = [
    Case(
        "valid_event", EVENT, [row("d1", T_MS, **{m: float(i + 1) for i, m in enumerate(METRICS)})]
    ),
    Case(
        "missing_metric",
        {k: v for k, v in EVENT.items() if k != "net_tx_bytes"},
        # The metrics are read in column order up to the first problem.
        [
            (
                "d1",
                T_MS,
                {m: float(i + 1) for i, m in enumerate(METRICS[:6])},
                "net_tx_bytes: missing or null",
            )
        ],
    ),
    Case(
        "a_value_below_the_minimum",
        {**EVENT, "cpu_user": -1.0},
        [("d1", T_MS, {}, "cpu_user: below its minimum 0")],
    ),
]


def _flat(ts: str, first: str) -> str:
    """A flat event's text with the time and the first metric as written here."""
    rest = ", ".join(f'"{m}": {i + 1}.5' for i, m in enumerate(METRICS[1:], 1))
    return f'{{"device_id": "d1", "ts_ms": {ts}, "{METRICS[0]}": {first}, {rest}}}'


def _rest(**first) -> dict:
    return {**first, **{m: i + 1.5 for i, m in enumerate(METRICS[1:], 1)}}


MAX_EVENT_MS = 253_402_300_799_999  # TO_TIMESTAMP_LTZ(ts_ms, 3)'s last millisecond
# JSON numbers: read as Jackson reads them, they must give what their text gives.
NUMBERS = [
    Case("int_metric", _flat(str(T_MS), "42"), [row("d1", T_MS, **_rest(**{METRICS[0]: 42.0}))]),
    Case("minus_zero", _flat(str(T_MS), "-0"), [row("d1", T_MS, **_rest(**{METRICS[0]: -0.0}))]),
    Case(
        "int_beyond_2_53",
        _flat(str(T_MS), "9007199254740993"),
        [row("d1", T_MS, **_rest(**{METRICS[0]: 9007199254740992.0}))],
    ),
    Case(
        "int_beyond_bigint",
        _flat(str(T_MS), "100000000000000000000000000001"),
        [row("d1", T_MS, **_rest(**{METRICS[0]: 1e29}))],
    ),
    Case(
        # Jackson 2.15 keeps the big integer's text for the next integer's getDoubleValue.
        "int_after_an_int_beyond_bigint",
        _flat(str(T_MS), "100000000000000000000000000001").replace(
            f'"{METRICS[1]}": 2.5', f'"{METRICS[1]}": 3'
        ),
        [row("d1", T_MS, **{**_rest(**{METRICS[0]: 1e29}), METRICS[1]: 3.0})],
    ),
    Case(
        "decimal_metric",
        _flat(str(T_MS), "0.30000000000000004"),
        [row("d1", T_MS, **_rest(**{METRICS[0]: 0.30000000000000004}))],
    ),
    Case(
        "subnormal",
        _flat(str(T_MS), "4.9e-324"),
        [row("d1", T_MS, **_rest(**{METRICS[0]: 5e-324}))],
    ),
    Case(
        "overflowing_decimal",
        _flat(str(T_MS), "1e400"),
        [("d1", T_MS, {}, f"{METRICS[0]}: not a finite number")],
    ),
    Case(
        "metric_as_text",
        _flat(str(T_MS), '" 7.25 "'),
        [row("d1", T_MS, **_rest(**{METRICS[0]: 7.25}))],
    ),
    Case(
        "time_as_text", _flat(f'" {T_MS} "', "1"), [row("d1", T_MS, **_rest(**{METRICS[0]: 1.0}))]
    ),
    Case("time_decimal", _flat(f"{T_MS}.9", "1"), [row("d1", T_MS, **_rest(**{METRICS[0]: 1.0}))]),
    Case(
        "time_beyond_bigint",
        _flat("99999999999999999999", "1"),
        [("d1", None, {METRICS[0]: 1.0, **_rest()}, "ts_ms: not an integer")],
    ),
    Case("time_negative", _flat("-5", "1"), [row("d1", -5, **_rest(**{METRICS[0]: 1.0}))]),
    Case(
        "time_last_ms",
        _flat(str(MAX_EVENT_MS), "1"),
        [row("d1", MAX_EVENT_MS, **_rest(**{METRICS[0]: 1.0}))],
    ),
    Case(
        "time_after_9999",
        _flat(str(MAX_EVENT_MS + 1), "1"),
        [row("d1", MAX_EVENT_MS + 1, **_rest(**{METRICS[0]: 1.0}))],
    ),
]
FLAT += NUMBERS

RUNS = {
    "collectd": (
        COLLECTD,
        mapping(
            "collectd",
            ("load.load.midterm", {}, "load5"),
            ("load.load.longterm", {}, "load15"),
        ),
        "host",
        [*METRICS, "load5", "load15"],
    ),
    "telegraf": (TELEGRAF, mapping("telegraf"), "host", METRICS),
    "otlp": (
        OTLP,
        mapping("otlp", ("system.disk.operations", {"direction": "read"}, "disk_ops")),
        "host.name",
        [*METRICS, "disk_ops"],
    ),
    "flat": (FLAT, "", "host", METRICS),
}

# --- running FormatCheck -------------------------------------------------------------------


def _fresh_jar() -> Path:
    """The project's jar, rebuilt (deploy/fetch-jars.sh) if a file under jvm/ is newer."""
    sources = [p for p in (REPO_ROOT / "jvm").rglob("*") if p.is_file() and "target" not in p.parts]
    if not JAR.exists() or max(p.stat().st_mtime for p in sources) > JAR.stat().st_mtime:
        done = subprocess.run(
            ["bash", "deploy/fetch-jars.sh", str(JAR.parent)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            pytest.fail(f"building {JAR.name} failed:\n{done.stdout}\n{done.stderr}")
    return JAR


def _classpath() -> str:
    from deploy.flink_run import tool_classpath

    return tool_classpath(_fresh_jar())


@pytest.fixture(scope="module")
def outputs() -> dict[str, list[dict]]:
    """Per input, per case: {"rows": [...], "counters": (kept, ignored)}; one JVM per input,
    all four at once."""
    java = shutil.which("java")
    if java is None:
        pytest.skip("java is not installed: FormatCheck (jvm/) cannot run")
    classpath = _classpath()
    procs = {}
    for input_, (cases, mapping_, device_field, metrics) in RUNS.items():
        mapping_json = json.dumps(mapping_) if mapping_ else ""
        args = [input_, mapping_json, device_field, ",".join(metrics), format_limits(HOST.metrics)]
        proc = subprocess.Popen(
            [java, "-cp", classpath, "local.anomaly.flink.FormatCheck", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs[input_] = (proc, "".join(json.dumps(c.text) + "\n" for c in cases))
    results = {}
    for input_, (proc, stdin) in procs.items():
        out, err = proc.communicate(stdin, timeout=60)
        assert proc.returncode == 0, f"FormatCheck {input_} failed:\n{err}"
        per_case = [{"rows": [], "counters": None} for _ in RUNS[input_][0]]
        for line in out.splitlines():
            record = json.loads(line)
            case = per_case[record["message"]]
            if "counters" in record:
                case["counters"] = (
                    record["counters"]["pointsKept"],
                    record["counters"]["pointsIgnored"],
                )
            else:
                case["rows"].append(record)
        results[input_] = per_case
    return results


def check(outputs, input_: str, case: Case) -> None:
    cases, _, _, metrics = RUNS[input_]
    got = outputs[input_][next(i for i, c in enumerate(cases) if c is case)]
    for record in got["rows"]:
        # Every row has every metric column; a problem row carries the message's bytes.
        assert list(record["metrics"]) == metrics
        assert record["payload"] == (case.text if record["problem"] else None)
    rows = [
        (
            r["device_id"],
            r["ts_ms"],
            {k: v for k, v in r["metrics"].items() if v is not None},
            r["problem"],
        )
        for r in got["rows"]
    ]
    assert rows == case.rows
    if case.counters is not None:
        assert got["counters"] == case.counters


@pytest.mark.parametrize(
    ("input_", "case"),
    [(input_, case) for input_, run in RUNS.items() for case in run[0]],
    ids=lambda v: v if isinstance(v, str) else v.id,
)
def test_format(outputs, input_, case):
    check(outputs, input_, case)


def test_agent_problems_are_event_problems_and_flat_metric_problems_value_problems(outputs):
    """The agents' problem rows fill event_problem (value_problem NULL); a flat event's metric
    problem is its value_problem."""
    agent_problems = [
        r for i in ("collectd", "telegraf", "otlp") for c in outputs[i] for r in c["rows"]
        if r["problem"]
    ]  # fmt: skip
    assert agent_problems
    assert all(r["event_problem"] and r["value_problem"] is None for r in agent_problems)
    missing = outputs["flat"][1]["rows"][0]
    assert (missing["event_problem"], missing["value_problem"]) == (
        None,
        "net_tx_bytes: missing or null",
    )


def test_json_numbers_read_as_their_text_reads(outputs):
    """Each case's value, sign of zero included, is Double.parseDouble of its text."""
    got = {c.id: outputs["flat"][FLAT.index(c)]["rows"][0] for c in NUMBERS}
    zero = got["minus_zero"]["metrics"][METRICS[0]]
    assert zero == 0.0 and math.copysign(1.0, zero) == -1.0


def test_event_ts_is_the_time_where_it_is_a_timestamp(outputs):
    """Every row of every input: event_ts is ts_ms from 1970 to 9999 (TO_TIMESTAMP_LTZ's
    range), NULL otherwise."""
    rows = [r for per_case in outputs.values() for c in per_case for r in c["rows"]]
    timed = [r for r in rows if r["ts_ms"] is not None]
    assert len(timed) > 20
    for r in rows:
        inside = r["ts_ms"] is not None and 0 <= r["ts_ms"] <= MAX_EVENT_MS
        assert r["event_ts"] == (r["ts_ms"] if inside else None), r
    assert {r["ts_ms"] for r in timed if r["event_ts"] is None} == {-5, MAX_EVENT_MS + 1}
