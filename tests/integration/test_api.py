"""The HTTP API against the real PostgreSQL (known data set, read-only role) and the session's
trained model: answers by value, 4xx for bad requests, retraining that promotes or refuses,
and the OpenAPI spec fuzzed with schemathesis (no 5xx, responses as documented)."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from common.features import FEATURE_NAMES, METRIC_NAMES, MODEL_FEATURE_NAMES
from simulator.generator import SimulatorConfig, TelemetryGenerator
from tests import hostile, reference
from tests import readside_data as known
from tests.conftest import FIGURES, FLEET_DEVICES, new_database

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def api_settings(stack, trained, tmp_path_factory):
    """A migrated database holding the known data set, and a models folder of its own
    (retraining writes versions into it) whose CURRENT is the session's trained model."""
    models = tmp_path_factory.mktemp("api") / "models"
    shutil.copytree(trained[1].models_dir, models)
    with new_database(stack) as settings:
        settings = settings.replace(models_dir=models)
        known.load(settings, known.build())
        yield settings


@pytest.fixture(scope="module")
def client(api_settings):
    from fastapi.testclient import TestClient

    from query.api import create_app

    return TestClient(create_app(api_settings))


def test_latest_anomalies_as_the_query_layer_gives_them(client):
    data = known.build()
    flagged = data.scores[data.scores["is_anomaly"] == True]  # noqa: E712
    got = client.get("/anomalies/latest", params={"limit": 5})
    assert got.status_code == 200, got.text
    expected = flagged.sort_values(
        ["window_start", "severity", "device_id"], ascending=[False, False, True]
    ).head(5)
    assert [a["device_id"] for a in got.json()] == list(expected["device_id"])
    first = got.json()[0]
    assert first["explanation"][0]["metric"] == first["top_metric"]
    got = client.get("/anomalies/latest", params={"site": "site-2", "min_severity": 55})
    assert {a["device_id"] for a in got.json()} == {"dev-c"}
    assert all(a["severity"] >= 55 for a in got.json())


def test_counts_over_a_time_range(client):
    data = known.build()
    got = client.get("/anomalies/counts", params={"time_range": "2h", "end": known.END.isoformat()})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["windows"] == len(data.scores)
    assert body["anomalies"] == int((data.scores["is_anomaly"] == True).sum())  # noqa: E712
    assert {d["device_id"] for d in body["devices"]} == set(known.DEVICES)
    assert client.get("/anomalies/counts", params={"time_range": "30d"}).status_code == 200


@pytest.mark.parametrize(
    "path, params, status",
    [
        ("/anomalies/counts", {"time_range": "5x"}, 422),
        ("/anomalies/counts", {"time_range": "1000d"}, 422),
        ("/anomalies/counts", {"time_range": "0h"}, 422),
        ("/anomalies/latest", {"limit": 0}, 422),
        ("/anomalies/latest", {"limit": 1001}, 422),
        ("/anomalies/latest", {"min_severity": "nan"}, 422),
        ("/anomalies/latest", {"device_id": "a\x00b"}, 422),
        # A time is ISO 8601 text (the schema's date-time), not a bare number.
        ("/anomalies/counts", {"end": "0.76"}, 422),
        ("/devices/top", {"end": "1700000000"}, 422),
        ("/drift", {"end": "1e9"}, 422),
        ("/devices/dev-a/metrics/no_such_metric", {}, 404),
        ("/retrain/0123456789ab", {}, 404),
    ],
)
def test_bad_requests_get_a_4xx_that_says_why(client, path, params, status):
    got = client.get(path, params=params)
    assert got.status_code == status, got.text
    assert got.json()["detail"]


def test_no_request_runs_sql_of_its_own(client, api_settings):
    from common.db import connect

    for text in ("x' OR '1'='1", "'; DROP TABLE alerts; --", "dev-a; DELETE FROM devices"):
        got = client.get("/anomalies/latest", params={"device_id": text})
        assert got.status_code == 200 and got.json() == []
        assert client.get(f"/devices/{text}/metrics/{METRIC_NAMES[0]}").json() == []
    conn = connect(api_settings)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM alerts")
        assert cur.fetchone()[0] > 0
    conn.close()


def test_device_metric_top_devices_incidents_and_drift(client):
    got = client.get(
        f"/devices/dev-b/metrics/{METRIC_NAMES[0]}",
        params={"time_range": "5m", "end": (known.START + pd.Timedelta(minutes=5)).isoformat()},
    )
    assert got.status_code == 200 and len(got.json()) == 30
    top = client.get("/devices/top", params={"time_range": "2h", "end": known.END.isoformat()})
    assert top.json()[0]["device_id"] == "dev-b"
    assert [i["device_id"] for i in client.get("/incidents/open").json()] == ["dev-b"]
    drift = client.get("/drift", params={"since": "2h", "end": known.END.isoformat()}).json()
    verdicts = {d["model_version"]: d for d in drift}
    assert verdicts[known.MODEL]["retrain_advised"] is False
    assert verdicts[known.SHIFTED]["retrain_advised"] is True


READ_TOKEN, ADMIN_TOKEN = "it-read-token", "it-admin-token"
READS = [
    ("/anomalies/latest", {"limit": 5}),
    ("/anomalies/counts", {"time_range": "2h", "end": known.END.isoformat()}),
    ("/devices/top", {"time_range": "2h", "end": known.END.isoformat()}),
    (
        f"/devices/dev-b/metrics/{METRIC_NAMES[0]}",
        {"time_range": "2h", "end": known.END.isoformat()},
    ),
    ("/incidents/open", {}),
    ("/drift", {"since": "2h", "end": known.END.isoformat()}),
]


@pytest.fixture(scope="module")
def authed(api_settings):
    """The API as it runs off loopback (both tokens set), on the same database; without the
    writer's password, so that a retraining that passes authentication stops at once (503)
    instead of training."""
    from fastapi.testclient import TestClient

    from query.api import create_app

    tokens = {"api_token": READ_TOKEN, "api_admin_token": ADMIN_TOKEN}
    return TestClient(create_app(api_settings.replace(pg_writer_password="", **tokens)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path, params", READS)
def test_with_tokens_each_read_answers_the_tokens_and_refuses_the_rest(
    authed, client, path, params
):
    """Both tokens read, with the same answer as the open API on loopback; no token or a
    wrong one gets 401 with its challenge (RFC 6750), and no data."""
    expected = client.get(path, params=params).json()
    for token in (READ_TOKEN, ADMIN_TOKEN):
        got = authed.get(path, params=params, headers=bearer(token))
        assert got.status_code == 200, got.text
        assert got.json() == expected
    missing = authed.get(path, params=params)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="anomaly"'
    assert "detail" in missing.json() and len(missing.json()) == 1
    wrong = authed.get(path, params=params, headers=bearer(READ_TOKEN + "x"))
    assert wrong.status_code == 401
    assert 'Bearer realm="anomaly", error="invalid_token"' in wrong.headers["WWW-Authenticate"]


def test_with_tokens_only_the_admin_token_starts_a_retraining(authed):
    body = {"since": "1h"}
    got = authed.post("/retrain", json=body, headers=bearer(READ_TOKEN))
    assert got.status_code == 403
    challenge = got.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="admin"' in challenge
    assert authed.post("/retrain", json=body).status_code == 401
    # Past authentication the endpoint itself answers (here: no writer's password to record
    # the version with).
    got = authed.post("/retrain", json=body, headers=bearer(ADMIN_TOKEN))
    assert got.status_code == 503, got.text
    assert "ANOMALY_PG_WRITER_PASSWORD" in got.json()["detail"], got.text
    health = authed.get("/health")
    assert health.status_code == 200 and health.json()["database"] == "ok"


def fleet_events(start_ms: int, ticks: int, seed: int) -> list[dict]:
    gen = TelemetryGenerator(SimulatorConfig(devices=FLEET_DEVICES, seed=seed, anomaly_rate=0.0))
    return [e for tick in gen.events(start_ms, ticks) for e in tick]


def test_predict_scores_as_the_stream_does(client, api_settings):
    from common.models import resolve_model_dir
    from udfs.onnx_scorer import OnnxModel

    events = [e for e in fleet_events(1_700_000_000_000, 20, seed=3) if e["device_id"] in (
        "dev-00001", "dev-00002")]  # fmt: skip
    payload = [{k: e[k] for k in ("device_id", "ts_ms", *METRIC_NAMES)} for e in events]
    got = client.post("/predict", json={"events": payload})
    assert got.status_code == 200, got.text
    body = got.json()
    model = OnnxModel.load(resolve_model_dir(api_settings), MODEL_FEATURE_NAMES)
    assert body["model_version"] == model.version
    expected = reference.window_features(events, 10)
    scores = model.score(
        list(expected["device_id"]), expected[list(MODEL_FEATURE_NAMES)].to_numpy(np.float64)
    )
    assert [w["device_id"] for w in body["windows"]] == list(expected["device_id"])
    np.testing.assert_allclose([w["anomaly_score"] for w in body["windows"]], scores.score)
    np.testing.assert_allclose([w["severity"] for w in body["windows"]], scores.severity)
    # A window of one event is judged as the stream judges it: with its sample count (on its
    # level, as a model of many metrics judges a window of few samples).
    assert model.partial is not None
    single = reference.window_features(events[:1], 10)
    context = np.full((1, model.partial.column + 1), np.nan)
    context[0, model.partial.column] = 1.0
    want = model.score(
        list(single["device_id"]), single[list(MODEL_FEATURE_NAMES)].to_numpy(np.float64), context
    )
    got = client.post("/predict", json={"events": payload[:1]}).json()["windows"][0]
    assert got["anomaly_score"] == pytest.approx(want.score[0], rel=1e-12)
    bare = model.score(
        list(single["device_id"]), single[list(MODEL_FEATURE_NAMES)].to_numpy(np.float64)
    )
    assert got["anomaly_score"] != pytest.approx(bare.score[0], rel=1e-6)
    # The same window as a feature vector.
    vector = {n: float(expected[n].iloc[0]) for n in MODEL_FEATURE_NAMES}
    one = client.post("/predict", json={"device_id": "dev-00001", "features": vector}).json()
    assert one["windows"][0]["anomaly_score"] == pytest.approx(scores.score[0], rel=1e-12)
    # Refused, naming the field at fault.
    for body, words in (
        ({"features": {n: 1.0 for n in MODEL_FEATURE_NAMES[1:]}}, MODEL_FEATURE_NAMES[0]),
        ({"features": {**vector, "nope_mean": 1.0}}, "nope_mean"),
        ({"features": vector, "events": payload}, "Extra inputs are not permitted"),
        ({"events": [{**payload[0], METRIC_NAMES[0]: "high"}]}, METRIC_NAMES[0]),
        ({"events": [{k: v for k, v in payload[0].items() if k != METRIC_NAMES[1]}]}, "missing"),
        ({"events": [{**payload[0], "packet_loss_pct": 101.0}]}, "less than or equal to 100"),
    ):
        got = client.post("/predict", json=body)
        assert got.status_code == 422 and words in got.text, (body, got.text)
    nan = client.post(
        "/predict", content='{"features": {"x": NaN}}', headers={"content-type": "application/json"}
    )
    assert nan.status_code == 422


def store_windows(settings, events: list[dict]) -> pd.DataFrame:
    """Windows as the job would have stored them (the reference computation of the job's
    window features; the context columns, which the model does not read, stay NULL), into
    the scores table."""
    frame = reference.window_features(events, 10, horizons=())
    frame["is_anomaly"] = False
    columns = [n for n in FEATURE_NAMES if n in frame]
    known.insert_rows(
        settings,
        settings.scores_table,
        frame[["device_id", "window_start", "window_end", *columns, "is_anomaly"]],
    )
    return frame


def wait_for(client, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/retrain/{job_id}").json()
        if job["state"] != "running":
            return job
        time.sleep(0.5)
    raise AssertionError(f"retraining {job_id} still running after {timeout_s} s")


def test_retrain_promotes_a_good_candidate_and_refuses_a_bad_one(api_settings, capsys):
    """As the API runs on a cluster: without the owner's password (it reads as the reader and
    records the version as the writer)."""
    from fastapi.testclient import TestClient

    from common.db import connect
    from common.models import current_version
    from query.api import create_app

    client = TestClient(create_app(api_settings.replace(pg_password="")))

    before = current_version(api_settings)
    now_ms = int(time.time() * 1000) // 10_000 * 10_000
    store_windows(api_settings, fleet_events(now_ms - 40 * 60_000, 40 * 60, seed=11))
    started = client.post("/retrain", json={"since": "1h", "holdout_share": 0.2})
    assert started.status_code == 202, started.text
    job = wait_for(client, started.json()["job_id"])
    assert job["state"] == "promoted", job
    assert job["checks"]["parity"] == "passed" and job["checks"]["held_out_windows"] > 1000
    assert job["checks"]["held_out_psi"] <= api_settings.drift_psi_retrain
    assert current_version(api_settings) == job["version"] != before
    conn = connect(api_settings)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT current_since IS NOT NULL FROM model_versions WHERE version = %s",
                    (job["version"],))  # fmt: skip
        assert cur.fetchone() == (True,)
        # The newest 11 minutes misbehave: CPU far above every device's usual, and the job
        # flagged them. The retraining below holds out the 12 minutes before it starts, a
        # moment after this update; with 12 minutes here, a 10 s window starting in between
        # fell into its training part (one a device), raised its threshold, and the held-out
        # check let the rest pass. A candidate may flag as many of them as the model in force
        # did (it is no noisier than that one); their scores' drift refuses it.
        cur.execute(
            f"UPDATE {api_settings.scores_table} SET cpu_utilization_mean ="  # noqa: S608
            " cpu_utilization_mean + 40, cpu_utilization_max = cpu_utilization_max + 40,"
            " cpu_utilization_min = cpu_utilization_min + 40, is_anomaly = true"
            " WHERE window_start >= now() - interval '11 minutes'"
        )
    conn.close()
    second = wait_for(client, client.post("/retrain", json={"since": "1h"}).json()["job_id"])
    assert second["state"] == "refused", second
    assert second["checks"]["held_out_flagged_in_force"] > 0.5, second
    assert "drift" in second["message"] and "flags" not in second["message"], second
    assert current_version(api_settings) == job["version"]
    # The same from the command line (a scheduler's way): refused, exit status 3.
    from query.retrain import main

    assert main(["--since", "1h"], api_settings.replace(pg_password="")) == 3
    said = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert said["state"] == "refused" and "drift" in said["message"], said
    assert current_version(api_settings) == job["version"]


def test_a_retraining_with_nothing_to_fit_says_so(stack, api_settings):
    """A job that has stored only its first minute of windows: they are all in the held-out
    part of an hour's span, so there is nothing before it to fit; the retraining is refused
    and says so (it used to fail, saying the whole span held no windows)."""
    from datetime import timedelta

    from query.retrain import retrain

    with new_database(stack) as settings:
        now_ms = int(time.time() * 1000) // 10_000 * 10_000
        store_windows(settings, fleet_events(now_ms - 60_000, 60, seed=12))
        outcome = retrain(settings.replace(models_dir=api_settings.models_dir), timedelta(hours=1))
    assert outcome.state == "refused", outcome
    assert outcome.message.startswith("no stored window before"), outcome.message
    assert "reaches further back" in outcome.message


def test_fuzzed_requests_get_documented_answers_never_5xx(api_settings):
    """Every operation (but starting a retraining, which trains models), with requests built
    from the spec (valid ones) and against it (invalid ones), authenticated: never a 5xx,
    never a 401, always a documented status with a body of its schema."""
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    from query.api import create_app

    # The API as it runs off loopback: every request carries the admin token.
    tokens = {"api_token": "fuzz-read-token", "api_admin_token": "fuzz-admin-token"}
    app = create_app(api_settings.replace(**tokens))
    auth = {"Authorization": f"Bearer {tokens['api_admin_token']}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checked = []
    statuses = {True: 0, False: 0}  # requests without valid credentials: 401 or not
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) == ("POST", "/retrain"):
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis_settings(
                max_examples=30,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case) -> None:
                # A well-formed Authorization header carries the real token and never gets a
                # 401; one made invalid on purpose (missing, not Bearer) goes as it is (401, or
                # another 4xx for a body that cannot be read at all).
                valid_header = _header_mode(case) == GenerationMode.POSITIVE
                response = case.call(headers=auth if valid_header else None)
                assert response.status_code < 500, (case.method, case.path, response.text)
                if valid_header:
                    assert response.status_code != 401, (case.path, response.text)
                else:
                    statuses[response.status_code == 401] += 1
                case.validate_response(response)

            try:
                fuzz()
            except Unsatisfiable:
                # An operation without parameters or body has no invalid request.
                assert mode == GenerationMode.NEGATIVE, operation.path
                continue
            checked.append(f"{mode.value} {operation.method.upper()} {operation.path}")
    assert len([c for c in checked if c.startswith("positive")]) == 10, checked
    assert statuses[True] > 0, statuses  # unauthenticated requests were tried, and refused
    assert len(checked) >= 16, checked


def _header_mode(case):
    """Whether schemathesis made the case's headers valid (positive) or invalid (negative)."""
    from schemathesis import GenerationMode

    for location, info in (case.meta.components if case.meta else {}).items():
        if getattr(location, "value", location) == "header":
            return info.mode
    return GenerationMode.POSITIVE


def test_the_spec_documents_every_route():
    from query.api import create_app

    spec = create_app().openapi()
    assert set(spec["paths"]) >= {
        "/anomalies/latest",
        "/anomalies/counts",
        "/drift",
        "/retrain",
        "/predict",
    }
    json.dumps(spec)


def _predict_bodies():
    """The hostile-input campaign's messages as /predict bodies: as they are, and as the one
    event of an events request."""
    from hypothesis import strategies as st

    ts_ms = 1_700_000_000_000
    message = st.one_of(
        hostile.raw_bytes(),
        hostile.unicode_events(ts_ms),
        hostile.edge_number_events(ts_ms),
        hostile.structural_messages(ts_ms).filter(lambda m: m is not None),
    )
    feature = st.sampled_from(hostile.EDGE_NUMBERS)
    features = st.fixed_dictionaries(dict.fromkeys(MODEL_FEATURE_NAMES, feature)).map(
        lambda f: (
            '{"features": {' + ", ".join(f'"{k}": {v}' for k, v in f.items()) + "}}"
        ).encode()
    )
    return st.one_of(message, message.map(lambda m: b'{"events": [' + m + b"]}"), features)


def test_hostile_bodies_get_a_clear_refusal_or_a_score_never_a_5xx(client):
    """The hostile-input campaign against POST /predict: any bytes, any Unicode (NUL, lone
    surrogates, ...), numbers at every edge, deep nesting: 200 or a 4xx with a detail."""
    from hypothesis import given

    seen = {}

    @hypothesis_settings(hostile.CAMPAIGN, max_examples=300)
    @given(body=_predict_bodies())
    def post(body: bytes) -> None:
        response = client.post(
            "/predict", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code in (200, 400, 422), (body[:200], response.text[:300])
        answer = response.json()
        assert ("windows" in answer) if response.status_code == 200 else answer.get("detail")
        seen[response.status_code] = seen.get(response.status_code, 0) + 1

    post()
    assert seen.get(422, 0) > 0 and seen.get(200, 0) > 0 and sum(seen.values()) >= 300, seen
    FIGURES["hostile input: /predict answers"] = dict(sorted(seen.items()))
