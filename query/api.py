"""HTTP API over the query layer, for applications that do not speak SQL.

  python -m query.api                       serve on 127.0.0.1:8000 (--host, --port)
  open http://127.0.0.1:8000/docs           the OpenAPI spec, browsable (/openapi.json raw)

Reads go through the SQL views and functions of sql/postgres/R__query_layer.sql as the
read-only database role, with every value a bound parameter: no request can run SQL of its
own or write. Scoring (POST /predict) uses the models folder's CURRENT version, as the
streaming job does; retraining (POST /retrain) fits a candidate on recent stored windows and
promotes it only if it passes its checks (query/retrain.py). Bad requests get a 4xx with the
reason; a database that cannot be reached gives 503.

Authentication: with ANOMALY_API_TOKEN set, every request but GET /health (and the spec at
/docs, /openapi.json) needs `Authorization: Bearer <token>`; POST /retrain needs the admin
token, ANOMALY_API_ADMIN_TOKEN, which also reads (with no admin token set, /retrain answers
403 to every token). Missing or wrong credentials get 401, the read token on /retrain 403,
each with its WWW-Authenticate challenge (RFC 6750). Off loopback (--host other than
127.0.0.0/8, ::1, localhost) the API does not start without a token.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import json
import re
import threading
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from common.features import METRIC_NAMES, METRICS, MODEL_FEATURE_NAMES
from common.settings import Settings
from query.retrain import HOLDOUT_SHARE, HOLDOUT_SHARE_RANGE

VERSION = "1.0.0"
# A span of time: a number and a unit, e.g. 5m, 4h, 30d; the digits bound it (under 3 years).
TIME_RANGE = r"^([1-9][0-9]{0,6}s|[1-9][0-9]{0,5}m|[1-9][0-9]{0,3}h|[1-9][0-9]{0,2}d)$"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
# Text parameters: no control character (NUL: PostgreSQL text cannot hold it), bounded; the
# job's rule for device ids (sql/flink/checked_events.sql).
NAME = r"^[^\x00-\x1f\x7f-\x9f]{1,128}$"
MAX_EVENTS = 10_000

# A JSON number, finite; strict: true/false are not numbers.
Finite = Annotated[float, Field(allow_inf_nan=False, strict=True)]


def _iso_time(value: Any) -> Any:
    """A time in a query is ISO 8601 text, as the API's schema says: a bare number (which
    would otherwise be read as epoch seconds) is refused."""
    if isinstance(value, str) and re.fullmatch(
        r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", value
    ):
        raise ValueError("write the time in ISO 8601, e.g. 2026-12-02T10:00:00Z")
    return value


# An optional end of a time range in a query.
QueryTime = Annotated[datetime | None, BeforeValidator(_iso_time)]


def parse_range(text: str) -> timedelta:
    if not re.fullmatch(TIME_RANGE, text):
        raise HTTPException(422, f"time_range {text!r}: write a number and s, m, h or d, e.g. 4h")
    return timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])


def _utc(t: datetime | None) -> datetime:
    """A request's time in UTC (without a zone: UTC), not before 1970."""
    if t is None:
        return datetime.now(UTC)
    try:
        t = t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)
    except OverflowError:  # a zone offset that moves it out of the calendar
        return EARLIEST
    return max(t, EARLIEST)


def _window(end: datetime | None, time_range: str) -> tuple[datetime, datetime]:
    """[end - time_range, end); nothing lies before 1970."""
    end = _utc(end)
    span = parse_range(time_range)
    return (end - span if end - EARLIEST > span else EARLIEST), end


# --- response models ----------------------------------------------------------------------


class ExplanationItem(BaseModel):
    metric: str
    feature: str
    direction: str
    # null where not finite (extreme values overflow the normalised score)
    actual: float | None
    typical: float | None
    contribution: float | None
    # The context check's reading that flagged the window on its own (a one-metric model:
    # spread, seasonal, level, stuck, spike, step, "spike and step"); absent otherwise.
    reading: str | None = None


class Anomaly(BaseModel):
    device_id: str
    window_start: datetime
    window_end: datetime
    severity: float | None
    anomaly_score: float | None
    top_metric: str | None
    explanation: list[ExplanationItem] | None
    model_version: str | None
    site: str | None
    region: str | None
    device_kind: str | None
    criticality: str | None
    known_device: bool | None
    in_inventory: bool | None


class DeviceCount(BaseModel):
    device_id: str
    windows: int
    scored: int
    anomalies: int
    max_severity: float | None
    last_anomaly: datetime | None


class Counts(BaseModel):
    start: datetime
    end: datetime
    windows: int
    scored: int
    anomalies: int
    devices_with_anomalies: int
    devices: list[DeviceCount]


class TopDevice(BaseModel):
    device_id: str
    site: str | None
    max_severity: float | None
    alert_windows: int
    top_metric: str | None
    last_alert: datetime | None


class MetricPoint(BaseModel):
    time: datetime
    value: float | None
    min: float | None
    max: float | None
    typical: float | None
    band_low: float | None
    band_high: float | None
    severity: float | None
    is_anomaly: bool | None


class Incident(BaseModel):
    device_id: str
    started_at: datetime
    ended_at: datetime
    windows: int
    peak_severity: float | None
    top_metrics: str | None
    sources: str | None
    model_version: str | None
    site: str | None
    status: str
    duration_s: float


class CorrelatedIncident(BaseModel):
    id: str
    root_device: str
    root_reason: str | None
    symptoms: list[str]
    devices: int
    started_at: datetime
    ended_at: datetime
    peak_severity: float | None
    status: str
    notification: str
    notification_error: str | None


class Drift(BaseModel):
    model_version: str | None
    windows: int
    share_below_q50: float
    share_above_q90: float
    share_above_q99: float
    share_above_q999: float
    psi: float | None
    retrain_advised: bool | None
    verdict: str


def _not_bool(value: Any) -> Any:
    """JSON's true/false are not numbers (pydantic would read them as 1/0)."""
    if isinstance(value, bool):
        raise ValueError("a number is needed, not true/false")
    return value


def _metric_field(metric) -> Any:
    """A metric of an event: a finite number within the catalogue's physical range."""
    bounds = {"ge": metric.min, "le": metric.max}
    return (
        Finite,
        Field(description=metric.description, **{k: v for k, v in bounds.items() if v is not None}),
    )


# An event as the job reads it (the catalogue's metrics, all required); other fields ignored.
Event = create_model(
    "Event",
    __config__=ConfigDict(extra="ignore"),
    device_id=(str, Field(pattern=NAME)),
    ts_ms=(
        Annotated[int, BeforeValidator(_not_bool)],
        Field(ge=0, le=253_402_300_799_999, description="event time, epoch ms"),
    ),
    **{m.name: _metric_field(m) for m in METRICS},
)
# One window's model features, all required and none other.
Features = create_model(
    "Features",
    __config__=ConfigDict(extra="forbid"),
    **{name: (Finite, ...) for name in MODEL_FEATURE_NAMES},
)


class FeaturesRequest(BaseModel):
    """One window's features; ``device_id`` (optional) selects its own normalisation."""

    model_config = ConfigDict(extra="forbid")
    device_id: str | None = Field(default=None, pattern=NAME)
    features: Features


class EventsRequest(BaseModel):
    """Raw events, turned into the job's tumbling-window features per device."""

    model_config = ConfigDict(extra="forbid")
    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)  # type: ignore[valid-type]


class Scored(BaseModel):
    device_id: str
    window_start: datetime | None
    window_end: datetime | None
    anomaly_score: float | None
    severity: float | None
    is_anomaly: bool | None
    known_device: bool
    top_metric: str | None
    explanation: list[ExplanationItem] | None


class Prediction(BaseModel):
    model_version: str
    windows: list[Scored]


class RetrainRequest(BaseModel):
    since: str = Field(default="6h", pattern=TIME_RANGE, description="train on this span")
    holdout_share: float = Field(
        default=HOLDOUT_SHARE, ge=HOLDOUT_SHARE_RANGE[0], le=HOLDOUT_SHARE_RANGE[1]
    )


class RetrainJob(BaseModel):
    job_id: str
    state: Literal["running", "promoted", "refused", "failed"]
    message: str
    version: str | None = None
    checks: dict[str, Any] = {}
    started_at: datetime
    finished_at: datetime | None = None


class Problem(BaseModel):
    """Why a request was refused: a sentence, or (malformed requests) the fields at fault."""

    detail: str | list[dict[str, Any]]


def _responses(*codes: int) -> dict:
    text = {
        400: "the body is not JSON",
        401: "no bearer token, or not a valid one (the WWW-Authenticate header says which)",
        403: "the token may not do this: starting a retraining needs the admin token",
        404: "no such thing",
        409: "conflict with work in progress",
        422: "the request is not valid: the detail says why",
        503: "the database or the model is not available",
    }
    return {c: {"model": Problem, "description": text[c]} for c in codes}


def _errors(*codes: int) -> dict:
    """The documented refusals of a route: 422, 503 and ``codes``."""
    return _responses(422, 503, *codes)


# --- authentication (RFC 6750 bearer tokens) ----------------------------------------------

REALM = "anomaly"
LOOPBACK_NAMES = ("localhost",)


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison: it takes as long whatever the first differing byte, and
    whatever the length of the token sent (both are hashed to 32 bytes first; compare_digest
    alone returns early on a length mismatch, which would tell the token's length)."""
    if not expected:  # that token is not configured: nothing matches it
        return False
    digest = hashlib.sha256
    return hmac.compare_digest(digest(given.encode()).digest(), digest(expected.encode()).digest())


def _challenge(status: int, message: str, error: str | None = None, scope: str | None = None):
    value = f'Bearer realm="{REALM}"'
    if error:
        value += f', error="{error}", error_description="{message}"'
    if scope:
        value += f', scope="{scope}"'
    return HTTPException(status, message, headers={"WWW-Authenticate": value})


def authorizer(settings: Settings, scope: str):
    """A dependency that lets a request through if it carries a token of ``scope`` ("read" or
    "admin"). No token configured: every request passes (the loopback-only default)."""
    read_tokens = (settings.api_token, settings.api_admin_token)
    admin_tokens = (settings.api_admin_token,)
    enabled = any(read_tokens)
    bearer = HTTPBearer(
        auto_error=False,
        scheme_name="bearer",
        description="ANOMALY_API_TOKEN, or ANOMALY_API_ADMIN_TOKEN (which may also retrain)",
    )

    def check(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:  # noqa: B008
        if not enabled:
            return
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise _challenge(401, "send Authorization: Bearer <token>")
        token = credentials.credentials
        # Every configured token is compared, whichever matches: no early exit to time.
        as_read = [_same(token, t) for t in read_tokens]
        as_admin = [_same(token, t) for t in admin_tokens]
        if not any(as_read):
            raise _challenge(401, "the token is not valid", error="invalid_token")
        if scope == "admin" and not any(as_admin):
            raise _challenge(
                403, "this needs the admin token", error="insufficient_scope", scope="admin"
            )

    return check


def exposure_error(host: str, settings: Settings) -> str | None:
    """Why the API may not listen on ``host`` (None: it may). Off loopback it needs a token."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host in LOOPBACK_NAMES
    if loopback or settings.api_token or settings.api_admin_token:
        return None
    return (
        f"the API would answer anyone who reaches {host} without authentication: set "
        "ANOMALY_API_TOKEN (reads) and ANOMALY_API_ADMIN_TOKEN (POST /retrain) in the "
        "environment, or serve on 127.0.0.1"
    )


class Health(BaseModel):
    status: str
    database: str
    model_version: str | None


# --- the application ----------------------------------------------------------------------


class Database:
    """Connections as the read-only role, one per request (a small service: no pool to size)."""

    def __init__(self, settings: Settings):
        self.settings = settings

    @contextmanager
    def cursor(self):
        import psycopg2

        from common.db import connect

        try:
            conn = connect(self.settings, role="reader")
        except (psycopg2.OperationalError, RuntimeError) as exc:
            raise HTTPException(503, f"database unavailable: {str(exc).strip()}") from None
        try:
            with conn, conn.cursor() as cur:
                yield cur
        except psycopg2.errors.QueryCanceled:
            raise HTTPException(503, "the query took too long; ask for a shorter range") from None
        except psycopg2.DataError as exc:  # a value the query layer refuses
            raise HTTPException(422, exc.pgerror.splitlines()[0].removeprefix("ERROR:  ")) from None
        except psycopg2.OperationalError as exc:
            raise HTTPException(503, f"database unavailable: {str(exc).strip()}") from None
        finally:
            conn.close()

    def rows(self, statement: str, params: tuple = ()) -> list[dict]:
        with self.cursor() as cur:
            cur.execute(statement, params)
            names = [d.name for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _explanation(text: str | None) -> list[dict] | None:
    return json.loads(text) if text else None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    app = FastAPI(
        title="Anomaly detection API",
        version=VERSION,
        # What it reads and how it authenticates: the module's third and fourth paragraphs.
        description="\n\n".join(p.strip().replace("\n", " ") for p in __doc__.split("\n\n")[2:4]),
    )
    db = Database(settings)
    # Every route but /health is on one of these: it needs a read token, or (POST /retrain)
    # the admin token. A route added to them is protected without a word of its own.
    reading = APIRouter(
        dependencies=[Depends(authorizer(settings, "read"))], responses=_responses(401)
    )
    retraining = APIRouter(
        dependencies=[Depends(authorizer(settings, "admin"))], responses=_responses(401, 403)
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each field at fault, without echoing the values sent (they can be
        anything, NaN included, which JSON cannot carry back)."""
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": detail})

    state: dict = {"jobs": {}, "lock": threading.Lock(), "model": None}

    def model_source():
        from udfs.onnx_scorer import ModelSource

        with state["lock"]:
            if state["model"] is None:
                from common.models import resolve_model_dir

                try:
                    folder = resolve_model_dir(settings)
                except FileNotFoundError as exc:
                    raise HTTPException(503, str(exc)) from None
                source = ModelSource(
                    folder,
                    MODEL_FEATURE_NAMES,
                    settings.window_seconds,
                    pointer=settings.current_model_pointer,
                    reload_seconds=max(settings.model_reload_seconds, 1),
                )
                source.open()
                state["model"] = source
            state["model"].refresh()
            return state["model"].model

    @app.get(
        "/health",
        response_model=Health,
        tags=["service"],
        responses=_errors(),
    )
    def health() -> Health:
        """Whether the database answers, and the model version scoring requests."""
        from common.models import current_version

        try:
            db.rows("SELECT 1 AS ok")
            database = "ok"
        except HTTPException as exc:
            database = str(exc.detail)
        return Health(
            status="ok" if database == "ok" else "degraded",
            database=database,
            model_version=current_version(settings),
        )

    @reading.get(
        "/anomalies/latest",
        response_model=list[Anomaly],
        tags=["anomalies"],
        responses=_errors(),
    )
    def latest_anomalies(
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        device_id: Annotated[str | None, Query(pattern=NAME)] = None,
        site: Annotated[str | None, Query(pattern=NAME)] = None,
        min_severity: Annotated[float | None, Query(ge=0, le=100, allow_inf_nan=False)] = None,
    ) -> list[dict]:
        """The newest flagged windows, worst first within a window; filter by device, site
        and lowest severity."""
        rows = db.rows(
            "SELECT * FROM latest_anomalies(%s, %s, %s, %s)", (limit, device_id, site, min_severity)
        )
        for r in rows:
            r["explanation"] = _explanation(r["explanation"])
        return rows

    @reading.get(
        "/anomalies/counts",
        response_model=Counts,
        tags=["anomalies"],
        responses=_errors(),
    )
    def anomaly_counts(
        time_range: Annotated[str, Query(pattern=TIME_RANGE, examples=["5m", "4h", "30d"])] = "1h",
        end: Annotated[QueryTime, Query(description="end of the range (default now)")] = None,
    ) -> Counts:
        """Scored and flagged windows per device over the range before ``end``."""
        start, stop = _window(end, time_range)
        devices = db.rows(
            "SELECT * FROM anomaly_counts(%s, %s) ORDER BY anomalies DESC, device_id", (start, stop)
        )
        return Counts(
            start=start,
            end=stop,
            windows=sum(d["windows"] for d in devices),
            scored=sum(d["scored"] for d in devices),
            anomalies=sum(d["anomalies"] for d in devices),
            devices_with_anomalies=sum(1 for d in devices if d["anomalies"]),
            devices=devices,
        )

    @reading.get(
        "/devices/top",
        response_model=list[TopDevice],
        tags=["devices"],
        responses=_errors(),
    )
    def top_devices(
        time_range: Annotated[str, Query(pattern=TIME_RANGE)] = "1h",
        end: QueryTime = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 10,
    ) -> list[dict]:
        """The devices with the worst alerts (model or rule) over the range."""
        start, stop = _window(end, time_range)
        return db.rows("SELECT * FROM top_devices(%s, %s, %s)", (start, stop, limit))

    @reading.get(
        "/devices/{device_id}/metrics/{metric}",
        response_model=list[MetricPoint],
        tags=["devices"],
        responses=_errors(404),
    )
    def device_metric(
        device_id: Annotated[str, Path(pattern=NAME)],
        metric: Annotated[str, Path(description=f"one of {', '.join(METRIC_NAMES)}")],
        time_range: Annotated[str, Query(pattern=TIME_RANGE)] = "1h",
        end: QueryTime = None,
    ) -> list[dict]:
        """One metric of one device, window by window, with its typical band."""
        if metric not in METRIC_NAMES:
            raise HTTPException(404, f"no metric {metric!r}: metrics are {', '.join(METRIC_NAMES)}")
        start, stop = _window(end, time_range)
        return db.rows(
            "SELECT * FROM device_metric(%s, %s, %s, %s)", (device_id, metric, start, stop)
        )

    @reading.get(
        "/incidents/open",
        response_model=list[Incident],
        tags=["incidents"],
        responses=_errors(),
    )
    def open_incidents(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict]:
        """Incidents a new alert window could still extend, worst first."""
        return db.rows(
            "SELECT *, extract(epoch FROM duration)::float8 AS duration_s FROM open_incidents"
            " ORDER BY peak_severity DESC NULLS LAST, started_at LIMIT %s",
            (limit,),
        )

    @reading.get(
        "/incidents/correlated",
        response_model=list[CorrelatedIncident],
        tags=["incidents"],
        responses=_errors(),
    )
    def correlated_incidents(
        status: Annotated[str | None, Query(pattern="^(open|closed)$")] = None,
        device: Annotated[str | None, Query(max_length=128)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict]:
        """One incident per failure: incidents on linked devices that overlap in time, with
        the probable root device (and why), the others as symptoms, and whether Alertmanager
        has it. Newest first; ``device``: those it is the root or a symptom of."""
        return db.rows(
            "SELECT * FROM correlated_incident_status"
            " WHERE (%(status)s::text IS NULL OR status = %(status)s)"
            " AND (%(device)s::text IS NULL OR root_device = %(device)s"
            "      OR %(device)s = ANY(symptoms))"
            " ORDER BY started_at DESC, id LIMIT %(limit)s",
            {"status": status, "device": device, "limit": limit},
        )

    @reading.get(
        "/drift",
        response_model=list[Drift],
        tags=["model"],
        responses=_errors(),
    )
    def drift(
        since: Annotated[str, Query(pattern=TIME_RANGE)] = "1h", end: QueryTime = None
    ) -> list[dict]:
        """Recent scores against the training scores of the model that gave them (PSI over the
        training quantiles); says whether retraining is advised."""
        span = parse_range(since)
        return db.rows("SELECT * FROM drift_check(%s, %s)", (span, _utc(end)))

    @retraining.post(
        "/retrain",
        response_model=RetrainJob,
        status_code=202,
        tags=["model"],
        responses=_errors(400, 409),
    )
    def start_retrain(request: RetrainRequest) -> RetrainJob:
        """Train a candidate on the windows of ``since`` before now (its newest part held
        out), and make it CURRENT only if it passes parity, self-check and the held-out
        evaluation. Runs in the background: poll GET /retrain/{job_id}. One at a time."""
        from query.retrain import retrain

        span = parse_range(request.since)
        if not (settings.pg_reader_password and settings.pg_writer_password):
            raise HTTPException(
                503,
                "retraining reads the stored windows as the reader and records the version as "
                "the writer: set ANOMALY_PG_READER_PASSWORD and ANOMALY_PG_WRITER_PASSWORD",
            )
        with state["lock"]:
            if any(j.state == "running" for j in state["jobs"].values()):
                raise HTTPException(409, "a retraining is already running")
            job = RetrainJob(
                job_id=uuid.uuid4().hex[:12],
                state="running",
                message="training",
                started_at=datetime.now(UTC),
            )
            state["jobs"][job.job_id] = job

        def run() -> None:
            try:
                outcome = retrain(settings, span, request.holdout_share, log=lambda m: None)
                job.state, job.message = outcome.state, outcome.message
                job.version, job.checks = outcome.version, outcome.checks
            except Exception as exc:  # reported to whoever polls, never lost
                job.state, job.message = "failed", f"{type(exc).__name__}: {exc}"
            job.finished_at = datetime.now(UTC)

        threading.Thread(target=run, name=f"retrain-{job.job_id}", daemon=True).start()
        return job

    @reading.get(
        "/retrain/{job_id}",
        response_model=RetrainJob,
        tags=["model"],
        responses=_errors(404),
    )
    def retrain_status(job_id: Annotated[str, Path(pattern=r"^[0-9a-f]{12}$")]) -> RetrainJob:
        job = state["jobs"].get(job_id)
        if job is None:
            raise HTTPException(404, f"no retraining {job_id}")
        return job

    @reading.post(
        "/predict",
        response_model=Prediction,
        tags=["model"],
        responses=_errors(400),
    )
    def predict(
        request: FeaturesRequest | EventsRequest,
        model=Depends(model_source),  # noqa: B008
    ) -> Prediction:
        """Score one feature vector, or raw events (turned into the job's window features),
        with the current model: score, severity, flag, explanation, model version."""
        from query.predict import (
            PredictError,
            score_windows,
            window_of_vector,
            windows_of_events,
        )

        try:
            if isinstance(request, FeaturesRequest):
                features = request.features.model_dump()
                windows = [window_of_vector(request.device_id or "", features)]
            else:
                events = [e.model_dump() for e in request.events]
                windows = windows_of_events(events, settings.window_seconds)
        except PredictError as exc:
            raise HTTPException(422, str(exc)) from None
        scored = score_windows(model, windows)
        for s in scored:
            s["explanation"] = _explanation(s["explanation"])
        return Prediction(model_version=model.version, windows=scored)

    app.include_router(reading)
    app.include_router(retraining)
    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    p = argparse.ArgumentParser(prog="python -m query.api", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="(default: %(default)s, loopback only)")
    p.add_argument("--port", type=int, default=8000)
    a = p.parse_args(argv)
    settings = Settings.from_env()
    refused = exposure_error(a.host, settings)
    if refused:
        p.exit(2, f"python -m query.api: {refused}\n")
    uvicorn.run(create_app(settings), host=a.host, port=a.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
