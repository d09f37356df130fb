"""Settings for the chat site, read from the environment with safe development defaults.

Django's own settings keep Django's names (``DJANGO_`` prefix in the environment);
the app's own are ``CHAT_…`` and ``PRESENCE_…``. README.md lists every variable.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=True)
# Production (DEBUG off) must set the key, and the same one on every process: sessions,
# CSRF tokens and password-reset links signed by one process are checked by another.
SECRET_KEY = env(
    "DJANGO_SECRET_KEY",
    **({"default": "django-insecure-dev-only-key-change-me-in-production-0123456789"} if DEBUG else {}),
)
# Old keys still accepted for checking signatures while a new key rolls out.
SECRET_KEY_FALLBACKS = env.list("DJANGO_SECRET_KEY_FALLBACKS", default=[])
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# --- Security behind the load balancer (`manage.py check --deploy` is clean with DEBUG off) --
# The load balancer terminates TLS and OVERWRITES X-Forwarded-Proto (deploy/haproxy.cfg), so
# the header can be believed; an empty DJANGO_SECURE_PROXY_SSL_HEADER turns that off.
_proxy_ssl_header = env("DJANGO_SECURE_PROXY_SSL_HEADER", default="X-Forwarded-Proto")
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https") if _proxy_ssl_header else None
)
# One switch for "served over HTTPS": on by default in production; DJANGO_SECURE_SSL=false
# for a plain-HTTP cluster on one machine (make cluster). Each setting below can be
# overridden on its own.
SECURE_SSL = env.bool("DJANGO_SECURE_SSL", default=not DEBUG)
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=SECURE_SSL)
# Health checks and metric scrapes reach each daphne directly over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=SECURE_SSL)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=SECURE_SSL)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if SECURE_SSL else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=SECURE_SSL)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=SECURE_SSL)
SECURE_CONTENT_TYPE_NOSNIFF = env.bool("DJANGO_SECURE_CONTENT_TYPE_NOSNIFF", default=True)
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "accounts",
    "rooms",
    "presence",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatsite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "chatsite.asgi.application"

# --- Database -------------------------------------------------------------------
# SQLite for `make run`; PostgreSQL through DATABASE_URL for the cluster.
# Under ASGI persistent connections are off (CONN_MAX_AGE=0, see PITFALLS.md), except
# for SQLite below.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = 0
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # psycopg 3's pool (Django 5.1+) instead of persistent connections. Each daphne process
    # runs its ORM work on ONE thread, so a small pool per process is plenty; size
    # PostgreSQL's max_connections for processes x max_size + management commands.
    # Health checks make the pool hand out only live connections after a database restart.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=1),
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=4),
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite has no pool, and opening a connection for every database crossing was ~17%
    # of daphne's CPU in the fan-out profile (docs/performance.md). All ORM work of a
    # daphne process runs on ONE thread (PITFALLS.md), so one persistent connection per
    # process is safe here; health checks replace it if it breaks.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=None)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            # WAL lets readers (another process, a live test) work beside the writer;
            # IMMEDIATE takes the write lock up front instead of failing mid-transaction.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, cache and sessions, presence ------------------------------
# One Redis server, three logical databases, so that flushing one never touches another.
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")


def redis_db_url(url: str, db: int) -> str:
    """Return ``url`` pointing at logical database ``db`` (redis:// or unix://)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        query["db"] = str(db)
        return urlunsplit(parts._replace(query=urlencode(query)))
    return urlunsplit(parts._replace(path=f"/{db}"))


CHANNEL_LAYERS = {
    "default": {
        # channels-redis's PubSub layer (one PUBLISH per group send whatever the group
        # size, no ghost group members after a crash; at-most-once, so every message is
        # persisted first and clients recover gaps with `since`), with process-local
        # channel names: a consumer's channel costs no Redis command, and a group one
        # SUBSCRIBE per process, not per socket (chatsite/layers.py, docs/architecture.md).
        "BACKEND": "chatsite.layers.ProcessLocalChannelLayer",
        # Several URLs shard channels and groups over several Redis servers (by a hash of
        # the name; every process must list the same URLs in the same order).
        "CONFIG": {
            "hosts": env.list("CHAT_CHANNEL_LAYER_URLS", default=[redis_db_url(REDIS_URL, 0)]),
            "prefix": "chat",
            # Seconds a group stays subscribed after its last member in this process
            # left, so reconnects and busy rooms do not SUBSCRIBE/UNSUBSCRIBE each time.
            "group_linger": env.float("CHAT_GROUP_LINGER", default=30.0),
        },
    }
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": redis_db_url(REDIS_URL, 1),
        "KEY_PREFIX": "chat",
    }
}

# Sessions survive the loss of any process: Redis cache in front, database behind.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

PRESENCE_REDIS_URL = env("PRESENCE_REDIS_URL", default=redis_db_url(REDIS_URL, 2))
# Pooled connections per process to the presence Redis, for pipelines (single commands
# share one multiplexed connection); callers beyond that wait (up to the timeout, seconds)
# instead of failing (presence/store.py).
PRESENCE_REDIS_MAX_CONNECTIONS = env.int("PRESENCE_REDIS_MAX_CONNECTIONS", default=50)
PRESENCE_REDIS_POOL_TIMEOUT = env.float("PRESENCE_REDIS_POOL_TIMEOUT", default=10.0)

# --- Auth ------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat"
LOGOUT_REDIRECT_URL = "login"

# --- I18n, static ------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# collectstatic writes here; with DEBUG off whitenoise serves the hashed, compressed copies
# (CompressedManifestStaticFilesStorage needs collectstatic before the first request).
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=BASE_DIR / "staticfiles")
WHITENOISE_USE_FINDERS = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- The chat protocol (PROTOCOL.md) ------------------------------------------------
CHAT_HEARTBEAT = env.int("CHAT_HEARTBEAT", default=20)  # seconds between client pings
CHAT_MAX_FRAME_BYTES = env.int("CHAT_MAX_FRAME_BYTES", default=64 * 1024)
CHAT_RECOVERY_LIMIT = env.int("CHAT_RECOVERY_LIMIT", default=1000)
# Messages each process keeps per subscribed room to answer joins (and `since`) without
# the database (rooms/hub.py); a `since` older than those reads the database.
CHAT_RECENT_PER_ROOM = env.int("CHAT_RECENT_PER_ROOM", default=200)
# Per-connection token bucket: sustained frames per second, and the burst allowed.
CHAT_RATE_PER_SECOND = env.float("CHAT_RATE_PER_SECOND", default=10.0)
CHAT_RATE_BURST = env.int("CHAT_RATE_BURST", default=30)
# Frames a client may send while rate limited before it is closed with 4008.
CHAT_FLOOD_STRIKES = env.int("CHAT_FLOOD_STRIKES", default=10)

# --- Logging ---------------------------------------------------------------------
# "plain" for `make run`; "json" (one object per line, chatsite/logging.py) for a log
# pipeline. Either way the redact filter strips anything that looks like a credential.
DJANGO_LOG_FORMAT = env("DJANGO_LOG_FORMAT", default="plain").strip().lower()
if DJANGO_LOG_FORMAT not in ("plain", "json"):
    raise ValueError(f"DJANGO_LOG_FORMAT must be 'plain' or 'json', not {DJANGO_LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "chatsite.logging.JsonFormatter"},
    },
    "filters": {"redact": {"()": "chatsite.logging.RedactFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": DJANGO_LOG_FORMAT, "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": env("DJANGO_LOG_LEVEL", default="INFO")},
    "loggers": {
        # Django's default config gives these their own console handlers (unredacted, and
        # duplicating lines under DEBUG): send everything through the one handler above.
        "django": {"handlers": [], "propagate": True},
        "django.server": {"handlers": [], "propagate": True},
        "django.channels.server": {"level": "WARNING"},
    },
}

# --- Presence, liveness, moderation (presence/) ------------------------------------------
# A unique name per running process (shown as `server`); derived from host and pid if unset.
PRESENCE_SERVER_NAME = env("PRESENCE_SERVER_NAME", default="")
# Run each process's heartbeat task (lease, last_seen flush, silent sockets, sweeping dead
# processes). Off only in the in-process test suite, which calls the tick directly.
PRESENCE_HEARTBEAT_TASK = env.bool("PRESENCE_HEARTBEAT_TASK", default=True)
# X-Forwarded-For is believed only when the peer is one of these networks (the load balancer).
PRESENCE_TRUSTED_PROXIES = env.list("PRESENCE_TRUSTED_PROXIES", default=[])
# Reconnect abuse: more than LIMIT connects within WINDOW seconds raises a flag.
PRESENCE_ABUSE_USER_LIMIT = env.int("PRESENCE_ABUSE_USER_LIMIT", default=10)
PRESENCE_ABUSE_USER_WINDOW = env.int("PRESENCE_ABUSE_USER_WINDOW", default=60)
PRESENCE_ABUSE_IP_LIMIT = env.int("PRESENCE_ABUSE_IP_LIMIT", default=100)
PRESENCE_ABUSE_IP_WINDOW = env.int("PRESENCE_ABUSE_IP_WINDOW", default=60)
# Seconds a flagged user or IP is refused at the handshake; 0 turns the cool-down off.
PRESENCE_ABUSE_COOLDOWN = env.int("PRESENCE_ABUSE_COOLDOWN", default=60)
# Connects from these networks are never counted (benchmarks, internal services).
PRESENCE_ABUSE_EXEMPT_NETWORKS = env.list("PRESENCE_ABUSE_EXEMPT_NETWORKS", default=[])

# --- Observability (docs/observability.md) ----------------------------------------------
# GET /metrics answers clients on these networks (CIDR, comma-separated), matched against
# the peer address of this process: scrape each process on its own port, not through the LB.
CHAT_METRICS_NETWORKS = env.list("CHAT_METRICS_NETWORKS", default=["127.0.0.1/32", "::1/128"])
# ...or any client sending `Authorization: Bearer <CHAT_METRICS_KEY>`; empty turns key access off.
CHAT_METRICS_KEY = env("CHAT_METRICS_KEY", default="")
