"""Grafana provisioning without Grafana: the macro expansion matches the PostgreSQL data
source's (expected strings from grafana/grafana's macros_test.go), the dashboards' JSON is
generated from deploy/grafana/dashboards.py, and the provisioning files hang together."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import yaml

from deploy.grafana import dashboards, macros

FROM = datetime(2018, 4, 12, 18, 0, tzinfo=UTC)
TO = datetime(2018, 4, 12, 18, 5, tzinfo=UTC)
CTX = macros.QueryContext(FROM, TO, interval_s=300)


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("WHERE $__timeFilter(time_column)",
         "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'"),
        ("select $__timeFrom()", "select '2018-04-12T18:00:00Z'"),
        ("select $__timeTo()", "select '2018-04-12T18:05:00Z'"),
        ("GROUP BY $__timeGroup(time_column,'5m')",
         "GROUP BY floor(extract(epoch from time_column)/300)*300"),
        ("GROUP BY $__timeGroup(time_column, 5m)",
         "GROUP BY floor(extract(epoch from time_column)/300)*300"),
        ("select $__timeGroupAlias(time_column,'5m')",
         "select floor(extract(epoch from time_column)/300)*300 AS \"time\""),
        # Pre-5.3 dashboards: $__timeGroup followed by a comma gets the alias.
        ("select $__timeGroup(time_column,'5m'), value",
         "select floor(extract(epoch from time_column)/300)*300 AS \"time\", value"),
        ("select $__time(time_column)", 'select time_column AS "time"'),
        ("select $__timeEpoch(time)", 'select extract(epoch from time) as "time"'),
        ("select $__unixEpochFilter(time)", "select time >= 1523556000 AND time <= 1523556300"),
        ("select $__unixEpochGroup(time_column,'5m')", "select floor((time_column)/300)*300"),
        ("bucket $__interval, $__interval_ms ms", "bucket 5m, 300000 ms"),
    ],
)  # fmt: skip
def test_macros_expand_as_grafana_does(sql, expected):
    assert macros.render(sql, CTX) == expected


def test_timescaledb_time_group_and_fractional_times():
    ctx = macros.QueryContext(FROM, TO, timescaledb=True)
    assert macros.render("$__timeGroup(c,'12d')", ctx) == "time_bucket('1036800.000s',c)"
    assert macros.render("$__timeGroup(c,'20ms')", ctx) == "time_bucket('0.020s',c)"
    half = datetime(1960, 2, 1, 7, 0, 0, 500_000, tzinfo=UTC)
    assert macros.rfc3339(half) == "1960-02-01T07:00:00.5Z"
    assert macros.format_interval(90) == "1m" and macros.format_interval(0.5) == "500ms"


def test_unknown_macros_and_variables_are_errors():
    with pytest.raises(macros.MacroError, match="unknown macro"):
        macros.render("$__nope(x)", CTX)
    with pytest.raises(macros.MacroError, match=r"\$device has no value"):
        macros.render("WHERE d = '$device'", CTX)


def test_variables_quote_as_the_postgres_data_source():
    v = {
        "one": macros.Variable("it's"),
        "many": macros.Variable(["a", "b'c"], multi=True),
        "site": macros.Variable(["$__all"], multi=True, include_all=True, custom_all="'__all'"),
    }
    ctx = macros.QueryContext(FROM, TO, variables=v)
    assert macros.render("'${one}' $one [[one]]", ctx) == "'it''s' it''s it''s"
    assert macros.render("IN (${many:sqlstring}) IN ($many)", ctx) == (
        "IN ('a','b''c') IN ('a','b''c')"
    )
    assert macros.render("${many:csv}", ctx) == "a,b'c"
    assert macros.render("'__all' IN (${site:sqlstring})", ctx) == "'__all' IN ('__all')"


def test_committed_dashboards_are_the_generated_ones():
    assert dashboards.main(["--check"]) == 0, "run python -m deploy.grafana.dashboards"


def test_dashboards_are_provisionable():
    uids = set()
    for path, text in dashboards.rendered().items():
        d = json.loads(text)
        assert d["title"] and d["uid"] not in uids and "dashboard" not in d
        uids.add(d["uid"])
        assert d["schemaVersion"] == dashboards.SCHEMA_VERSION
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), path
        for p in d["panels"]:
            assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
            for t in p["targets"]:
                if t["datasource"] == dashboards.PROMETHEUS:
                    assert t["expr"].strip() and t["legendFormat"], p["title"]
                    continue
                assert t["datasource"] == dashboards.DATASOURCE
                assert t["format"] in ("time_series", "table") and t["rawSql"].strip()
    for d in dashboards.DASHBOARDS:
        for p in d.panels:
            assert p.columns, f"{d.uid}: {p.title} names no expected columns"
            if p.format == "time_series":
                assert p.columns[0] == "time", p.title


def test_provisioning_files_name_the_data_source_the_dashboards_use():
    root = dashboards.HERE / "provisioning"
    source = yaml.safe_load((root / "datasources" / "anomaly.yaml").read_text())
    (ds,) = source["datasources"]
    assert ds["uid"] == dashboards.DATASOURCE["uid"]
    assert ds["type"] == dashboards.DATASOURCE["type"]
    # Connection facts come from Grafana's environment; no password in the file.
    assert ds["secureJsonData"]["password"] == "${ANOMALY_PG_READER_PASSWORD}"
    assert ds["user"] == "${ANOMALY_PG_READER_USER}"
    prom = yaml.safe_load((root / "datasources" / "prometheus.yaml").read_text())
    (ds,) = prom["datasources"]
    assert (ds["uid"], ds["type"]) == (dashboards.PROMETHEUS["uid"], dashboards.PROMETHEUS["type"])
    assert ds["url"] == "${ANOMALY_PROMETHEUS_URL}"
    provider = yaml.safe_load((root / "dashboards" / "anomaly.yaml").read_text())
    assert provider["providers"][0]["type"] == "file"


def test_the_step_counters_panel_reads_the_names_the_step_functions_register():
    """The job-health panel of samples left out of the steps queries each counter that
    jvm/.../Steps.java registers (its getMetricName values), under Flink's Prometheus prefix
    for operator metrics; it is the one panel the default job gives no series."""
    import re

    from common.settings import REPO_ROOT

    java = (REPO_ROOT / "jvm/src/main/java/local/anomaly/flink/Steps.java").read_text()
    registered = tuple(re.findall(r'return "(step\w+SamplesLeftOut)";', java))
    assert registered == dashboards.STEP_COUNTERS
    (panel,) = [p for p in dashboards.JOB_HEALTH.panels if p.one_metric]
    exprs = [expr for _, expr in panel.queries]
    assert exprs == [
        f'sum by (job_name) (flink_taskmanager_job_task_operator_{name}{{job_name=~"$job"}})'
        for name in registered
    ]
