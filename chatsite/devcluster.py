"""The production shape on one machine: PostgreSQL, Redis, N daphne processes, HAProxy.

``make cluster`` (scripts/cluster.py) runs it in a terminal; the cluster tests start one
per test session (tests/conftest.py). Everything it starts listens on 127.0.0.1 only, on
free ports (the balancer on ``lb_port``), and writes its data and logs under ``run_dir``:

    run_dir/secret                 DJANGO_SECRET_KEY, made once, shared by every process
    run_dir/pg/                    PostgreSQL: data/, password, postgres.log (owned by `postgres` as root)
    run_dir/redis/                 Redis log (no persistence)
    run_dir/static/                collectstatic output (whitenoise serves it, DEBUG off)
    run_dir/daphne-N.log           one log per daphne process
    run_dir/haproxy.cfg, .log      rendered from deploy/haproxy-cluster.cfg.in
    run_dir/pids.json              what is running, to clean up after a killed orchestrator

A freshly initdb'd data directory is kept once per machine in ``.run/pg-template-<version>``
and copied (0.4 s instead of initdb's 1 to 2 s). PostgreSQL refuses to run as root, so as
root its commands run as the ``postgres`` system user (``runuser``), which the Debian
package creates; ``run_dir`` must then be reachable by that user (not under /tmp/pytest-of-root).
The database is a development one: fsync is off.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import glob
import io
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from chatsite.devservers import RedisServer, daphne_command, demo_superuser, free_port, start_redis

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "haproxy-cluster.cfg.in"
DATABASE = "chatsite"
HEALTH_HOST = "localhost"  # the Host header of the balancer's health checks (in ALLOWED_HOSTS)


class ClusterError(RuntimeError):
    """Something did not start; the message names the log to read."""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _is_root() -> bool:
    return os.geteuid() == 0


# --- binaries ----------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """Debian's newest /usr/lib/postgresql/<version>/bin, else the directory of pg_ctl on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p)],
    )
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)


def missing_binaries() -> list[str]:
    """The Debian packages the cluster needs and this machine lacks."""
    missing = []
    if postgres_bin() is None:
        missing.append("postgresql")
    if haproxy_binary() is None:
        missing.append("haproxy")
    return missing


def install_missing() -> list[str]:
    """As root with apt: install what is missing. Returns what is still missing."""
    missing = missing_binaries()
    if missing and _is_root() and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, stdout=subprocess.DEVNULL)
    return missing_binaries()


# --- processes we started, for cleaning up after an orchestrator that was killed ---------------


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


class _PidFile:
    def __init__(self, path: Path):
        self.path = path

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def record(self, label: str, process: subprocess.Popen | None) -> None:
        entries = self._read()
        if process is None:
            entries.pop(label, None)
        else:
            entries[label] = {"pid": process.pid, "cmdline": _cmdline(process.pid) or []}
        self.path.write_text(json.dumps(entries, indent=1))

    def reap(self) -> list[str]:
        """Kill what an earlier run left behind: only a pid whose command line is still the
        one recorded (a reused pid is someone else's process). Returns the labels killed."""
        killed = []
        for label, entry in self._read().items():
            pid, recorded = entry.get("pid"), entry.get("cmdline")
            if pid and recorded and _cmdline(pid) == recorded:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(label)
        self.path.unlink(missing_ok=True)
        return killed


# --- PostgreSQL --------------------------------------------------------------------------------


class Postgres:
    """A private PostgreSQL on 127.0.0.1:``port`` with its data under ``directory``."""

    def __init__(self, directory: Path, *, port: int | None = None):
        self.directory = directory
        self.data = directory / "data"
        self.socket_dir = directory / "socket"
        self.log_path = directory / "postgres.log"
        self.port = port or free_port()
        self.bin = postgres_bin()
        if self.bin is None:
            raise ClusterError("PostgreSQL is not installed (apt-get install postgresql)")
        self.version = self.bin.parent.name if self.bin.parent.name.isdigit() else "local"

    @property
    def password(self) -> str:
        return (self.directory / "password").read_text().strip()

    @property
    def url(self) -> str:
        return f"postgres://postgres:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess:
        """A PostgreSQL binary, as the `postgres` user when we are root."""
        command = [str(self.bin / args[0]), *args[1:]]
        if _is_root():
            command = ["runuser", "-u", "postgres", "--", *command]
        # A session of its own: Ctrl-C in the terminal reaches the orchestrator only, which
        # then stops PostgreSQL last, after everything that uses it.
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, start_new_session=True, cwd="/"
        )
        if check and result.returncode != 0:
            raise ClusterError(
                f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}\n"
                f"log: {self.log_path}\n{_tail(self.log_path)}"
            )
        return result

    def _chown(self, path: Path) -> None:
        if _is_root():
            subprocess.run(["chown", "-R", "postgres:postgres", str(path)], check=True)

    def _template(self) -> Path:
        """An initdb'd data directory made once per machine, copied for each new cluster."""
        template = ROOT / ".run" / f"pg-template-{self.version}"
        template.parent.mkdir(parents=True, exist_ok=True)
        with open(template.parent / "pg-template.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two test sessions starting at once
            if not (template / "data" / "PG_VERSION").exists():
                shutil.rmtree(template, ignore_errors=True)
                template.mkdir()
                (template / "password").write_text(secrets.token_urlsafe(24) + "\n")
                self._chown(template)
                os.chmod(template, 0o700)
                self._run(
                    "initdb",
                    "-D", str(template / "data"),
                    "-U", "postgres",
                    "-E", "UTF8",
                    "--locale=C",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={template / 'password'}",
                    "--no-sync",
                )  # fmt: skip
        return template

    def prepare(self) -> bool:
        """Make the data directory on the first run; True if it is new."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if (self.data / "PG_VERSION").exists():
            return False
        template = self._template()
        shutil.rmtree(self.data, ignore_errors=True)
        subprocess.run(["cp", "-a", str(template / "data"), str(self.data)], check=True)
        shutil.copy(template / "password", self.directory / "password")
        return True

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists() and self._run(
            "pg_ctl", "status", "-D", str(self.data), check=False
        ).returncode == 0

    def start(self) -> Postgres:
        new = self.prepare()
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.directory)
        os.chmod(self.directory, 0o700)
        if self.running():  # left by an orchestrator that was killed: ours, so stop it
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", check=False)
        options = " ".join(
            shlex.quote(option)
            for option in (
                "-p", str(self.port),
                "-k", str(self.socket_dir),
                "-c", "listen_addresses=127.0.0.1",
                "-c", "max_connections=200",
                "-c", "fsync=off",
                "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off",
            )
        )  # fmt: skip
        self._run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60", "-s", "-o", options
        )
        self._create_database()
        if new:
            print(f"PostgreSQL: new data directory {self.data}", file=sys.stderr)
        return self

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            password=self.password,
            dbname="postgres",
            autocommit=True,
        ) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "-s", check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


# --- Redis ---------------------------------------------------------------------------------------


class Redis:
    """A private Redis that can be stopped and started again on the same port."""

    def __init__(self, directory: Path, *, pids: _PidFile, label: str = "redis"):
        self.directory = directory
        self.port = free_port()
        self.label = label
        self._pids = pids
        self.server: RedisServer | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.server is not None and self.server.process.poll() is None

    def start(self) -> Redis:
        if not self.running:
            self.server = start_redis(self.directory, port=self.port)
            self._pids.record(self.label, self.server.process)
        return self

    def stop(self) -> None:
        """A clean stop (SIGTERM). Without persistence Redis comes back empty, as after a crash."""
        if self.server is not None:
            self.server.stop()
            self._pids.record(self.label, None)

    def kill(self) -> None:
        if self.running:
            self.server.process.kill()
            self.server.process.wait()
            self._pids.record(self.label, None)


# --- daphne --------------------------------------------------------------------------------------


class Daphne:
    """One daphne process behind the balancer, like tests.live.LiveServer. ``name`` is its
    slot (the balancer's server name, stable); ``server_name`` its PRESENCE_SERVER_NAME,
    new at every start, because a name must be unique per running process: a restarted
    process must not take over the lease of the one that died, or its sockets would never
    be swept."""

    def __init__(self, name: str, *, env: dict[str, str], log_path: Path, pids: _PidFile):
        self.name = name
        self.port = free_port()
        self.base_env = env
        self.log_path = log_path
        self.server_name = ""
        self.process: subprocess.Popen | None = None
        self._pids = pids

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def env(self) -> dict[str, str]:
        return dict(self.base_env, PRESENCE_SERVER_NAME=self.server_name)

    def spawn(self) -> Daphne:
        """Start the process without waiting for it (see ``wait``)."""
        if self.running:
            return self
        self.server_name = f"{self.name}-{secrets.token_hex(3)}"
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        log.write(f"--- {time.strftime('%H:%M:%S')} starting {self.server_name} on port {self.port}\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            daphne_command(host="127.0.0.1", port=self.port, proxy_headers=True),
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=log,
            start_new_session=True,  # Ctrl-C reaches the orchestrator, which stops us in order
        )
        log.close()
        self._pids.record(self.name, self.process)
        return self

    def wait(self, timeout: float = 30.0) -> Daphne:
        """Until GET /healthz answers 200 on this process's own port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = self.process.returncode if self.process else None
                raise ClusterError(f"{self.name} exited with {code}; log: {self.log_path}\n{_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.1)  # polling a port that is not open yet: there is no event to wait on
        self.kill()  # never leave a half-started server behind
        raise ClusterError(
            f"{self.name} did not become healthy within {timeout}s; log: {self.log_path}\n{_tail(self.log_path)}"
        )

    def start(self, timeout: float = 30.0) -> Daphne:
        return self.spawn().wait(timeout)

    def healthy(self) -> bool:
        """GET /healthz on this process's own port answers 200 now."""
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=3) as response:
                return response.status == 200
        except OSError:  # refused, timed out, or an HTTPError (503)
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.running:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self._pids.record(self.name, None)

    def kill(self) -> None:
        """SIGKILL: no disconnect handler runs, as in a crash."""
        self.stop(signal.SIGKILL)

    def restart(self) -> Daphne:
        self.stop()
        return self.start()


# --- HAProxy -------------------------------------------------------------------------------------


class HAProxy:
    """The balancer on ``host:port``, configured from deploy/haproxy-cluster.cfg.in; its
    runtime API (stats socket) answers ``servers()`` and ``command()``."""

    BACKEND = "daphne"

    def __init__(self, run_dir: Path, *, port: int, host: str = "127.0.0.1", pids: _PidFile):
        self.run_dir = run_dir
        self.host = host
        self.port = port
        self.config = run_dir / "haproxy.cfg"
        self.log_path = run_dir / "haproxy.log"
        self.socket = run_dir / "haproxy.sock"
        self.process: subprocess.Popen | None = None
        self._pids = pids

    def render(self, daphnes: list[Daphne]) -> None:
        servers = "\n".join(f"    server {d.name} 127.0.0.1:{d.port}" for d in daphnes)
        text = TEMPLATE.read_text()
        for key, value in {
            "stats_socket": str(self.socket),
            "lb_host": self.host,
            "lb_port": str(self.port),
            "health_host": HEALTH_HOST,
            "servers": servers,
        }.items():
            text = text.replace("{{" + key + "}}", value)
        self.config.write_text(text)
        binary = haproxy_binary()
        check = subprocess.run([binary, "-c", "-q", "-f", str(self.config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise ClusterError(f"haproxy rejects {self.config}:\n{check.stdout}{check.stderr}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, daphnes: list[Daphne], timeout: float = 20.0) -> HAProxy:
        self.render(daphnes)
        self.socket.unlink(missing_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self.process = subprocess.Popen(
            [haproxy_binary(), "-db", "-f", str(self.config)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self._pids.record("haproxy", self.process)
        self.wait({d.name: "UP" for d in daphnes}, timeout=timeout)
        return self

    def command(self, line: str, timeout: float = 5.0) -> str:
        """One command on the runtime API, e.g. ``set server daphne/daphne-1 state drain``."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, str]:
        """The balancer's view of each daphne: {"daphne-1": "UP", "daphne-2": "DOWN", ...}
        ("UP 1/2" and the like while a server is changing state)."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row.get("pxname") == self.BACKEND and row.get("svname") not in ("BACKEND", "FRONTEND")
        }

    def wait(self, expected: dict[str, str], timeout: float = 20.0) -> dict[str, str]:
        """Until every named server has the expected status; returns the last view."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ClusterError(
                    f"haproxy exited with {self.process.returncode}; log: {self.log_path}\n{_tail(self.log_path)}"
                )
            with contextlib.suppress(OSError):
                seen = self.servers()
                if all(seen.get(name) == status for name, status in expected.items()):
                    return seen
            time.sleep(0.1)  # the balancer's checks run every second; polling its view is the only way
        raise ClusterError(f"haproxy: expected {expected}, still {seen} after {timeout}s; log: {self.log_path}")

    def stop(self) -> None:
        if self.running:
            self.process.terminate()  # hard stop: tunnels close now, like a crashed balancer
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self._pids.record("haproxy", None)


# --- the cluster -------------------------------------------------------------------------------


class Cluster:
    """PostgreSQL + Redis (+ extra channel-layer shards) + ``procs`` daphne processes + HAProxy.

    ``env``: extra environment for every daphne and management command (e.g.
    ``{"CHAT_HEARTBEAT": "1"}``). ``redis_shards``: Redis servers for the channel layer
    (the first is the main Redis, which also holds sessions and presence).
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        procs: int = 2,
        lb_port: int | None = None,
        lb_host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        redis_shards: int = 1,
        demo_user: bool = False,
        temporary: bool = False,
    ):
        if procs < 1 or redis_shards < 1:
            raise ValueError("procs and redis_shards must be at least 1")
        self.run_dir = Path(run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.temporary = temporary
        self.demo_user = demo_user
        self.extra_env = dict(env or {})
        self.credentials = self.run_dir / "demo-superuser.txt"
        self._pids = _PidFile(self.run_dir / "pids.json")
        self.postgres = Postgres(self.run_dir / "pg")
        self.redis = Redis(self.run_dir / "redis", pids=self._pids)
        self.layer_redis = [self.redis] + [
            Redis(self.run_dir / "redis", pids=self._pids, label=f"redis-shard-{i}") for i in range(2, redis_shards + 1)
        ]
        self.daphnes: list[Daphne] = []
        self.haproxy = HAProxy(self.run_dir, port=lb_port or free_port(), host=lb_host, pids=self._pids)
        self._procs = procs

    @classmethod
    def temporary_in(cls, parent: Path | None = None, **kwargs) -> Cluster:
        """A throw-away cluster (tests): its own directory under .run/test-cluster, which
        the `postgres` user can reach; stop() removes the database, the logs stay."""
        parent = parent or ROOT / ".run" / "test-cluster"
        return cls(parent / f"{os.getpid()}-{secrets.token_hex(3)}", temporary=True, **kwargs)

    # --- addresses -----------------------------------------------------------------------------

    @property
    def lb_port(self) -> int:
        return self.haproxy.port

    @property
    def lb_url(self) -> str:
        return f"http://{self.haproxy.host}:{self.lb_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.haproxy.host}:{self.lb_port}/ws/chat/"

    @property
    def url(self) -> str:  # so that helpers written for LiveServer (url, ws_url) take a cluster
        return self.lb_url

    def daphne(self, name: str) -> Daphne:
        """A daphne process by slot name (daphne-1) or by PRESENCE_SERVER_NAME."""
        for daphne in self.daphnes:
            if name in (daphne.name, daphne.server_name):
                return daphne
        raise KeyError(name)

    # --- environment ---------------------------------------------------------------------------

    def secret_key(self) -> str:
        path = self.run_dir / "secret"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(50) + "\n")
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def env(self) -> dict[str, str]:
        """What every daphne and management command of this cluster runs with."""
        env = {k: v for k, v in os.environ.items() if k not in ("PRESENCE_SERVER_NAME", "CHAT_CHANNEL_LAYER_URLS")}
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "chatsite.settings",
                "DJANGO_DEBUG": "false",
                "DJANGO_SECRET_KEY": self.secret_key(),
                "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1,[::1]",
                "DJANGO_SECURE_SSL": "false",  # plain HTTP on loopback; production sets nothing
                "DJANGO_STATIC_ROOT": str(self.run_dir / "static"),
                "DATABASE_URL": self.postgres.url,
                "REDIS_URL": self.redis.url,
                # Daphne already puts the balancer's X-Real-IP in the scope as the peer
                # (--proxy-headers-host), so the app sees the client, never the balancer:
                # no proxy to trust. Trusting 127.0.0.1 here would let a client on this
                # machine pick its address with X-Forwarded-For (docs/deploy.md).
                "PRESENCE_TRUSTED_PROXIES": "",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if len(self.layer_redis) > 1:
            env["CHAT_CHANNEL_LAYER_URLS"] = ",".join(r.url for r in self.layer_redis)
        env.update(self.extra_env)
        return env

    def manage(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """Run a management command with the cluster's environment; returns its stdout."""
        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"manage.py {' '.join(args[:1])} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return result.stdout

    # --- life cycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Cluster:
        """Start everything and return once the balancer sees every daphne UP; on any
        failure stop what was started and raise ClusterError naming the log to read."""
        missing = missing_binaries()
        if missing:
            raise ClusterError(f"missing: {', '.join(missing)} (apt-get install {' '.join(missing)})")
        reaped = self._pids.reap()
        if reaped:
            print(f"cluster: killed leftovers of an earlier run: {', '.join(reaped)}", file=sys.stderr)
        try:
            for redis in self.layer_redis:
                redis.start()
            if self.postgres.prepare():
                self.credentials.unlink(missing_ok=True)  # a new database has no demo user yet
            self.postgres.start()
            self.manage("migrate", "--noinput", "-v", "0")
            self.manage("collectstatic", "--noinput", "-v", "0")
            if self.demo_user:
                demo_superuser(self.credentials, self.manage)
            self.daphnes = [
                Daphne(f"daphne-{i}", env=self.env, log_path=self.run_dir / f"daphne-{i}.log", pids=self._pids)
                for i in range(1, self._procs + 1)
            ]
            for daphne in self.daphnes:  # in parallel: each takes a second or two to import
                daphne.spawn()
            for daphne in self.daphnes:
                daphne.wait(timeout=timeout)
            self.haproxy.start(self.daphnes, timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def heal(self, timeout: float = 30.0) -> Cluster:
        """Start whatever a test stopped or killed (Redis, daphne processes), restart a daphne
        whose /healthz fails (a drained one stays unhealthy until its flag expires), and
        wait until the balancer sees every daphne UP again: the state a new test expects."""
        for redis in self.layer_redis:
            redis.start()
        if not self.postgres.running():
            self.postgres.start()
        for daphne in self.daphnes:
            if daphne.running and not daphne.healthy():  # drained, or stuck: as systemd would, restart
                daphne.stop()
        stopped = [d for d in self.daphnes if not d.running]
        for daphne in stopped:
            daphne.spawn()
        for daphne in stopped:
            daphne.wait(timeout=timeout)
        if not self.haproxy.running:
            self.haproxy.start(self.daphnes, timeout=timeout)
        else:
            for daphne in self.daphnes:  # undo a test's `set server ... state drain|maint`
                self.haproxy.command(f"set server {HAProxy.BACKEND}/{daphne.name} state ready")
            self.haproxy.wait({d.name: "UP" for d in self.daphnes}, timeout=timeout)
        return self

    def stop(self) -> None:
        """Stop everything in order: the balancer (no new connections), the daphne processes
        (SIGTERM to all, then wait), Redis, PostgreSQL. Safe to call twice or after a
        partial start."""
        steps = [self.haproxy.stop, self._stop_daphnes, *[r.stop for r in self.layer_redis]]
        steps.append(self.postgres.remove if self.temporary else self.postgres.stop)
        errors = []
        for step in steps:
            try:
                step()
            except Exception as exc:  # keep going: everything else must still stop
                errors.append(f"{getattr(step, '__qualname__', step)}: {exc}")
        if errors:
            raise ClusterError("stopping the cluster: " + "; ".join(errors))

    def _stop_daphnes(self) -> None:
        for daphne in self.daphnes:
            if daphne.running:
                daphne.process.send_signal(signal.SIGTERM)
        for daphne in self.daphnes:
            daphne.stop()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def summary(self) -> str:
        lines = [
            f"Chat:        {self.lb_url}/  (HAProxy, leastconn over {len(self.daphnes)} daphne processes)",
            f"Admin:       {self.lb_url}/admin/",
            f"Health:      {self.lb_url}/healthz",
            f"WebSocket:   {self.ws_url}",
        ]
        for daphne in self.daphnes:
            lines.append(
                f"  {daphne.name}: {daphne.url}  server {daphne.server_name}  pid {daphne.pid}  log {daphne.log_path}"
            )
        lines += [
            f"PostgreSQL:  127.0.0.1:{self.postgres.port} (data {self.postgres.data}, log {self.postgres.log_path})",
            f"Redis:       {', '.join(r.url for r in self.layer_redis)}",
            f"HAProxy:     config {self.haproxy.config}, log {self.haproxy.log_path}, runtime API {self.haproxy.socket}",
        ]
        if self.demo_user and self.credentials.exists():
            lines.append(f"Demo superuser (also in {self.credentials}):")
            lines += ["  " + line for line in self.credentials.read_text().strip().splitlines()]
        return "\n".join(lines)
