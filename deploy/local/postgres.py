"""The local stack's PostgreSQL: its own data directory and socket under the state folder."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from common.settings import Settings
from deploy.local.helpers import StackError, log, port_open

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


class Postgres:
    def __init__(self, settings: Settings):
        self.s = settings
        self.root = settings.state_dir / "pg"
        self.data = self.root / "data"
        self.run_dir = self.root / "run"
        self.log_file = settings.state_dir / "logs" / "postgresql.log"

    @staticmethod
    def bin_dir() -> Path:
        import glob

        found = sorted(glob.glob(PG_BIN_GLOB))
        if not found:
            raise StackError("PostgreSQL server binaries not found: run `make setup`")
        return Path(found[-1])

    def _as_owner(self, cmd: list[str]) -> list[str]:
        # initdb and postgres refuse to run as root: run them as the `postgres` account.
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def running(self) -> bool:
        return port_open(self.s.pg_host, self.s.pg_port) and (self.data / "postmaster.pid").exists()

    def timescaledb_available(self) -> bool:
        """Whether the server has the TimescaleDB extension installed (it is in no package
        source this stack installs from; where someone installed it, the stack uses it)."""
        if self.s.pg_timescaledb == "off":
            return False
        major = self.bin_dir().parent.name
        return Path(f"/usr/share/postgresql/{major}/extension/timescaledb.control").is_file()

    def start(self) -> None:
        if self.running():
            log(f"PostgreSQL already running on {self.s.pg_host}:{self.s.pg_port}")
        else:
            if port_open(self.s.pg_host, self.s.pg_port):
                raise StackError(
                    f"port {self.s.pg_port} is taken by another program: stop it or set "
                    "ANOMALY_PG_PORT"
                )
            self._init()
            log(f"starting PostgreSQL on {self.s.pg_host}:{self.s.pg_port}")
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self.log_file.touch()
            self._chown(self.log_file)
            options = (
                f"-c listen_addresses={self.s.pg_host} -c port={self.s.pg_port} "
                f"-c unix_socket_directories={self.run_dir}"
            )
            if self.timescaledb_available():
                # The migrations then make hypertables, continuous aggregates and policies.
                # No telemetry: the stack talks to nothing beyond loopback.
                options += (
                    " -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off"
                )
                log("TimescaleDB is installed: loading it (ANOMALY_PG_TIMESCALEDB=off: plain)")
            subprocess.run(
                self._as_owner(
                    [
                        str(self.bin_dir() / "pg_ctl"),
                        "-D",
                        str(self.data),
                        "-l",
                        str(self.log_file),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        self.ensure_database()

    def _init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        log(f"initialising a PostgreSQL data directory in {self.data}")
        for d in (self.root, self.data, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)
            self._chown(d)
        self.run_dir.chmod(0o700)  # the trusted local socket is reachable by its owner only
        subprocess.run(
            self._as_owner(
                [
                    str(self.bin_dir() / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def admin_connection(self, database: str = "postgres"):
        import psycopg2

        return psycopg2.connect(
            host=str(self.run_dir), port=self.s.pg_port, user="postgres", dbname=database
        )

    def ensure_database(self) -> None:
        """The owner role (its password from the secrets file), the job's roles and the
        database ``pg_database``, created if missing."""
        from psycopg2 import sql

        from common.db import ensure_roles

        conn = self.admin_connection()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.s.pg_user,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                sql.SQL("{} ROLE {} LOGIN CREATEDB PASSWORD %s").format(
                    sql.SQL(verb), sql.Identifier(self.s.pg_user)
                ),
                (self.s.pg_password,),
            )
            # The job's writer and the read-only reader (passwords from the secrets file).
            ensure_roles(cur, self.s)
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.s.pg_database,))
            if not cur.fetchone():
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(self.s.pg_database), sql.Identifier(self.s.pg_user)
                    )
                )
        conn.close()

    def drop_database(self, name: str) -> None:
        """Drop a database as the server's superuser: TimescaleDB's job scheduler holds a
        connection to every database, which only the superuser may end."""
        from psycopg2 import sql

        conn = self.admin_connection()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        finally:
            conn.close()

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            log("PostgreSQL not running")
            return
        subprocess.run(
            self._as_owner(
                [str(self.bin_dir() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            ),
            check=False,
            stdout=subprocess.DEVNULL,
        )
        log("PostgreSQL stopped")
