"""Settings from ``TRACKER_*`` environment variables, with defaults that work on a laptop."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import TrackerError


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

    def plugin(self, name: str) -> PluginSettings:
        """The settings of plugin ``name``: ``TRACKER_PLUGIN_<NAME>_<KEY>`` as ``{key: value}``
        (``NAME`` upper-cased, ``-`` as ``_``; ``key`` lower-cased)."""
        prefix = f"TRACKER_PLUGIN_{name.upper().replace('-', '_')}_"
        values = {k[len(prefix) :].lower(): v for k, v in self.plugin_env.items() if k.startswith(prefix)}
        return PluginSettings(name, prefix, values)

    def __post_init__(self) -> None:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.instance_path / 'tracker.db'}"

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
