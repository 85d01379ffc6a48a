from __future__ import annotations

import re

import pytest

from common.features import FEATURE_NAMES, MODEL_FEATURE_NAMES
from common.settings import Settings, SettingsError
from common.sql import SQL_DIR, context, context_placeholders, interval, render, render_text


def test_env_overrides_and_types(tmp_path):
    s = Settings.from_env(
        {
            "ANOMALY_EVENTS_TOPIC": "t1",
            "ANOMALY_WINDOW_SECONDS": "30",
            "ANOMALY_STATE_DIR": str(tmp_path),
        }
    )
    assert s.events_topic == "t1" and s.window_seconds == 30
    # The default horizons follow the window: 6 and 360 windows.
    assert s.context_horizon_seconds == (("3m", 180), ("3h", 10_800))
    assert Settings().context_horizon_seconds == (("1m", 60), ("1h", 3600))
    hourly = Settings.from_env({"ANOMALY_WINDOW_SECONDS": "3600"})
    assert hourly.context_horizon_seconds == (("6h", 21_600), ("15d", 1_296_000))


@pytest.mark.parametrize(
    "environ, message",
    [
        (
            {"ANOMALY_WINDOW_SECONDS": "300", "ANOMALY_CONTEXT_HORIZONS": "1m,1h"},
            "ANOMALY_CONTEXT_HORIZONS='1m,1h': 1m is not a multiple of the 300 s window "
            "(ANOMALY_WINDOW_SECONDS) of at least 2 windows; use multiples such as 30m,30h, "
            "or auto (the default)",
        ),
        (
            {"ANOMALY_WINDOW_SECONDS": "7000"},
            "ANOMALY_WINDOW_SECONDS=7000: use a window that divides the day",
        ),
        (
            {"ANOMALY_WINDOW_SECONDS": "7200"},
            "ANOMALY_REFERENCE_SEGMENT_SECONDS=3600: use a length that divides the day (86400 s)"
            " and is a multiple of the 7200 s window (ANOMALY_WINDOW_SECONDS), e.g. 7200",
        ),
        ({"ANOMALY_WINDOW_SECONDS": "1h"}, "ANOMALY_WINDOW_SECONDS='1h' is not a valid int"),
    ],
)
def test_setting_combinations_that_cannot_work_say_what_to_set(environ, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(environ)


def test_a_command_with_an_invalid_setting_prints_one_line_and_no_traceback():
    import subprocess
    import sys

    from common.settings import REPO_ROOT

    done = subprocess.run(
        [sys.executable, "-m", "training.train", "--help"],
        cwd=REPO_ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "ANOMALY_WINDOW_SECONDS": "300",
            "ANOMALY_CONTEXT_HORIZONS": "1m",
        },
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: ANOMALY_CONTEXT_HORIZONS='1m': 1m is not a multiple of the 300 s window "
        "(ANOMALY_WINDOW_SECONDS) of at least 2 windows; use multiples such as 30m,30h, or "
        "auto (the default)"
    ]


@pytest.mark.parametrize(
    "horizons, problem",
    [
        ("1m,1x", "write each as a number and a unit"),
        ("15s", "15s is not a multiple of the 10 s window"),
        ("10s", "10s is not a multiple of the 10 s window (ANOMALY_WINDOW_SECONDS) of at least 2"),
        ("1m,60s", "60s is given twice"),
    ],
)
def test_bad_context_horizons_are_refused(horizons, problem):
    with pytest.raises(ValueError, match=re.escape(f"ANOMALY_CONTEXT_HORIZONS={horizons!r}: ")):
        Settings.from_env({"ANOMALY_CONTEXT_HORIZONS": horizons})
    with pytest.raises(ValueError, match=re.escape(problem)):
        Settings.from_env({"ANOMALY_CONTEXT_HORIZONS": horizons})
    no_context = {"ANOMALY_CONTEXT_HORIZONS": "", "ANOMALY_CONTEXT_MODELLED": ""}
    assert Settings.from_env(no_context).context_horizon_seconds == ()


def test_modelled_horizons_must_be_computed():
    with pytest.raises(ValueError, match=re.escape("['1d'] not among the horizons")):
        Settings.from_env({"ANOMALY_CONTEXT_MODELLED": "1h,1d"})
    assert Settings.from_env({"ANOMALY_CONTEXT_MODELLED": ""}).context_modelled_names == ()


def test_bad_number_names_the_variable():
    with pytest.raises(ValueError, match="ANOMALY_PG_PORT"):
        Settings.from_env({"ANOMALY_PG_PORT": "abc"})


def test_password_from_secrets_file_and_never_in_repr(tmp_path):
    secrets = tmp_path / "secrets.env"
    secrets.write_text("ANOMALY_PG_PASSWORD=s3cr3t\n")
    s = Settings.from_env({"ANOMALY_SECRETS_FILE": str(secrets)})
    assert s.pg_password == "s3cr3t"
    assert "s3cr3t" not in repr(s)


def test_settings_files_are_read_as_a_shell_reads_them(tmp_path):
    """One reader for the secrets file and onboarding's deployment files: export and quotes
    left out, comments and lines without = skipped, a key's first line kept."""
    from common.settings import read_env_file

    path = tmp_path / "a.env"
    path.write_text(
        "# ANOMALY_X=comment\nexport ANOMALY_A='one'\nANOMALY_B = \"two\"\nno equals\n"
        "ANOMALY_C=/p/x.yaml\nANOMALY_A=again\n"
    )
    assert read_env_file(path) == {
        "ANOMALY_A": "one",
        "ANOMALY_B": "two",
        "ANOMALY_C": "/p/x.yaml",
    }
    assert read_env_file(tmp_path / "missing.env") == {}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ANOMALY_SCORES_TABLE", "scores; DROP TABLE x"),
        ("ANOMALY_DEAD_LETTERS_TABLE", 'a"b'),
        ("ANOMALY_EVENTS_TOPIC", "t' , 'x"),
        ("ANOMALY_PG_PASSWORD", "it's"),
    ],
)
def test_names_that_could_change_a_statement_are_refused(variable, value):
    with pytest.raises(ValueError, match=variable):
        Settings.from_env({variable: value})


def test_scoring_is_on_or_off():
    assert Settings.from_env({}).scoring == "on"
    assert Settings.from_env({"ANOMALY_SCORING": "off"}).scoring == "off"
    with pytest.raises(ValueError, match="ANOMALY_SCORING='no': use on or off"):
        Settings.from_env({"ANOMALY_SCORING": "no"})


@pytest.mark.parametrize(
    ("seconds", "literal"),
    [(5, "0 00:00:05"), (600, "0 00:10:00"), (3600, "0 01:00:00"), (90_061, "1 01:01:01")],
)
def test_intervals_of_any_length_render_as_day_to_second(seconds, literal):
    # INTERVAL 'n' SECOND is refused by Flink above 99 s; windows of an hour must work.
    assert interval(seconds) == f"INTERVAL '{literal}' DAY TO SECOND"


def test_unknown_placeholder_is_an_error():
    with pytest.raises(KeyError, match="nope"):
        render_text("SELECT ${nope}", {}, source="x.sql")


def test_plpgsql_dollar_quotes_survive_rendering():
    assert render_text("DO $$ BEGIN END $$; ${a}", {"a": "1"}) == "DO $$ BEGIN END $$; 1"


@pytest.mark.parametrize(
    "path", sorted(p.relative_to(SQL_DIR).as_posix() for p in SQL_DIR.rglob("*.sql"))
)
def test_every_sql_file_renders_completely(path):
    extra = {"kafka_source_options": "", "jdbc_sink_options": ""}
    extra.update(devices_lookup_options="", segment_limits_lookup_options="")
    extra.update(source_table="t", source_input="flat", source_mapping="", telemetry_sources="t")
    extra.update(source_device_field="host")
    extra.update(context_placeholders(labelled=False))
    text = render(path, Settings(), path="/x", **extra)
    assert "${" not in text


def test_feature_columns_agree_everywhere():
    """Flink sink, PostgreSQL schema and the model inputs all come from common.features."""
    pg = render("postgres/001_anomaly_scores.sql", Settings())
    flink = render("flink/scores_jdbc.sql", Settings(), jdbc_sink_options="")
    for name in FEATURE_NAMES:
        assert re.search(rf"\b{name} (double precision|bigint)", pg), name
        assert f"`{name}`" in flink, name
    assert set(MODEL_FEATURE_NAMES) < set(FEATURE_NAMES)
    assert context(Settings())["model_feature_list"].count("`") == 2 * len(MODEL_FEATURE_NAMES)


@pytest.mark.parametrize("seconds", ["0", "7", "25", "7200000"])
def test_reference_segments_must_divide_the_day_into_whole_windows(seconds):
    with pytest.raises(ValueError, match=f"ANOMALY_REFERENCE_SEGMENT_SECONDS={seconds}: "):
        Settings.from_env({"ANOMALY_REFERENCE_SEGMENT_SECONDS": seconds})
    assert Settings.from_env({"ANOMALY_REFERENCE_SEGMENT_SECONDS": "900"})


def test_segment_limits_are_joined_only_for_segment_rules(monkeypatch):
    import dataclasses

    from common import sql as sql_module

    settings = Settings(reference_segment_seconds=900)
    parts = sql_module.segment_placeholders(settings)
    assert "/ 900 AS INT) AS reference_segment" in parts["segment_key"]
    assert "f.reference_segment = g.segment" in parts["segment_join"]
    without = dataclasses.replace(
        sql_module.CATALOGUE,
        rules=tuple(r for r in sql_module.CATALOGUE.rules if r.reference != "segment"),
    )
    monkeypatch.setattr(sql_module, "CATALOGUE", without)
    assert set(sql_module.segment_placeholders(settings).values()) == {""}
    rendered = render("flink/scored_windows.sql", settings, score_call="")
    assert "segment_limits_lookup" not in rendered


def test_the_score_call_passes_the_model_features_then_the_scorer_context():
    from common.features import HORIZONS, METRIC_NAMES, SCORER_CONTEXT_NAMES

    call = context(Settings())["score_call"]
    args = re.fullmatch(r"score_window\((.*)\)", call).group(1).split(", ")
    assert args == ["device_id", *(f"`{n}`" for n in (*MODEL_FEATURE_NAMES, *SCORER_CONTEXT_NAMES))]
    # The longest horizon's level and spread of every metric, then the window's sample count
    # (its first metric's), stored features all.
    longest = max(HORIZONS, key=lambda h: h.seconds).name
    assert SCORER_CONTEXT_NAMES == (
        *(f"{m}_{stat}{longest}" for m in METRIC_NAMES for stat in ("avg", "sd")),
        f"{METRIC_NAMES[0]}_count",
    )
    assert set(SCORER_CONTEXT_NAMES) <= set(FEATURE_NAMES)


def test_scoring_udf_and_flink_options_settings():
    from common.flink_env import apply_flink_options, create_table_env

    with pytest.raises(ValueError, match="ANOMALY_SCORING_UDF"):
        Settings(scoring_udf="vector")
    settings = Settings(
        flink_options="pipeline.object-reuse=false; python.fn-execution.bundle.size=7"
    )
    t_env = create_table_env(settings)
    config = t_env.get_config()
    # ANOMALY_FLINK_OPTIONS win over the job's own options.
    assert config.get("pipeline.object-reuse", None) == "false"
    assert config.get("python.fn-execution.bundle.size", None) == "7"
    with pytest.raises(ValueError, match="not key=value"):
        apply_flink_options(t_env, Settings(flink_options="pipeline.object-reuse"))
