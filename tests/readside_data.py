"""A known data set for the read side: scores, alerts, incidents, rejects and a registered
model, written straight into a migrated database, with the frames the tests compute their
expected answers from."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from common.features import FEATURE_NAMES, METRIC_NAMES

# Two hours of 10 s windows for four devices, ending at END: the last full hour before now,
# so that no retention (30 days) touches them.
END = pd.Timestamp.now(tz="UTC").floor("1h")
START = END - pd.Timedelta(hours=2)
# Rows this old are past every retention horizon.
EXPIRED = END - pd.Timedelta(days=45)
DEVICES = {"dev-a": "site-1", "dev-b": "site-1", "dev-c": "site-2", "dev-d": None}
MODEL = "model-std-normal"  # training scores standard normal
SHIFTED = "model-shifted"  # its recent scores run one standard deviation high
UNREGISTERED = "model-unknown"
# The training scores' quantiles of a standard normal distribution.
NORMAL_QUANTILES = {"0.5": 0.0, "0.9": 1.2815515655, "0.99": 2.3263478740, "0.999": 3.0902323062}
SEVERITY = 50.0  # above it a window is flagged
HEALTH = {"dev-a": 90.0, "dev-b": 40.0, "dev-c": 30.0, "dev-d": 100.0}


@dataclass
class KnownData:
    scores: pd.DataFrame
    alerts: pd.DataFrame
    incidents: pd.DataFrame


def build(seed: int = 5) -> KnownData:
    rng = np.random.default_rng(seed)
    starts = pd.date_range(START, END, freq="10s", inclusive="left")
    rows = []
    for d, (device, site) in enumerate(DEVICES.items()):
        # dev-c's scores come from the shifted model; dev-d's from an unregistered one, only
        # over the last 10 minutes (too few windows to judge).
        version = {2: SHIFTED, 3: UNREGISTERED}.get(d, MODEL)
        for k, start in enumerate(starts):
            if device == "dev-d" and start < END - pd.Timedelta(minutes=10):
                continue
            score = rng.normal(1.0 if version == SHIFTED else 0.0, 1.0)
            severity = float(np.clip(20 + 12 * score, 0, 100))
            row = {
                "device_id": device,
                "window_start": start,
                "window_end": start + pd.Timedelta(seconds=10),
                "anomaly_score": score,
                "severity": severity,
                "is_anomaly": severity > SEVERITY,
                "model_version": version,
                "site": site,
                "top_metric": METRIC_NAMES[k % len(METRIC_NAMES)] if severity > SEVERITY else None,
                "explanation": json.dumps(
                    [
                        {
                            "metric": METRIC_NAMES[k % len(METRIC_NAMES)],
                            "feature": f"{METRIC_NAMES[k % len(METRIC_NAMES)]}_mean",
                            "direction": "above",
                            "actual": 2.0,
                            "typical": 1.0,
                            "contribution": score,
                        }
                    ]
                )
                if severity > SEVERITY
                else None,
            }
            for j, metric in enumerate(METRIC_NAMES):
                mean = 10.0 * (j + 1) + d + np.sin(k / 30)
                row[f"{metric}_mean"] = mean
                row[f"{metric}_min"] = mean - 1
                row[f"{metric}_max"] = mean + 1
                row[f"{metric}_count"] = 10
                if f"{metric}_avg1h" in FEATURE_NAMES:
                    row[f"{metric}_avg1h"] = 10.0 * (j + 1) + d
                    row[f"{metric}_sd1h"] = 0.5 + 0.1 * j
            rows.append(row)
    scores = pd.DataFrame(rows)
    # A window with no score (a missing metric): counted, not scored.
    scores["is_anomaly"] = scores["is_anomaly"].astype(object)
    scores.loc[5, ["anomaly_score", "severity", "is_anomaly", "model_version"]] = None
    flagged = scores[scores["is_anomaly"] == True]  # noqa: E712
    alerts = pd.DataFrame(
        {
            "device_id": flagged["device_id"],
            "window_start": flagged["window_start"],
            "source": "model",
            "window_end": flagged["window_end"],
            "severity": flagged["severity"],
            "metric": flagged["top_metric"],
            "site": flagged["site"],
        }
    )
    rule = scores[(scores["device_id"] == "dev-b") & (scores.index % 50 == 0)]
    alerts = pd.concat(
        [
            alerts,
            pd.DataFrame(
                {
                    "device_id": rule["device_id"],
                    "window_start": rule["window_start"],
                    "source": "rule:packet_loss_high",
                    "window_end": rule["window_end"],
                    "severity": 99.0,
                    "metric": "packet_loss_pct",
                    "site": rule["site"],
                }
            ),
        ],
        ignore_index=True,
    )
    incidents = pd.DataFrame(
        [
            # One that ended long ago, one that ended a few seconds ago (open).
            ("dev-a", START, START + pd.Timedelta(seconds=30), 3, 70.0, "closed"),
            ("dev-b", None, None, 2, 80.0, "open"),
        ],
        columns=["device_id", "started_at", "ended_at", "windows", "peak_severity", "expect"],
    )
    return KnownData(scores, alerts, incidents)


def _insert(cur, table: str, frame: pd.DataFrame) -> None:
    from psycopg2 import sql
    from psycopg2.extras import execute_values

    columns = list(frame.columns)
    values = list(frame.astype(object).where(frame.notna(), None).itertuples(index=False))
    execute_values(
        cur,
        sql.SQL("INSERT INTO {} ({}) VALUES %s").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        ),
        values,
    )


def insert_rows(settings, table: str, frame: pd.DataFrame) -> None:
    from common.db import connect

    conn = connect(settings)
    with conn, conn.cursor() as cur:
        _insert(cur, table, frame)
    conn.close()


def load(settings, data: KnownData) -> None:
    """Write the data set (and the two registered models) into the settings' database, and
    materialize the aggregates (TimescaleDB), so that a refresh policy running meanwhile
    cannot leave them half-stale."""
    from psycopg2.extras import Json

    from common.db import connect, refresh_aggregates

    conn = connect(settings)
    with conn, conn.cursor() as cur:
        _insert(cur, settings.scores_table, data.scores)
        _insert(cur, settings.alerts_table, data.alerts)
        for r in data.incidents.itertuples():
            if r.expect == "open":
                cur.execute(
                    f"INSERT INTO {settings.incidents_table} (device_id, started_at, ended_at,"  # noqa: S608
                    " windows, peak_severity) VALUES (%s, now() - interval '30 s',"
                    " now() - interval '5 s', %s, %s)",
                    (r.device_id, r.windows, r.peak_severity),
                )
            else:
                cur.execute(
                    f"INSERT INTO {settings.incidents_table} (device_id, started_at, ended_at,"  # noqa: S608
                    " windows, peak_severity) VALUES (%s, %s, %s, %s, %s)",
                    (r.device_id, r.started_at, r.ended_at, r.windows, r.peak_severity),
                )
        # Each incident is a correlated incident of its own (as the notifier records one
        # on unlinked devices).
        cur.execute(
            f"INSERT INTO {settings.correlated_table} (id, root_device, started_at)"  # noqa: S608
            f" SELECT device_id || '@' || started_at, device_id, started_at"
            f" FROM {settings.incidents_table}"
        )
        cur.execute(
            f"INSERT INTO {settings.correlation_table}"  # noqa: S608
            f" SELECT device_id, started_at, device_id || '@' || started_at"
            f" FROM {settings.incidents_table}"
        )
        for version, shift in ((MODEL, 0.0), (SHIFTED, 0.0)):
            quantiles = {q: v + shift for q, v in NORMAL_QUANTILES.items()}
            cur.execute(
                f"INSERT INTO {settings.models_table} (version, model, created_at,"  # noqa: S608
                " window_seconds, features, threshold, training_windows, score_quantiles, card)"
                " VALUES (%s, 'pca-t2q', %s, 10, %s, 3.09, 10000, %s, %s)",
                (
                    version,
                    START - pd.Timedelta(days=1),
                    list(FEATURE_NAMES[:3]),
                    Json(quantiles),
                    Json({"version": version, "training": {"score_quantiles": quantiles}}),
                ),
            )
        cur.executemany(
            f"INSERT INTO {settings.devices_table} (device_id, site) VALUES (%s, %s)",  # noqa: S608
            [(d, site) for d, site in DEVICES.items() if site],
        )
        cur.executemany(
            f"INSERT INTO {settings.health_table} (device_id, window_end, health, site)"  # noqa: S608
            " VALUES (%s, %s, %s, %s)",
            [(d, END, HEALTH[d], site) for d, site in DEVICES.items()],
        )
        cur.executemany(
            f"INSERT INTO {settings.dead_letters_table} (source_topic, source_partition,"  # noqa: S608
            " source_offset, broker_time, reason, payload) VALUES ('t', 0, %s, %s, %s, %s)",
            [
                (1, START + pd.Timedelta(seconds=5), "not a JSON object", "{"),
                (2, START + pd.Timedelta(seconds=65), "not a JSON object", json.dumps([1])),
                (3, START + pd.Timedelta(seconds=70), "ts_ms: not an integer", "{}"),
            ],
        )
        cur.execute(
            f"INSERT INTO {settings.late_events_table} (source_topic, source_partition,"  # noqa: S608
            " source_offset, broker_time, device_id, event_time, window_start, watermark)"
            " VALUES ('t', 1, 9, %s, 'dev-a', %s, %s, %s)",
            (
                START + pd.Timedelta(seconds=61),
                START + pd.Timedelta(seconds=40),
                START + pd.Timedelta(seconds=40),
                START + pd.Timedelta(seconds=55),
            ),
        )
    conn.close()
    refresh_aggregates(settings)
