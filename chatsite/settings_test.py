"""Settings for the test suite: a private Redis server on a free port, fast hashing.

If REDIS_URL is set, that server is used; otherwise one is started here, once per
test run, and stopped when the run ends. Live-server tests hand the same REDIS_URL
to the daphne processes they start, so everything shares one real Redis.
"""

import atexit
import os
from pathlib import Path

if not os.environ.get("REDIS_URL"):
    from chatsite.devservers import start_redis

    _redis = start_redis(Path(__file__).resolve().parent.parent / ".run" / "test-redis")
    atexit.register(_redis.stop)
    os.environ["REDIS_URL"] = _redis.url

from chatsite.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests drive rate limits explicitly; the defaults stay realistic.
CHAT_HEARTBEAT = 20
PRESENCE_HEARTBEAT_TASK = False
# In-process tests share the test database between the test thread and the ORM thread
# and flush it between tests: no connection may outlive a test there. The live tests
# (real daphne processes) run with the production setting.
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
