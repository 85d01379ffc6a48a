"""A model alert's explanation in words (alerting.notifier.explanation_text)."""

from __future__ import annotations

import json

from alerting.notifier import explanation_text


def item(**extra) -> dict:
    return {
        "metric": "value",
        "feature": "value_max",
        "direction": "up",
        "actual": 310.0,
        "typical": 12.5,
        "contribution": 0.8,
        **extra,
    }


def test_each_item_in_words_and_the_reading_that_flagged_it():
    assert explanation_text(json.dumps([item()])) == "value_max up: 310 (typical 12.5)"
    assert explanation_text(json.dumps([item(reading="spike and step")])) == (
        "value_max up: 310 (typical 12.5), flagged by the spike and step reading"
    )
    # Not the job's JSON: the text as it is.
    assert explanation_text("not json") == "not json"
