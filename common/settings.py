"""Settings of every part of the pipeline, read once from the environment.

One frozen object carries the names of topics, tables, the window size and the addresses of
Kafka, PostgreSQL and Flink. Defaults point at the local stack (127.0.0.1); every field can be
overridden with an ``ANOMALY_*`` environment variable of the same name in upper case, e.g.
``ANOMALY_KAFKA_BOOTSTRAP=broker:9092``.

Secrets (the PostgreSQL password) come from the environment or from the secrets file the local
stack writes under its state folder; they are never defaults in code and never printed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

ENV_PREFIX = "ANOMALY_"
_SQL_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_KAFKA_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_HORIZON = re.compile(r"([1-9][0-9]*)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
# A bearer token as it can be sent in an Authorization header (RFC 6750, 2.1: b64token).
_B64TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")


class SettingsError(ValueError):
    """A setting (or a combination of settings) that cannot work; the message names the
    ANOMALY_* variable and says what to use instead."""


def _print_settings_error(exc_type, exc, tb, previous=sys.excepthook) -> None:
    """Every command reads its settings at start: an invalid one ends it with its one-line
    explanation, not a traceback."""
    if issubclass(exc_type, SettingsError):
        print(f"error: {exc}", file=sys.stderr)
    else:
        previous(exc_type, exc, tb)


sys.excepthook = _print_settings_error


def _default_state_dir() -> Path:
    return Path(os.environ.get("ANOMALY_STATE_DIR", REPO_ROOT / ".state"))


@dataclass(frozen=True)
class Settings:
    # Metric catalogue (catalogues/<name>.yaml or a path): the metrics this
    # deployment ingests, and so its window features and result columns.
    catalogue: str = "network"

    # --- Kafka -------------------------------------------------------------------------------
    kafka_bootstrap: str = "127.0.0.1:9092"
    # Raw telemetry events, JSON, keyed by device id.
    events_topic: str = "telemetry-events"
    events_topic_partitions: int = 2
    kafka_group_id: str = "anomaly-scoring"
    # What the job reads, one setting per topic: `topic:input` pairs, comma-separated, input
    # one of flat (one event with every metric), collectd, telegraf, otlp (sparse points from
    # those agents, README "Agents"). Empty: the events topic, flat.
    sources: str = ""
    # The Telegraf tag and the OpenTelemetry resource attribute that name the device.
    telegraf_device_tag: str = "host"
    otlp_device_attribute: str = "host.name"
    # The local stack's collectd (make demo-agent, tests): the topic it writes, its interval.
    agent_topic: str = "collectd-metrics"
    agent_interval_seconds: int = 2
    # Largest message batch the events topic accepts (set when the topic is created). The
    # broker refuses bigger ones to their producer, so an oversized payload is the producer's
    # error and never reaches the job. It bounds producer batches too (batch.size must stay
    # below it), hence Kafka's usual 1 MiB rather than a few KiB.
    max_message_bytes: int = 1_048_576

    # --- Windows and event time ----------------------------------------------------------
    window_seconds: int = 10
    # Events may arrive this much out of order before their window closes.
    watermark_delay_seconds: int = 5
    # Longer horizons of context around each window, comma-separated sizes (s, m, h, d): each
    # adds, per metric, the mean and spread of the device's window means over that horizon and
    # the window's deviation from it. Each must be a multiple of the window (at least 2). Flink
    # keeps each device's window rows of the longest horizon in state (1h of 10 s windows: 360
    # rows). Changing them changes the model's features: retrain. "auto": 6 and 360 windows
    # (1m,1h for 10 s windows; 6h,15d for 1 h windows), so that a window change alone is valid.
    context_horizons: str = "auto"
    # The horizons whose deviations the model sees (comma-separated; the others are computed
    # and stored only). None by default: measured on our data they cost accuracy. A short
    # horizon takes in an anomaly and then makes the return to normal look like a deviation
    # (SKAB with 1m: false alarms 15.7 % -> 19.7 %); with 1h the simulator evaluation fell
    # from F1 0.88 to 0.23 (README, Accuracy).
    context_modelled: str = ""
    # A partition silent for this long stops holding back the watermark.
    idle_timeout_seconds: int = 5
    # An event time further ahead of the broker's timestamp of its message than this is a
    # wrong clock: the event goes to the dead letters instead of pushing the watermark (and so
    # every later event) past it.
    max_clock_skew_seconds: int = 600
    # Longest device id accepted; longer ones are dead letters.
    max_device_id_length: int = 128

    # --- PostgreSQL ----------------------------------------------------------------------
    pg_host: str = "127.0.0.1"
    pg_port: int = 5433
    pg_database: str = "anomaly"
    # The schema's owner: runs the migrations (python -m common.db migrate).
    pg_user: str = "anomaly"
    pg_password: str = field(default="", repr=False)
    # The Flink job's role: reads reference data, inserts and updates results; cannot change
    # the schema.
    pg_writer_user: str = "anomaly_writer"
    pg_writer_password: str = field(default="", repr=False)
    # Grafana, the HTTP API and analysts: read-only (SELECT and the query functions).
    pg_reader_user: str = "anomaly_reader"
    pg_reader_password: str = field(default="", repr=False)
    # --- the HTTP API (query/api.py) -------------------------------------------------------
    # Bearer tokens: with one set, every request but /health needs one; the admin token also
    # starts retrainings (POST /retrain). Off loopback the API refuses to start without them.
    api_token: str = field(default="", repr=False)
    api_admin_token: str = field(default="", repr=False)
    scores_table: str = "anomaly_scores"
    # Messages the job could not use, with the reason and where they came from.
    dead_letters_table: str = "dead_letters"
    # Valid events that arrived after their window had closed, with how late they were.
    late_events_table: str = "late_events"
    # Device reference data (site, region, kind, criticality, owner), joined to every window.
    devices_table: str = "devices"
    # Consecutive flagged windows of a device, merged while no more than this many seconds of
    # unflagged windows lie between them.
    incidents_table: str = "incidents"
    incident_quiet_seconds: int = 60
    # Alerts: flagged windows (source 'model') and windows a catalogue rule fires on
    # (source 'rule:<name>').
    alerts_table: str = "alerts"
    # Latest state per device: health 0-100 = 100 - the highest severity (model or rule) of
    # its windows over the last health_seconds.
    health_table: str = "device_health"
    health_seconds: int = 300
    # Links between devices (from the inventory); the link_health view reads them.
    links_table: str = "device_links"
    # How the job holds each reference table (devices, segment limits) for its lookup joins:
    # "full", each lookup subtask holds the whole table, read at start and anew every
    # device_cache_seconds (no window waits for a query); "partial", each device's row (or its
    # absence) is read on first sight and kept for device_cache_seconds (for tables too large
    # to hold whole in every subtask); "auto", full for a table of at most
    # device_cache_full_max_rows rows when the job is submitted, else partial. A table held
    # whole takes about 650 bytes of heap a row in every lookup subtask (`make
    # bench-reference`: +119-134 MB for 200,000 device rows): 100,000 rows, about 65 MB, is
    # well under a tenth of the local TaskManager's 1 GB heap per table and subtask.
    device_cache: str = "auto"
    device_cache_seconds: int = 60
    device_cache_full_max_rows: int = 100_000
    # Limits per device and time-of-day segment, for rules with `segment_reference`
    # thresholds ("traffic at station S between 08:00 and 09:00 above its reference"). A
    # segment is this many seconds of the UTC day (3600: hours 0-23); it must divide the day
    # and be a multiple of the window, so that a window lies in one segment.
    segment_limits_table: str = "device_segment_limits"
    reference_segment_seconds: int = 3600

    # --- Notifications (alerting/notifier.py) -------------------------------------------
    # Incidents on linked devices that started at most this many seconds apart and whose
    # spans overlap (give or take as much) are one correlated incident with a probable root
    # device: one page per failure.
    correlated_table: str = "correlated_incidents"
    # Which correlated incident each device incident belongs to.
    correlation_table: str = "incident_correlation"
    correlation_gap_seconds: int = 60
    # Devices whose first alert lies within this many windows of the earliest one's count as
    # starting together when the root is ranked (detection works in whole windows).
    correlation_onset_windows: int = 2
    # What was delivered to Alertmanager, per correlated incident (the notifier's outbox).
    notifications_table: str = "notifications"
    # Alertmanager's API ("" : the notifier does not run). The local stack's listens on 9095
    # (Alertmanager's usual 9093 is its Kafka controller's port). Open incidents are re-sent this
    # often, as Alertmanager expects of a client.
    alertmanager_url: str = "http://127.0.0.1:9095"
    alert_resend_seconds: int = 30
    # A resolved notification goes out only once the firing one has been with Alertmanager
    # this long (seconds): longer than its route's group_wait, so that an incident that opened
    # and closed while Alertmanager was away still pages once, then resolves.
    alert_min_firing_seconds: int = 15
    # Incidents that ended longer ago than this (event time) are neither correlated nor sent.
    alert_horizon_seconds: int = 3600
    # Where a notification's links point (Grafana's device dashboard, the HTTP API).
    grafana_url: str = "http://127.0.0.1:3000"
    api_url: str = "http://127.0.0.1:8000"

    # The local stack loads TimescaleDB where it is installed (auto); off: plain PostgreSQL.
    pg_timescaledb: str = "auto"
    # Registered model versions (card facts: training score quantiles for the drift check).
    models_table: str = "model_versions"
    # Every raw event as it arrived (off by default: about one row per second per device).
    raw_events_table: str = "raw_events"
    # on: the job also lands every good event in raw_events within seconds.
    raw_events: str = "off"
    # How long rows are kept (TimescaleDB retention policies; on plain PostgreSQL the function
    # prune_expired() deletes the same rows, e.g. from cron), and after how many days
    # TimescaleDB compresses a chunk. Raw events are many: they are kept less long.
    retention_days: int = 30
    raw_events_retention_days: int = 3
    compress_after_days: int = 7
    # Drift check (drift_check() in SQL, GET /drift): population stability index of the
    # recent scores over the training scores' quantile bins above which retraining is
    # advised, and the fewest scored windows it judges.
    drift_psi_retrain: float = 0.25
    drift_min_windows: int = 200

    # --- Flink ---------------------------------------------------------------------------
    flink_rest_url: str = "http://127.0.0.1:8081"
    job_name: str = "anomaly-scoring"
    parallelism: int = 1
    # Rows per Arrow batch handed to the pandas scoring UDF.
    arrow_batch_size: int = 10_000
    # on: score every window; off: store window features only (score columns NULL), e.g. to
    # measure what scoring costs.
    scoring: str = "on"
    # pandas: the scoring UDF gets Arrow batches of windows (vectorized); row: one window per
    # call, as a general UDF (only to measure what vectorizing saves: make bench).
    scoring_udf: str = "pandas"
    # How the stream computes the context horizons' sums: jvm (WindowContext, jvm/: keeps
    # only each device's tracked window values) or sql (Flink's RANGE OVER, one per horizon,
    # keeping each window's whole row; the batch path always uses it). Same figures.
    context_operator: str = "jvm"
    # Hot reload: the scoring UDF re-reads the models folder's CURRENT pointer at most this
    # often (seconds) and switches to a new version between two batches. 0: never (the job
    # keeps the model it was submitted with).
    model_reload_seconds: int = 5
    # More Flink options for the job, applied after the job's own: "key=value;key=value",
    # e.g. "pipeline.object-reuse=false" (the benchmark tries tunings with it).
    flink_options: str = ""
    # Checkpoints: a failed job restarts from the last one and the upserting sinks overwrite
    # what it replays. 0 turns checkpointing off.
    checkpoint_interval_seconds: int = 10
    # hashmap (state on the heap, fast, bounded by memory) or rocksdb (on disk, large state).
    state_backend: str = "hashmap"
    # on: the local stack's JobManager and TaskManagers serve Flink's metrics for Prometheus on
    # the first free ports of 9249-9259 (the job-health dashboard). Off by default there:
    # Flink's reporter has no host option and listens on every interface, and the local stack
    # otherwise listens on 127.0.0.1 only. (The cluster deployments turn it on.)
    flink_prometheus: str = "off"
    # Where checkpoints go (a URI every Flink process can reach; default: the local stack's
    # state folder). They are kept when the job is cancelled, so it can resume with `-s`.
    checkpoint_dir: str = ""

    # --- Files ---------------------------------------------------------------------------
    state_dir: Path = field(default_factory=_default_state_dir)
    jars_dir: Path = REPO_ROOT / ".deps" / "jars"
    models_dir: Path = REPO_ROOT / "models"

    def __post_init__(self) -> None:
        # Names reach SQL text and Flink options as they are: allow only plain identifiers, so
        # that no setting can smuggle SQL or quotes into a statement.
        for name in (
            "scores_table",
            "dead_letters_table",
            "late_events_table",
            "devices_table",
            "incidents_table",
            "alerts_table",
            "health_table",
            "links_table",
            "segment_limits_table",
            "correlated_table",
            "correlation_table",
            "notifications_table",
            "models_table",
            "raw_events_table",
            "pg_database",
            "pg_user",
            "pg_writer_user",
            "pg_reader_user",
        ):
            if not _SQL_NAME.fullmatch(getattr(self, name)):
                raise SettingsError(
                    f"{ENV_PREFIX}{name.upper()}={getattr(self, name)!r}: use lower-case letters,"
                    " digits and _ (a plain SQL identifier, at most 63 characters)"
                )
        _ = self.source_list  # checks ANOMALY_SOURCES
        for name in ("events_topic", "kafka_group_id", "job_name", "agent_topic"):
            if not _KAFKA_NAME.fullmatch(getattr(self, name)):
                raise SettingsError(
                    f"{ENV_PREFIX}{name.upper()}={getattr(self, name)!r}: use letters, digits,"
                    " '.', '_' and '-' only"
                )
        if self.device_cache not in ("auto", "full", "partial"):
            raise SettingsError(
                f"{ENV_PREFIX}DEVICE_CACHE={self.device_cache!r}: use auto (full for small "
                "tables), full (the whole table in each lookup subtask) or partial (rows on "
                "first sight, for large tables)"
            )
        names = [name for name, _ in self.context_horizon_seconds]
        unknown = sorted(set(self.context_modelled_names) - set(names))
        if unknown:
            raise SettingsError(
                f"{ENV_PREFIX}CONTEXT_MODELLED={self.context_modelled!r}: {unknown} not among "
                f"the horizons of {ENV_PREFIX}CONTEXT_HORIZONS ({names})"
            )
        window = self.window_seconds
        if window < 1 or 86_400 % window:
            raise SettingsError(
                f"{ENV_PREFIX}WINDOW_SECONDS={window}: use a window that divides the day "
                "(86400 s), e.g. 10, 60, 300, 900 or 3600, so that windows line up with hours "
                "and days"
            )
        segment = self.reference_segment_seconds
        if segment <= 0 or 86_400 % segment or segment % window:
            fits = next(s for s in range(window, 86_401, window) if s >= 3600 and 86_400 % s == 0)
            raise SettingsError(
                f"{ENV_PREFIX}REFERENCE_SEGMENT_SECONDS={segment}: use a length that divides "
                f"the day (86400 s) and is a multiple of the {window} s window "
                f"({ENV_PREFIX}WINDOW_SECONDS), e.g. {fits}"
            )
        for name, allowed in (
            ("scoring", ("on", "off")),
            ("scoring_udf", ("pandas", "row")),
            ("context_operator", ("jvm", "sql")),
            ("raw_events", ("on", "off")),
            ("pg_timescaledb", ("auto", "off")),
            ("flink_prometheus", ("on", "off")),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise SettingsError(
                    f"{ENV_PREFIX}{name.upper()}={value!r}: use {' or '.join(allowed)}"
                )
        for name in SECRET_FIELDS:
            if "'" in getattr(self, name):
                raise SettingsError(
                    f"{ENV_PREFIX}{name.upper()} must not contain a single quote (')"
                )
        for name in API_TOKEN_FIELDS:
            token = getattr(self, name)
            if token and not _B64TOKEN.fullmatch(token):
                raise SettingsError(
                    f"{ENV_PREFIX}{name.upper()}: use letters, digits and - . _ ~ + / (then ="
                    " only at the end), as a bearer token is sent (RFC 6750), e.g. the output"
                    " of `openssl rand -hex 24`"
                )
        if self.api_admin_token and self.api_admin_token == self.api_token:
            raise SettingsError(
                f"{ENV_PREFIX}API_ADMIN_TOKEN is the same as {ENV_PREFIX}API_TOKEN: every"
                " reader could retrain; give the admin a token of its own"
            )
        for name in ("retention_days", "raw_events_retention_days", "compress_after_days"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()}: at least 1 day")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``ANOMALY_*`` variables; keyword overrides win over both."""
        env = dict(os.environ if environ is None else environ)
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _convert(f.name, f.type, raw)
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        secrets_file = Path(env.get("ANOMALY_SECRETS_FILE", settings.secrets_file))
        for name in SECRET_FIELDS:
            if not getattr(settings, name):
                key = ENV_PREFIX + name.upper()
                value = env.get(key) or read_env_file(secrets_file).get(key) or ""
                settings = dataclasses.replace(settings, **{name: value})
        return settings

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def source_list(self) -> tuple[tuple[str, str], ...]:
        """The topics the job reads and the input of each (``sources``)."""
        from common.catalogue import INPUTS

        if not self.sources.strip():
            return ((self.events_topic, "flat"),)
        pairs = []
        for part in filter(None, (p.strip() for p in self.sources.split(","))):
            topic, _, input_ = part.rpartition(":")
            if not _KAFKA_NAME.fullmatch(topic) or input_ not in INPUTS:
                raise SettingsError(
                    f"{ENV_PREFIX}SOURCES={self.sources!r}: {part!r} is not topic:input with an "
                    f"input among {', '.join(INPUTS)} (e.g. telemetry-events:flat,metrics:collectd)"
                )
            pairs.append((topic, input_))
        if len({t for t, _ in pairs}) != len(pairs):
            raise SettingsError(f"{ENV_PREFIX}SOURCES={self.sources!r}: a topic is named twice")
        return tuple(pairs)

    @property
    def correlation_onset_seconds(self) -> int:
        return self.correlation_onset_windows * self.window_seconds

    @property
    def alert_hold_seconds(self) -> int:
        """How long (event time) a new correlated incident waits before its first send: until
        an incident of a linked device that started within the onset tolerance has had its
        window closed and written, so that a cascade's root is known when it pages."""
        return self.correlation_onset_seconds + self.window_seconds + self.watermark_delay_seconds

    @property
    def secrets_file(self) -> Path:
        return self.state_dir / "secrets.env"

    @property
    def checkpoint_uri(self) -> str:
        return self.checkpoint_dir or (self.state_dir / "flink" / "checkpoints").resolve().as_uri()

    @property
    def context_modelled_names(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.context_modelled.split(",") if n.strip())

    @property
    def context_horizon_seconds(self) -> tuple[tuple[str, int], ...]:
        """The context horizons as (name, seconds), e.g. ("1h", 3600)."""
        out: list[tuple[str, int]] = []
        window = self.window_seconds
        given = self.context_horizons.strip()
        if given == "auto":
            given = ",".join(duration_name(n * window) for n in AUTO_HORIZON_WINDOWS)
        for name in (part.strip() for part in given.split(",")):
            if not name:
                continue
            match = _HORIZON.fullmatch(name)
            problem = None
            if match is None:
                problem = "write each as a number and a unit s, m, h or d, e.g. 1m,1h"
            else:
                seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
                if seconds % window or seconds < 2 * window:
                    problem = (
                        f"{name} is not a multiple of the {window} s window "
                        f"({ENV_PREFIX}WINDOW_SECONDS) of at least 2 windows; use multiples "
                        f"such as {duration_name(6 * window)},{duration_name(360 * window)}, "
                        "or auto (the default)"
                    )
                elif any(seconds == s for _, s in out):
                    problem = f"{name} is given twice"
            if problem:
                raise SettingsError(
                    f"{ENV_PREFIX}CONTEXT_HORIZONS={self.context_horizons!r}: {problem}"
                )
            out.append((name, seconds))
        return tuple(out)

    @property
    def current_model_pointer(self) -> Path:
        return self.models_dir / "CURRENT"

    @property
    def jdbc_url(self) -> str:
        """The job's PostgreSQL URL. reWriteBatchedInserts: the driver sends a sink's batch of
        upserts as multi-row INSERT ... ON CONFLICT statements (Flink's buffer keeps one row
        per key, so no statement touches a key twice); +9 to +18 % events/s in `make bench`."""
        return (
            f"jdbc:postgresql://{self.pg_host}:{self.pg_port}/{self.pg_database}"
            "?reWriteBatchedInserts=true"
        )

    def pg_role(self, role: str) -> tuple[str, str]:
        """(user, password) of a database role: owner, writer or reader."""
        if role not in ROLES:
            raise ValueError(f"unknown database role {role!r}: use one of {ROLES}")
        prefix = "pg" if role == "owner" else f"pg_{role}"
        return getattr(self, f"{prefix}_user"), getattr(self, f"{prefix}_password")

    def pg_dsn(self, database: str | None = None, role: str = "owner") -> dict[str, object]:
        """Keyword arguments for ``psycopg2.connect``, as the given role."""
        user, password = self.pg_role(role)
        return {
            "host": self.pg_host,
            "port": self.pg_port,
            "dbname": database or self.pg_database,
            "user": user,
            "password": password,
            "connect_timeout": 5,
        }

    def jar_urls(self) -> list[str]:
        """``file://`` URLs of the connector jars fetched from pom-deps.txt."""
        jars = sorted(self.jars_dir.glob("*.jar"))
        if not jars:
            raise FileNotFoundError(
                f"no connector jars in {self.jars_dir}: run `make setup` (fetches pom-deps.txt)"
            )
        return [jar.resolve().as_uri() for jar in jars]


# The horizons of context_horizons="auto", in windows.
AUTO_HORIZON_WINDOWS = (6, 360)


def duration_name(seconds: int) -> str:
    """A duration in the horizons' notation, in its largest whole unit: 3600 -> "1h"."""
    for unit, size in sorted(_UNIT_SECONDS.items(), key=lambda u: -u[1]):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError(seconds)


def duration_seconds(name: str) -> int:
    """The seconds of a duration in the horizons' notation: "1h" -> 3600."""
    match = _HORIZON.fullmatch(name)
    if match is None:
        raise ValueError(f"not a duration such as 1m or 1h: {name!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


# Passwords and tokens: from ANOMALY_<FIELD> in the environment or the secrets file, never
# defaults.
PG_SECRET_FIELDS = ("pg_password", "pg_writer_password", "pg_reader_password")
API_TOKEN_FIELDS = ("api_token", "api_admin_token")
SECRET_FIELDS = (*PG_SECRET_FIELDS, *API_TOKEN_FIELDS)
# The database roles: owner (migrations), writer (the Flink job), reader (Grafana, the API).
ROLES = ("owner", "writer", "reader")


def _convert(name: str, type_name: object, raw: str) -> object:
    kind = str(type_name)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
    except ValueError as exc:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw


def read_env_file(path: Path) -> dict[str, str]:
    """The ``KEY=value`` lines of a shell-style settings file (the local stack's secrets,
    the deployment file `python -m training.onboard` writes): ``export`` and quotes around a
    value left out, a key's first line kept; empty where the file cannot be read."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and not name.startswith("#"):
            values.setdefault(name.removeprefix("export ").strip(), value.strip().strip("'\""))
    return values
