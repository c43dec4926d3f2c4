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
    health.checks.append(_plugins(runtime))
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


def _plugins(runtime: Runtime) -> Check:
    """Plugins that failed to load, and plugin errors stored in the last 24 hours (listed on
    ``/admin/plugins``): either turns the check red."""
    from engine.plugins import recent_error_count

    infos = runtime.plugins.info()
    loaded = sum(1 for i in infos if i.status == "loaded")
    failed = [i.name for i in infos if i.status == "failed"]
    disabled = sum(1 for i in infos if i.status == "disabled")
    detail = f"{loaded} loaded" + (f", {disabled} disabled" if disabled else "")
    if failed:
        detail += f"; failed to load: {', '.join(failed)}"
    try:
        with runtime.session() as session:
            recent = recent_error_count(session)
    except Exception:  # noqa: BLE001 - the database check above already says what is wrong
        recent = 0
    if recent:
        detail += f"; {recent} error{'' if recent == 1 else 's'} in the last 24 hours (see /admin/plugins)"
    return Check("plugins", not failed and not recent, detail)


def _safe(url: str) -> str:
    """The URL without a password, for display."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
