"""Finding, loading and calling plugins; keeping a failing plugin from taking anything down.

Plugins are found through the ``tracker.plugins`` entry-point group (built-in ones in
``plugins/`` register there too, in Tracker's own ``pyproject.toml``) and registered into a
pluggy manager under their entry-point name. :class:`PluginHost` wraps the manager:

- it calls each plugin's implementation of a hook separately, so one that raises is
  recorded (:class:`ErrorLog`: the log, ``/health``, ``/admin/plugins``) and skipped while
  the others still count;
- it merges what registration hooks return (definition folders, validators, lookups,
  widgets, channels, formats, blueprints, commands), once per process;
- it runs the item lifecycle hooks from the outbox (:meth:`PluginHost.handle_outbox`):
  an ``item_event`` row fans out into one ``plugin_event`` row per plugin that implements a
  lifecycle hook, so each plugin is retried on its own and a retry never runs the others
  twice.

A plugin that cannot be imported is reported (``tracker plugins list``, ``/admin/plugins``,
the log) and left out. ``TRACKER_PLUGINS_DISABLED`` switches plugins off by name; a
plugin's own settings come from ``TRACKER_PLUGIN_<NAME>_<KEY>`` (see
:meth:`engine.config.Settings.plugin`).
"""

from __future__ import annotations

import atexit
import csv
import io
import logging
import queue
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from engine import hookspecs
from engine.config import Settings
from engine.errors import TrackerError
from engine.models import Item, Outbox, PluginError, PluginState, utcnow

log = logging.getLogger(__name__)

#: the entry-point group plugins register in
ENTRY_POINT_GROUP = "tracker.plugins"
#: item lifecycle hooks, by event (the outbox payload's ``event``)
LIFECYCLE_HOOKS = {
    "created": "tracker_item_created",
    "updated": "tracker_item_updated",
    "transitioned": "tracker_item_transitioned",
    "assigned": "tracker_item_assigned",
}
#: how long an error keeps ``/health``'s plugin check red
RECENT = timedelta(hours=24)
#: the same error (plugin, hook, message) is stored once per this window; it is logged every time
REPEAT_WINDOW = timedelta(minutes=10)

hookimpl = hookspecs.hookimpl


# -- what plugins give and raise ------------------------------------------------------------------


class Invalid(Exception):  # noqa: N818 - reads as "raise Invalid(...)" in a validator
    """Raised by a field validator (or a lookup) for a value that is not acceptable.

    ``message`` says what is wrong; when it starts with a lower-case letter the field's
    label is put in front ("is not a UK mobile number" -> "Mobile is not a UK mobile
    number"). ``advice`` says how to put it right.
    """

    def __init__(self, message: str, advice: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.advice = advice


class LookupUnavailable(Exception):  # noqa: N818
    """Raised by a lookup when the service behind it cannot answer just now; ``message`` is
    shown to the user, who can still type the values in and save."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class LookupResult:
    """One answer of a lookup: what the user picks from (``label``) and the values it fills
    in, keyed by field name relative to the looked-up field's object (``{"town": "Leeds"}``)."""

    label: str
    values: dict[str, Any]

    def as_dict(self) -> dict:
        return {"label": self.label, "values": self.values}


@dataclass(frozen=True)
class WidgetContext:
    """What a field widget draws: the form input's ``name`` and ``id``, its current ``value``
    (form text), the field's ``label``, whether it is ``required`` or ``disabled``, its JSON
    ``schema``, the ``choices`` (value, label) of an enum, and ``attrs``: ARIA attributes
    (``aria-describedby``, ``aria-invalid``) the input must carry."""

    name: str
    id: str
    value: str
    label: str
    schema: dict
    required: bool = False
    disabled: bool = False
    choices: tuple[tuple[str, str], ...] = ()
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FieldWidget:
    """A way to draw a field, chosen with ``"x-widget": "<name>"`` in the schema.

    ``render(ctx)`` returns the HTML of the input (escape every value you put in it, e.g.
    with :func:`html_attrs`); its ``name`` must be ``ctx.name`` so the value is read back
    like any other field's, and it must carry ``ctx.attrs``.
    """

    name: str
    render: Callable[[WidgetContext], str]
    label: str = ""


def html_attrs(attrs: Mapping[str, Any]) -> str:
    """``key="value"`` pairs, escaped; a True value is written bare, False/None left out."""
    from markupsafe import escape

    parts = []
    for key, value in attrs.items():
        if value is True:
            parts.append(str(escape(key)))
        elif value not in (False, None):
            parts.append(f'{escape(key)}="{escape(value)}"')
    return " ".join(parts)


@dataclass(frozen=True)
class MenuLink:
    """A link in the page header (``tracker_menu_links``)."""

    label: str
    url: str


@dataclass(frozen=True)
class ImportFormat:
    """A file format importers read. ``read(data)`` yields ``(line, row)`` pairs, ``line``
    being the 1-based line (or row) of the file and ``row`` a mapping of column name to
    text; it raises :class:`Invalid` when the file as a whole cannot be read."""

    key: str
    label: str
    extensions: tuple[str, ...]
    read: Callable[[bytes], Iterator[tuple[int, dict[str, str]]]]


def read_csv(data: bytes) -> Iterator[tuple[int, dict[str, str]]]:
    """CSV with a header row, UTF-8 (a byte-order mark is allowed) or, failing that,
    Windows-1252 as spreadsheet programs save it. Column names are stripped and lower-cased."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise Invalid("The file is empty.", "Save the spreadsheet as CSV with a header row, then try again.") from None
    except csv.Error as exc:
        raise Invalid(f"The file is not CSV: {exc}.", "Save the spreadsheet as CSV, then try again.") from None
    names = [h.strip().lower() for h in header]
    try:
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            yield reader.line_num, {n: (values[i].strip() if i < len(values) else "") for i, n in enumerate(names)}
    except csv.Error as exc:
        raise Invalid(f"Line {reader.line_num} is not valid CSV: {exc}.", "Fix the quoting on that line.") from None


CSV_FORMAT = ImportFormat("csv", "CSV (comma-separated values)", (".csv",), read_csv)


# -- discovery -----------------------------------------------------------------------------------


@dataclass
class Discovered:
    """An entry point of the ``tracker.plugins`` group, loaded or not."""

    name: str
    value: str
    dist: str
    version: str
    module: Any = None
    error: str = ""


_discovered: list[Discovered] | None = None
_discover_lock = threading.Lock()


def discover(*, refresh: bool = False) -> list[Discovered]:
    """Every plugin installed in this environment, imported once per process (``refresh``
    looks again, e.g. after a ``pip install`` in the same process). An import failure is
    kept in ``error``, never raised."""
    global _discovered
    with _discover_lock:
        if _discovered is not None and not refresh:
            return _discovered
        found: dict[str, Discovered] = {}
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in found:  # the same distribution seen twice on sys.path
                continue
            dist = getattr(ep, "dist", None)
            entry = Discovered(
                ep.name,
                ep.value,
                dist.metadata["Name"] if dist is not None else "",
                dist.version if dist is not None else "",
            )
            try:
                entry.module = ep.load()
            # SystemExit too: a module calling sys.exit() at import (a script packaged as a
            # plugin) must not end the web process or the command line; Ctrl-C still does
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken plugin is reported, not fatal
                entry.error = f"could not be imported: {type(exc).__name__}: {exc}"
                log.error("plugin '%s' (%s) %s", ep.name, ep.value, entry.error)
            found[ep.name] = entry
        _discovered = list(found.values())
        return _discovered


# -- errors --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorRecord:
    at: datetime
    plugin: str
    hook: str
    message: str
    detail: str = ""


class ErrorLog:
    """Plugin errors: logged, kept in memory (the last 200) and handed to ``sink`` (the
    Runtime stores them in ``plugin_errors``, so every process's errors show on the admin
    page).

    The sink runs on a background thread: the error may happen inside a transaction that
    holds SQLite's write lock, and the request must not wait for itself. :meth:`flush`
    waits until everything recorded so far has been handed over.
    """

    def __init__(self, sink: Callable[[ErrorRecord], None] | None = None) -> None:
        self.sink = sink
        self.recent: deque[ErrorRecord] = deque(maxlen=200)
        self._last: dict[tuple[str, str, str], datetime] = {}
        self._queue: queue.Queue[ErrorRecord] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def record(self, plugin: str, hook: str, exc: BaseException) -> ErrorRecord:
        """Log the error and store it, unless the same plugin, hook and message were stored
        within :data:`REPEAT_WINDOW` (a menu-link hook failing on every page is one error)."""
        message = f"{type(exc).__name__}: {exc}"[:2000]
        detail = "".join(traceback.format_exception(exc))[-8000:]
        entry = ErrorRecord(utcnow(), plugin, hook, message, detail)
        log.error("plugin '%s' failed in %s and was skipped: %s", plugin, hook, message)
        key = (plugin, hook, message)
        last = self._last.get(key)
        if last is not None and entry.at - last < REPEAT_WINDOW:
            return entry
        self._last[key] = entry.at
        self.recent.append(entry)
        if self.sink is not None:
            self._queue.put(entry)
            self._start()
        return entry

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._drain, name="plugin-errors", daemon=True)
                self._thread.start()
                atexit.register(self.flush, 5.0)

    def _drain(self) -> None:
        while True:
            entry = self._queue.get()
            try:
                if self.sink is not None:
                    self.sink(entry)
            except Exception as exc:  # noqa: BLE001 - the database may be the thing that is down
                log.warning("plugin error could not be stored: %s", exc)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every recorded error has been stored (or ``timeout`` seconds passed);
        True when nothing is left waiting."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)


def store_error(session: Session, entry: ErrorRecord, *, once_per: timedelta | None = None) -> None:
    """Write one error to ``plugin_errors`` and commit. With ``once_per``, an error already
    stored (same plugin, hook and message) that long before is not stored again: for short
    processes (each ``tracker`` command), whose in-memory :data:`REPEAT_WINDOW` ends with them."""
    if once_per is not None:
        seen = session.scalar(
            select(PluginError.id)
            .where(
                PluginError.plugin == entry.plugin,
                PluginError.hook == entry.hook,
                PluginError.message == entry.message,
                PluginError.at >= entry.at - once_per,
            )
            .limit(1)
        )
        if seen is not None:
            return
    session.add(
        PluginError(at=entry.at, plugin=entry.plugin, hook=entry.hook, message=entry.message, detail=entry.detail)
    )
    session.commit()


def stored_errors(session: Session, *, limit: int = 50, offset: int = 0) -> tuple[list[PluginError], int]:
    """A page of stored plugin errors, newest first, and how many there are."""
    total = session.scalar(select(func.count()).select_from(PluginError)) or 0
    rows = session.scalars(select(PluginError).order_by(PluginError.id.desc()).limit(limit).offset(offset))
    return list(rows), total


def recent_error_count(session: Session, now: datetime | None = None) -> int:
    """Stored plugin errors of the last :data:`RECENT` (24 hours)."""
    since = (now or utcnow()) - RECENT
    return session.scalar(select(func.count()).select_from(PluginError).where(PluginError.at >= since)) or 0


def clear_errors(session: Session, actor=None, address: str = "") -> int:
    """Delete every stored plugin error (an admin read them), recorded in the audit log as
    ``actor`` (an :class:`~engine.permissions.Actor`; the system operator when None); returns how many."""
    from engine import audit
    from engine.permissions import Actor

    actor = actor or Actor.system()
    result = session.execute(delete(PluginError))
    count = result.rowcount or 0
    audit.record(session, "plugin.errors_cleared", actor=actor, address=address, detail={"count": count})
    session.commit()
    return count


# -- the host ------------------------------------------------------------------------------------


@dataclass
class PluginInfo:
    """One plugin as ``tracker plugins list`` and ``/admin/plugins`` show it."""

    name: str
    version: str
    dist: str
    hooks: list[str]
    status: str  # "loaded", "disabled" or "failed"
    error: str = ""
    module: str = ""


class PluginHost:
    """The plugins of one process, behind error isolation.

    Args:
        settings: ``plugins_disabled`` and each plugin's settings; passed to every hook.
        plugins: extra ``(name, plugin)`` pairs to register (tests, embedding); registered
            after the installed ones.
        entry_points: False registers only ``plugins`` (tests that want no installed plugin).
        sink: where errors are stored besides the log (the Runtime stores them in the database).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        plugins: list[tuple[str, Any]] | None = None,
        entry_points: bool = True,
        sink: Callable[[ErrorRecord], None] | None = None,
    ) -> None:
        self.settings = settings
        self.errors = ErrorLog(sink)
        self.pm = pluggy.PluginManager("tracker")
        self.pm.add_hookspecs(hookspecs)
        self._infos: dict[str, PluginInfo] = {}
        self._cache: dict[str, Any] = {}
        disabled = set(settings.plugins_disabled)
        for entry in discover() if entry_points else []:
            info = PluginInfo(entry.name, entry.version, entry.dist, [], "loaded", entry.error, entry.value)
            self._infos[entry.name] = info
            if entry.name in disabled:
                info.status = "disabled"
            elif entry.module is None:
                info.status = "failed"
            else:
                self._register(entry.name, entry.module, info)
        for name, plugin in plugins or ():
            module = getattr(plugin, "__name__", type(plugin).__name__)
            info = PluginInfo(name, getattr(plugin, "__version__", ""), "", [], "loaded", "", module)
            self._infos[name] = info
            if name in disabled:
                info.status = "disabled"
            else:
                self._register(name, plugin, info)

    def _register(self, name: str, plugin: Any, info: PluginInfo) -> None:
        try:
            self.pm.register(plugin, name=name)
            unknown = [
                attr
                for attr in dir(plugin)
                if attr.startswith("tracker_")
                and not hasattr(hookspecs, attr)
                and self.pm.parse_hookimpl_opts(plugin, attr) is not None
            ]
            if unknown:
                self.pm.unregister(plugin)
                raise ValueError(f"{', '.join(unknown)} is not a Tracker hook (see docs/plugins.md for their names)")
        except Exception as exc:  # noqa: BLE001 - e.g. a misspelt hook or an unknown argument name
            info.status, info.error = "failed", f"could not be registered: {exc}"
            self.errors.record(name, "register", exc)
            return
        info.hooks = sorted(
            caller.name for caller in self.pm.get_hookcallers(plugin) or () if caller.name.startswith("tracker_")
        )

    # -- introspection ---------------------------------------------------------------------------

    def info(self) -> list[PluginInfo]:
        """Every plugin found, loaded or not, by name."""
        return sorted(self._infos.values(), key=lambda i: i.name)

    def names(self) -> list[str]:
        """The plugins registered (loaded and not disabled)."""
        return [i.name for i in self.info() if i.status == "loaded"]

    def implementers(self, hook: str) -> list[str]:
        return [impl.plugin_name for impl in getattr(self.pm.hook, hook).get_hookimpls()]

    # -- calling ---------------------------------------------------------------------------------

    def call(self, hook: str, /, only: str | None = None, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call each implementation of ``hook`` (only plugin ``only``'s when given) with the
        arguments it names; returns ``(plugin, result)`` for those that did not raise. Those
        that raised are recorded and left out."""
        out = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            if only is not None and impl.plugin_name != only:
                continue
            try:
                result = impl.function(**{name: kwargs[name] for name in impl.argnames})
            except Exception as exc:  # noqa: BLE001 - see the module docstring
                self.errors.record(impl.plugin_name, hook, exc)
                continue
            out.append((impl.plugin_name, result))
        return out

    def call_strict(self, hook: str, /, only: str, **kwargs: Any) -> None:
        """Call plugin ``only``'s implementation of ``hook``; an exception is recorded and raised."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            if impl.plugin_name != only:
                continue
            try:
                impl.function(**{name: kwargs[name] for name in impl.argnames})
            except Exception as exc:
                self.errors.record(impl.plugin_name, hook, exc)
                raise

    def _list(self, hook: str, check: Callable[[Any], bool] | None = None, **kwargs: Any) -> list[tuple[str, Any]]:
        """``(plugin, element)`` for every element of every list returned by ``hook``; an
        element failing ``check`` is recorded as that plugin's error and left out."""
        out = []
        for plugin, result in self.call(hook, **kwargs):
            for element in result or ():
                if check is not None and not check(element):
                    self.errors.record(plugin, hook, TypeError(f"returned {element!r}, which is not what {hook} takes"))
                    continue
                out.append((plugin, element))
        return out

    def _mapping(self, hook: str, what: str) -> dict[str, tuple[str, Any]]:
        """``{name: (plugin, value)}`` merged from every mapping ``hook`` returns; the first
        plugin to use a name keeps it, a later one is recorded as an error."""
        out: dict[str, tuple[str, Any]] = {}
        for plugin, result in self.call(hook, settings=self.settings):
            if not isinstance(result, Mapping):
                if result is not None:
                    self.errors.record(plugin, hook, TypeError(f"returned {type(result).__name__}, not a mapping"))
                continue
            for name, value in result.items():
                if name in out:
                    owner = out[name][0]
                    self.errors.record(plugin, hook, ValueError(f"{what} '{name}' is already given by '{owner}'"))
                    continue
                if not callable(value):
                    self.errors.record(plugin, hook, TypeError(f"{what} '{name}' is not callable"))
                    continue
                out[name] = (plugin, value)
        return out

    def _once(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    # -- registration hooks ----------------------------------------------------------------------

    def definition_folders(self) -> list[Path]:
        return self._once(
            "folders",
            lambda: [
                Path(folder)
                for _p, folder in self._list(
                    "tracker_definition_folders", lambda f: isinstance(f, str | Path), settings=self.settings
                )
            ],
        )

    def field_validators(self) -> dict[str, Callable[[Any, dict], None]]:
        """``{name: check}`` wrapped so an unexpected exception is recorded (and then
        refuses the value, see :func:`engine.validation.make_validator`)."""

        def build() -> dict[str, Callable[[Any, dict], None]]:
            return {
                name: _guarded_validator(self, plugin, name, check)
                for name, (plugin, check) in self._mapping("tracker_field_validators", "validator").items()
            }

        return self._once("validators", build)

    def lookups(self) -> dict[str, tuple[str, Callable[[dict[str, str]], list[LookupResult]]]]:
        """``{name: (plugin, lookup)}``."""
        return self._once("lookups", lambda: self._mapping("tracker_lookups", "lookup"))

    def widgets(self) -> dict[str, tuple[str, FieldWidget]]:
        """``{name: (plugin, widget)}``; a name used twice keeps the first plugin's."""

        def build() -> dict[str, tuple[str, FieldWidget]]:
            out: dict[str, tuple[str, FieldWidget]] = {}
            for plugin, widget in self._list(
                "tracker_field_widgets", lambda w: isinstance(w, FieldWidget), settings=self.settings
            ):
                if widget.name in out:
                    self.errors.record(
                        plugin,
                        "tracker_field_widgets",
                        ValueError(f"widget '{widget.name}' is already given by '{out[widget.name][0]}'"),
                    )
                    continue
                out[widget.name] = (plugin, widget)
            return out

        return self._once("widgets", build)

    def render_widget(self, name: str, ctx: WidgetContext) -> str | None:
        """The HTML of widget ``name`` for ``ctx``, or None when there is no such widget or
        it raised (recorded): the caller then draws the field as usual."""
        found = self.widgets().get(name)
        if found is None:
            return None
        plugin, widget = found
        try:
            return str(widget.render(ctx))
        except Exception as exc:  # noqa: BLE001
            self.errors.record(plugin, f"widget {name}", exc)
            return None

    def channels(self) -> list:
        """Plugin notification channels, each wrapped so that a failing ``ready``, ``address``
        or ``send`` is recorded."""
        from engine.notifications import Channel

        def build() -> list:
            keys = {"inbox", "email"}
            out = []
            for plugin, channel in self._list(
                "tracker_notification_channels", lambda c: isinstance(c, Channel), settings=self.settings
            ):
                if not channel.key or channel.key in keys:
                    self.errors.record(
                        plugin,
                        "tracker_notification_channels",
                        ValueError(f"channel key '{channel.key}' is empty or already used"),
                    )
                    continue
                keys.add(channel.key)
                out.append(_guarded_channel(self, plugin, channel))
            return out

        return self._once("channels", build)

    def export_formats(self) -> list:
        from engine.services.exports import ExportFormat

        return self._once(
            "exports",
            lambda: [
                f
                for _p, f in self._list(
                    "tracker_export_formats", lambda f: isinstance(f, ExportFormat), settings=self.settings
                )
            ],
        )

    def import_formats(self) -> dict[str, ImportFormat]:
        """``{key: format}``: CSV first, then the plugins' (a key already taken is skipped)."""

        def build() -> dict[str, ImportFormat]:
            out = {CSV_FORMAT.key: CSV_FORMAT}
            for plugin, fmt in self._list(
                "tracker_import_formats", lambda f: isinstance(f, ImportFormat), settings=self.settings
            ):
                if fmt.key in out:
                    self.errors.record(plugin, "tracker_import_formats", ValueError(f"format '{fmt.key}' is taken"))
                    continue
                out[fmt.key] = fmt
            return out

        return self._once("imports", build)

    def blueprints(self) -> list[tuple[str, Any]]:
        """``(plugin, blueprint)`` pairs."""
        return self._list(
            "tracker_blueprints", lambda b: hasattr(b, "register") and hasattr(b, "name"), settings=self.settings
        )

    def menu_links(self, actor: Any) -> list[MenuLink]:
        return [link for _p, link in self._list("tracker_menu_links", lambda m: isinstance(m, MenuLink), actor=actor)]

    def cli_commands(self) -> list[tuple[str, Any]]:
        """``(plugin, click command)`` pairs."""
        return self._list("tracker_cli_commands", lambda c: hasattr(c, "name") and hasattr(c, "invoke"))

    # -- the item lifecycle, from the outbox -----------------------------------------------------

    def lifecycle_plugins(self) -> list[str]:
        """Plugins implementing any lifecycle hook, in registration order."""
        names: list[str] = []
        for hook in [*LIFECYCLE_HOOKS.values(), "tracker_item_event"]:
            for name in self.implementers(hook):
                if name not in names:
                    names.append(name)
        return names

    def handle_outbox(self, session: Session, row: Outbox, registry: Any) -> None:
        """Run the plugins' part of an outbox row (the relay calls this for each row).

        - ``item_event``: write one ``plugin_event`` row per lifecycle plugin, in this
          session (the caller commits), unless a previous attempt already did.
        - ``plugin_event``: call that plugin's lifecycle hooks for the event. Raises when
          one of them raised (recorded first), so the relay retries the row.
        """
        if row.kind == "item_event":
            names = self.lifecycle_plugins()
            if not names:
                return
            keys = {f"plugin:{row.id}:{name}": name for name in names}
            existing = set(session.scalars(select(Outbox.idempotency_key).where(Outbox.idempotency_key.in_(keys))))
            event = (row.payload or {}).get("event", "")
            for key, name in keys.items():
                if key not in existing:
                    session.add(
                        Outbox(
                            kind="plugin_event",
                            item_id=row.item_id,
                            idempotency_key=key,
                            payload={
                                **(row.payload or {}),
                                "plugin": name,
                                "source": row.id,
                                "text": f"plugin '{name}': item {event}",
                            },
                        )
                    )
        elif row.kind == "plugin_event":
            payload = dict(row.payload or {})
            name = payload.get("plugin", "")
            if name not in self.names():
                log.info("outbox %s: plugin '%s' is not loaded here; its event is dropped", row.id, name)
                return
            event = payload.get("event", "")
            item = session.get(Item, row.item_id) if row.item_id else None
            context = {
                "event": event,
                "item": item,
                "payload": payload,
                "session": session,
                "registry": registry,
                "settings": self.settings,
            }
            if event in LIFECYCLE_HOOKS:
                self.call_strict(LIFECYCLE_HOOKS[event], only=name, **context)
            self.call_strict("tracker_item_event", only=name, **context)


def _guarded_validator(host: PluginHost, plugin: str, name: str, check: Callable) -> Callable[[Any, dict], None]:
    def guarded(value: Any, schema: dict) -> None:
        try:
            check(value, schema)
        except Invalid:
            raise
        except Exception as exc:
            host.errors.record(plugin, f"validator {name}", exc)
            raise Invalid(
                "could not be checked",
                f"The '{name}' check failed: try again later, or ask an administrator to look at Admin > Plugins.",
            ) from exc

    guarded.plugin = plugin  # type: ignore[attr-defined]
    return guarded


def _guarded_channel(host: PluginHost, plugin: str, channel: Any) -> Any:
    """``channel`` with ``ready``, ``address`` and ``send`` recording failures as this
    plugin's errors. The exception still reaches the notifier: a failing ``send`` is retried
    through the outbox, a failing ``ready`` or ``address`` leaves the channel out for that
    recipient (see :meth:`engine.notifications.Notifier.deliver`)."""

    def guard(method: Callable, hook: str) -> Callable:
        def guarded(*args: Any) -> Any:
            try:
                return method(*args)
            except Exception as exc:
                host.errors.record(plugin, hook, exc)
                raise

        return guarded

    channel.ready = guard(channel.ready, f"channel {channel.key} ready")
    channel.address = guard(channel.address, f"channel {channel.key} address")
    channel.send = guard(channel.send, f"channel {channel.key}")
    channel.plugin = plugin
    return channel


# -- small values a plugin keeps -----------------------------------------------------------------


class PluginStore:
    """Key/value storage for one plugin in the ``plugin_state`` table; values are JSON
    objects. The caller commits (so a plugin's value can change in the same transaction as
    other work)."""

    def __init__(self, session: Session, plugin: str) -> None:
        self.session = session
        self.plugin = plugin

    def get(self, key: str) -> dict | None:
        row = self.session.get(PluginState, (self.plugin, key))
        return dict(row.value) if row is not None else None

    def put(self, key: str, value: dict) -> None:
        row = self.session.get(PluginState, (self.plugin, key))
        if row is None:
            self.session.add(PluginState(plugin=self.plugin, key=key, value=dict(value)))
        else:
            row.value = dict(value)

    def delete(self, key: str) -> None:
        row = self.session.get(PluginState, (self.plugin, key))
        if row is not None:
            self.session.delete(row)

    def items(self, prefix: str = "") -> list[tuple[str, dict]]:
        stmt = select(PluginState).where(PluginState.plugin == self.plugin)
        if prefix:
            stmt = stmt.where(PluginState.key.startswith(prefix, autoescape=True))
        return [(row.key, dict(row.value)) for row in self.session.scalars(stmt.order_by(PluginState.key))]


def require_setting(settings: Settings, plugin: str, key: str, example: str = "") -> str:
    """Shorthand for ``settings.plugin(plugin).require(key, example)``."""
    return settings.plugin(plugin).require(key, example)


__all__ = [
    "CSV_FORMAT",
    "ENTRY_POINT_GROUP",
    "ErrorLog",
    "ErrorRecord",
    "FieldWidget",
    "ImportFormat",
    "Invalid",
    "LookupResult",
    "LookupUnavailable",
    "MenuLink",
    "PluginHost",
    "PluginInfo",
    "PluginStore",
    "TrackerError",
    "WidgetContext",
    "discover",
    "hookimpl",
    "html_attrs",
    "read_csv",
]
