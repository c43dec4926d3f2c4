"""Settings from ``TRACKER_*`` environment variables, with defaults that work on a laptop."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path

from engine.errors import TrackerError

#: documents Tracker accepts unless ``TRACKER_UPLOAD_TYPES`` says otherwise: PDF, images, office files, text
DEFAULT_UPLOAD_TYPES = ("pdf", "png", "jpg", "jpeg", "gif", "docx", "doc", "xlsx", "xls", "odt", "ods", "txt", "csv")


def default_instance_path() -> Path:
    return Path(os.environ.get("TRACKER_INSTANCE_PATH", Path.cwd() / "instance")).resolve()


@dataclass
class Settings:
    """Everything the engine needs to know about its surroundings."""

    instance_path: Path = field(default_factory=default_instance_path)
    database_url: str = ""
    definitions_path: list[Path] = field(default_factory=list)
    redis_url: str = ""
    secret_key: str = ""
    base_url: str = "http://127.0.0.1:5000"
    #: how long a web sign-in lasts before the user must sign in again
    session_hours: float = 8.0
    #: where e-mail goes: smtp://[user:password@]host[:port][?starttls], or smtps:// for TLS; empty = no e-mail
    smtp_url: str = ""
    mail_from: str = "Tracker <tracker@localhost>"
    #: the hour (0-23, local time of the scheduler) after which each day's digest e-mails go out
    digest_hour: int = 7
    #: the time zone process automation schedules are written in (an IANA name)
    timezone: str = "Europe/London"
    #: plugin names (entry-point names) not to load, from ``TRACKER_PLUGINS_DISABLED=a,b``
    plugins_disabled: tuple[str, ...] = ()
    #: every ``TRACKER_PLUGIN_<NAME>_<KEY>`` variable; read one plugin's with :meth:`plugin`
    plugin_env: dict[str, str] = field(default_factory=dict)
    #: addresses bulk downloads (CSV and ILR exports) are allowed from; empty = any address
    bulk_export_allow: tuple[IPv4Network | IPv6Network, ...] = ()
    #: the provider's UKPRN, offered as the default of ILR exports; empty = asked for each time
    ukprn: str = ""
    #: where uploaded documents are stored (by content hash); empty = ``<instance>/documents``
    documents_path: Path | None = None
    #: the largest document accepted, in bytes
    upload_max_bytes: int = 10 * 1024 * 1024
    #: file name extensions accepted for documents; the content must be of the same kind
    upload_types: tuple[str, ...] = DEFAULT_UPLOAD_TYPES
    #: ``live`` (real data) or ``training`` (a nightly copy of LIVE: a banner on every page, no e-mail or SMS)
    environment: str = "live"
    #: LIVE only: the database ``tracker training refresh`` copies LIVE into; empty = no TRAINING copy
    training_database_url: str = ""
    #: LIVE only: where the refresh copies uploaded documents for TRAINING; empty = documents are not copied
    training_documents_path: Path | None = None
    #: LIVE only: the hour (0-23, UTC) after which the scheduler refreshes TRAINING, once a day
    training_refresh_hour: int = 2
    #: the RQ queue; empty = ``tracker`` on LIVE, ``tracker-training`` on TRAINING, so both can share one Redis
    queue_name: str = ""
    #: the largest file an import accepts, in bytes
    import_max_bytes: int = 50 * 1024 * 1024
    #: the most rows one import file may hold
    import_max_rows: int = 200_000
    #: minutes without a request after which a web sign-in ends (besides ``session_hours``)
    session_idle_minutes: float = 30.0
    #: failed sign-ins (passwords and two-factor codes) within ``lockout_minutes`` that lock an account
    lockout_attempts: int = 5
    lockout_minutes: float = 15.0
    #: reverse proxies in front of the app whose X-Forwarded-For/-Proto are trusted (0: none)
    proxy_count: int = 0
    #: seconds an outbox relay holds the rows it claimed; a relay that died is replaced after it
    outbox_lease_seconds: int = 300
    #: seconds a new database connection is tried again while the server refuses it (restarting)
    db_connect_retry_seconds: int = 5

    def plugin(self, name: str) -> PluginSettings:
        """The settings of plugin ``name``: ``TRACKER_PLUGIN_<NAME>_<KEY>`` as ``{key: value}``
        (``NAME`` upper-cased, ``-`` as ``_``; ``key`` lower-cased)."""
        prefix = f"TRACKER_PLUGIN_{name.upper().replace('-', '_')}_"
        values = {k[len(prefix) :].lower(): v for k, v in self.plugin_env.items() if k.startswith(prefix)}
        return PluginSettings(name, prefix, values)

    def __post_init__(self) -> None:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.instance_path / 'tracker.db'}"
        if self.documents_path is None:
            self.documents_path = self.instance_path / "documents"
        if self.environment not in ("live", "training"):
            raise TrackerError(
                f"TRACKER_ENVIRONMENT is neither live nor training: '{self.environment}'.",
                "Set it to live (real data, the default) or training (a copy of LIVE for practice).",
            )
        if not self.queue_name:
            self.queue_name = "tracker" if self.environment == "live" else "tracker-training"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        instance = Path(env.get("TRACKER_INSTANCE_PATH") or Path.cwd() / "instance").resolve()
        extra = [Path(p) for p in env.get("TRACKER_DEFINITIONS_PATH", "").split(os.pathsep) if p]
        return cls(
            instance_path=instance,
            database_url=env.get("TRACKER_DATABASE_URL", ""),
            definitions_path=extra,
            redis_url=env.get("TRACKER_REDIS_URL", ""),
            secret_key=env.get("TRACKER_SECRET_KEY", "") or _instance_secret(instance),
            base_url=env.get("TRACKER_BASE_URL", "http://127.0.0.1:5000").rstrip("/"),
            session_hours=_hours(env.get("TRACKER_SESSION_HOURS", "")),
            smtp_url=env.get("TRACKER_SMTP_URL", "").strip(),
            mail_from=env.get("TRACKER_MAIL_FROM", "").strip() or "Tracker <tracker@localhost>",
            digest_hour=_digest_hour(env.get("TRACKER_DIGEST_HOUR", "")),
            timezone=_timezone(env.get("TRACKER_TIMEZONE", "")),
            plugins_disabled=tuple(n.strip() for n in env.get("TRACKER_PLUGINS_DISABLED", "").split(",") if n.strip()),
            plugin_env={k: v for k, v in env.items() if k.startswith("TRACKER_PLUGIN_")},
            bulk_export_allow=_networks(env.get("TRACKER_BULK_EXPORT_ALLOW", "")),
            ukprn=_ukprn(env.get("TRACKER_UKPRN", "")),
            documents_path=Path(env["TRACKER_DOCUMENTS_PATH"]).resolve() if env.get("TRACKER_DOCUMENTS_PATH") else None,
            upload_max_bytes=_byte_size(env.get("TRACKER_UPLOAD_MAX_BYTES", "")),
            upload_types=_upload_types(env.get("TRACKER_UPLOAD_TYPES", "")),
            environment=env.get("TRACKER_ENVIRONMENT", "").strip().lower() or "live",
            training_database_url=env.get("TRACKER_TRAINING_DATABASE_URL", "").strip(),
            training_documents_path=(
                Path(env["TRACKER_TRAINING_DOCUMENTS_PATH"]).resolve()
                if env.get("TRACKER_TRAINING_DOCUMENTS_PATH")
                else None
            ),
            training_refresh_hour=_hour_of_day(
                "TRACKER_TRAINING_REFRESH_HOUR", env.get("TRACKER_TRAINING_REFRESH_HOUR", ""), 2
            ),
            queue_name=env.get("TRACKER_QUEUE_NAME", "").strip(),
            import_max_bytes=_import_limit("TRACKER_IMPORT_MAX_BYTES", env.get("TRACKER_IMPORT_MAX_BYTES", ""), "50M"),
            import_max_rows=_import_limit("TRACKER_IMPORT_MAX_ROWS", env.get("TRACKER_IMPORT_MAX_ROWS", ""), "200000"),
            **_security_settings(env),
            **_fault_settings(env),
        )


@dataclass(frozen=True)
class PluginSettings:
    """One plugin's settings from ``TRACKER_PLUGIN_<NAME>_<KEY>`` variables."""

    name: str
    prefix: str
    values: dict[str, str]

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key.lower(), default).strip() or default

    def require(self, key: str, example: str = "") -> str:
        """The value of ``key``; raises TrackerError naming the variable to set when it is empty."""
        value = self.get(key)
        if not value:
            hint = f", e.g. {self.prefix}{key.upper()}={example}" if example else ""
            raise TrackerError(
                f"The '{self.name}' plugin needs {self.prefix}{key.upper()}.",
                f"Set it in the environment{hint}, or switch the plugin off with TRACKER_PLUGINS_DISABLED={self.name}.",
            )
        return value

    def number(self, key: str, default: float) -> float:
        """A numeric setting; raises TrackerError when it is not a number."""
        text = self.get(key)
        if not text:
            return default
        try:
            return float(text)
        except ValueError:
            raise TrackerError(
                f"{self.prefix}{key.upper()} is not a number: '{text}'.", "Set it to a number, or leave it unset."
            ) from None


def _import_limit(name: str, text: str, default: str) -> int:
    """``TRACKER_IMPORT_MAX_BYTES`` / ``_ROWS``: a whole number, with K, M or G after it for
    thousands (bytes: 1024s); empty means ``default``."""
    text = (text.strip() or default).upper().removesuffix("B")
    factor = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
    number = text[:-1] if factor > 1 else text
    if not number.isdigit() or int(number) < 1:
        raise TrackerError(
            f"{name} is not a positive number: '{text}'.",
            f"Set it to a whole number (K, M or G may follow, e.g. 50M), or leave it unset for {default}.",
        )
    return int(number) * factor


def _security_settings(env) -> dict:
    """``TRACKER_SESSION_IDLE_MINUTES`` (30), ``TRACKER_LOCKOUT_ATTEMPTS`` (5; 0 switches lockout
    off), ``TRACKER_LOCKOUT_MINUTES`` (15) and ``TRACKER_PROXY_COUNT`` (0)."""
    from engine.limits import whole_number

    return {
        "session_idle_minutes": whole_number(env, "TRACKER_SESSION_IDLE_MINUTES", 30, low=1, high=24 * 60),
        "lockout_attempts": whole_number(env, "TRACKER_LOCKOUT_ATTEMPTS", 5, low=0, high=1000),
        "lockout_minutes": whole_number(env, "TRACKER_LOCKOUT_MINUTES", 15, low=1, high=7 * 24 * 60),
        "proxy_count": whole_number(env, "TRACKER_PROXY_COUNT", 0, low=0, high=5),
    }


def _fault_settings(env) -> dict:
    """``TRACKER_OUTBOX_LEASE_SECONDS`` (300) and ``TRACKER_DB_CONNECT_RETRY_SECONDS`` (5; 0: no retry)."""
    from engine.limits import whole_number

    return {
        "outbox_lease_seconds": whole_number(env, "TRACKER_OUTBOX_LEASE_SECONDS", 300, low=1, high=24 * 3600),
        "db_connect_retry_seconds": whole_number(env, "TRACKER_DB_CONNECT_RETRY_SECONDS", 5, low=0, high=600),
    }


def _byte_size(text: str) -> int:
    """``TRACKER_UPLOAD_MAX_BYTES``: bytes, or with a K, M or G suffix (``10M``); empty means 10 MB."""
    text = text.strip().upper().removesuffix("B")
    if not text:
        return 10 * 1024 * 1024
    factor = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1], 1)
    number = text[:-1] if factor > 1 else text
    if not number.isdigit() or int(number) < 1:
        raise TrackerError(
            f"TRACKER_UPLOAD_MAX_BYTES is not a size: '{text}'.",
            "Set it to a number of bytes, or with K, M or G after it (e.g. 10M), or leave it unset for 10 MB.",
        )
    return int(number) * factor


def _upload_types(text: str) -> tuple[str, ...]:
    """``TRACKER_UPLOAD_TYPES=pdf,jpg,png``: extensions Tracker can recognise by their content."""
    if not text.strip():
        return DEFAULT_UPLOAD_TYPES
    from engine.documents import KINDS

    names = tuple(dict.fromkeys(n.strip().lower().lstrip(".") for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in KINDS]
    if unknown or not names:
        raise TrackerError(
            f"TRACKER_UPLOAD_TYPES names file types Tracker cannot check: {', '.join(unknown) or '(none)'}.",
            f"Use some of: {', '.join(KINDS)}.",
        )
    return names


def _timezone(text: str) -> str:
    """``TRACKER_TIMEZONE`` as a known IANA time zone name; empty means Europe/London."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = text.strip() or "Europe/London"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TrackerError(
            f"TRACKER_TIMEZONE is not a time zone: '{text}'.",
            "Set it to a name such as Europe/London or UTC, or leave it unset for Europe/London.",
        ) from None
    return name


def _hour_of_day(name: str, text: str, default: int) -> int:
    """An hour of the day (0-23) from the variable ``name``; empty means ``default``."""
    if not text.strip():
        return default
    if not text.strip().isdigit() or not 0 <= int(text) <= 23:
        raise TrackerError(
            f"{name} is not an hour of the day: '{text}'.",
            f"Set it to a whole number from 0 to 23, or leave it unset for {default}.",
        )
    return int(text)


def _digest_hour(text: str) -> int:
    """``TRACKER_DIGEST_HOUR`` as an hour of the day; empty means 7 (digests after 07:00)."""
    if not text.strip():
        return 7
    if not text.strip().isdigit() or not 0 <= int(text) <= 23:
        raise TrackerError(
            f"TRACKER_DIGEST_HOUR is not an hour of the day: '{text}'.",
            "Set it to a whole number from 0 to 23, e.g. 7, or leave it unset for 7.",
        )
    return int(text)


def _hours(text: str) -> float:
    """``TRACKER_SESSION_HOURS`` as a positive number; empty means the default of 8."""
    if not text.strip():
        return 8.0
    try:
        hours = float(text)
    except ValueError:
        hours = 0.0
    if not 0 < hours <= 24 * 30:
        raise TrackerError(
            f"TRACKER_SESSION_HOURS is not a number of hours: '{text}'.",
            "Set it to a number of hours above 0 and up to 720, e.g. 8, or leave it unset for 8 hours.",
        )
    return hours


def _instance_secret(instance: Path) -> str:
    """A per-installation secret kept in the instance folder, so sessions survive restarts
    without anyone having to invent a key for the demo."""
    path = instance / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        instance.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        path.write_text(key)
        path.chmod(0o600)
        return key


def _networks(text: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """``TRACKER_BULK_EXPORT_ALLOW``: comma-separated addresses or CIDR ranges; empty means any address."""
    networks = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ip_network(part, strict=False))
        except ValueError:
            raise TrackerError(
                f"TRACKER_BULK_EXPORT_ALLOW has '{part}', which is not an address or CIDR range.",
                "List addresses or ranges separated by commas, e.g. 10.0.0.0/8,192.168.1.20,::1, "
                "or leave it unset to allow bulk downloads from any address.",
            ) from None
    return tuple(networks)


def _ukprn(text: str) -> str:
    """``TRACKER_UKPRN``: the provider's 8-digit UK provider reference number, or empty."""
    text = text.strip()
    if text and not (text.isdigit() and len(text) == 8 and int(text) >= 10_000_000):
        raise TrackerError(
            f"TRACKER_UKPRN is not a UKPRN: '{text}'.",
            "Set it to your 8-digit UK provider reference number, e.g. 10012345, or leave it unset.",
        )
    return text
