"""Grafana dashboards as code: the fleet overview, a device drill-down and the pipeline's health,
every panel a query of the SQL query layer (sql/postgres/R__query_layer.sql) through the
provisioned PostgreSQL data source; and the Flink job's health from Flink's metrics through the
provisioned Prometheus data source.

  python -m deploy.grafana.dashboards           write deploy/grafana/dashboards/*.json
  python -m deploy.grafana.dashboards --check   fail if the committed JSON is out of date

Panels name views and functions, not tables and feature columns, so the JSON does not depend
on the metric catalogue. Time series queries return a `time` column first and rows in time
order, as Grafana's PostgreSQL data source needs.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "dashboards"
DATASOURCE = {"type": "grafana-postgresql-datasource", "uid": "anomaly-pg"}
SCHEMA_VERSION = 39  # loads on Grafana 10.4 to 12
TAGS = ["anomaly-detection"]

# Only fleet rows of the chosen sites; "All" is the custom value '__all', inserted verbatim.
SITE_FILTER = "('__all' IN (${site:sqlstring}) OR site IN (${site:sqlstring}))"
DEVICE_OF_SITE = (
    "('__all' IN (${site:sqlstring}) OR device_id IN "
    "(SELECT device_id FROM devices WHERE site IN (${site:sqlstring})))"
)


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # timeseries, table, stat, heatmap
    sql: str
    format: str  # time_series or table
    width: int = 12
    height: int = 8
    description: str = ""
    # The columns the query must return (checked against the real database by the tests).
    columns: tuple[str, ...] = ()
    unit: str | None = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    sql: str
    multi: bool = False
    include_all: bool = False
    custom_all: str | None = None


@dataclass(frozen=True)
class Annotation:
    name: str
    sql: str
    color: str = "red"


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    time_from: str = "now-6h"
    refresh: str = "30s"


SITE_VARIABLE = Variable(
    "site",
    "Site",
    "SELECT DISTINCT site FROM devices WHERE site IS NOT NULL ORDER BY 1",
    multi=True,
    include_all=True,
    custom_all="'__all'",
)

FLEET = Dashboard(
    uid="anomaly-fleet",
    title="Anomaly detection: fleet overview",
    description="Anomalies across the fleet, the worst devices, open incidents, health now.",
    variables=(SITE_VARIABLE,),
    panels=(
        Panel(
            "Anomalous windows",
            "timeseries",
            "SELECT $__timeGroupAlias(bucket, $__interval), sum(anomalies)::float8 AS anomalies,"
            " sum(scored)::float8 AS scored\n"
            "FROM anomaly_counts_1m\n"
            f"WHERE $__timeFilter(bucket) AND {DEVICE_OF_SITE}\n"
            "GROUP BY 1 ORDER BY 1",
            "time_series",
            description="Flagged and scored windows per interval (anomaly_counts_1m).",
            columns=("time", "anomalies", "scored"),
        ),
        Panel(
            "Anomalies in range",
            "stat",
            "SELECT coalesce(sum(anomalies), 0)::float8 AS anomalies,"
            " count(*) FILTER (WHERE anomalies > 0)::float8 AS devices\n"
            "FROM anomaly_counts($__timeFrom(), $__timeTo())\n"
            f"WHERE {DEVICE_OF_SITE}",
            "table",
            width=6,
            columns=("anomalies", "devices"),
        ),
        Panel(
            "Unhealthy now",
            "table",
            "SELECT device_id, round(health::numeric, 1) AS health, top_metric, site,"
            " criticality, window_end\n"
            f"FROM device_health WHERE health < 50 AND {SITE_FILTER}\n"
            "ORDER BY health, device_id LIMIT 20",
            "table",
            width=6,
            description="Health = 100 - the highest severity of the device's recent windows.",
            columns=("device_id", "health", "top_metric", "site", "criticality", "window_end"),
        ),
        Panel(
            "Severity heatmap (worst 20 devices)",
            "heatmap",
            "SELECT $__timeGroupAlias(bucket, $__interval), device_id AS metric,"  # noqa: S608
            " max(max_severity) AS severity\n"
            "FROM anomaly_counts_1m\n"
            "WHERE $__timeFilter(bucket) AND device_id IN (\n"
            "  SELECT device_id FROM top_devices($__timeFrom(), $__timeTo(), 20)"
            f" WHERE {SITE_FILTER})\n"
            "GROUP BY 1, 2 ORDER BY 1",
            "time_series",
            width=24,
            columns=("time", "metric", "severity"),
            options={"calculate": False, "yAxis": {"axisPlacement": "left"}},
        ),
        Panel(
            "Top devices by severity",
            "table",
            "SELECT device_id, site, round(max_severity::numeric, 1) AS max_severity,"
            " alert_windows, top_metric, last_alert\n"
            "FROM top_devices($__timeFrom(), $__timeTo(), 20)\n"
            f"WHERE {SITE_FILTER}",
            "table",
            columns=(
                "device_id",
                "site",
                "max_severity",
                "alert_windows",
                "top_metric",
                "last_alert",
            ),
        ),
        Panel(
            "Open incidents",
            "table",
            "SELECT device_id, started_at, duration, windows,"
            " round(peak_severity::numeric, 1) AS peak_severity, top_metrics, sources, site\n"
            f"FROM open_incidents WHERE {SITE_FILTER}\n"
            "ORDER BY peak_severity DESC NULLS LAST, started_at",
            "table",
            description="Incidents a new alert window could still extend.",
            columns=(
                "device_id",
                "started_at",
                "duration",
                "windows",
                "peak_severity",
                "top_metrics",
                "sources",
                "site",
            ),
        ),
        Panel(
            "Correlated incidents",
            "table",
            "SELECT started_at, root_device, array_to_string(symptoms, ', ') AS symptoms,"
            " devices, round(peak_severity::numeric, 1) AS peak_severity, status,"
            " notification, root_reason\n"
            "FROM correlated_incident_status WHERE $__timeFilter(started_at) AND"
            " ('__all' IN (${site:sqlstring}) OR root_device IN"
            " (SELECT device_id FROM devices WHERE site IN (${site:sqlstring})))\n"
            "ORDER BY started_at DESC LIMIT 100",
            "table",
            description="One row per failure: incidents on linked devices that overlap in time,"
            " with the probable root (and why) and the others as symptoms; what was sent to"
            " Alertmanager.",
            columns=(
                "started_at",
                "root_device",
                "symptoms",
                "devices",
                "peak_severity",
                "status",
                "notification",
                "root_reason",
            ),
        ),
        Panel(
            "Latest anomalies",
            "table",
            "SELECT window_start AS time, device_id, round(severity::numeric, 1) AS severity,"
            " top_metric, site, model_version\n"
            f"FROM latest_anomalies WHERE $__timeFilter(window_start) AND {SITE_FILTER}\n"
            "ORDER BY window_start DESC, severity DESC LIMIT 50",
            "table",
            width=24,
            columns=("time", "device_id", "severity", "top_metric", "site", "model_version"),
        ),
    ),
)

DEVICE = Dashboard(
    uid="anomaly-device",
    title="Anomaly detection: device drill-down",
    description="One device: a metric with its typical band, severity, explanations, alerts.",
    time_from="now-3h",
    variables=(
        Variable(
            "device",
            "Device",
            "SELECT device_id FROM device_health ORDER BY health, device_id",
        ),
        Variable("metric", "Metric", "SELECT metric FROM catalogue_metrics"),
    ),
    annotations=(
        Annotation(
            "Anomalies",
            "SELECT window_start AS time, window_end AS timeend,"
            " coalesce(top_metric, '?') || ': severity ' || round(severity::numeric) AS text,"
            " 'anomaly' AS tags\n"
            "FROM latest_anomalies\n"
            "WHERE device_id = '${device}' AND $__timeFilter(window_start) ORDER BY 1",
        ),
    ),
    panels=(
        Panel(
            "${metric} with its typical band",
            "timeseries",
            'SELECT "time", value, typical, band_low, band_high\n'
            "FROM device_metric('${device}', '${metric}', $__timeFrom(), $__timeTo())\n"
            'ORDER BY "time"',
            "time_series",
            width=24,
            description="Window mean; typical = the device's mean over the longest context "
            "horizon, band = typical +- 2 spreads.",
            columns=("time", "value", "typical", "band_low", "band_high"),
        ),
        Panel(
            "Severity",
            "timeseries",
            "SELECT \"time\", severity FROM device_metric('${device}', '${metric}',"
            ' $__timeFrom(), $__timeTo())\nORDER BY "time"',
            "time_series",
            description="Above 50 the window is flagged.",
            columns=("time", "severity"),
            unit="none",
        ),
        Panel(
            "Health",
            "stat",
            "SELECT round(health::numeric, 1)::float8 AS health FROM device_health"
            " WHERE device_id = '${device}'",
            "table",
            width=6,
            columns=("health",),
        ),
        Panel(
            "Alerts",
            "table",
            "SELECT window_start AS time, source, round(severity::numeric, 1) AS severity,"
            " metric, value, threshold\n"
            "FROM alerts WHERE device_id = '${device}' AND $__timeFilter(window_start)\n"
            "ORDER BY window_start DESC LIMIT 100",
            "table",
            width=6,
            columns=("time", "source", "severity", "metric", "value", "threshold"),
        ),
        Panel(
            "Why it was flagged",
            "table",
            "SELECT a.window_start AS time, round(a.severity::numeric, 1) AS severity,"
            " e ->> 'metric' AS metric, e ->> 'feature' AS feature,"
            " e ->> 'direction' AS direction, (e ->> 'actual')::float8 AS actual,"
            " (e ->> 'typical')::float8 AS typical\n"
            "FROM latest_anomalies AS a,"
            " jsonb_array_elements(a.explanation::jsonb) WITH ORDINALITY AS x(e, rank)\n"
            "WHERE a.device_id = '${device}' AND $__timeFilter(a.window_start)\n"
            "ORDER BY a.window_start DESC, x.rank LIMIT 100",
            "table",
            width=24,
            columns=("time", "severity", "metric", "feature", "direction", "actual", "typical"),
        ),
    ),
)

PIPELINE = Dashboard(
    uid="anomaly-pipeline",
    title="Anomaly detection: pipeline health",
    description="What the job takes in and writes, how late rows land, what it refuses, "
    "which model scores and whether it still fits. (Flink's own metrics: its web UI.)",
    time_from="now-1h",
    panels=(
        Panel(
            "Events per second (event time)",
            "timeseries",
            'SELECT bucket AS "time", events / 60.0 AS "events/s", windows / 60.0 AS "windows/s"\n'
            "FROM pipeline_throughput_1m WHERE $__timeFilter(bucket) ORDER BY 1",
            "time_series",
            columns=("time", "events/s", "windows/s"),
        ),
        Panel(
            "Row landing delay after window end",
            "timeseries",
            'SELECT bucket AS "time", avg_landing_s AS "average s", max_landing_s AS "max s"\n'
            "FROM pipeline_throughput_1m WHERE $__timeFilter(bucket) ORDER BY 1",
            "time_series",
            description="scored_at - window_end: window length aside, the watermark delay, "
            "batching and the sink's flush.",
            columns=("time", "average s", "max s"),
            unit="s",
        ),
        Panel(
            "Newest window",
            "stat",
            "SELECT extract(epoch FROM now() - max(window_end))::float8 AS seconds_ago,"
            " (count(*) FILTER (WHERE window_end > now() - INTERVAL '1 minute'))::float8"
            " AS devices_last_minute\n"
            "FROM device_health",
            "table",
            width=6,
            columns=("seconds_ago", "devices_last_minute"),
            unit="s",
        ),
        Panel(
            "Dead letters and late events",
            "timeseries",
            'SELECT bucket AS "time", kind AS metric, sum(events)::float8 AS events\n'
            "FROM rejects_1m WHERE $__timeFilter(bucket) GROUP BY 1, 2 ORDER BY 1",
            "time_series",
            width=6,
            columns=("time", "metric", "events"),
        ),
        Panel(
            "Why events were refused",
            "table",
            "SELECT kind, reason, sum(events) AS events, max(bucket) AS last_minute\n"
            "FROM rejects_1m WHERE $__timeFilter(bucket) GROUP BY 1, 2 ORDER BY 3 DESC",
            "table",
            columns=("kind", "reason", "events", "last_minute"),
        ),
        Panel(
            "Model versions scoring",
            "table",
            "SELECT model_version, model, windows, last_window_end, created_at, current_since\n"
            "FROM models_in_use ORDER BY last_window_end DESC",
            "table",
            columns=(
                "model_version",
                "model",
                "windows",
                "last_window_end",
                "created_at",
                "current_since",
            ),
        ),
        Panel(
            "Drift check (last hour of the range)",
            "table",
            "SELECT model_version, windows, round(psi::numeric, 3) AS psi, retrain_advised,"
            " verdict\nFROM drift_check(INTERVAL '1 hour', $__timeTo())",
            "table",
            width=24,
            description="Recent scores against the training scores' quantiles (PSI).",
            columns=("model_version", "windows", "psi", "retrain_advised", "verdict"),
        ),
    ),
)

DASHBOARDS = (FLEET, DEVICE, PIPELINE)


# --- the job's health, from Flink's own metrics (Prometheus) ------------------------------------
# Flink's Prometheus reporter (metrics.reporter.prom in deploy/local/flink-config.yaml, the
# compose file and the Kubernetes manifests) names a metric flink_<scope>_<name>, with the job
# as the label job_name (its '-' turned into '_').
PROMETHEUS = {"type": "prometheus", "uid": "anomaly-prom"}
JOB = 'job_name=~"$job"'
# The window operators' counters of samples STEP_MAX and STEP_RMS left out of a window's
# steps (jvm/.../Steps.java; one-metric catalogues compute steps).
STEP_COUNTERS = ("stepMaxSamplesLeftOut", "stepRmsSamplesLeftOut")


@dataclass(frozen=True)
class PromPanel:
    title: str
    kind: str  # timeseries or stat
    # (legend, PromQL expression) per series.
    queries: tuple[tuple[str, str], ...]
    width: int = 12
    height: int = 8
    description: str = ""
    unit: str | None = None
    # Only jobs of one-metric catalogues report its metrics (others: no series).
    one_metric: bool = False


@dataclass(frozen=True)
class PromDashboard:
    uid: str
    title: str
    description: str
    panels: tuple[PromPanel, ...]
    time_from: str = "now-1h"
    refresh: str = "30s"


JOB_HEALTH = PromDashboard(
    uid="anomaly-job-health",
    title="Anomaly detection: Flink job health",
    description="Throughput, backpressure, checkpoints, Kafka consumer lag and restarts of the "
    "scoring job, from Flink's Prometheus metrics.",
    panels=(
        PromPanel(
            "Messages read per second",
            "timeseries",
            (
                (
                    "{{job_name}}",
                    "sum by (job_name) (flink_taskmanager_job_task_operator_numRecordsOutPerSecond"
                    f'{{{JOB}, operator_name=~"Source:_telemetry_source.*"}})',
                ),
            ),
            description="Every message of the events topic, good or bad, as the job reads it.",
            unit="short",
        ),
        PromPanel(
            "Windows scored and anomalies per second",
            "timeseries",
            (
                (
                    "windows {{job_name}}",
                    "sum by (job_name) (rate(flink_taskmanager_job_task_operator_windows_scored"
                    f"{{{JOB}}}[1m]))",
                ),
                (
                    "anomalies {{job_name}}",
                    "sum by (job_name) (rate(flink_taskmanager_job_task_operator_anomalies"
                    f"{{{JOB}}}[1m]))",
                ),
            ),
            unit="short",
        ),
        PromPanel(
            "Backpressure and busy time per task",
            "timeseries",
            (
                (
                    "backpressured {{task_name}}",
                    "max by (task_name) (flink_taskmanager_job_task_backPressuredTimeMsPerSecond"
                    f"{{{JOB}}}) / 1000",
                ),
                (
                    "busy {{task_name}}",
                    "max by (task_name) (flink_taskmanager_job_task_busyTimeMsPerSecond"
                    f"{{{JOB}}}) / 1000",
                ),
            ),
            description="Share of each second a task waited on the next one (backpressured) or "
            "worked (busy). The busiest task that is not backpressured is the bottleneck.",
            unit="percentunit",
            width=24,
        ),
        PromPanel(
            "Kafka consumer lag",
            "timeseries",
            (
                (
                    "records lag (max) {{job_name}}",
                    "max by (job_name) (flink_taskmanager_job_task_operator_KafkaSourceReader_"
                    f"KafkaConsumer_records_lag_max{{{JOB}}})",
                ),
                (
                    "pending records {{job_name}}",
                    "max by (job_name) (sum by (job_name, operator_name) "
                    f"(flink_taskmanager_job_task_operator_pendingRecords{{{JOB}}}))",
                ),
            ),
            description="Records in the topic the job has not read yet (per source; the job "
            "reads the topic with three sources).",
            unit="short",
        ),
        PromPanel(
            "Watermark lag",
            "timeseries",
            (
                (
                    "{{job_name}}",
                    "max by (job_name) (flink_taskmanager_job_task_operator_watermarkLag"
                    f"{{{JOB}}}) / 1000",
                ),
            ),
            description="Wall clock minus the newest watermark: at least the watermark delay; "
            "growing means the job falls behind.",
            unit="s",
        ),
        PromPanel(
            "Checkpoint duration",
            "timeseries",
            (
                (
                    "last checkpoint {{job_name}}",
                    f"flink_jobmanager_job_lastCheckpointDuration{{{JOB}}} / 1000",
                ),
            ),
            unit="s",
        ),
        PromPanel(
            "Checkpoint size",
            "timeseries",
            (("state {{job_name}}", f"flink_jobmanager_job_lastCheckpointSize{{{JOB}}}"),),
            unit="bytes",
        ),
        PromPanel(
            "Failed checkpoints (1 h)",
            "stat",
            (
                (
                    "{{job_name}}",
                    f"increase(flink_jobmanager_job_numberOfFailedCheckpoints{{{JOB}}}[1h])",
                ),
            ),
            width=6,
        ),
        PromPanel(
            "Restarts",
            "stat",
            (("{{job_name}}", f"flink_jobmanager_job_numRestarts{{{JOB}}}"),),
            width=6,
        ),
        PromPanel(
            "Uptime",
            "stat",
            (("{{job_name}}", f"flink_jobmanager_job_uptime{{{JOB}}} / 1000"),),
            width=6,
            unit="s",
        ),
        PromPanel(
            "TaskManagers and running jobs",
            "stat",
            (
                ("TaskManagers", "flink_jobmanager_numRegisteredTaskManagers"),
                ("running jobs", "flink_jobmanager_numRunningJobs"),
            ),
            width=6,
        ),
        PromPanel(
            "Scoring batch latency",
            "timeseries",
            (
                (
                    "{{job_name}}",
                    "max by (job_name) (flink_taskmanager_job_task_operator_batch_latency_ms"
                    f"{{{JOB}}})",
                ),
            ),
            description="Milliseconds the scoring UDF took for its last Arrow batch.",
            unit="ms",
        ),
        PromPanel(
            "Samples left out of the steps (one-metric jobs)",
            "timeseries",
            tuple(
                (
                    f"{name} {{{{job_name}}}}",
                    f"sum by (job_name) (flink_taskmanager_job_task_operator_{name}{{{JOB}}})",
                )
                for name in STEP_COUNTERS
            ),
            description="Samples that came in so far out of time order that the step functions "
            "(STEP_MAX, STEP_RMS) left them out of their window's steps; 0 where a device's "
            "samples come in order. Only one-metric jobs compute steps (others: no data).",
            unit="short",
            one_metric=True,
        ),
        PromPanel(
            "TaskManager heap used",
            "timeseries",
            (
                (
                    "{{tm_id}}",
                    "flink_taskmanager_Status_JVM_Memory_Heap_Used",
                ),
            ),
            unit="bytes",
        ),
    ),
)

# The job name variable: the jobs Flink reports on.
JOB_VARIABLE_QUERY = "label_values(flink_jobmanager_job_uptime, job_name)"


def prom_dashboard_json(d: PromDashboard) -> dict:
    panels = []
    for panel, (i, x, y) in zip(d.panels, _grid(d.panels), strict=True):
        panels.append(
            {
                "id": i,
                "type": panel.kind,
                "title": panel.title,
                "description": panel.description,
                "datasource": PROMETHEUS,
                "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
                "targets": [
                    {
                        "refId": chr(ord("A") + n),
                        "datasource": PROMETHEUS,
                        "editorMode": "code",
                        "expr": expr,
                        "legendFormat": legend,
                        "range": True,
                    }
                    for n, (legend, expr) in enumerate(panel.queries)
                ],
                "fieldConfig": {
                    "defaults": {"unit": panel.unit} if panel.unit else {},
                    "overrides": [],
                },
                "options": {},
            }
        )
    job_variable = {
        "type": "query",
        "name": "job",
        "label": "Job",
        "datasource": PROMETHEUS,
        "query": {"query": JOB_VARIABLE_QUERY, "refId": "job"},
        "definition": JOB_VARIABLE_QUERY,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "sort": 1,
        "options": [],
        "current": {},
    }
    return _envelope(d, [job_variable], [], panels)


def _target(sql: str, fmt: str, ref: str = "A") -> dict:
    return {
        "refId": ref,
        "datasource": DATASOURCE,
        "editorMode": "code",
        "rawQuery": True,
        "rawSql": sql,
        "format": fmt,
    }


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    out: dict = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "targets": [_target(panel.sql, panel.format)],
        "fieldConfig": {"defaults": {"unit": panel.unit} if panel.unit else {}, "overrides": []},
        "options": panel.options,
    }
    return out


def _variable_json(v: Variable) -> dict:
    out = {
        "type": "query",
        "name": v.name,
        "label": v.label,
        "datasource": DATASOURCE,
        "query": v.sql,
        "definition": v.sql,
        "refresh": 1,
        "multi": v.multi,
        "includeAll": v.include_all,
        "sort": 0,
        "options": [],
        "current": {},
    }
    if v.custom_all is not None:
        out["allValue"] = v.custom_all
    return out


def _grid(panels) -> list[tuple[int, int, int]]:
    """(id, x, y) of each panel: left to right in rows 24 units wide."""
    out, x, y, row_height = [], 0, 0, 0
    for i, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        out.append((i, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return out


def _envelope(d, variables: list[dict], annotations: list[dict], panels: list[dict]) -> dict:
    """The dashboard JSON around its panels, variables and annotations."""
    return {
        "uid": d.uid,
        "title": d.title,
        "description": d.description,
        "tags": TAGS,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "time": {"from": d.time_from, "to": "now"},
        "refresh": d.refresh,
        "timezone": "utc",
        "templating": {"list": variables},
        "annotations": {"list": annotations},
        "panels": panels,
    }


def dashboard_json(d: Dashboard) -> dict:
    grid = zip(d.panels, _grid(d.panels), strict=True)
    panels = [_panel_json(p, i, x, y) for p, (i, x, y) in grid]
    annotations = [
        {
            "name": a.name,
            "enable": True,
            "iconColor": a.color,
            "datasource": DATASOURCE,
            "target": {**_target(a.sql, "table", "Anno")},
        }
        for a in d.annotations
    ]
    return _envelope(d, [_variable_json(v) for v in d.variables], annotations, panels)


def rendered() -> dict[Path, str]:
    out = {
        OUT_DIR / f"{d.uid}.json": json.dumps(dashboard_json(d), indent=2) + "\n"
        for d in DASHBOARDS
    }
    out[OUT_DIR / f"{JOB_HEALTH.uid}.json"] = (
        json.dumps(prom_dashboard_json(JOB_HEALTH), indent=2) + "\n"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m deploy.grafana.dashboards", description=__doc__.splitlines()[0]
    )
    p.add_argument("--check", action="store_true", help="fail if the JSON files are stale")
    a = p.parse_args(argv)
    stale = [
        path for path, text in rendered().items() if not path.is_file() or path.read_text() != text
    ]
    if a.check:
        for path in stale:
            print(
                f"{path} is out of date: run python -m deploy.grafana.dashboards", file=sys.stderr
            )
        return 1 if stale else 0
    OUT_DIR.mkdir(exist_ok=True)
    for path, text in rendered().items():
        path.write_text(text)
    print(f"wrote {len(rendered())} dashboards to {OUT_DIR} ({len(stale)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
