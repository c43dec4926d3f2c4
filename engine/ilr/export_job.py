"""The ILR export as background work (see :mod:`engine.background`), as the web page starts it.

:func:`start` checks in the request what the user can be told at once (``exports.bulk``, the
address allow-list, the UKPRN and year, that some record matches) and stores the job; :func:`run`
makes the file with :func:`~engine.ilr.xml_export.export_ilr`, which checks all of it again as
the user who started it, and reports how many learners each stage has gone through. Files are
kept in ``<instance>/exports/ilr/``. The result names the file and lists every learner left out
with the reasons.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import background, permissions
from engine.config import Settings
from engine.errors import TrackerError
from engine.ilr import xml_export
from engine.models import BackgroundJob
from engine.permissions import Actor
from engine.services import bulk
from engine.services.bulk import Origin

if TYPE_CHECKING:
    from engine.runtime import Runtime

KIND = "ilr_export"
#: the export's stages (see :data:`engine.ilr.xml_export.Progress`) in words
STAGES = {
    "records": "Checking each learner's record",
    "schema": "Checking the file against ESFA's schema",
    "schema_again": "Checking the file again without the learners ESFA's schema refused",
    "write": "Writing the file",
}
UNIT = "learners"


def folder(settings: Settings) -> Path:
    """Where ILR files made on the web are kept."""
    return settings.instance_path / "exports" / "ilr"


def start(
    runtime: Runtime,
    actor: Actor,
    *,
    ukprn: str,
    year: str,
    status: list[str],
    assignee: str,
    q: str,
    strict: bool,
    origin: Origin,
    ids: list[int] | None = None,
) -> BackgroundJob:
    """Check the export may be made and start it; returns the job.

    Raises:
        PermissionDenied: no ``exports.bulk`` (or ``items.view``) on ILR records, or ``origin``
            is not an allowed address (the refusal is recorded).
        ValidationFailed: the UKPRN or the year is not valid.
        TrackerError: no ILR record matches the filters.
        NotFound: an id in ``ids`` (learners ticked on the list) names no item the actor sees.
    """
    filters = {"ids": ids or [], "status": status, "assignee": assignee, "q": q, "ukprn": ukprn, "year": year}
    with runtime.session() as session:
        service = runtime.items(session, actor)
        tracker_type = service.registry.type(xml_export.TYPE_KEY)
        permissions.require(actor, "items.view", tracker_type)
        permissions.require(actor, "exports.bulk", tracker_type)
        bulk.require_allowed(session, actor, origin, "ilr_xml", xml_export.TYPE_KEY, filters)
        ukprn = xml_export.check_ukprn(ukprn)
        year = xml_export.collection_for(year).year
        count = records(service, ids, status, assignee, q)
    if not count:
        raise TrackerError(
            "There is no ILR record to export with these filters.",
            "Change the filters (a record in a cancelled state is only exported when its state is asked for).",
        )
    params = {**filters, "ukprn": ukprn, "year": year, "strict": strict, "address": origin.address, "records": count}
    return background.start(
        runtime, actor, KIND, params=params, subject=f"{ukprn} {year}", stage=STAGES["records"], unit=UNIT, total=count
    )


def records(service, ids: list[int] | None, status: list[str], assignee: str, q: str) -> int:
    """How many ILR records an export of ``ids`` (each checked as :func:`xml_export.chosen`
    does), or else of the filters, would go through; without a status, all but cancelled ones."""
    if ids:
        return len(xml_export.chosen(service, ids, None, None, None))
    workflow = service.registry.workflow_for(service.registry.type(xml_export.TYPE_KEY))
    _found, count = service.list(
        xml_export.TYPE_KEY,
        status=status or workflow.states_in(("open", "done")),
        assignee=assignee or None,
        q=q or None,
        limit=0,
    )
    return count


def run(runtime: Runtime, job: background.Run) -> dict[str, Any]:
    """Make the file (see :func:`~engine.ilr.xml_export.export_ilr`) and return what the result
    page shows: the file (when one was written) and each learner left out, with the reasons."""
    p = job.params

    def progress(done: int, total: int, stage: str) -> None:
        if STAGES[stage] != job.stage_name:
            job.stage(STAGES[stage], total, UNIT)
        job.progress(done, total)

    with runtime.session() as session:
        result = xml_export.export_ilr(
            runtime.items(session, job.actor),
            ukprn=p["ukprn"],
            year=p["year"],
            out_dir=folder(runtime.settings),
            item_ids=p.get("ids") or None,
            status=p.get("status") or None,
            assignee=p.get("assignee") or None,
            q=p.get("q") or None,
            strict=bool(p.get("strict")),
            origin=Origin(p.get("address"), runtime.settings.bulk_export_allow),
            progress=progress,
        )
    return {
        "written": result.written,
        "filename": result.filename,
        "ukprn": result.ukprn,
        "year": result.year,
        "strict": result.strict,
        "included": len(result.included),
        "excluded": [
            {
                "item_id": e.item_id,
                "title": e.title,
                "learn_ref_number": e.learn_ref_number,
                "problems": [{"path": pr.path, "message": pr.message, "advice": pr.advice} for pr in e.problems],
            }
            for e in result.excluded
        ],
    }
