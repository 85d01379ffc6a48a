from __future__ import annotations

import json

import pytest

from common.models import current_version, resolve_model_dir, rollback, set_current
from common.models import main as models_main
from common.settings import Settings


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("ANOMALY_MODELS_DIR", str(tmp_path))
    for i, version in enumerate(("aaa111", "bbb222", "ccc333")):
        (tmp_path / version).mkdir()
        (tmp_path / version / "model.onnx").write_bytes(b"x")
        (tmp_path / version / "card.json").write_text(
            json.dumps(
                {
                    "version": version,
                    "created_at": f"2026-01-0{i + 1}T00:00:00+00:00",
                    "model": "IsolationForest",
                    "training": {"windows": 10 * (i + 1)},
                }
            )
        )
    return Settings.from_env()


def test_use_and_rollback_walk_the_history(settings):
    for version in ("aaa111", "bbb222", "ccc333"):
        set_current(settings, version)
    assert current_version(settings) == "ccc333"
    assert rollback(settings) == "bbb222"
    assert resolve_model_dir(settings).name == "bbb222"
    set_current(settings, "ccc333")
    assert rollback(settings) == "bbb222"


def test_rollback_without_history_and_unknown_version_are_clear_errors(settings):
    with pytest.raises(FileNotFoundError, match="no earlier model version"):
        rollback(settings)
    with pytest.raises(FileNotFoundError, match="not found"):
        set_current(settings, "zzz999")
    assert current_version(settings) is None


def test_cli_lists_newest_first_and_marks_current(settings, capsys):
    assert models_main(["use", "aaa111"]) == 0
    assert models_main(["use", "bbb222"]) == 0
    assert models_main(["rollback"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "rolled back: CURRENT is now aaa111"
    assert models_main(["list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.lstrip("* ").split()[0] for line in listing] == ["ccc333", "bbb222", "aaa111"]
    assert listing[2].startswith("* aaa111")
    assert models_main(["use", "nope"]) == 1
