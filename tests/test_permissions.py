"""Permissions are checked in the engine, so every door gets the same answer."""

from __future__ import annotations

import pytest

from engine.errors import PermissionDenied
from tests.conftest import LEARNER

CONCERN = {"category": "online", "severity": "low", "reported_on": "2025-09-01"}


def test_create_needs_items_create(learner, make_user, service_for):
    manager = make_user("mona", "manager")
    with pytest.raises(PermissionDenied, match="mona may not create Safeguarding concern items"):
        service_for(manager).create("concern", dict(CONCERN), subject_id=learner.id)


def test_manager_reads_but_cannot_edit_or_move(system, learner, make_user, service_for):
    item = system.create("concern", dict(CONCERN), subject_id=learner.id)
    manager = service_for(make_user("mona", "manager"))
    assert manager.get(item.id).id == item.id
    with pytest.raises(PermissionDenied, match="may not edit"):
        manager.update(item.id, changes={"hours": 1})
    with pytest.raises(PermissionDenied, match="may not change the status"):
        manager.transition(item.id, "withdrawn")
    with pytest.raises(PermissionDenied):
        manager.assign(item.id, None)


def test_process_automation_needs_automation_create(make_user, service_for):
    clerk = service_for(make_user("clara", "tracker_creator"))
    with pytest.raises(PermissionDenied, match="automation.create"):
        clerk.create("process_automation", {})


def test_own_scope_sees_only_assigned_or_created_items(system, learner, make_user, service_for):
    worker = make_user("cass", "caseworker")
    mine = service_for(worker).create("concern", dict(CONCERN), subject_id=learner.id)
    assigned = system.create("concern", dict(CONCERN), subject_id=learner.id, assignee="cass")
    other = system.create("concern", dict(CONCERN), subject_id=learner.id)
    service = service_for(worker)
    found, total = service.list("concern")
    assert {i.id for i in found} == {mine.id, assigned.id}
    assert total == 2
    with pytest.raises(PermissionDenied, match="only view Safeguarding concern items assigned to or created by"):
        service.get(other.id)
    with pytest.raises(PermissionDenied):
        service.update(other.id, changes={"hours": 1})
    assert service.update(assigned.id, changes={"hours": 1}).data["hours"] == 1


def test_type_permissions_override_role_capabilities(system, make_user, service_for):
    """The built-in ILR type lets assessors view only, though their role may edit."""
    assessor = make_user("asa", "assessor")
    ilr_keys = system.registry.type("ilr").permissions.get("assessor")
    assert ilr_keys is not None and "items.edit" not in ilr_keys
    learner = system.create("learner", dict(LEARNER))
    from tests.test_examples import valid_data

    item = system.create("ilr", valid_data("ilr"), subject_id=learner.id, assignee="asa")
    service = service_for(assessor)
    assert service.get(item.id).id == item.id
    with pytest.raises(PermissionDenied, match="may not edit ILR"):
        service.update(item.id, changes={})


def test_unknown_user_in_as(service_for, system):
    from engine.errors import NotFound
    from engine.services import UserService

    with pytest.raises(NotFound, match="no user 'ghost'"):
        UserService(system.session, system.registry).get("ghost")


def test_automation_creator_creates_process_automations(make_user, service_for):
    from tests.test_examples import valid_data

    creator = service_for(make_user("alex", "automation_creator"))
    item = creator.create("process_automation", valid_data("process_automation"))
    assert item.created_by_id == creator.actor.user_id
    with pytest.raises(PermissionDenied):
        creator.create("apprenticeship", {})
