"""The one settings registry. Nothing else in Bridgehead reads ``os.environ``.

Every field is documented in docs/configuration.md; a test keeps the two in step.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class Settings(BaseSettings):
    """Configuration of one Bridgehead installation (env prefix ``BRIDGEHEAD_``)."""

    model_config = SettingsConfigDict(env_prefix="BRIDGEHEAD_", extra="ignore", frozen=True)

    home: Path = Field(
        default_factory=lambda: Path.home() / ".bridgehead",
        description="Directory for the embedded database, artifacts and the generated secret key.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. Default: a SQLite file `bridgehead.db` in the home directory (WAL mode). "
        "PostgreSQL: `postgresql+psycopg://user:password@host:5432/dbname`.",
    )
    artifact_root: str | None = Field(
        default=None,
        description="Where artifacts are stored: a local directory or any fsspec URL (`s3://bucket/prefix`). "
        "Default: `artifacts/` in the home directory.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key that signs the sign-in form's CSRF token (console sessions are random secrets kept "
        "hashed in the database). Default: generated once and kept in `secret.key` in the home "
        "directory. Set the same value on every server when several servers share one database.",
    )
    host: str = Field(default="127.0.0.1", description="Address the server binds to.")
    public_url: str | None = Field(
        default=None,
        description="The address people open the console at, e.g. `https://bridgehead.bank.example`: "
        "notifications (webhook payloads, e-mails) link to incidents with it. Unset, their links are relative "
        "(`/incidents/<id>`).",
    )
    port: int = Field(default=8080, ge=1, le=65535, description="Port the server listens on.")
    log_level: LogLevel = Field(default="INFO", description="Least severe log level written (JSON lines).")
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="Largest request body accepted; larger answers 413."
    )
    session_max_age_seconds: int = Field(
        default=8 * 3600, ge=60, description="Lifetime of a console login session."
    )
    cookie_secure: bool = Field(
        default=True,
        description="Mark the session cookie Secure. Browsers still accept it on http://localhost; set false "
        "only for plain-HTTP access from another host during evaluation.",
    )
    login_max_failures: int = Field(
        default=5, ge=1, description="Failed logins for one e-mail within the window before it is throttled."
    )
    login_window_seconds: int = Field(
        default=900, ge=1, description="Window over which failed logins are counted for throttling."
    )
    token_default_days: int = Field(
        default=90, ge=1, description="Lifetime of an API token when its creator does not give one."
    )
    admin_email: str | None = Field(
        default=None, description="With `admin_password`: the first admin, created on first start if absent."
    )
    admin_password: SecretStr | None = Field(
        default=None, description="Password of the first admin created from `admin_email`."
    )
    max_artifact_bytes: int = Field(
        default=5 * 1024**3,
        ge=1,
        description="Largest single artifact file accepted by an upload; larger answers 413.",
    )
    trusted_flavors: list[str] = Field(
        default_factory=list,
        description="Model formats that execute code when loaded and may nevertheless be loaded, e.g. "
        '`["pickle"]`. Empty by default: pickled models are stored but never unpickled. Each such load is audited.',
    )
    prediction_log_dir: Path | None = Field(
        default=None,
        description="Where the prediction log's Parquet files go (partitioned by endpoint and hour); "
        "defaults to `<home>/predictions`.",
    )
    prediction_log_flush_seconds: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="How often the prediction log is written to disk. A clean shutdown loses nothing; a killed "
        "process (`kill -9`) loses at most the predictions of the last interval.",
    )
    prediction_log_buffer_rows: int = Field(
        default=200_000,
        ge=1_000,
        le=5_000_000,
        description="How many buffered rows make the prediction log write before its interval is over. Each "
        "write has a fixed cost (a file, two fsyncs, a transaction, the writer taking turns with the requests for "
        "Python's lock), so fewer, larger writes cost the server less and make fewer files. The buffer holds "
        "about 200 bytes a row of 20 numeric inputs (40 MB at 200,000), and as much again while a write encodes "
        "it; while writes fail it holds up to ten times this many rows, then drops the oldest.",
    )
    prediction_log_disabled: bool = Field(
        default=False,
        description="Do not record predictions (no prediction log, no hourly statistics). Monitoring then has "
        "nothing to watch; meant for measuring the log's cost and for endpoints that must not keep inputs.",
    )
    smtp_host: str | None = Field(
        default=None,
        description="SMTP server that sends alert e-mails. Unset: e-mail notifications cannot be sent.",
    )
    smtp_port: int = Field(
        default=587, ge=1, le=65535, description="Port of the SMTP server (submission: 587)."
    )
    smtp_user: str | None = Field(
        default=None, description="User name to log in to the SMTP server with; unset: no login."
    )
    smtp_password: SecretStr | None = Field(default=None, description="Password for `smtp_user`.")
    smtp_starttls: bool = Field(
        default=True,
        description="Upgrade the SMTP connection with STARTTLS (certificate checked) before logging in; the "
        "server must offer it. Implicit TLS (port 465) is not supported.",
    )
    smtp_from: str = Field(
        default="bridgehead@localhost",
        min_length=3,
        description="Sender of alert e-mails: `alerts@bank.example` or `Bridgehead <alerts@bank.example>`.",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="How long one webhook delivery waits to connect and for each read and write before it "
        "counts as failed (and is retried).",
    )
    notification_max_attempts: int = Field(
        default=8,
        ge=1,
        le=30,
        description="How many times a notification (webhook or e-mail) is tried before it is given up, with "
        "backoff doubling from jobs_retry_backoff_seconds between attempts. Applies to deliveries queued after "
        "a change.",
    )
    serving_onnx: bool = Field(
        default=True,
        description="Serve scikit-learn models with ONNX Runtime when skl2onnx converts them and the converted "
        "model agrees with the original on the version's input example (labels equal, probabilities within "
        "1e-5); otherwise scikit-learn serves them.",
    )
    endpoint_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="How long inference keeps an endpoint's traffic policy read from the database. A deploy, "
        "promote or rollback made through the same process applies to the next request; one made through "
        "another process (another server, `bridgehead serve`) reaches inference within this time. `0` reads it "
        "on every request.",
    )
    token_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="How long the high-frequency lanes (inference, and metric, param and tag logging through "
        "MLflow's API) trust an API token this process has already authenticated, without reading it again. "
        "A revocation, deactivation or role change made through the same server applies at once; one made "
        "through another process (the CLI, another server) reaches these lanes within this time. Every other "
        "route checks the token on each request. `0` turns the cache off.",
    )
    serving_batch_rows: int = Field(
        default=256,
        ge=0,
        description="Micro-batching: requests scored on the event loop at the same moment for the same model "
        "version are scored together, in one model call of at most this many rows (requests are never split); "
        "no request waits for others to arrive. 0 turns it off.",
    )
    monitor_tick_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="How often the job worker checks which monitors are due (their interval passed, or their "
        "row count was reached) and queues their runs.",
    )
    max_predict_rows: int = Field(
        default=100_000,
        ge=1,
        description="Most rows one online prediction request may carry (larger batches: `bridgehead score`).",
    )
    serve_endpoint: str | None = Field(
        default=None,
        description="Set by `bridgehead serve ENDPOINT`: this process answers only that endpoint's inference "
        "routes (no API, no console), reading its deployment from the shared database.",
    )
    jobs_inprocess_worker: bool = Field(
        default=True,
        description="The server runs a job worker in its own process (the embedded default). Turn it off when "
        "separate `bridgehead worker` processes run the jobs.",
    )
    jobs_executor: str = Field(
        default="thread",
        min_length=1,
        max_length=100,
        description="Which executor runs the jobs a worker claims: `thread` (built in: threads of the worker's "
        "process) or the name a plugin registers through `register_executors`.",
    )
    jobs_concurrency: int = Field(
        default=2, ge=1, le=256, description="Jobs one worker runs at the same time (threads of `thread`)."
    )
    jobs_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="How often an idle worker looks for due jobs (jobs submitted through the same server "
        "wake its worker at once).",
    )
    jobs_heartbeat_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="How often a worker marks the jobs it runs as alive."
    )
    jobs_stale_seconds: float = Field(
        default=60.0,
        gt=0,
        le=86400,
        description="A running job whose worker has not marked it alive for this long is taken back (its "
        "worker died) and retried, or failed once it has used its attempts.",
    )
    jobs_max_attempts: int = Field(
        default=3, ge=1, le=100, description="Attempts a job gets before it is failed (1: no retry)."
    )
    jobs_retry_backoff_seconds: float = Field(
        default=10.0,
        ge=0,
        le=86400,
        description="Delay before the first retry of a failed job; it doubles with each further attempt "
        "(capped at one hour).",
    )
    jobs_retention_days: int = Field(
        default=30,
        ge=0,
        le=36500,
        description="Jobs that finished (succeeded, failed or cancelled) more than this many days ago are "
        "deleted, with their files under `jobs/<id>/` in the artifact store, by the workers about once an hour. "
        "`0` keeps them forever.",
    )
    migrate_on_start: bool = Field(
        default=True, description="Apply database migrations when the server starts."
    )
    url: str | None = Field(
        default=None,
        description="Client side: the Bridgehead server the Python SDK (`import bridgehead as bh`) talks to, "
        "e.g. `https://bridgehead.bank.example`.",
    )
    token: SecretStr | None = Field(
        default=None, description="Client side: the API token the Python SDK sends as a Bearer token."
    )

    @field_validator("public_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.query or parsed.fragment:
            raise ValueError(
                f"public_url must be an http:// or https:// address with a host, like "
                f"https://bridgehead.bank.example (got {value[:100]!r})"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("sqlite://", "sqlite+pysqlite://", "postgresql+psycopg://")):
            raise ValueError(
                "database_url must start with sqlite:// or postgresql+psycopg:// "
                f"(got {value.split(':', 1)[0]!r})"
            )
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'bridgehead.db'}"

    @property
    def resolved_artifact_root(self) -> str:
        return self.artifact_root or str(self.home / "artifacts")

    @property
    def resolved_prediction_log_dir(self) -> Path:
        return self.prediction_log_dir or self.home / "predictions"

    def resolved_secret_key(self) -> str:
        """The signing key: the configured one, else one generated and kept in the home directory."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.home / "secret.key"
        if path.exists():
            return path.read_text().strip()
        self.home.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        # O_EXCL so two processes starting together agree on one key.
        try:
            with path.open("x") as handle:
                handle.write(key)
            path.chmod(0o600)
        except FileExistsError:
            return path.read_text().strip()
        return key
