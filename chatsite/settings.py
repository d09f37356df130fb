"""Settings for the chat site, read from the environment with safe development defaults.

Django's own settings keep Django's names (``DJANGO_`` prefix in the environment);
the app's own are ``CHAT_…`` and ``PRESENCE_…``. README.md lists every variable.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env(
    "DJANGO_SECRET_KEY",
    default="django-insecure-dev-only-key-change-me-in-production-0123456789",
)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

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
# Under ASGI persistent connections are off (CONN_MAX_AGE=0, see PITFALLS.md).
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = 0
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
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
        # One PUBLISH per group send whatever the group size, and no ghost group
        # members after a crash; at-most-once, so every message is persisted first
        # and clients recover gaps with `since` (docs/architecture.md).
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [redis_db_url(REDIS_URL, 0)], "prefix": "chat"},
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
STATIC_ROOT = BASE_DIR / "staticfiles"
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
# Per-connection token bucket: sustained frames per second, and the burst allowed.
CHAT_RATE_PER_SECOND = env.float("CHAT_RATE_PER_SECOND", default=10.0)
CHAT_RATE_BURST = env.int("CHAT_RATE_BURST", default=30)
# Frames a client may send while rate limited before it is closed with 4008.
CHAT_FLOOD_STRIKES = env.int("CHAT_FLOOD_STRIKES", default=10)

# --- Logging ---------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("DJANGO_LOG_LEVEL", default="INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
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
