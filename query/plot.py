"""A PNG of one device's metric over a time range, for reports and places without Grafana: the
window means with the device's typical band, the flagged windows marked, and the severity
below with the flag line at 50. The same query as the Grafana drill-down (device_metric()),
as the read-only role.

  python -m query.plot --device dev-00003 --metric latency_ms --since 2h
  python -m query.plot --device dev-00003 --metric latency_ms \\
      --start 2026-11-30T08:00:00Z --end 2026-11-30T12:00:00Z --out report.png
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from common.features import METRIC_NAMES
from common.settings import Settings

FLAG_SEVERITY = 50.0


def fetch(
    settings: Settings, device: str, metric: str, start: datetime, end: datetime
) -> pd.DataFrame:
    from common.db import connect

    conn = connect(settings, role="reader")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT * FROM device_metric(%s, %s, %s, %s)", (device, metric, start, end))
            frame = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
    finally:
        conn.close()
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    for column in frame.columns.drop(["time", "is_anomaly"]):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def render(frame: pd.DataFrame, device: str, metric: str, out: Path) -> Path:
    """Draw the frame device_metric() returned into a PNG at ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    t = frame["time"]
    if frame["band_low"].notna().any():
        top.fill_between(
            t, frame["band_low"], frame["band_high"], color="tab:blue", alpha=0.15,
            label="typical band (±2 spreads)",
        )  # fmt: skip
        top.plot(t, frame["typical"], color="tab:blue", lw=0.8, ls="--", label="typical")
    top.plot(t, frame["value"], color="black", lw=1.0, label=f"{metric} (window mean)")
    flagged = frame[frame["is_anomaly"] == True]  # noqa: E712 (NULL: not scored)
    top.scatter(flagged["time"], flagged["value"], color="tab:red", zorder=3, s=18,
                label=f"anomalous window ({len(flagged)})")  # fmt: skip
    top.set_ylabel(metric)
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    bottom.plot(t, frame["severity"], color="tab:orange", lw=1.0, label="severity")
    bottom.axhline(FLAG_SEVERITY, color="tab:red", lw=0.8, ls=":", label="flagged above 50")
    bottom.set_ylim(0, 100)
    bottom.set_ylabel("severity")
    bottom.legend(loc="upper left", fontsize=8)
    bottom.grid(alpha=0.3)
    span = f"{t.min():%Y-%m-%d %H:%M} to {t.max():%Y-%m-%d %H:%M} UTC" if len(t) else "no windows"
    fig.suptitle(f"{device}: {metric}, {span}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    from query.api import parse_range

    p = argparse.ArgumentParser(prog="python -m query.plot", description=__doc__.splitlines()[0])
    p.add_argument("--device", required=True)
    p.add_argument("--metric", required=True, choices=METRIC_NAMES)
    p.add_argument("--since", default="1h", help="range before --end: 30m, 6h, 2d (default 1h)")
    p.add_argument("--start", type=parse_time, help="ISO time (instead of --since)")
    p.add_argument("--end", type=parse_time, help="ISO time (default now)")
    p.add_argument("--out", type=Path, help="PNG path (default .state/plots/<device>-<metric>.png)")
    a = p.parse_args(argv)
    settings = Settings.from_env()
    end = a.end or datetime.now(UTC)
    try:
        start = a.start or end - parse_range(a.since)
    except Exception as exc:
        p.error(str(getattr(exc, "detail", exc)))
    if start >= end:
        p.error("the range is empty: --start must come before --end")
    out = a.out or settings.state_dir / "plots" / f"{a.device}-{a.metric}.png"
    try:
        frame = fetch(settings, a.device, a.metric, start, end)
    except Exception as exc:
        print(f"plot: cannot read {settings.pg_database}: {str(exc).strip()}", file=sys.stderr)
        return 1
    if frame.empty:
        print(
            f"plot: no windows of {a.device} between {start:%Y-%m-%d %H:%M} and "
            f"{end:%Y-%m-%d %H:%M} UTC (is the device id right? `make status` shows the data)",
            file=sys.stderr,
        )
        return 1
    render(frame, a.device, a.metric, out)
    print(
        f"plot: {out} ({len(frame)} windows, {int((frame['is_anomaly'] == True).sum())} "  # noqa: E712
        "anomalous)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
