"""`make run`: Redis, migrations, a demo superuser on the first run, then daphne.

Redis: REDIS_URL if set, else a private redis-server on a free port under .run/.
Serves on HOST:PORT (default 127.0.0.1:8000). Ctrl-C stops everything it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
CREDENTIALS = RUN_DIR / "demo-superuser.txt"
sys.path.insert(0, str(ROOT))

from chatsite.devservers import daphne_command, demo_superuser, start_redis  # noqa: E402


def manage(*args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], check=True, cwd=ROOT)


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops everything in order, like Ctrl-C


def main() -> int:
    # Set both explicitly: a shell starts background jobs with SIGINT ignored, and that
    # would be inherited, leaving nothing to stop the servers.
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    RUN_DIR.mkdir(exist_ok=True)
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    redis = None
    if not os.environ.get("REDIS_URL"):
        redis = start_redis(RUN_DIR / "redis")
        os.environ["REDIS_URL"] = redis.url
    try:
        manage("migrate", "--noinput", "-v", "0")
        credentials = demo_superuser(CREDENTIALS, manage)
        print(f"\nRedis:  {os.environ['REDIS_URL']}")
        print(f"Chat:   http://{host}:{port}/")
        print(f"Admin:  http://{host}:{port}/admin/")
        print("Demo superuser (also in .run/demo-superuser.txt):")
        print("  " + credentials.replace("\n", "\n  "))
        print("Ctrl-C stops the server and Redis.\n", flush=True)
        daphne = subprocess.Popen(daphne_command(host=host, port=port), cwd=ROOT)
        try:
            return daphne.wait()
        except KeyboardInterrupt:
            daphne.terminate()  # SIGTERM: daphne may have inherited an ignored SIGINT
            try:
                daphne.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daphne.kill()
            return 0
    finally:
        if redis is not None:
            redis.stop()


if __name__ == "__main__":
    sys.exit(main())
