"""What an operator needs to know at a glance: database, definitions, Redis, outbox."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine import db, outbox
from engine.runtime import Runtime


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Health:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def check(runtime: Runtime) -> Health:
    """Probe each dependency; a failure is reported, never raised."""
    health = Health()
    try:
        revision = db.current_revision(runtime.engine)
        health.checks.append(
            Check("database", revision is not None, f"revision {revision}" if revision else "empty: run 'tracker init'")
        )
        if revision:
            with runtime.session() as session:
                counts = outbox.counts(session)  # "pending" includes rows being delivered
                pending, dead = counts["pending"], counts["dead"]
            health.checks.append(Check("outbox", not dead, f"{pending} pending, {dead} dead-lettered"))
    except Exception as exc:  # noqa: BLE001 - the point is to report it
        health.checks.append(Check("database", False, f"unreachable: {exc}"))
    registry = runtime.registry
    health.checks.append(
        Check(
            "definitions",
            not registry.problems,
            f"{len(registry.types)} types, {len(registry.workflows)} workflows, {len(registry.roles)} roles"
            + (f"; {len(registry.problems)} problems (run 'tracker check')" if registry.problems else ""),
        )
    )
    url = runtime.settings.redis_url
    if not url:
        health.checks.append(Check("redis", True, "not configured: jobs run in-process"))
    else:
        import redis

        try:
            info = redis.Redis.from_url(url, socket_connect_timeout=2).info("server")
            health.checks.append(Check("redis", True, f"redis {info.get('redis_version')} at {_safe(url)}"))
        except Exception as exc:  # noqa: BLE001
            health.checks.append(Check("redis", False, f"unreachable at {_safe(url)}: {exc}"))
    return health


def _safe(url: str) -> str:
    """The URL without a password, for display."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
