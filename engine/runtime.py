"""Wires settings, database and definitions together for one process (CLI, web, worker)."""

from __future__ import annotations

import logging
import time
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from engine import db
from engine.config import Settings
from engine.definitions import Registry, load_registry
from engine.permissions import Actor
from engine.services import ItemService, UserService

if TYPE_CHECKING:
    from engine.plugins import PluginHost

log = logging.getLogger(__name__)

#: how often a process outside a web request looks for a new publish of a definition
RELOAD_CHECK_SECONDS = 5.0


class Runtime:
    """Builds each collaborator once, on first use; nothing is opened at import time."""

    def __init__(self, settings: Settings | None = None, *, plugins: PluginHost | None = None) -> None:
        self.settings = settings or Settings.from_env()
        if plugins is not None:
            if plugins.errors.sink is None:
                plugins.errors.sink = self._store_plugin_error
            self.__dict__["plugins"] = plugins

    @cached_property
    def plugins(self) -> PluginHost:
        """The installed plugins less ``TRACKER_PLUGINS_DISABLED``; their errors are stored in the database."""
        from engine.plugins import PluginHost

        return PluginHost(self.settings, sink=self._store_plugin_error)

    def _store_plugin_error(self, entry) -> None:
        from engine.plugins import store_error

        with self.session() as session:
            store_error(session, entry)

    def channels(self) -> list:
        """The notification channels: the inbox, e-mail, then the plugins' channels."""
        from engine.notifications import default_channels

        return default_channels() + self.plugins.channels()

    @property
    def registry(self) -> Registry:
        """The definitions from folders with the published types kept in the database laid
        over them. A publish in any process is picked up: the web app checks on every request
        (:meth:`refresh_definitions`), other processes at most every few seconds."""
        state = self.__dict__.get("_definitions")
        if state is None or time.monotonic() - state[2] > RELOAD_CHECK_SECONDS:
            self.refresh_definitions()
            state = self.__dict__["_definitions"]
        return state[0]

    def refresh_definitions(self) -> bool:
        """Rebuild the registry if a type was published since it was built (one cheap query);
        True when it was rebuilt."""
        from engine.definitions import store

        generation = store.generation(self.engine)
        state = self.__dict__.get("_definitions")
        # -1: the database cannot be asked just now; what was loaded stays until it can
        if state is not None and (state[1] == generation or generation < 0 <= state[1]):
            self.__dict__["_definitions"] = (state[0], state[1], time.monotonic())
            return False
        registry = store.merge(self.file_registry, store.published(self.engine))
        for problem in registry.problems[len(self.file_registry.problems) :]:
            log.warning("definition problem: %s", problem)
        self.__dict__["_definitions"] = (registry, generation, time.monotonic())
        return state is not None

    @cached_property
    def file_registry(self) -> Registry:
        """The definitions from the built-in and configured folders (and plugins) only."""
        from engine.definitions.plugin_refs import check_plugin_references

        validators = self.plugins.field_validators()
        registry = load_registry([*self.settings.definitions_path, *self.plugins.definition_folders()])
        check_plugin_references(registry, set(validators))
        registry.field_validators = validators
        for problem in registry.problems:
            log.info("definition problem: %s", problem)
        if registry.problems:
            log.warning(
                "%d definition problem(s): the definitions concerned were skipped; run 'tracker check' to list them",
                len(registry.problems),
            )
        return registry

    @cached_property
    def engine(self):
        from engine import training

        built = db.make_engine(self.settings.database_url, connect_retry_seconds=self.settings.db_connect_retry_seconds)
        try:
            training.check_start(self.settings, built)  # TRAINING never runs on LIVE's database
        except Exception:
            built.dispose()
            raise
        return built

    @cached_property
    def sessions(self):
        """Sessions whose commits send new outbox rows on (see :meth:`dispatch`)."""
        from engine import outbox

        factory = db.session_factory(self.engine)
        outbox.track_commits(factory, self.dispatch)
        return factory

    def dispatch(self, outbox_ids: list[int]) -> None:
        """Send committed outbox rows on: to RQ with Redis, through the relay here without."""
        from engine.jobs import Dispatcher

        Dispatcher(self)(outbox_ids)

    def relay(self, **kwargs):
        """An outbox relay on this runtime's database and settings (kwargs: see :class:`engine.outbox.Relay`)."""
        from engine.outbox import Relay

        kwargs.setdefault("channels", self.channels())
        kwargs.setdefault("plugins", self.plugins)
        return Relay(self.sessions, LiveRegistry(self), self.settings, **kwargs)

    def session(self) -> Session:
        return self.sessions()

    def items(self, session: Session, actor: Actor) -> ItemService:
        return ItemService(session, actor, self.registry)

    def definitions(self, session: Session, actor: Actor):
        """The service for types kept in the database (see :mod:`engine.services.definitions`)."""
        from engine.services.definitions import DefinitionService

        return DefinitionService(session, actor, self.registry, after_publish=self.definitions_changed)

    def definitions_changed(self) -> Registry:
        """After a publish: rebuild the registry at once and derive the task-list indexes it
        needs; returns the new registry. An index that cannot be made now is logged (``tracker
        db indexes`` makes it later); the publish stands."""
        from engine import indexes

        self.refresh_definitions()
        try:
            indexes.sync(self.engine, self.registry)
        except Exception:  # noqa: BLE001 - counts still work without the index, only slower
            log.exception("the task-list indexes could not be brought up to date after a publish")
        return self.registry

    def users(self, session: Session, actor: Actor | None = None, address: str = "") -> UserService:
        """The user service acting as ``actor`` (the system operator when None) from ``address``."""
        s = self.settings
        return UserService(
            session,
            self.registry,
            actor=actor,
            address=address,
            lockout_attempts=s.lockout_attempts,
            lockout_minutes=s.lockout_minutes,
        )

    def actor(self, session: Session, username: str | None) -> Actor:
        """The actor for ``username``, or the system operator when None."""
        if username is None:
            return Actor.system()
        return Actor.for_user(self.users(session).get(username), self.registry)


class LiveRegistry:
    """Stands in for the registry in collaborators that live longer than a request (a
    worker's relay): every attribute is read from the runtime's current registry, so a
    definition published meanwhile reaches them too."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def __getattr__(self, name: str):
        return getattr(self._runtime.registry, name)
