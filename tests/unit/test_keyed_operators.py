"""The project's keyed operators (jvm/) in an in-process streaming job, on bounded rows:
RecentMax (device health's highest severity over a horizon) against Flink's own MAX ... OVER
(RANGE ... PRECEDING) and numpy; WindowContext (the context horizons' sums) against numpy; and
TimedEntries (the array both keep per device, changed in place) against a Python list. Gaps sit
at, just inside and just beyond the horizons, with NULLs, devices silent for longer than a
horizon, and hundreds of rows a device, so that the array grows, moves its entries back to the
start and drops the oldest many times; the layout of the versions before (a savepoint's state)
is read as it was."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.settings import Settings

T0 = 1_700_000_000_000


@pytest.fixture(scope="module")
def stream_env():
    from common.flink_env import create_table_env

    return create_table_env(Settings.from_env().replace(parallelism=1), streaming=True)


def rows_table(t_env, tmp_path, name: str, frame: pd.DataFrame, columns: str, time: str):
    """``frame`` (its columns in order, NULLs as empty fields) as the table ``name`` with the
    rowtime ``time`` from ts_ms (watermark: the newest time); returns it queried."""
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, header=False, index=False)
    t_env.execute_sql(
        f"""CREATE TEMPORARY TABLE {name} (
          {columns},
          {time} AS TO_TIMESTAMP_LTZ(ts_ms, 3),
          WATERMARK FOR {time} AS {time}
        ) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'csv',
          'csv.null-literal' = '')"""
    )
    return t_env.sql_query(f"SELECT * FROM {name}")  # noqa: S608


def drop_tables(t_env) -> None:
    for name in t_env.list_temporary_tables():
        t_env.drop_temporary_table(name)


def ordered(f: pd.DataFrame) -> pd.DataFrame:
    return f.sort_values(["device_id", "ts_ms"]).reset_index(drop=True)


def nulls_as_none(values) -> list:
    return [None if pd.isna(v) else float(v) for v in values]


# RecentMax

HORIZON_MS = 30_000
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


def test_recent_max_equals_flinks_range_over_and_numpy(stream_env, tmp_path):
    from pyflink.table.expressions import col

    from common.flink_env import to_pandas
    from jobs.score_telemetry import recent_max

    frame = rows()
    t_env = stream_env
    source = rows_table(
        t_env, tmp_path, "recent_rows", frame, "device_id STRING, ts_ms BIGINT, v DOUBLE",
        "event_time",
    )  # fmt: skip
    over = to_pandas(t_env.sql_query(OVER_SQL))
    marked = recent_max(t_env, source, "event_time", "v", HORIZON_MS, "recent")
    mine = to_pandas(marked.select(col("device_id"), col("ts_ms"), col("recent")))
    drop_tables(t_env)
    expected = ordered(frame).assign(recent=lambda f: numpy_max(f))
    for got in (ordered(mine), ordered(over)):
        assert list(got["device_id"]) == list(expected["device_id"])
        assert list(got["ts_ms"]) == list(expected["ts_ms"])
        assert nulls_as_none(got["recent"]) == nulls_as_none(expected["recent"])


# WindowContext and TimedEntries

WINDOW_MS = 10_000
HORIZONS_MS = (60_000, 600_000)


def windows() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    out = []
    for device, gaps in {
        # 250 windows in a row: more than the long horizon holds, so entries are dropped.
        "steady": [WINDOW_MS] * 250,
        # gaps on, just under and just over each horizon, and a silence longer than both
        "gaps": [WINDOW_MS] * 80
        + [60_000, 59_999, 60_001, 600_000, 600_001, 599_999, 1_300_000]
        + [WINDOW_MS] * 90,
        "short": [WINDOW_MS] * 3,
    }.items():
        t = T0
        for gap in gaps:
            t += gap
            a = None if rng.random() < 0.1 else float(rng.normal(50, 5))
            b = None if rng.random() < 0.3 else float(rng.integers(0, 9))
            out.append({"device_id": device, "ts_ms": t, "a": a, "b": b})
    return pd.DataFrame(out)


def numpy_sums(frame: pd.DataFrame) -> pd.DataFrame:
    """Per row and (column, horizon): count, sum and sum of squares of the non-NULL values of
    its device's rows from the horizon before it up to it, summed newest first."""
    out = frame.copy()
    for column in ("a", "b"):
        for horizon in HORIZONS_MS:
            counts, sums, squares = [], [], []
            for r in frame.itertuples():
                mine = frame[
                    (frame.device_id == r.device_id)
                    & (frame.ts_ms >= r.ts_ms - horizon)
                    & (frame.ts_ms <= r.ts_ms)
                ][column].dropna()
                values = mine.to_numpy()[::-1]
                s = q = 0.0
                for v in values:
                    s += v
                    q += v * v
                counts.append(len(values))
                sums.append(s if len(values) else None)
                squares.append(q if len(values) else None)
            out[f"n_{column}_{horizon}"] = counts
            out[f"s_{column}_{horizon}"] = sums
            out[f"q_{column}_{horizon}"] = squares
    return out


def test_window_context_equals_numpy(stream_env, tmp_path):
    from pyflink.table.expressions import col

    from common.flink_env import to_pandas
    from jobs.score_telemetry import window_context

    frame = windows()
    t_env = stream_env
    source = rows_table(
        t_env, tmp_path, "context_rows", frame,
        "device_id STRING, ts_ms BIGINT, a DOUBLE, b DOUBLE", "window_time",
    )  # fmt: skip
    specs = [
        (c, h, tuple(f"{prefix}_{c}_{h}" for prefix in "nsq"))
        for c in ("a", "b")
        for h in HORIZONS_MS
    ]
    marked = window_context(t_env, source, "window_time", specs)
    wanted = ["device_id", "ts_ms", *(name for _, _, triple in specs for name in triple)]
    got = to_pandas(marked.select(*(col(c) for c in wanted)))
    drop_tables(t_env)
    got, expected = ordered(got), ordered(numpy_sums(frame))
    assert list(got["ts_ms"]) == list(expected["ts_ms"])
    for name in wanted[2:]:
        # The same sums in the same order: equal to the last bit.
        assert nulls_as_none(got[name]) == nulls_as_none(expected[name]), name
    # The silence longer than the long horizon: the window after it sees only itself.
    after = got[(got.device_id == "gaps")].reset_index(drop=True)
    back = after.index[after["ts_ms"].diff() == 1_300_000][0]
    assert after.loc[back, "n_a_600000"] <= 1 and after.loc[back, "n_b_600000"] <= 1


def test_timed_entries_equal_a_list_and_read_the_layout_before(stream_env):
    """Appends and drops in random steps against a list of (time, value): the array's live
    entries are always the list's, whatever growing and moving back happened in between."""
    from pyflink.java_gateway import get_gateway

    from jobs.score_telemetry import jvm_class

    entries = jvm_class("TimedEntries")
    gateway = get_gateway()

    def live(array) -> list[tuple[int, float]]:
        out = []
        for e in range(entries.count(array)):
            at = entries.offset(array, e, 2)
            out.append((int(array[at]), float(array[at + 1])))
        return out

    rng = np.random.default_rng(3)
    model: list[tuple[int, float]] = []
    array, t = None, 0
    grown = 0
    for step in range(400):
        t += int(rng.integers(1, 4))
        horizon = int(rng.choice([5, 20, 60]))
        entries.dropBefore(array, 2, t - horizon)
        model = [(time, v) for time, v in model if time >= t - horizon]
        before = array
        array = entries.append(array, 2)
        grown += before is not None and not gateway.jvm.java.util.Objects.equals(before, array)
        at = entries.offset(array, entries.count(array) - 1, 2)
        array[at], array[at + 1] = float(t), float(step)
        model.append((t, float(step)))
        assert live(array) == model, step
    assert grown > 2  # it did grow, and moved back in between (the horizons change)

    # An array of the versions before: entries from index 0, no header.
    legacy = gateway.new_array(gateway.jvm.double, 6)
    for i, v in enumerate([1000.0, 1.5, 2000.0, float("nan"), 3000.0, -2.0]):
        legacy[i] = v
    upgraded = entries.upgrade(legacy, 2)
    got = live(upgraded)
    assert [t for t, _ in got] == [1000, 2000, 3000]
    assert got[0][1] == 1.5 and np.isnan(got[1][1]) and got[2][1] == -2.0
    # Read again, the new layout is kept as it is.
    assert gateway.jvm.java.util.Objects.equals(entries.upgrade(upgraded, 2), upgraded)
    assert entries.upgrade(None, 2) is None
