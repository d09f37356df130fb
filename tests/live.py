"""Real daphne processes for live tests: a migrated SQLite file database of their own,
the test run's Redis, and the same command line as `make run`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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
