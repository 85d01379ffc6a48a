"""Evaluation of a Kafka topic (python -m training.evaluate topic) against the real broker: a
topic gives the same figures as the CSVs it was replayed from."""

from __future__ import annotations

import json
import os
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
    env = {**os.environ, **read_env_file(tmp_path / "shop.env")}

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, capture_output=True,
            text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    run("simulator.replay", str(data), "--label-column", "label", "--topic", fresh_topic,
        "--bootstrap", stack.kafka_bootstrap)  # fmt: skip
    split = ["--train-fraction", "0.15"]
    run("training.evaluate", "csv", str(data), "--label-column", "label", *split,
        "--json-out", str(tmp_path / "csv.json"))  # fmt: skip
    table = run("training.evaluate", "topic", fresh_topic, "--bootstrap", stack.kafka_bootstrap,
                *split, "--json-out", str(tmp_path / "topic.json"))  # fmt: skip
    assert "pca-t2q (ours)" in table

    def figures(name: str) -> list[dict]:
        report = json.loads((tmp_path / name).read_text())
        assert report["devices"] == 3 and report["rows"] == 3 * 5 * 288
        return [{k: v for k, v in r.items() if k != "seconds"} for r in report["results"]]

    from_csv, from_topic = figures("csv.json"), figures("topic.json")
    assert from_topic == from_csv
    assert from_topic[0]["events_detected"] == from_topic[0]["events"] == 3
