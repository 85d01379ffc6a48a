"""A real Prometheus for end-to-end tests: scraping the local cluster's Flink reporters, and
the job-health dashboard's queries run against it."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

from deploy.grafana import dashboards


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def prometheus(tmp_path):
    """A real Prometheus scraping the local cluster's reporters every second; yields its URL."""
    config = tmp_path / "prometheus.yml"
    targets = [f"127.0.0.1:{port}" for port in range(9249, 9260)]
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [{"job_name": "flink", "static_configs": [{"targets": targets}]}],
            }
        )
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


def scrape_ok(port: int = 9249) -> bool:
    """Whether the local JobManager serves Prometheus metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return b"flink_jobmanager" in resp.read()
    except OSError:
        return False


def instant_query(url: str, expr: str) -> list:
    query = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=10) as resp:
        answer = json.load(resp)
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def empty_queries(url: str, job_label: str, one_metric: bool) -> list[str]:
    """The job-health dashboard's queries (with $job = the job) that return no series: of the
    panels every job fills (``one_metric`` False), or of those only one-metric jobs fill."""
    return [
        f"{panel.title}: {expr}"
        for panel in dashboards.JOB_HEALTH.panels
        if panel.one_metric == one_metric
        for _, expr in panel.queries
        if not instant_query(url, expr.replace("$job", job_label))
    ]


def unanswered(url: str, job_name: str, one_metric: bool, timeout_s: float, ready=None):
    """empty_queries for the job named ``job_name``, asked every 2 s (once ``ready()``, if
    given) until none is left or ``timeout_s`` has passed: those still without a series."""
    label = job_name.replace("-", "_")  # as Flink's reporter writes it
    deadline = time.monotonic() + timeout_s
    empty = ["(not scraped yet)"]
    while empty and time.monotonic() < deadline:
        time.sleep(2)
        if ready is None or ready():
            empty = empty_queries(url, label, one_metric)
    return empty
