"""`make cluster`: the production shape on this machine (chatsite/devcluster.py).

PostgreSQL, Redis, PROCS daphne processes (default 2) and HAProxy on LB_PORT (default
8080), all on 127.0.0.1, data and logs under .run/cluster/. As root it first installs
postgresql and haproxy with apt when they are missing. A daphne process that dies is
started again (as systemd's Restart=always would). Ctrl-C or SIGTERM stops everything it
started, in order.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatsite.devcluster import Cluster, ClusterError, install_missing  # noqa: E402


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops everything in order, like Ctrl-C


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    # Even when started in the background, where the shell ignores SIGINT for us:
    # `kill -INT` must stop the cluster as Ctrl-C does.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    procs = int(os.environ.get("PROCS", "2"))
    lb_port = int(os.environ.get("LB_PORT", "8080"))
    shards = int(os.environ.get("REDIS_SHARDS", "1"))
    missing = install_missing()
    if missing:
        print(f"missing: {', '.join(missing)}; install them (apt-get install {' '.join(missing)})", file=sys.stderr)
        return 1
    cluster = Cluster(ROOT / ".run" / "cluster", procs=procs, lb_port=lb_port, redis_shards=shards, demo_user=True)
    try:
        started = time.monotonic()
        cluster.start()
        print(f"\nCluster up in {time.monotonic() - started:.1f}s\n{cluster.summary()}")
        print("Ctrl-C stops everything.\n", flush=True)
        while True:
            time.sleep(1)  # supervising: there is nothing to wait on but the clock
            for daphne in cluster.daphnes:
                if not daphne.running:
                    print(f"{daphne.name} exited with {daphne.process.returncode}; starting it again", flush=True)
                    try:
                        daphne.start()
                    except ClusterError as exc:
                        print(exc, file=sys.stderr, flush=True)
                    else:
                        print(f"{daphne.name} is back as {daphne.server_name} (pid {daphne.pid})", flush=True)
    except KeyboardInterrupt:
        print("\nstopping: haproxy, daphne, redis, postgresql", flush=True)
        return 0
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C while stopping would leave things behind: ignore it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            cluster.stop()
        except ClusterError as exc:
            print(exc, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
