"""The hooks a Tracker plugin may implement. Nothing else lives in this module.

A plugin is a module (or any object) with functions named after these specs and marked
``@hookimpl``. Each hook takes keyword-named context; an implementation names only the
arguments it needs, so a new argument added here later breaks no plugin.

Registration hooks (``tracker_*s``) are called once per process when a
:class:`~engine.plugins.PluginHost` starts and return a list (or a mapping) that the host
merges with what the other plugins return. Lifecycle hooks (``tracker_item_*``) are
called by the outbox relay (``tracker worker`` / ``tracker scheduler``), after the change
is committed, never inside the request that made it. A hook that raises is recorded (log,
``/health``, ``/admin/plugins``) and its contribution skipped; a lifecycle hook that raises
is tried again through the outbox. See ``docs/plugins.md``.
"""

from __future__ import annotations

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("tracker")
hookimpl = HookimplMarker("tracker")


# -- definitions ---------------------------------------------------------------------------------


@hookspec
def tracker_definition_folders(settings):
    """Called when the definitions are loaded. Return a list of folders (``str`` or ``Path``),
    each laid out like ``TRACKER_DEFINITIONS_PATH`` folders (``tracker_types/``, ``workflows/``,
    ``roles.yaml``); they are loaded after the built-ins and the configured folders, and
    checked the same way (``tracker check`` reports their mistakes)."""


# -- forms ---------------------------------------------------------------------------------------


@hookspec
def tracker_field_widgets(settings):
    """Called once when the web app starts. Return a list of :class:`engine.plugins.FieldWidget`.
    A schema property with ``"x-widget": "<name>"`` is then drawn by that widget's ``render``
    (given a :class:`engine.plugins.WidgetContext`, it returns the HTML of the input); label,
    help and errors around it are drawn by Tracker. A widget that raises is recorded and the
    field is drawn as a plain input instead."""


@hookspec
def tracker_field_validators(settings):
    """Called when the definitions are loaded. Return ``{name: check}``; a schema property
    with ``"x-validator": "<name>"`` (or a list of names) is checked by ``check(value, schema)``
    on every save through the item service, after JSON Schema accepts the value. ``check``
    returns None when the value is fine and raises :class:`engine.plugins.Invalid(message,
    advice)` when it is not: that becomes a validation problem on the field (the save is
    refused, 422 on the web and API). Any other exception is recorded as a plugin error and
    refuses the save too, saying the value could not be checked."""


@hookspec
def tracker_lookups(settings):
    """Called once when the web app starts. Return ``{name: lookup}``. A schema property with
    ``"x-lookup": "<name>"`` (or ``{"name": ..., "inputs": {...}, "label": ...}``) gets a
    "Look up" button; the form calls ``GET /lookups/<name>?q=...`` and ``lookup(params)``
    (params: ``dict[str, str]``) returns a list of :class:`engine.plugins.LookupResult`
    (a label and the values to fill into neighbouring fields). Raise
    :class:`engine.plugins.LookupUnavailable(message)` when the outside service is down (the
    user sees the message and keeps typing) or :class:`engine.plugins.Invalid` for a query
    that cannot be answered (e.g. not a postcode)."""


# -- notifications -------------------------------------------------------------------------------


@hookspec
def tracker_notification_channels(settings):
    """Called when the outbox relay and the preferences page start. Return a list of
    :class:`engine.notifications.Channel` instances; each is offered on the preferences page
    and used by the relay like e-mail. ``send`` raising means "not delivered": the outbox
    row is tried again later and the failure is recorded."""


# -- item lifecycle (run from the outbox, after commit) -----------------------------------------


@hookspec
def tracker_item_created(item, payload, session, registry, settings):
    """Called by the outbox relay after an item was created and committed. ``item`` is the
    :class:`engine.models.Item` (None if it was deleted since), ``payload`` the event's data
    (``event``, ``item_id``, ``type``, ``actor``). Return value ignored. Raising makes the
    relay try this plugin's part again later (other plugins are not run again)."""


@hookspec
def tracker_item_updated(item, payload, session, registry, settings):
    """Called by the outbox relay after an item's data was changed; ``payload["paths"]``
    lists the JSON pointers of the fields that changed. The return value is ignored; raising
    retries this plugin's part through the outbox. Otherwise as ``tracker_item_created``."""


@hookspec
def tracker_item_transitioned(item, payload, session, registry, settings):
    """Called by the outbox relay after an item moved to another state; ``payload["from"]``
    and ``payload["to"]`` are the state keys. The return value is ignored; raising retries this
    plugin's part through the outbox. Otherwise as ``tracker_item_created``."""


@hookspec
def tracker_item_assigned(item, payload, session, registry, settings):
    """Called by the outbox relay after an item's assignee changed; ``payload["to"]`` is the
    new assignee's user name (None: unassigned), ``payload["from"]`` the previous one's. The
    return value is ignored; raising retries this plugin's part through the outbox. Otherwise
    as ``tracker_item_created``."""


@hookspec
def tracker_item_event(event, item, payload, session, registry, settings):
    """Called by the outbox relay for every item event, after the specific hook above when
    there is one; for plugins that treat every event alike (webhooks). ``event`` is one of:

    - ``created``, ``updated``, ``transitioned``, ``assigned``: as the hooks above;
    - ``progress_changed``: criteria were ticked or unticked (``payload["percent"]`` is the
      item's new percentage complete);
    - ``document_uploaded``, ``document_accepted``, ``document_rejected``,
      ``document_deleted``: a document of the item was uploaded, passed or failed its check,
      or deleted (``payload["document"]`` is its id).

    Events added later reach this hook too, so ignore the ones you do not know. The return
    value is ignored; raising retries this plugin's part through the outbox. Otherwise as
    ``tracker_item_created``."""


# -- import and export ---------------------------------------------------------------------------


@hookspec
def tracker_export_formats(settings):
    """Called when an export is prepared. Return a list of
    :class:`engine.services.exports.ExportFormat`; each is offered next to CSV wherever
    items are exported (``?format=<key>`` on the export links)."""


@hookspec
def tracker_import_formats(settings):
    """Called when a file is imported. Return a list of :class:`engine.plugins.ImportFormat`:
    each reads a file into rows (``dict`` of column name -> text) for the importers
    (``tracker hr import --format <key>``); CSV is built in."""


# -- web and command line ------------------------------------------------------------------------


@hookspec
def tracker_blueprints(settings):
    """Called once by ``create_app``. Return a list of Flask blueprints to register. Pages use
    ``webui.runtime()`` and ``webui.db_session()`` and change data through the engine's
    services. An exception raised by one of their views is recorded and shown as an error
    page; the rest of the app is unaffected."""


@hookspec
def tracker_menu_links(actor):
    """Called for each page's header. Return a list of :class:`engine.plugins.MenuLink` the
    signed-in ``actor`` (:class:`engine.permissions.Actor`) may follow, or an empty list."""


@hookspec
def tracker_cli_commands():
    """Called when the ``tracker`` command starts. Return a list of ``click`` commands or
    groups; each is added to the ``tracker`` group (a name already taken is refused and
    recorded). Commands get their database and services from ``engine.cli._runtime()``."""
