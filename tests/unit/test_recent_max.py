"""RecentMax (jvm/, device health's highest severity over a horizon) against Flink's own
MAX ... OVER (RANGE ... PRECEDING) and numpy, in an in-process streaming job, on rows whose
gaps sit at, just inside and just beyond the horizon, with NULLs and a device that goes
silent for longer than the horizon."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.settings import Settings

HORIZON_MS = 30_000
T0 = 1_700_000_000_000
# Flink's own reading of the same horizon (HORIZON_MS).
OVER_SQL = (
    "SELECT device_id, ts_ms, MAX(v) OVER (PARTITION BY device_id ORDER BY event_time "
    "RANGE BETWEEN INTERVAL '30' SECOND PRECEDING AND CURRENT ROW) AS recent FROM recent_rows"
)


def rows() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    out = []
    for device, gaps in {
        # gaps (ms) before each row: on the horizon, 1 ms over and under it, a long silence
        "a": [0, 10_000, 10_000, 10_000, 30_000, 1, 29_999, 30_001, 5_000, 100_000, 10_000],
        "b": [0, *([10_000] * 12)],
        "c": [0, 2_000, 2_000, 40_000],
    }.items():
        t = T0
        for gap in gaps:
            t += gap
            value = None if rng.random() < 0.15 else float(rng.integers(0, 100))
            out.append({"device_id": device, "ts_ms": t, "v": value})
    return pd.DataFrame(out)


def numpy_max(frame: pd.DataFrame) -> list:
    """Per row: the highest non-NULL v of its device's rows from HORIZON_MS before it on."""
    expected = []
    for r in frame.itertuples():
        mine = frame[(frame.device_id == r.device_id) & (frame.ts_ms >= r.ts_ms - HORIZON_MS)]
        mine = mine[mine.ts_ms <= r.ts_ms]["v"].dropna()
        expected.append(mine.max() if len(mine) else None)
    return expected


def nulls_as_none(values: pd.Series) -> list:
    return [None if pd.isna(v) else float(v) for v in values]


@pytest.fixture(scope="module")
def stream_env():
    from common.flink_env import create_table_env

    return create_table_env(Settings.from_env().replace(parallelism=1), streaming=True)


def test_recent_max_equals_flinks_range_over_and_numpy(stream_env, tmp_path):
    from pyflink.table.expressions import col

    from common.flink_env import to_pandas
    from jobs.score_telemetry import recent_max

    frame = rows()
    path = tmp_path / "rows.csv"
    frame.to_csv(path, header=False, index=False)
    t_env = stream_env
    t_env.execute_sql(
        f"""CREATE TEMPORARY TABLE recent_rows (
          device_id STRING, ts_ms BIGINT, v DOUBLE,
          event_time AS TO_TIMESTAMP_LTZ(ts_ms, 3),
          WATERMARK FOR event_time AS event_time
        ) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'csv',
          'csv.null-literal' = '')"""
    )
    over = to_pandas(t_env.sql_query(OVER_SQL))
    source = t_env.sql_query("SELECT * FROM recent_rows")
    marked = recent_max(t_env, source, "event_time", "v", HORIZON_MS, "recent")
    mine = to_pandas(marked.select(col("device_id"), col("ts_ms"), col("recent")))
    for name in t_env.list_temporary_tables():
        t_env.drop_temporary_table(name)

    def ordered(f: pd.DataFrame) -> pd.DataFrame:
        return f.sort_values(["device_id", "ts_ms"]).reset_index(drop=True)

    expected = ordered(frame).assign(recent=lambda f: numpy_max(f))
    for got in (ordered(mine), ordered(over)):
        assert list(got["device_id"]) == list(expected["device_id"])
        assert list(got["ts_ms"]) == list(expected["ts_ms"])
        assert nulls_as_none(got["recent"]) == nulls_as_none(expected["recent"])
