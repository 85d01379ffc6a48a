"""The PNG plot command on the known data set, as the read-only role."""

from __future__ import annotations

import pytest

from common.features import METRIC_NAMES
from tests import readside_data as known

pytestmark = pytest.mark.stack


def test_plot_draws_what_device_metric_returns(fresh_db, tmp_path, monkeypatch):
    from query import plot

    data = known.build()
    known.load(fresh_db, data)
    metric = METRIC_NAMES[0]
    frame = plot.fetch(fresh_db, "dev-c", metric, known.START, known.END)
    rows = data.scores[data.scores["device_id"] == "dev-c"]
    assert len(frame) == len(rows) == 720
    assert list(frame["time"]) == list(rows["window_start"])
    assert int((frame["is_anomaly"] == True).sum()) == int((rows["is_anomaly"] == True).sum())  # noqa: E712
    out = plot.render(frame, "dev-c", metric, tmp_path / "dev-c.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000

    # The command: the same settings through the environment.
    for name in ("pg_database", "pg_reader_password"):
        monkeypatch.setenv(f"ANOMALY_{name.upper()}", str(getattr(fresh_db, name)))
    end = known.END.isoformat()
    args = ["--device", "dev-c", "--metric", metric, "--since", "1h", "--end", end]
    assert plot.main([*args, "--out", str(tmp_path / "cli.png")]) == 0
    assert (tmp_path / "cli.png").stat().st_size > 20_000
    assert plot.main(["--device", "nobody", "--metric", metric, "--end", end]) == 1
