"""Every Grafana panel, variable and annotation query, expanded as Grafana sends it, against
the real PostgreSQL as the read-only role, on the known data set (the e2e known-stream test
runs them again on what the real pipeline wrote)."""

from __future__ import annotations

import pytest

from deploy.grafana.check import check_all
from tests import readside_data as known

pytestmark = pytest.mark.stack

MAY_BE_EMPTY: set[str] = set()


def test_every_panel_runs_and_returns_its_shape(fresh_db):
    known.load(fresh_db, known.build())
    results = check_all(
        fresh_db, known.START.to_pydatetime(), known.END.to_pydatetime(), {"device": "dev-c"}
    )
    problems = [(r.dashboard, r.name, r.problem, r.sql) for r in results if r.problem]
    assert not problems, problems
    empty = [r.name for r in results if not r.rows and r.name not in MAY_BE_EMPTY]
    assert not empty, empty
    by_name = {r.name: r for r in results}
    # A few answers by value: the fleet's anomalies, the device's explanations.
    data = known.build()
    flagged = int((data.scores["is_anomaly"] == True).sum())  # noqa: E712
    assert by_name["Anomalies in range"].rows[0][0] == flagged
    assert sum(r[1] for r in by_name["Anomalous windows"].rows) == flagged
    assert {r[1] for r in by_name["Latest anomalies"].rows} <= set(known.DEVICES)
    assert len(by_name["Severity"].rows) == int((data.scores["device_id"] == "dev-c").sum())
    assert [r[0] for r in by_name["Unhealthy now"].rows] == ["dev-c", "dev-b"]
    assert by_name["Health"].rows == [(30.0,)]
