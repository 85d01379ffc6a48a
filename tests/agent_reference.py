"""An independent reading of the agents' messages (no Flink, no jvm/ code): collectd, Telegraf
and OTLP/JSON points mapped to a catalogue's metrics as README "Agents" documents it, counters
turned into rates per second in time order, and the tumbling-window aggregates of the result.
Tests compare what the job stored with this."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pandas as pd

from common.catalogue import Catalogue


def names_of(catalogue: Catalogue, agent: str) -> list[tuple[str, dict, str]]:
    return [
        (name, dict(tags), m.name)
        for m in catalogue.metrics
        for input_, name, tags in m.agents
        if input_ == agent
    ]


def _metric(entries, name: str, tags: dict) -> str | None:
    for entry_name, entry_tags, metric in entries:
        if entry_name == name and all(tags.get(k) == v for k, v in entry_tags.items()):
            return metric
    return None


def collectd_points(catalogue: Catalogue, message: bytes) -> list[tuple[str, int, str, float]]:
    """(device, ts_ms, metric, value) of the kept points of one write_kafka JSON message."""
    entries = names_of(catalogue, "collectd")
    points = []
    for vl in json.loads(message):
        plugin = vl["plugin"] + (f"-{vl['plugin_instance']}" if vl["plugin_instance"] else "")
        type_ = vl["type"] + (f"-{vl['type_instance']}" if vl["type_instance"] else "")
        single = vl["dsnames"] == ["value"]
        for value, ds, kind in zip(vl["values"], vl["dsnames"], vl["dstypes"], strict=True):
            name = f"{plugin}.{type_}" if single else f"{plugin}.{type_}.{ds}"
            metric = _metric(entries, name, {})
            if metric is None:
                continue
            if kind == "absolute":
                value = value / vl["interval"]
            points.append((vl["host"], round(vl["time"] * 1000), metric, float(value)))
    return points


def telegraf_points(catalogue: Catalogue, message: bytes, device_tag: str = "host"):
    entries = names_of(catalogue, "telegraf")
    body = json.loads(message)
    points = []
    for m in body["metrics"] if "metrics" in body and "name" not in body else [body]:
        t = float(m["timestamp"])
        per_ms = 1e-3 if abs(t) < 1e11 else 1 if abs(t) < 1e14 else 1e3 if abs(t) < 1e17 else 1e6
        for field_name, value in m["fields"].items():
            metric = _metric(entries, f"{m['name']}.{field_name}", m["tags"])
            if metric is not None:
                points.append((m["tags"][device_tag], round(t / per_ms), metric, float(value)))
    return points


def otlp_points(catalogue: Catalogue, message: bytes, device_attribute: str = "host.name"):
    entries = names_of(catalogue, "otlp")

    def attrs(items) -> dict:
        return {a["key"]: next(iter(a["value"].values())) for a in items or []}

    points = []
    for rm in json.loads(message)["resourceMetrics"]:
        device = attrs(rm["resource"]["attributes"])[device_attribute]
        for sm in rm["scopeMetrics"]:
            for metric in sm["metrics"]:
                data = metric.get("gauge") or metric.get("sum")
                if data is None:
                    continue
                delta = metric.get("sum", {}).get("aggregationTemporality") == 1
                for p in data["dataPoints"]:
                    kept = _metric(entries, metric["name"], attrs(p.get("attributes")))
                    if kept is None:
                        continue
                    value = float(p["asDouble"] if "asDouble" in p else p["asInt"])
                    t = int(p["timeUnixNano"])
                    if delta:
                        value /= (t - int(p["startTimeUnixNano"])) / 1e9
                    points.append((device, t // 1_000_000, kept, value))
    return points


def rates(catalogue: Catalogue, points) -> list[tuple[str, int, str, float]]:
    """The points with each counter's running totals as rates per second: per device and
    counter in time order, the increase over the previous point (a drop is a reset: the new
    total is the increase); the first point gives none, nor a second one at the same time."""
    counters = set(catalogue.counters)
    out = [p for p in points if p[2] not in counters]
    series = defaultdict(list)
    for device, ts, metric, value in points:
        if metric in counters:
            series[(device, metric)].append((ts, value))
    for (device, metric), values in series.items():
        values.sort(key=lambda tv: tv[0])  # stable: the first of equal times is the one used
        last = None
        for ts, total in values:
            if last is not None and ts <= last[0]:
                continue
            if last is not None:
                increase = total - last[1] if total >= last[1] else total
                out.append((device, ts, metric, increase / ((ts - last[0]) / 1000)))
            last = (ts, total)
    return out


def windows(catalogue: Catalogue, points, window_seconds: int) -> pd.DataFrame:
    """Per device and window: mean, population std, min, max and count of each metric."""
    window_ms = window_seconds * 1000
    buckets: dict = defaultdict(lambda: defaultdict(list))
    for device, ts, metric, value in points:
        buckets[(device, ts - ts % window_ms)][metric].append(value)
    rows = []
    for (device, start), by_metric in buckets.items():
        row = {"device_id": device, "window_start": pd.Timestamp(start, unit="ms", tz="UTC")}
        for m in catalogue.metric_names:
            v = np.array(by_metric.get(m, []), dtype=np.float64)
            row[f"{m}_mean"] = v.mean() if len(v) else np.nan
            row[f"{m}_std"] = v.std(ddof=0) if len(v) else np.nan
            row[f"{m}_min"] = v.min() if len(v) else np.nan
            row[f"{m}_max"] = v.max() if len(v) else np.nan
            row[f"{m}_count"] = len(v)
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["device_id", "window_start"]).reset_index(drop=True)
