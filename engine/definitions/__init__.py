"""Tracker types, workflows and roles: loaded from data, checked, and kept in a registry."""

from engine.definitions.loader import load_registry
from engine.definitions.model import (
    Registry,
    Role,
    Rule,
    State,
    TaskList,
    TrackerType,
    Transition,
    Workflow,
)

__all__ = [
    "Registry",
    "Role",
    "Rule",
    "State",
    "TaskList",
    "TrackerType",
    "Transition",
    "Workflow",
    "load_registry",
]
