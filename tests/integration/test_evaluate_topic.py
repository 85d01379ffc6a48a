"""Evaluation of a Kafka topic (python -m training.evaluate topic) against the real broker: a
topic gives the same figures as the CSVs it was replayed from, also those of the model
retrained on a schedule (--retrain-every)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from common.settings import REPO_ROOT, read_env_file
from tests.e2e.test_own_data import write_shop
from training.onboard import main as onboard_main

pytestmark = pytest.mark.stack


def test_a_topic_evaluates_as_the_csvs_it_was_replayed_from(stack, fresh_topic, tmp_path):
    data = tmp_path / "metrics"
    write_shop(data)
    where = ["--catalogue-dir", str(tmp_path), "--env-dir", str(tmp_path)]
    assert onboard_main([str(data), "--name", "shop", "--label-column", "label", *where]) == 0
    # Retrainings judged on the 1 h windows of half a day (36 of the three hosts).
    env = {**os.environ, **read_env_file(tmp_path / "shop.env"), "ANOMALY_DRIFT_MIN_WINDOWS": "30"}
    logs = []

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, capture_output=True,
            text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        logs.append(done.stderr)
        return done.stdout

    run("simulator.replay", str(data), "--label-column", "label", "--topic", fresh_topic,
        "--bootstrap", stack.kafka_bootstrap)  # fmt: skip
    split = ["--train-fraction", "0.15", "--retrain-every", "1d", "--retrain-since", "60h"]
    run("training.evaluate", "csv", str(data), "--label-column", "label", *split,
        "--json-out", str(tmp_path / "csv.json"))  # fmt: skip
    table = run("training.evaluate", "topic", fresh_topic, "--bootstrap", stack.kafka_bootstrap,
                *split, "--json-out", str(tmp_path / "topic.json"))  # fmt: skip
    assert "pca-t2q (ours)" in table
    assert "pca-t2q, retrained every 1d on the last 60h (ours)" in table
    # Five days, the first 15 % training: at 1, 2, 3 and 4 days into each host's scored part.
    for log in logs[1:]:
        outcomes = re.search(r"retrained every 1d on 60h: (.*)", log).group(1)
        assert sum(int(n) for n in re.findall(r"(\d+) \w+", outcomes)) == 4, outcomes

    def figures(name: str) -> list[dict]:
        report = json.loads((tmp_path / name).read_text())
        assert report["devices"] == 3 and report["rows"] == 3 * 5 * 288
        return [{k: v for k, v in r.items() if k != "seconds"} for r in report["results"]]

    from_csv, from_topic = figures("csv.json"), figures("topic.json")
    assert from_topic == from_csv
    assert from_topic[0]["events_detected"] == from_topic[0]["events"] == 3
