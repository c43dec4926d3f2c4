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
        )


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
