"""What the create and item pages offer comes from the engine: creatable types, assignable users."""

from __future__ import annotations

import pytest

from engine.errors import PermissionDenied


def test_creatable_types_follow_each_types_create_capability(make_user, service_for, system):
    clerk = service_for(make_user("clara", "tracker_creator"))
    keys = [t.key for t in clerk.creatable_types()]
    assert "concern" in keys and "learner" in keys and "apprenticeship" in keys
    assert "process_automation" not in keys  # needs automation.create
    assert keys == [t.key for t in sorted(clerk.creatable_types(), key=lambda t: t.name.lower())]
    automation = system.registry.type("process_automation")
    assert not clerk.may_create(automation)
    with pytest.raises(PermissionDenied, match="automation.create"):
        clerk.require_create(automation)
    assert "process_automation" in [t.key for t in system.creatable_types()]
    manager = service_for(make_user("mona", "manager"))
    assert manager.creatable_types() == []
    with pytest.raises(PermissionDenied, match="may not create Safeguarding concern items"):
        manager.require_create(system.registry.type("concern"))


def test_assignable_users_are_active_and_may_view_the_type(make_user, service_for, users, session, system):
    make_user("clara", "tracker_creator")
    make_user("pay", "payroll")  # finance.view only: cannot see concerns
    make_user("cass", "caseworker")  # own scope: may be assigned one
    make_user("gone", "dsl")
    users.deactivate("gone")
    session.commit()
    concern = system.registry.type("concern")
    assert [u.username for u in system.assignable_users(concern)] == ["cass", "clara"]
