"""bftweb settings: one module, driven by the environment (every variable is in .env.example)."""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DEV_SECRET_KEY = "dev-only-insecure"


def load_dotenv(path: Path) -> None:
    """Read KEY=VALUE lines from a local .env (dev only); the real environment always wins."""
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            os.environ.setdefault(key.strip(), value.strip().strip("'\""))


def envbool(name: str, default: str) -> bool:
    value = os.getenv(name, default)
    if value not in ("True", "False"):
        raise ImproperlyConfigured(f"Unexpected value {name}={value!r}, use 'True' or 'False'")
    return value == "True"


def envint(name: str, default: str) -> int:
    value = os.getenv(name, default)
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(
            f"Unexpected value {name}={value!r}, expected an integer"
        ) from None


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.getenv(name, default).split(",") if item.strip()]


def envpath(name: str, default: Path) -> Path:
    """A directory from the environment; a relative path is taken from the project root."""
    return (BASE_DIR / os.getenv(name, str(default))).resolve()


def with_query_defaults(url: str, **defaults: object) -> str:
    """``url`` with ``defaults`` added to its query string, where it does not set them already."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update({k: str(v) for k, v in defaults.items() if k not in query})
    return urlunsplit(parts._replace(query=urlencode(query)))


def envsecret(name: str, default: str) -> str:
    """A secret from NAME, or from the file named by NAME_FILE (Docker/Kubernetes secrets)."""
    if path := os.getenv(f"{name}_FILE"):
        return Path(path).read_text().strip()
    return os.getenv(name, default)


load_dotenv(BASE_DIR / ".env")

SECRET_KEY = envsecret("SECRET_KEY", DEV_SECRET_KEY)
DEBUG = envbool("DEBUG", "False")
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperlyConfigured("Set SECRET_KEY (or DEBUG=True for local development).")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "django_rq",
    "axes",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here (no CDN)
    "jobs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads a body: an oversized one is refused unread (BFT_REQUEST_MAX_BYTES).
    "bftweb.middleware.RequestSizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "bftweb.urls"
WSGI_APPLICATION = "bftweb.wsgi.application"

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
                "jobs.permissions.project_access",
            ],
        },
    },
]

VAR_DIR = envpath("BFT_VAR_DIR", BASE_DIR / "var")
DATABASES = {
    "default": dj_database_url.parse(
        os.getenv("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=envint("DB_CONN_MAX_AGE", "0"),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web requests and the worker write concurrently: wait for the lock instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # A file, not :memory:, so worker subprocesses started by tests see the test database.
    DATABASES["default"]["TEST"] = {
        "NAME": os.getenv(
            "BFT_TEST_SQLITE",
            str(Path(tempfile.gettempdir()) / f"bftweb-test-{os.getpid()}.sqlite3"),
        )
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

# Login throttling (django-axes): after AXES_FAILURE_LIMIT failed sign-ins for one username, or
# from one address, further attempts for it are refused until AXES_COOLOFF_MINUTES have passed.
# Behind a reverse proxy every client has the proxy's address (REMOTE_ADDR): set
# AXES_LOCKOUT_PARAMETERS=username there, or one failing client locks everybody out.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: it refuses locked-out credentials
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("AXES_FAILURE_LIMIT", "5")
AXES_COOLOFF_TIME = timedelta(minutes=envint("AXES_COOLOFF_MINUTES", "15"))
AXES_LOCKOUT_PARAMETERS = envlist("AXES_LOCKOUT_PARAMETERS", "username,ip_address")
# Not True: a success would also wipe the failures counted against its address, so an attacker
# could clear them by signing in to their own account between guesses at someone else's.
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.getenv("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = envpath("STATIC_ROOT", BASE_DIR / "staticfiles")

# Uploads: trainsets and program files are streamed and validated by jobs/engine/trainsets.py.
BFT_UPLOAD_MAX_BYTES = envint("BFT_UPLOAD_MAX_BYTES", str(50 * 1024 * 1024))
# Any request body over this is refused before it is read (413): the upload limit plus room for
# the form around the file.
BFT_REQUEST_MAX_BYTES = envint("BFT_REQUEST_MAX_BYTES", str(BFT_UPLOAD_MAX_BYTES + 64 * 1024))
BFT_UPLOAD_MAX_ROWS = envint("BFT_UPLOAD_MAX_ROWS", "100000")
BFT_UPLOAD_MAX_FIELD_CHARS = envint("BFT_UPLOAD_MAX_FIELD_CHARS", "20000")
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DATA_UPLOAD_MAX_MEMORY_SIZE", str(10 * 1024 * 1024))
FILE_UPLOAD_MAX_MEMORY_SIZE = envint("FILE_UPLOAD_MAX_MEMORY_SIZE", str(2 * 1024 * 1024))

# Artifacts (adapters, training data, compiled programs) and the converted-model cache. The engine
# gets them from JobsConfig.ready() (jobs/apps.py): the web app, the workers and the engine agree.
BFT_ARTIFACTS_DIR = envpath("BFT_ARTIFACTS_DIR", VAR_DIR / "artifacts")
BFT_MODEL_CACHE_DIR = envpath("BFT_MODEL_CACHE_DIR", VAR_DIR / "model-cache")

# What a project may ask the workers to use (jobs/services/model_policy.py). Each is a door into the
# workers, so only the operator opens it; the form, the admin, `distill` and the worker all check.
# Environment variables a LiteLLM model may name as its API key: listed here, or starting with the
# prefix. SECRET_KEY, DATABASE_URL and REDIS_URL are refused whatever these say.
BFT_LM_KEY_VARS = envlist("BFT_LM_KEY_VARS", "")
BFT_LM_KEY_PREFIX = os.getenv("BFT_LM_KEY_PREFIX", "BFT_KEY_")
# Hosts (api.together.xyz, 10.0.0.5:8000) or URL prefixes (https://vllm.internal/v1) a custom
# api_base may point at. Empty: LiteLLM's own provider endpoints only.
BFT_LM_API_BASES = envlist("BFT_LM_API_BASES", "")
# Directories local model files may be read from (the bundled model and the cache always).
BFT_LOCAL_MODEL_DIRS = envlist("BFT_LOCAL_MODEL_DIRS", "")

# The model server (`manage.py serve`, jobs/serve/): the base URL clients reach it at (what served
# program files and the job page name as api_base), and how many fine-tuned LoRA adapters it keeps
# loaded per base model (least recently used unloaded; the engine reads the same variable).
BFT_SERVE_URL = os.getenv("BFT_SERVE_URL", "http://127.0.0.1:8100/v1").rstrip("/")
BFT_SERVE_MAX_ADAPTERS = envint("BFT_SERVE_MAX_ADAPTERS", "8")

# Queues. RQ's own defaults (180 s timeout, 500 s result TTL) would kill or forget a fine-tune,
# so every timeout and TTL is explicit; the database row is the lasting record anyway.
REDIS_URL = os.getenv("REDIS_URL", "redis://127.0.0.1:6379/0")
# A Redis that stops answering must not hang pages: every call gives up after this long (seconds;
# RQ raises it for a worker's blocking dequeue). A socket_timeout in REDIS_URL's query wins.
BFT_REDIS_TIMEOUT_S = envint("BFT_REDIS_TIMEOUT_S", "5")


def rq_redis_url(redis_url: str) -> str:
    timeout = BFT_REDIS_TIMEOUT_S
    return with_query_defaults(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)


BFT_BOOTSTRAP_TIMEOUT_S = envint("BFT_BOOTSTRAP_TIMEOUT_S", str(6 * 3600))
BFT_IMPORT_TIMEOUT_S = envint("BFT_IMPORT_TIMEOUT_S", str(6 * 3600))
BFT_FINETUNE_TIMEOUT_S = envint("BFT_FINETUNE_TIMEOUT_S", str(24 * 3600))
BFT_MODEL_TEST_TIMEOUT_S = envint("BFT_MODEL_TEST_TIMEOUT_S", "600")
BFT_EVALUATION_TIMEOUT_S = envint("BFT_EVALUATION_TIMEOUT_S", str(6 * 3600))
# The smoke test (jobs/services/smoke.py): a new run bootstraps this many stratified examples first
# (0: never) and stops "checked" when under this pass rate (or mostly unparsed, or one answer).
BFT_SMOKE_SIZE = envint("BFT_SMOKE_SIZE", "16")
BFT_SMOKE_MIN_PASS_RATE = float(os.environ.get("BFT_SMOKE_MIN_PASS_RATE", "0.1"))
BFT_RQ_RESULT_TTL_S = envint("BFT_RQ_RESULT_TTL_S", str(7 * 24 * 3600))
BFT_CANCEL_GRACE_S = envint("BFT_CANCEL_GRACE_S", "60")
# How often a worker writes a run's counters and a job's progress to the database (0: every change).
BFT_PROGRESS_EVERY_S = envint("BFT_PROGRESS_EVERY_S", "2")
# A busy worker heartbeats this often; reconcile calls it dead after three missed beats.
BFT_WORKER_HEARTBEAT_S = envint("BFT_WORKER_HEARTBEAT_S", "10")
# How often an idle worker reconciles stale rows (also: `manage.py reconcile`).
BFT_RECONCILE_EVERY_S = envint("BFT_RECONCILE_EVERY_S", "60")
# Job payloads are primary keys, so RQ stores them as JSON: nothing a worker reads from Redis is
# unpickled. jobs.worker.BftWorker uses the same serializer whatever its command line says.
BFT_RQ_SERIALIZER = "rq.serializers.JSONSerializer"
RQ_QUEUES: dict[str, dict[str, Any]] = {
    "default": {
        "URL": rq_redis_url(REDIS_URL),
        "DEFAULT_TIMEOUT": BFT_BOOTSTRAP_TIMEOUT_S,
        "DEFAULT_RESULT_TTL": BFT_RQ_RESULT_TTL_S,
        "SERIALIZER": BFT_RQ_SERIALIZER,
    },
    "gpu": {
        "URL": rq_redis_url(REDIS_URL),
        "DEFAULT_TIMEOUT": BFT_FINETUNE_TIMEOUT_S,
        "DEFAULT_RESULT_TTL": BFT_RQ_RESULT_TTL_S,
        "SERIALIZER": BFT_RQ_SERIALIZER,
    },
}
RQ = {"COMMIT_MODE": "on_db_commit", "WORKER_CLASS": "jobs.worker.BftWorker"}

# The JSON API (/api/v1/, jobs/api/): project API keys (Authorization: Bearer ...) or a signed-in
# session (CSRF enforced), cursor-paginated lists, errors as JSON naming the field or row.
# Throttling: requests per API key, and per signed-in user, e.g. "600/min" (empty: none). The counts
# live in Django's cache: with the default (per-process) cache, each web process counts on its own.
BFT_API_KEY_RATE = os.getenv("BFT_API_KEY_RATE", "600/min")
BFT_API_USER_RATE = os.getenv("BFT_API_USER_RATE", "600/min")
REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "jobs.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["jobs.api.throttles.KeyRateThrottle"],  # the rates above
    "DEFAULT_PAGINATION_CLASS": "jobs.api.pagination.CursorPage",
    "PAGE_SIZE": 50,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "jobs.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "bftweb API",
    "DESCRIPTION": "Distill a teacher LM into a fine-tuned student from a pipeline: trainsets, "
    "programs, models, bootstrap runs, trace review, trace sets, fine-tunes and webhooks.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "ENUM_NAME_OVERRIDES": {
        "WorkStatusEnum": "jobs.models.queued_work.Status",
        "TrainsetStatusEnum": "jobs.models.trainsets.Trainset.Status",
        "TraceSelectionEnum": "jobs.models.runs.TraceSelection",
        "TrainsetSplitEnum": "jobs.models.trainsets.TrainsetRow.Split",
        "EvaluationSplitEnum": "jobs.models.evaluations.Evaluation.Split",
    },
}
# Webhooks (jobs/services/webhooks.py): hosts (example.org, 10.0.0.5:8080) or URL prefixes
# (https://hooks.example.org/bftweb) a project's webhook may point at. Empty: none.
BFT_WEBHOOK_HOSTS = envlist("BFT_WEBHOOK_HOSTS", "")
# Each delivery tries this many times, waiting BFT_WEBHOOK_BACKOFF_S, then twice that, ... between
# tries, each try given BFT_WEBHOOK_TIMEOUT_S (seconds).
BFT_WEBHOOK_ATTEMPTS = envint("BFT_WEBHOOK_ATTEMPTS", "5")
BFT_WEBHOOK_BACKOFF_S = float(os.getenv("BFT_WEBHOOK_BACKOFF_S", "2"))
BFT_WEBHOOK_TIMEOUT_S = float(os.getenv("BFT_WEBHOOK_TIMEOUT_S", "10"))
BFT_WEBHOOK_DELIVERY_TIMEOUT_S = envint("BFT_WEBHOOK_DELIVERY_TIMEOUT_S", "900")

# Production hardening: `manage.py check --deploy` is clean when DEBUG is False.
if not DEBUG:
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "True")
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", str(365 * 24 * 3600))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
