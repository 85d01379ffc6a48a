"""The HTTP API's authentication (RFC 6750 bearer tokens), without a database: a request is
judged before any query runs. The same app with a database: tests/integration/test_api.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from fastapi.testclient import TestClient

from common.settings import REPO_ROOT, Settings
from query.api import create_app, exposure_error, main

READ, ADMIN = "read-token-for-tests", "admin-token-for-tests"
UNKNOWN_JOB = "/retrain/0123456789ab"  # answered without a database: 404


def no_secrets() -> Settings:
    """Settings that hold no password or token (not even the local stack's)."""
    return Settings.from_env({"ANOMALY_SECRETS_FILE": "/nonexistent/secrets.env"})


@pytest.fixture(scope="module")
def client():
    return TestClient(create_app(no_secrets().replace(api_token=READ, api_admin_token=ADMIN)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_credentials_get_401_with_a_bearer_challenge(client):
    got = client.get(UNKNOWN_JOB)
    assert got.status_code == 401
    assert got.headers["WWW-Authenticate"] == 'Bearer realm="anomaly"'
    assert "Bearer" in got.json()["detail"]
    # Another scheme is no bearer token either.
    got = client.get("/anomalies/counts", headers={"Authorization": f"Basic {READ}"})
    assert got.status_code == 401 and "error=" not in got.headers["WWW-Authenticate"]


@pytest.mark.parametrize("token", ["wrong", READ + "x", READ[:-1], READ.upper()])
def test_a_wrong_token_gets_401_invalid_token(client, token):
    got = client.get("/anomalies/counts", headers=bearer(token))
    assert got.status_code == 401
    challenge = got.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="anomaly", error="invalid_token"'), challenge


def test_the_read_token_may_not_retrain_403_insufficient_scope(client):
    got = client.post("/retrain", json={"since": "soon"}, headers=bearer(READ))
    assert got.status_code == 403
    challenge = got.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="admin"' in challenge
    assert client.post("/retrain", json={"since": "soon"}).status_code == 401


def test_the_admin_token_passes_both_scopes(client):
    # Past authentication, the endpoint judges the request (here: its body), never 401/403.
    got = client.post("/retrain", json={"since": "soon"}, headers=bearer(ADMIN))
    assert got.status_code == 422, got.text
    assert got.json()["detail"][0]["loc"] == ["body", "since"]
    got = client.get(UNKNOWN_JOB, headers=bearer(ADMIN))
    assert got.status_code == 404, got.text


def test_the_read_token_reads_and_health_stays_open(client):
    got = client.get(UNKNOWN_JOB, headers=bearer(READ))
    assert got.status_code == 404, got.text  # judged by the endpoint: no such retraining
    assert client.get("/health").status_code == 200
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert "security" not in spec["paths"]["/health"]["get"]
    assert spec["paths"]["/retrain"]["post"]["security"] == [{"bearer": []}]
    assert {"401", "403"} <= set(spec["paths"]["/retrain"]["post"]["responses"])


@pytest.mark.parametrize("token", ["a b", 'tok"en', "tok,en", "=abc", "tök"])
def test_a_malformed_token_gets_401_invalid_token(client, token):
    # Sent as UTF-8 bytes: a header is bytes on the wire (the server reads them as Latin-1).
    got = client.get(UNKNOWN_JOB, headers={"Authorization": f"Bearer {token}".encode()})
    assert got.status_code == 401
    assert 'error="invalid_token"' in got.headers["WWW-Authenticate"]


def test_bearer_without_a_token_is_no_credentials_and_the_scheme_is_case_blind(client):
    # RFC 6750 3.1: a request without a token gets the challenge without an error code.
    for header in ("Bearer", "Bearer   ", ""):
        got = client.get(UNKNOWN_JOB, headers={"Authorization": header})
        assert got.status_code == 401, header
        assert got.headers["WWW-Authenticate"] == 'Bearer realm="anomaly"', header
    # RFC 7235: the scheme's name is case-insensitive.
    assert client.get(UNKNOWN_JOB, headers={"Authorization": f"bearer {READ}"}).status_code == 404


def test_with_the_read_token_only_no_token_may_retrain():
    """Served with ANOMALY_API_TOKEN but no admin token: /retrain is closed to every token."""
    only_read = TestClient(create_app(no_secrets().replace(api_token=READ)))
    got = only_read.post("/retrain", json={"since": "1h"}, headers=bearer(READ))
    assert got.status_code == 403
    assert 'error="insufficient_scope", ' in got.headers["WWW-Authenticate"]
    assert only_read.post("/retrain", json={"since": "1h"}).status_code == 401
    assert only_read.get(UNKNOWN_JOB, headers=bearer(READ)).status_code == 404
    # An admin token alone guards both scopes.
    only_admin = TestClient(create_app(no_secrets().replace(api_admin_token=ADMIN)))
    assert only_admin.get(UNKNOWN_JOB).status_code == 401
    assert only_admin.get(UNKNOWN_JOB, headers=bearer(ADMIN)).status_code == 404
    got = only_admin.post("/retrain", json={"since": "soon"}, headers=bearer(ADMIN))
    assert got.status_code == 422, got.text


def test_every_operation_but_health_declares_the_bearer_scheme(client):
    spec = client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path == "/health":
                continue
            assert operation.get("security") == [{"bearer": []}], (method, path)
            assert "401" in operation["responses"], (method, path)
    assert client.get("/docs").status_code == 200


def test_tokens_match_whole_and_in_constant_time_whatever_their_length():
    from query.api import _same

    assert _same(READ, READ)
    assert not _same(READ + "x", READ) and not _same(READ[:-1], READ) and not _same("", READ)
    assert not _same("", "") and not _same(READ, "")  # a token not configured matches nothing


def test_tokens_come_from_the_environment_and_stay_out_of_repr(tmp_path):
    env = {
        "ANOMALY_SECRETS_FILE": str(tmp_path / "none.env"),
        "ANOMALY_API_TOKEN": READ,
        "ANOMALY_API_ADMIN_TOKEN": ADMIN,
    }
    settings = Settings.from_env(env)
    assert (settings.api_token, settings.api_admin_token) == (READ, ADMIN)
    assert READ not in repr(settings) and ADMIN not in repr(settings)
    # The local stack's secrets file may hold them too (as it holds the passwords).
    secrets = tmp_path / "secrets.env"
    secrets.write_text(f"ANOMALY_API_TOKEN={READ}\n")
    assert Settings.from_env({"ANOMALY_SECRETS_FILE": str(secrets)}).api_token == READ


@pytest.mark.parametrize(
    "env, says",
    [
        ({"ANOMALY_API_TOKEN": "with space"}, "ANOMALY_API_TOKEN: use letters"),
        ({"ANOMALY_API_ADMIN_TOKEN": "tök"}, "ANOMALY_API_ADMIN_TOKEN: use letters"),
        ({"ANOMALY_API_TOKEN": READ, "ANOMALY_API_ADMIN_TOKEN": READ}, "same as"),
    ],
)
def test_tokens_that_cannot_work_are_refused_without_echoing_them(tmp_path, env, says):
    from common.settings import SettingsError

    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"ANOMALY_SECRETS_FILE": str(tmp_path / "none.env"), **env})
    assert says in str(refused.value)
    assert not any(token in str(refused.value) for token in env.values())


def test_without_tokens_the_api_is_open_on_loopback_only():
    open_app = TestClient(create_app(no_secrets()))
    assert open_app.get(UNKNOWN_JOB).status_code == 404
    no_tokens = no_secrets()
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert exposure_error(host, no_tokens) is None, host
    for host in ("0.0.0.0", "::", "10.1.2.3", "api.example.net"):
        assert "ANOMALY_API_TOKEN" in exposure_error(host, no_tokens), host
    assert exposure_error("0.0.0.0", no_tokens.replace(api_token=READ)) is None


def test_serving_off_loopback_without_a_token_is_refused(monkeypatch, capsys):
    for name in ("ANOMALY_API_TOKEN", "ANOMALY_API_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANOMALY_SECRETS_FILE", "/nonexistent/secrets.env")
    with pytest.raises(SystemExit) as exited:
        main(["--host", "0.0.0.0", "--port", "1"])
    assert exited.value.code == 2
    assert "ANOMALY_API_TOKEN" in capsys.readouterr().err


def test_served_on_every_address_it_answers_by_token_over_a_real_socket(tmp_path):
    """`python -m query.api --host 0.0.0.0` as the cluster runs it, over a real connection."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "ANOMALY_SECRETS_FILE": str(tmp_path / "none.env"),
        "ANOMALY_API_TOKEN": READ,
        "ANOMALY_API_ADMIN_TOKEN": ADMIN,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "query.api", "--host", "0.0.0.0", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def status(path: str, token: str | None = None) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.monotonic() < deadline, "the API did not listen within 60 s"
                time.sleep(0.2)
        assert status(UNKNOWN_JOB) == 401
        assert status(UNKNOWN_JOB, "wrong") == 401
        assert status(UNKNOWN_JOB, READ) == 404
        assert status(UNKNOWN_JOB, ADMIN) == 404
    finally:
        server.terminate()
        server.wait(15)
    # Without the tokens it does not start at all.
    del env["ANOMALY_API_TOKEN"], env["ANOMALY_API_ADMIN_TOKEN"]
    refused = subprocess.run(
        [sys.executable, "-m", "query.api", "--host", "0.0.0.0", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "ANOMALY_API_TOKEN" in refused.stderr, refused.stderr
