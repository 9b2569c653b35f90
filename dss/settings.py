"""DSS portal settings: every value comes from the environment, with embedded defaults.

With no variable set, the portal runs on one machine with no services: SQLite for the portal
DB, a Celery broker kept in a local directory, the Parquet TAG store in a local folder and a
local storage directory. Production sets DATABASE_URL (PostgreSQL), CELERY_BROKER_URL
(Redis), TAGDB_URL with DSS_TAG_PARQUET_DIR, CACHE_URL, DSS_STORAGE_ROOT, SECRET_KEY, DEBUG=0
and ALLOWED_HOSTS.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str | None = None) -> str | None:
    """A setting from the environment, or from the file named by ``NAME_FILE`` (secrets)."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        return Path(file_name).read_text().strip()
    return os.environ.get(name, default)


# Variables that hold secrets (or URLs with passwords). The web and worker processes drop
# them, and their *_FILE names, from their environment once the settings have read them
# (``forget_secret_environment``), so no program they start inherits them. A process's
# /proc/<pid>/environ keeps what it was started with whatever it does later: give secrets as
# files (SECRET_KEY_FILE, DATABASE_URL_FILE...), so that only the file names are there.
SECRET_ENVIRONMENT = (
    "SECRET_KEY",
    "DATABASE_URL",
    "TAGDB_URL",
    "CELERY_BROKER_URL",
    "CACHE_URL",
    "DSS_RUCIO_USERNAME",
    "DSS_RUCIO_PASSWORD",
)


def forget_secret_environment(environ=os.environ) -> list[str]:
    """Remove the secret variables and their ``*_FILE`` names from ``environ``; the names
    removed. Call it once the settings are read (dss.wsgi, the Celery worker and beat)."""
    names = [n for s in SECRET_ENVIRONMENT for n in (s, f"{s}_FILE") if n in environ]
    for name in names:
        del environ[name]
    return names


def envbool(name: str, default: str) -> bool:
    value = (env(name, default) or "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use 1/0, true/false)")


def envint(name: str, default: str) -> int:
    value = env(name, default) or ""
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a whole number") from None


def envfloat(name: str, default: str) -> float:
    value = env(name, default) or ""
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None


def envjson(name: str, default: str):
    value = env(name, default) or default
    try:
        return json.loads(value)
    except ValueError as e:
        raise ImproperlyConfigured(f"{name} is not JSON: {e}") from None


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in (env(name, default) or "").split(",") if item.strip()]


# Where the embedded defaults keep their state; not used when every service is external.
VAR_DIR = Path(env("DSS_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = envbool("DEBUG", "1")
SECRET_KEY = env("SECRET_KEY") or ""
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "dss-development-only-key-not-for-production-use-0123456789"
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")
SITE_NAME = env("DSS_SITE_NAME", "DSS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "axes",
    "csp",
    "dss.apps.DssConfig",
    "dmu.apps.DmuConfig",
    "tagdb.apps.TagdbConfig",
    "pilotchecker.apps.PilotcheckerConfig",
    "skims.apps.SkimsConfig",
    "conditions.apps.ConditionsConfig",
]

MIDDLEWARE = [
    # Proxy headers are believed from DSS_TRUSTED_PROXIES only, before anything reads them.
    "dss.middleware.TrustedProxyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # NUL in a path, query or form is a 400, not a database error.
    "dss.middleware.MalformedInputMiddleware",
    # Every page asks for a login; REST API views answer 401/403 for themselves.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "dss.middleware.ContentSecurityPolicyMiddleware",
    # A domain error (no such skim, ...) escaping a page is that page's 404/403/400.
    "dss.middleware.DomainErrorMiddleware",
    # Last: answers a locked-out login with its own page (see AXES_* below).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "dss.urls"
WSGI_APPLICATION = "dss.wsgi.application"

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
                "dss.context.portal",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'portal.sqlite3'}"),
        # a web worker keeps its connection this many seconds (production: 60), checked
        # before each request reuses it
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", "0"),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, worker) share one SQLite file: wait for locks instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The test database is a file too, so that a real worker process can share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-portal.sqlite3")}
elif env("DSS_TEST_DATABASE_NAME"):
    # Two test runs on one PostgreSQL server (a developer's and CI's) each name their own.
    DATABASES["default"]["TEST"] = {"NAME": env("DSS_TEST_DATABASE_NAME")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Failed logins are counted per user name and address (django-axes): after
# DSS_LOGIN_FAILURE_LIMIT failures in a row that pair is locked out for
# DSS_LOGIN_LOCKOUT_MINUTES, on the login page and the token endpoint alike.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("DSS_LOGIN_FAILURE_LIMIT", "5")
AXES_COOLOFF_TIME = timedelta(minutes=envint("DSS_LOGIN_LOCKOUT_MINUTES", "15"))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "dss.views.locked_out"
AXES_VERBOSE = False
# API tokens (dss/tokens.py): how long a new one lasts unless its owner says, and at most.
DSS_TOKEN_DAYS = envint("DSS_TOKEN_DAYS", "90")
DSS_TOKEN_MAX_DAYS = envint("DSS_TOKEN_MAX_DAYS", "365")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

if not DEBUG:
    # Static files served by the web process itself, compressed and cache-busted.
    MIDDLEWARE.insert(
        MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
        "whitenoise.middleware.WhiteNoiseMiddleware",
    )

# Reverse proxies in front of the portal (addresses or networks, "10.0.0.2,192.168.0.0/24"):
# their X-Forwarded-Proto says whether the client used HTTPS and their X-Forwarded-For who
# the client is. From any other address those headers are dropped (dss.middleware).
DSS_TRUSTED_PROXIES = envlist("DSS_TRUSTED_PROXIES", "")
# Pilots post their reports to DSS_PORTAL_URL. With the HTTPS redirect on, an http:// URL
# works only if the deployment lets pilots report over plain HTTP (DSS_PILOT_PLAIN_HTTP=1:
# the ping and report endpoints, which carry a one-time pilot token, skip the redirect).
DSS_PILOT_PLAIN_HTTP = envbool("DSS_PILOT_PLAIN_HTTP", "0")
DSS_PILOT_HTTP_PATHS = [
    r"^api/ping/$",
    r"^api/pilots/\d+/report/$",
    r"^api/skims/jobs/\d+/report/$",
]

# Production hardening; `manage.py check --deploy` reports nothing when DEBUG is off.
if not DEBUG:
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "1")
    if DSS_TRUSTED_PROXIES:
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", "31536000")
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True

# Content-Security-Policy on every answer: scripts, styles, images and requests from the
# portal itself only; no inline script or style (htmx's indicator styles are in dss.css).
# The API documentation page (Swagger UI) adds inline styles for itself only (dss/urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# The cache holds the API's request counts (throttling) and the dataset lists' pages (kept
# under the catalog's generation, dss.generations): shared by every process when CACHE_URL
# names a Redis server, per process otherwise.
CACHE_URL = env("CACHE_URL", "")
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
    if CACHE_URL
    else {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "OPTIONS": {"MAX_ENTRIES": 2000},
    }
}
# How long a cached page of a list lives at most (0: lists are never cached). A change to
# what it shows replaces it at once; this bounds only a change whose process died between
# its commit and telling the cache.
DSS_PAGE_CACHE_SECONDS = envint("DSS_PAGE_CACHE_SECONDS", "60")

# REST API: session auth for the browser, tokens for the command line. Every caller has a
# request rate (per user, or per address when anonymous); obtaining a token with a password
# has a low one of its own.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "dss.tokens.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
        "rest_framework.throttling.ScopedRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env("DSS_API_RATE_ANON", "120/min"),
        "user": env("DSS_API_RATE_USER", "1200/min"),
        "token": env("DSS_API_RATE_TOKEN", "10/min"),
        "pilot": env("DSS_API_RATE_PILOT", "600/min"),
        # conditions reads: worker nodes, many behind one address
        "conditions": env("DSS_API_RATE_CONDITIONS", "60000/min"),
    },
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # JSON bodies with NUL, lone surrogates or numbers past a double are a 400.
    "DEFAULT_PARSER_CLASSES": [
        "dss.parsers.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "dss.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "dss.api.exception_handler",
}
# How long a browser or proxy may keep an answer about a locked global tag (seconds).
CONDITIONS_LOCKED_MAX_AGE = envint("DSS_CONDITIONS_MAX_AGE", "300")

SPECTACULAR_SETTINGS = {
    "TITLE": "DSS API",
    "DESCRIPTION": "The Dataset Skimming Service: catalog, TAG queries, skims, transfers, pilots.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Several models have a "state"; name each choice set after what it is.
    "ENUM_NAME_OVERRIDES": {
        "JobStateEnum": "dss.jobs.JobState",
        # skim parts and transferred files share one set of states
        "FileWorkStateEnum": "dss.jobs.FileWorkState",
        "ReplicaStateEnum": "dmu.models.ReplicaState",
        "CollectionStateEnum": "tagdb.models.CollectionState",
        "SiteStatusEnum": "pilotchecker.models.SiteStatus",
        "PilotStateEnum": "pilotchecker.models.PilotState",
        "VerdictEnum": "pilotchecker.models.Verdict",
        "GlobalTagStatusEnum": "conditions.models.GLOBAL_TAG_STATUSES",
    },
}

# The largest page an API list answers with (?limit= above it is cut to it).
DSS_API_MAX_LIMIT = envint("DSS_API_MAX_LIMIT", "1000")

# Celery: Redis in production; with no broker configured, a broker kept in a local directory
# that web and worker processes share, so one machine needs no server.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_DIR = VAR_DIR / "celery-broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
        # how often an idle worker looks for new messages (seconds)
        "polling_interval": 0.1,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", "3600")
    }
# Task outcomes live on the job rows, not in a result backend.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", "0")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = env("DSS_CELERY_QUEUE", "dss")
# PilotChecker: pilot work directories (on a file system the batch nodes share), the largest
# report a pilot may post, and how often beat asks the batch systems about running pilots.
PILOT_DIR = Path(env("PILOT_DIR", str(VAR_DIR / "pilots")))
PILOT_REPORT_MAX_BYTES = envint("PILOT_REPORT_MAX_BYTES", "262144")
PILOT_POLL_SECONDS = envint("PILOT_POLL_SECONDS", "10")
# The commands a site may ask its pilots to run, by name: a JSON object of name -> argv list,
# e.g. {"gcc": ["gcc", "--version"], "root-config": ["/opt/root/bin/root-config", "--version"]}.
# Sites choose among these names; what runs is only ever what the deployment wrote here.
DSS_PILOT_COMMANDS = envjson("DSS_PILOT_COMMANDS", "{}")
_bad_commands = [
    name
    for name, argv in (DSS_PILOT_COMMANDS.items() if isinstance(DSS_PILOT_COMMANDS, dict) else [])
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) and a for a in argv))
]
if not isinstance(DSS_PILOT_COMMANDS, dict) or _bad_commands:
    raise ImproperlyConfigured(
        "DSS_PILOT_COMMANDS must be a JSON object of name: [argv, ...]"
        + (f" (bad: {', '.join(_bad_commands)})" if _bad_commands else "")
    )
# Local pilots (the `local` batch system runs them on this machine) run as this user when the
# worker runs as root; they start with a clean environment either way.
DSS_PILOT_USER = env("DSS_PILOT_USER", "nobody")
# Periodic work (celery beat): each app adds its entries here.
CELERY_BEAT_SCHEDULE: dict = {
    "pilotchecker-poll-pilots": {
        "task": "pilotchecker.tasks.poll_pilots",
        "schedule": float(PILOT_POLL_SECONDS),
    },
    "pilotchecker-schedule-pilots": {
        "task": "pilotchecker.tasks.schedule_pilots",
        "schedule": 60.0,
    },
}
# Leases (dss/leases.py): every unit of long work (a skim's planning, parts and finishing, a
# TAG build's files and publishing, a registration, the copy of one file) is held by one
# worker, which renews its lease every DSS_LEASE_HEARTBEAT_SECONDS; a lease not renewed for
# DSS_LEASE_SECONDS has lost its worker. The sweep (every DSS_SWEEP_SECONDS) then sends the
# unit to another worker, up to DSS_LEASE_ATTEMPTS attempts in all, and after that fails it
# naming the silent worker. Cancelling is seen by the running work within a heartbeat.
DSS_LEASE_SECONDS = envfloat("DSS_LEASE_SECONDS", "60")
DSS_LEASE_HEARTBEAT_SECONDS = envfloat("DSS_LEASE_HEARTBEAT_SECONDS", "5")
DSS_LEASE_ATTEMPTS = envint("DSS_LEASE_ATTEMPTS", "3")
DSS_SWEEP_SECONDS = envfloat("DSS_SWEEP_SECONDS", "30")
if not 0 < DSS_LEASE_HEARTBEAT_SECONDS < DSS_LEASE_SECONDS:
    raise ImproperlyConfigured(
        "DSS_LEASE_HEARTBEAT_SECONDS must be positive and shorter than DSS_LEASE_SECONDS"
    )
CELERY_BEAT_SCHEDULE["dss-sweep-leases"] = {
    "task": "dss.tasks.sweep_leases",
    "schedule": DSS_SWEEP_SECONDS,
}
# Skims run on sites (skims/sitejobs.py): each part is one batch job through the site's batch
# adapter. Its work directory lies under PILOT_DIR (shared with the worker nodes, as pilots'
# are); the job runs skims/jobwrapper.py with DSS_SKIM_JOB_PYTHON (an interpreter on the nodes
# that has DSS's dependencies) from DSS_SKIM_JOB_CODE (where the dss/dmu/skims packages are on
# the nodes; empty: installed). A part gets DSS_SITE_JOB_ATTEMPTS batch jobs at most; a site
# whose last DSS_SITE_JOB_FAILURES skim jobs all failed goes broker-off. Sites named in
# DSS_SITE_REMOTE_READ read inputs over root:// instead of staging them in.
DSS_SKIM_JOB_PYTHON = env("DSS_SKIM_JOB_PYTHON", sys.executable)
DSS_SKIM_JOB_CODE = env("DSS_SKIM_JOB_CODE", str(BASE_DIR))
DSS_SITE_JOB_ATTEMPTS = envint("DSS_SITE_JOB_ATTEMPTS", "3")
DSS_SITE_JOB_FAILURES = envint("DSS_SITE_JOB_FAILURES", "3")
DSS_SITE_JOB_MINUTES = envint("DSS_SITE_JOB_MINUTES", "120")
# An ended skim job's work directory (its spec, script, and the batch system's output and
# error logs) is kept this many days for whoever looks into it, then removed by the poll.
DSS_SITE_JOB_KEEP_DAYS = envint("DSS_SITE_JOB_KEEP_DAYS", "7")
DSS_SITE_REMOTE_READ = [s for s in env("DSS_SITE_REMOTE_READ", "").split(",") if s]
CELERY_BEAT_SCHEDULE["skims-poll-site-jobs"] = {
    "task": "skims.tasks.poll_site_jobs",
    "schedule": float(PILOT_POLL_SECONDS),
}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]

# The TAG DB (SQLAlchemy URL) and the portal's own local storage element. The embedded
# default is the Parquet store in var/tags (its catalog in var/tags/catalog.sqlite): web
# workers read while a build writes, and never wait for it.
TAGDB_URL = env("TAGDB_URL", f"parquet://{(VAR_DIR / 'tags').resolve()}")
# Where a columnar TAG store keeps its event rows (Parquet files per build, published by a
# manifest; TAGDB_URL's database then keeps only the catalog). Empty: in TAGDB_URL itself.
DSS_TAG_PARQUET_DIR = env("DSS_TAG_PARQUET_DIR", "")
DSS_STORAGE_ROOT = Path(env("DSS_STORAGE_ROOT", str(VAR_DIR / "storage")))
DSS_SCRATCH_DIR = Path(env("DSS_SCRATCH_DIR", str(VAR_DIR / "scratch")))
# What the portal and its workers may reach as storage (dmu.models.storage_policy): local
# storage elements only under DSS_STORAGE_ROOT or these roots; root:// and https:// only
# to these hosts ("*" is any public host; loopback and private addresses only when listed);
# plain http:// not at all unless allowed.
DSS_STORAGE_ROOTS = envlist("DSS_STORAGE_ROOTS", "")
DSS_STORAGE_HOSTS = envlist("DSS_STORAGE_HOSTS", "*,localhost,127.0.0.1,::1" if DEBUG else "*")
DSS_STORAGE_ALLOW_HTTP = envbool("DSS_STORAGE_ALLOW_HTTP", "0")
# The storage element that skims write their output to unless the user picks another.
DSS_SKIM_OUTPUT_SE = env("DSS_SKIM_OUTPUT_SE", "LOCAL")
# A skim part reads and writes at most this many selected events at a time (what bounds a
# worker's memory); each such batch becomes one cluster of the output file.
DSS_SKIM_CHUNK_EVENTS = envint("DSS_SKIM_CHUNK_EVENTS", "100000")
# Objects that skims copy along into their outputs (metadata trees, histograms) are read
# whole: each may have at most this many entries (a tree) or cells (a histogram) and take
# at most this many MB in memory.
DSS_SKIM_COPY_MAX_ENTRIES = envint("DSS_SKIM_COPY_MAX_ENTRIES", "1000000")
DSS_SKIM_COPY_MAX_MB = envint("DSS_SKIM_COPY_MAX_MB", "100")
if DSS_SKIM_CHUNK_EVENTS < 1 or DSS_SKIM_COPY_MAX_ENTRIES < 1 or DSS_SKIM_COPY_MAX_MB < 1:
    raise ImproperlyConfigured(
        "DSS_SKIM_CHUNK_EVENTS, DSS_SKIM_COPY_MAX_ENTRIES and DSS_SKIM_COPY_MAX_MB must be positive"
    )
# The portal's own address as pilots and worker nodes reach it (they post reports here).
# `make run` sets it from the HOST and PORT it serves on.
DSS_PORTAL_URL = env("DSS_PORTAL_URL", "http://127.0.0.1:8000")
if not DEBUG and SECURE_SSL_REDIRECT and DSS_PORTAL_URL.lower().startswith("http://"):
    if not DSS_PILOT_PLAIN_HTTP:
        raise ImproperlyConfigured(
            f"DSS_PORTAL_URL={DSS_PORTAL_URL} is http://, but SECURE_SSL_REDIRECT sends every "
            "http:// request to https://, so pilots and skim jobs could not post their reports. "
            "Set DSS_PORTAL_URL to the portal's https:// address, or set DSS_PILOT_PLAIN_HTTP=1 "
            "to let them (only /api/ping/, /api/pilots/<id>/report/ and "
            "/api/skims/jobs/<id>/report/) use plain HTTP."
        )
    SECURE_REDIRECT_EXEMPT = DSS_PILOT_HTTP_PATHS
# The largest file the registration reads in one call (bytes); guards a worker's time.
DSS_MAX_REGISTER_FILES = envint("DSS_MAX_REGISTER_FILES", "10000")
# Transfers between storage elements: at most this many file copies run at once into one
# destination storage element (more wait, queued, and try again every DMU_SLOT_WAIT_SECONDS);
# each copy is retried this many times on transient errors and in-flight checksum mismatches.
DMU_MAX_TRANSFERS_PER_SE = envint("DMU_MAX_TRANSFERS_PER_SE", "4")
DMU_SLOT_WAIT_SECONDS = envint("DMU_SLOT_WAIT_SECONDS", "5")
DMU_TRANSFER_RETRIES = envint("DMU_TRANSFER_RETRIES", "3")
# The experiment's Rucio server: empty URL means the portal's own catalog only. Storage
# elements map to RSEs by name ("LOCAL=XRD_LOCAL,SE2=SE2_DISK"; an SE not listed maps to its
# own name in capitals). A registration that cannot reach Rucio is retried this many times,
# waiting DSS_RUCIO_RETRY_SECONDS, then twice as long each time.
DSS_RUCIO_URL = env("DSS_RUCIO_URL", "")
DSS_RUCIO_AUTH_URL = env("DSS_RUCIO_AUTH_URL", "")
DSS_RUCIO_ACCOUNT = env("DSS_RUCIO_ACCOUNT", "root")
DSS_RUCIO_AUTH_TYPE = env("DSS_RUCIO_AUTH_TYPE", "userpass")
DSS_RUCIO_USERNAME = env("DSS_RUCIO_USERNAME", "")
DSS_RUCIO_PASSWORD = env("DSS_RUCIO_PASSWORD", "")
DSS_RUCIO_RSES = dict(item.split("=", 1) for item in envlist("DSS_RUCIO_RSES", "") if "=" in item)
DSS_RUCIO_TIMEOUT = envint("DSS_RUCIO_TIMEOUT", "30")
DSS_RUCIO_RETRIES = envint("DSS_RUCIO_RETRIES", "5")
DSS_RUCIO_RETRY_SECONDS = envint("DSS_RUCIO_RETRY_SECONDS", "30")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
