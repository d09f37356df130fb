"""The servers under test, started by the benchmark itself and pinned to their cores.

- ``run``: what ``make run`` serves (``chatsite.devservers.daphne_command``), on a copy of
  a migrated SQLite database that holds the benchmark users, with a private Redis,
  DEBUG off, logs at WARNING, abuse counting on with its limits raised out of reach (every
  connect from loopback is counted, none flagged) and the per-connection rate limit
  raised (a fanout sender sends R frames/s on one socket).
- ``cluster``: ``scripts/cluster.py``'s ``Cluster`` when the project has one.
- ``baseline``: the tutorial-style project in ``bench/baselines/tutorial`` under the same
  daphne command line, with its own Redis.
- ``bare``: ``bench/baselines/bare.py``, a plain ``websockets`` broadcast server.

Each scenario gets a fresh server (and a fresh Redis and database copy), so one
scenario's leftovers never weigh on the next.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from chatsite.devservers import daphne_command, free_port, start_redis

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".run" / "bench"
# The per-connection token bucket (CHAT_RATE_*) is raised for the server under test: a
# fanout sender sends R frames per second on one socket. Reported in every report.
RATE_LIMIT = "100000"
# Abuse counting stays on (each connect is counted per IP and per user, in the same Redis
# round trip as in production), but thousands of connects from one loopback address
# must not be flagged: the limits are out of reach. Reported in every report.
ABUSE_LIMIT = "1000000"
# What the server under test runs with, besides its database and Redis (also the cluster's).
BENCH_ENV = {
    "DJANGO_LOG_LEVEL": "WARNING",
    "PRESENCE_ABUSE_IP_LIMIT": ABUSE_LIMIT,
    "PRESENCE_ABUSE_USER_LIMIT": ABUSE_LIMIT,
    "CHAT_RATE_PER_SECOND": RATE_LIMIT,
    "CHAT_RATE_BURST": RATE_LIMIT,
    "PYTHONUNBUFFERED": "1",
}
_SECRET = secrets.token_urlsafe(40)  # one per benchmark run, the same for every process of it


def run_env(**extra: str) -> dict[str, str]:
    """The environment of the `run` target's daphne and management commands."""
    env = dict(os.environ)
    env.update(BENCH_ENV)
    env.update({
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": _SECRET,
        "DJANGO_SECURE_SSL": "false",  # plain HTTP on loopback
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    })  # fmt: skip
    env.update(extra)
    return env


@contextlib.contextmanager
def affinity(cores: list[int] | None):
    """Run the block on ``cores``: every process started inside inherits them."""
    if not cores:
        yield
        return
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


# --- cores ----------------------------------------------------------------------------------


@dataclass
class CorePlan:
    server: list[int] | None  # None: not pinned
    generator: list[int] | None
    note: str


def core_plan(*, server_cores: int = 1) -> CorePlan:
    """Server on the first core(s), load generator on the others, where the machine allows."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return CorePlan(None, None, f"{len(cores)} core: server and load generator share it (not pinned)")
    n = max(1, min(server_cores, len(cores) // 2))
    server, generator = cores[:n], cores[n:]
    return CorePlan(server, generator, f"server (and its Redis) pinned to core(s) {server}; "
                                       f"load generator pinned to core(s) {generator}")  # fmt: skip


def pin(pid: int, cores: list[int] | None) -> None:
    """Pin every thread of ``pid`` (threads started later inherit from their creator)."""
    if not cores:
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        for thread in psutil.Process(pid).threads():
            with contextlib.suppress(OSError):  # a thread that just ended
                os.sched_setaffinity(thread.id, cores)


# --- measuring the server --------------------------------------------------------------------


@dataclass
class Server:
    """A running server under test. ``main``: its serving processes; ``aux``: Redis."""

    target: str
    url: str
    main: list[psutil.Process]
    aux: list[psutil.Process] = field(default_factory=list)
    _stop: object = None
    tokens: list[str] | None = None  # when the target made its own users (the cluster)

    def stop(self) -> None:
        if callable(self._stop):
            self._stop()

    def cpu_s(self, which: str = "main") -> float:
        total = 0.0
        for process in getattr(self, which):
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            # Exited children count too (PostgreSQL forks a backend per connection).
            total += times.user + times.system + times.children_user + times.children_system
        return total

    def rss(self, which: str = "main") -> int:
        total = 0
        for process in getattr(self, which):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total

    def alive(self) -> bool:
        return all(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in self.main)

    def settle(self, *, quiet: float = 0.1, window: float = 0.5, timeout: float = 60.0) -> float:
        """Wait until the server uses less than ``quiet`` of a core for two windows in a row
        (a flood of presence frames has been delivered); returns the seconds waited."""
        started = time.monotonic()
        calm = 0
        cpu = self.cpu_s()
        while time.monotonic() - started < timeout:
            time.sleep(window)
            now = self.cpu_s()
            calm = calm + 1 if (now - cpu) / window < quiet else 0
            cpu = now
            if calm >= 2:
                break
        return time.monotonic() - started


def wait_http(port: int, *, process: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    """Until something answers HTTP on 127.0.0.1:port (any status: DEBUG off may 404)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                if sock.recv(16).startswith(b"HTTP/"):
                    return
        except OSError:
            pass
        time.sleep(0.1)  # polling a port that is not open yet: there is no event to wait on
    process.kill()
    raise RuntimeError(f"server did not answer on port {port} within {timeout}s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _terminate(process: subprocess.Popen, timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- targets ---------------------------------------------------------------------------------


class Target:
    name = ""
    scenarios: tuple[str, ...] = ("capacity", "fanout", "rooms", "churn", "history")
    note = ""

    def __init__(self, cores: list[int] | None, *, directory: Path | None = None):
        self.cores = cores
        self.directory = directory or WORK / self.name

    def start(self) -> Server:
        raise NotImplementedError

    def _redis(self):
        with affinity(self.cores):
            redis = start_redis(self.directory / "redis")
        pin(redis.process.pid, self.cores)
        return redis

    def _daphne(self, command: list[str], env: dict[str, str], redis, port: int, *, cwd: Path = ROOT) -> Server:
        """Start daphne beside its Redis (already started); stopping the Server stops both."""
        try:
            process = self._spawn(command, env, self.directory / "daphne.log", port, cwd=cwd)
        except BaseException:
            redis.stop()
            raise

        def stop() -> None:
            _terminate(process)
            redis.stop()

        return Server(self.name, f"ws://127.0.0.1:{port}/ws/chat/", [psutil.Process(process.pid)],
                      [psutil.Process(redis.process.pid)], stop)  # fmt: skip

    def _spawn(self, command: list[str], env: dict[str, str], log: Path, port: int, *, cwd: Path = ROOT
               ) -> subprocess.Popen:  # fmt: skip
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out, affinity(self.cores):
            process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=out, start_new_session=True)
        pin(process.pid, self.cores)
        wait_http(port, process=process, log=log)
        pin(process.pid, self.cores)
        return process


class RunTarget(Target):
    """What `make run` serves, on its own database copy and Redis."""

    name = "run"
    note = (
        "daphne as `make run` starts it (chatsite.devservers.daphne_command), SQLite copy, private Redis, "
        "DJANGO_DEBUG=false, DJANGO_SECURE_SSL=false, DJANGO_LOG_LEVEL=WARNING, "
        f"PRESENCE_ABUSE_IP_LIMIT=PRESENCE_ABUSE_USER_LIMIT={ABUSE_LIMIT} (counted, never flagged), "
        f"CHAT_RATE_PER_SECOND=CHAT_RATE_BURST={RATE_LIMIT}"
    )

    def __init__(self, cores: list[int] | None, *, template: Path, directory: Path | None = None,
                 project: Path = ROOT):  # fmt: skip
        super().__init__(cores, directory=directory)
        self.template = template
        self.project = project  # the checkout whose code is served (another commit, to compare)
        if project != ROOT:
            self.note += f"; code served from {project}"

    def start(self) -> Server:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        db = self.directory / "db.sqlite3"
        shutil.copy(self.template, db)
        redis = self._redis()
        port = free_port()
        env = run_env(DATABASE_URL=f"sqlite:///{db}", REDIS_URL=redis.url)
        return self._daphne(daphne_command(host="127.0.0.1", port=port), env, redis, port, cwd=self.project)


class BaselineTarget(Target):
    """The tutorial-style project of bench/baselines/tutorial, under the same daphne command."""

    name = "baseline"
    note = "tutorial-style Channels consumer, core RedisChannelLayer, no auth/DB/presence (bench/baselines/tutorial)"

    def start(self) -> Server:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        redis = self._redis()
        port = free_port()
        command = daphne_command(host="127.0.0.1", port=port)[:-1] + ["bench.baselines.tutorial.asgi:application"]
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="bench.baselines.tutorial.settings", REDIS_URL=redis.url,
                   DJANGO_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")  # fmt: skip
        return self._daphne(command, env, redis, port)


class BareTarget(Target):
    """A plain `websockets` broadcast server: the ceiling of one Python process."""

    name = "bare"
    scenarios = ("fanout",)
    note = "plain `websockets` broadcast server, no Django (bench/baselines/bare.py): a ceiling, for fanout only"

    def start(self) -> Server:
        self.directory.mkdir(parents=True, exist_ok=True)
        port = free_port()
        command = [sys.executable, "-m", "bench.baselines.bare", "--port", str(port)]
        process = self._spawn(command, dict(os.environ), self.directory / "bare.log", port)
        return Server(self.name, f"ws://127.0.0.1:{port}/ws/chat/", [psutil.Process(process.pid)], [],
                      lambda: _terminate(process))  # fmt: skip


class ExternalTarget(Target):
    """A server someone else started (the smoke test's live daphne): never stopped here."""

    def __init__(self, name: str, url: str, pids: list[int], aux_pids: list[int] | None = None):
        super().__init__(None)
        self.name = name
        self.url = url
        self.pids = pids
        self.aux_pids = aux_pids or []

    def start(self) -> Server:
        return Server(self.name, self.url, [psutil.Process(p) for p in self.pids],
                      [psutil.Process(p) for p in self.aux_pids], None)  # fmt: skip


class ClusterTarget(Target):
    """`make cluster`'s shape (chatsite.devcluster.Cluster: PostgreSQL, Redis, PROCS daphne
    processes behind HAProxy), started on the server cores for each scenario. Its database
    is kept between scenarios (the benchmark users are made once, in PostgreSQL)."""

    name = "cluster"

    def __init__(self, cores: list[int] | None, *, procs: int, users: int, name: str = "cluster"):
        self.name = name  # cluster-N when the scaling figure runs several
        super().__init__(cores)
        self.procs = procs
        self.users = users
        self.tokens: list[str] | None = None
        self.note = (
            f"chatsite.devcluster.Cluster: {procs} daphne processes behind HAProxy, PostgreSQL, Redis, all on the "
            f"server core(s) {cores}; DJANGO_LOG_LEVEL=WARNING, "
            f"PRESENCE_ABUSE_IP_LIMIT=PRESENCE_ABUSE_USER_LIMIT={ABUSE_LIMIT} (counted, never flagged), "
            f"CHAT_RATE_PER_SECOND=CHAT_RATE_BURST={RATE_LIMIT}"
        )

    def start(self) -> Server:
        from chatsite.devcluster import Cluster

        if self.tokens is None:
            shutil.rmtree(self.directory, ignore_errors=True)  # a fresh database for this run
        cluster = Cluster(self.directory, procs=self.procs, env=dict(BENCH_ENV))
        with affinity(self.cores):
            cluster.start()
        try:
            if self.tokens is None:
                out = self.directory / "tokens.txt"
                cluster.manage("bench_users", str(self.users), "--prefix", "bench", "--out", str(out), timeout=300)
                self.tokens = out.read_text().split()
            main = [psutil.Process(d.pid) for d in cluster.daphnes]
            aux = [psutil.Process(cluster.redis.server.process.pid), psutil.Process(cluster.haproxy.process.pid)]
            postmaster = cluster.postgres.data / "postmaster.pid"
            with contextlib.suppress(OSError, ValueError, psutil.NoSuchProcess):
                aux.append(psutil.Process(int(postmaster.read_text().split()[0])))
            for process in main + aux:
                pin(process.pid, self.cores)
        except BaseException:
            cluster.stop()
            raise
        return Server(self.name, cluster.ws_url, main, aux, cluster.stop, tokens=self.tokens)


def cluster_target(
    cores: list[int] | None, *, procs: int, users: int, name: str = "cluster"
) -> tuple[Target | None, str]:
    """The cluster target if `make cluster`'s Cluster class is there and can run, else why not."""
    try:
        from chatsite.devcluster import Cluster, missing_binaries  # noqa: F401
    except ImportError as exc:
        return None, f"skipped: chatsite.devcluster.Cluster (`make cluster`) is not available ({exc})"
    missing = missing_binaries()
    if missing:
        return None, f"skipped: {', '.join(missing)} not installed (`make cluster` installs them as root)"
    return ClusterTarget(cores, procs=procs, users=users, name=name), ""


# --- the database and users of the `run` target ------------------------------------------------


def prepare_database(*, users: int, directory: Path = WORK, project: Path = ROOT) -> tuple[Path, Path]:
    """A migrated SQLite template holding ``users`` benchmark users (migrations and the
    bench_users command of ``project``); returns (template, tokens file)."""
    directory.mkdir(parents=True, exist_ok=True)
    template = directory / "template.sqlite3"
    tokens = directory / "tokens.txt"
    for path in (template, tokens):
        path.unlink(missing_ok=True)
    env = run_env(DATABASE_URL=f"sqlite:///{template}")
    manage = [sys.executable, str(project / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=project, env=env, check=True)
    subprocess.run([*manage, "bench_users", str(users), "--prefix", "bench", "--out", str(tokens)],
                   cwd=project, env=env, check=True)  # fmt: skip
    return template, tokens
