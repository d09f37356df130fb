"""Real daphne processes for live tests: a migrated SQLite file database of their own,
the test run's Redis, and the same command line as `make run`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from websockets.asyncio.client import connect

from chatsite.devservers import daphne_command, free_port

ROOT = Path(__file__).resolve().parent.parent


def live_env(db_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            "DATABASE_URL": f"sqlite:///{db_path}",
            "REDIS_URL": os.environ["REDIS_URL"],
            "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def migrated_template(directory: Path) -> Path:
    """A freshly migrated database file, made once and copied for each server."""
    template = directory / "template.sqlite3"
    if not template.exists():
        subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
            env=live_env(template),
            cwd=ROOT,
            check=True,
        )
    return template


class LiveServer:
    """One daphne process. ``url`` is http://127.0.0.1:PORT; ``ws_url`` its chat socket."""

    def __init__(self, db_path: Path, log_path: Path, port: int | None = None, **env: str):
        self.db_path = db_path
        self.log_path = log_path
        self.port = port or free_port()
        self.env = live_env(db_path, **env)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/"

    def start(self, timeout: float = 30.0) -> LiveServer:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self.process = subprocess.Popen(
            daphne_command(host="127.0.0.1", port=self.port), cwd=ROOT, env=self.env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/accounts/login/", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)  # polling a port that is not open yet: there is no event to wait on
        self.kill()  # never leave a half-started server behind
        raise RuntimeError(f"daphne did not answer within {timeout}s:\n{self.log_path.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL: no disconnect handler runs, as in a crash."""
        self.stop(signal.SIGKILL)

    def restart(self) -> LiveServer:
        self.stop()
        return self.start()

    def manage(self, *args: str) -> str:
        """Run a management command against this server's database; returns its stdout."""
        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout

    def create_user(self, username: str, password: str) -> None:
        self.manage(
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model; "
            f"get_user_model().objects.create_user({username!r}, password={password!r})",
        )


def new_live_server(directory: Path, **env: str) -> LiveServer:
    """A stopped server on a copy of the migrated template database."""
    directory.mkdir(parents=True, exist_ok=True)
    template = migrated_template(directory.parent)
    db_path = directory / "db.sqlite3"
    shutil.copy(template, db_path)
    return LiveServer(db_path, directory / "daphne.log", **env)


def http(method: str, url: str, key: str, body: dict | None = None) -> tuple[int, dict | None]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Socket:
    """A bearer-token client that pings every half heartbeat, as a live client must."""

    HEARTBEAT = 1.0  # the live tests run servers with CHAT_HEARTBEAT=1

    def __init__(self, ws):
        self.ws = ws
        self.frames: asyncio.Queue = asyncio.Queue()
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self.tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._ping())]

    async def _read(self):
        try:
            async for text in self.ws:
                await self.frames.put(json.loads(text))
        except Exception:  # the connection dropped: `closed` says how
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result(self.ws.close_code)

    async def _ping(self):
        with contextlib.suppress(Exception):  # the server closed the socket: `closed` tells how
            await self._beat()

    async def _beat(self):
        while True:
            await asyncio.sleep(self.HEARTBEAT / 2)  # the ping cadence itself
            await self.ws.send(json.dumps({"type": "ping"}))

    async def send(self, **frame):
        await self.ws.send(json.dumps(frame))

    async def until(self, predicate, timeout: float = 10) -> dict:
        async def wait():
            while True:
                frame = await self.frames.get()
                if predicate(frame):
                    return frame

        return await asyncio.wait_for(wait(), timeout)

    async def close(self):
        for task in self.tasks:
            task.cancel()
        await self.ws.close()


async def open_socket(server, token: str) -> tuple[Socket, dict]:
    ws = await connect(server.ws_url, additional_headers={"Authorization": f"Bearer {token}"})
    sock = Socket(ws)
    welcome = await sock.until(lambda f: f["type"] == "welcome")
    return sock, welcome


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]
