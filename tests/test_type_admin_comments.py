"""Builder edits keep what an admin wrote in the YAML documents: comments, key order, flow or
block style and hand layout, wherever they still apply (engine.definitions.documents.edit_yaml,
used by Draft.texts); what cannot be kept is said on the Documents tab. Also: the round-trip
reader runs only on text the safe loader and the definition limits have passed."""

from __future__ import annotations

import difflib
import os
import re
import time
from pathlib import Path

import pytest
import yaml

from engine.definitions import builder
from engine.definitions.builder import Draft
from engine.definitions.documents import dump_round_trip, edit_yaml, load_round_trip, set_top_level
from engine.definitions.sourcemap import parse_yaml
from engine.definitions.store import Texts
from engine.errors import ValidationFailed
from engine.permissions import Actor
from tests import webhelpers
from tests.webhelpers import create_users, csrf, sign_in

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [
    "tracker_types/apprenticeship/type.yaml",
    "workflows/apprenticeship.yaml",
    "tracker_types/compliance/type.yaml",
]

cheap_hashing = webhelpers.cheap_hashing
new_app = webhelpers.new_app


def read(path: str) -> str:
    return (ROOT / path).read_text(encoding="utf-8")


def comments(text: str) -> list[str]:
    """Every comment of ``text``: whole comment lines and the comments at the end of a line."""
    return [m.group(1) for line in text.splitlines() if (m := re.search(r"(?:^|\s)(#\s.*)$", line))]


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """(lines taken out, lines put in), as a line diff shows them."""
    out, put = [], []
    for line in difflib.ndiff(before.splitlines(), after.splitlines()):
        if line.startswith("- "):
            out.append(line[2:])
        elif line.startswith("+ "):
            put.append(line[2:])
    return out, put


def apprenticeship_texts() -> Texts:
    return Texts(
        read("tracker_types/apprenticeship/schema.json"),
        read("tracker_types/apprenticeship/type.yaml"),
        read("workflows/apprenticeship.yaml"),
    )


# -- the shipped files round-trip as they are ---------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED)
def test_a_shipped_document_round_trips_byte_identical(path):
    text = read(path)
    assert dump_round_trip(load_round_trip(text)) == text
    assert edit_yaml(text, yaml.safe_load(text)) == text


def test_a_list_wrapped_by_hand_is_kept_where_no_edit_reaches_it():
    text = read("workflows/compliance.yaml")
    wrapped = [line for line in text.splitlines() if line.startswith("                id_document_type")]
    assert wrapped, "the compliance workflow wraps a read_only list over lines"
    assert edit_yaml(text, yaml.safe_load(text)) == text

    value = yaml.safe_load(text)
    value["states"].append({"key": "archived", "label": "Archived", "category": "done"})
    out = edit_yaml(text, value)
    assert yaml.safe_load(out) == value
    assert wrapped[0] in out.splitlines() and comments(out) == comments(text)

    # an edit inside the wrapped list writes it on one line; its comment above stays
    value = yaml.safe_load(text)
    value["state_fields"]["approved"]["read_only"].remove("approved_on")
    out = edit_yaml(text, value)
    assert yaml.safe_load(out) == value
    assert comments(out) == comments(text)
    assert "    read_only: [programme_type, signup_date," in out and "approved_on]" not in out


def test_parse_and_write_with_no_operation_keeps_every_document():
    texts = apprenticeship_texts()
    assert Draft.parse(texts).texts(texts) == texts


# -- edits keep the comments elsewhere -----------------------------------------------------------------


def test_renaming_a_field_adding_a_state_editing_a_task_list_and_assigning_keep_the_comments():
    texts = apprenticeship_texts()
    d = Draft.parse(texts)
    builder.rename_field(d, "employer_name", "employer")
    builder.add_state(d, "paused", "Paused", "open")
    index = next(i for i, t in enumerate(d.manifest["tasklists"]) if t["key"] == "due_30_days")
    builder.put_tasklist(d, {**d.manifest["tasklists"][index], "label": "Due within 30 days"}, index=index)
    builder.set_assignment(d, "round_robin", "assessor")
    out = d.texts(texts)

    for before, after, value in (
        (texts.type_yaml, out.type_yaml, d.manifest),
        (texts.workflow_yaml, out.workflow_yaml, d.workflow),
    ):
        assert comments(after) == comments(before)
        assert yaml.safe_load(after) == value
        assert parse_yaml(after, Path("type.yaml")).value == value  # the loader's own reader
    # only the lines the edits reach changed, written as the neighbours are
    gone, added = changed_lines(texts.type_yaml, out.type_yaml)
    assert gone == [
        "list_columns: [standard_title, employer_name, start_date, planned_end_date, next_review_due]",
        "    fields: [employer_name, funding_type, total_negotiated_price, employer_contribution]",
        "    label: Due to complete in next 30 days",
    ]
    assert added == [
        "list_columns: [standard_title, employer, start_date, planned_end_date, next_review_due]",
        "    fields: [employer, funding_type, total_negotiated_price, employer_contribution]",
        "    label: Due within 30 days",
        "assignment:",
        "  rule: round_robin",
        "  role: assessor",
    ]
    gone, added = changed_lines(texts.workflow_yaml, out.workflow_yaml)
    assert len(gone) == 3 and all("employer_name" in line for line in gone)
    assert added[0] == "  - {key: paused, label: Paused, category: open}"  # flow style, like the other states
    assert [line.replace("employer_name", "employer") for line in gone] == added[1:]
    assert out.schema_json != texts.schema_json and out.roles_yaml == texts.roles_yaml


TASKLISTS = """\
# Bike loans: the lists on the home page
key: bike_loan
tasklists:
  # overdue: the urgent one
  - key: overdue
    label: Overdue
    filter: {status_category: [open]}
  # mine: what I hold
  - key: mine   # the assignee's own
    label: Mine
    filter: {assignee: me}
# rules come last
rules: []
"""


def test_a_removed_entry_takes_its_comment_and_leaves_the_others_in_place():
    value = yaml.safe_load(TASKLISTS)
    first_gone = edit_yaml(TASKLISTS, {**value, "tasklists": value["tasklists"][1:]})
    assert comments(first_gone) == [c for c in comments(TASKLISTS) if "overdue" not in c]
    assert "# mine: what I hold\n  - key: mine" in first_gone

    last_gone = edit_yaml(TASKLISTS, {**value, "tasklists": value["tasklists"][:1]})
    assert comments(last_gone) == [c for c in comments(TASKLISTS) if "mine" not in c and "assignee" not in c]
    assert last_gone.endswith("    filter: {status_category: [open]}\n# rules come last\nrules: []\n")


def test_a_new_entry_goes_in_front_of_the_comment_of_what_follows_and_looks_like_its_neighbours():
    value = yaml.safe_load(TASKLISTS)
    new = {"key": "free", "label": "Free", "filter": {"assignee": "none"}}
    at_end = edit_yaml(TASKLISTS, {**value, "tasklists": [*value["tasklists"], new]})
    assert at_end.endswith(
        "  - key: free\n    label: Free\n    filter: {assignee: none}\n# rules come last\nrules: []\n"
    )
    between = edit_yaml(TASKLISTS, {**value, "tasklists": [value["tasklists"][0], new, value["tasklists"][1]]})
    assert "filter: {assignee: none}\n  # mine: what I hold\n  - key: mine   # the assignee's own\n" in between
    for out in (at_end, between):
        assert comments(out) == comments(TASKLISTS)


def test_a_moved_entry_keeps_its_own_comment_and_quoting_is_kept():
    text = 'key: x\ntitle: "{{ data.name }}"   # shown in lists\nlist_columns: [a, b, c]  # in this order\n'
    out = edit_yaml(text, {"key": "x", "title": "{{ data.name }}", "list_columns": ["b", "a", "c"]})
    assert out == 'key: x\ntitle: "{{ data.name }}"   # shown in lists\nlist_columns: [b, a, c]  # in this order\n'


def test_setting_a_top_level_block_keeps_the_comments():
    text = "# the type\nkey: x\nversion:\n  - 1\n# the end\nname: X  # its name\n"
    out = set_top_level(text, "version", 2)
    assert yaml.safe_load(out) == {"key": "x", "version": 2, "name": "X"}
    assert comments(out) == comments(text)


def test_anchors_and_a_key_given_twice_are_written_so_they_still_mean_the_edit():
    anchored = "base: &b {a: 1, b: 2}\nother:\n  <<: *b\n  c: 3   # c\nname: x\n"
    value = yaml.safe_load(anchored)
    assert edit_yaml(anchored, {**value, "name": "y"}) == anchored.replace("name: x", "name: y")
    changed = {**value, "other": {**value["other"], "c": 4}}
    out = edit_yaml(anchored, changed)
    assert yaml.safe_load(out) == changed and "c: 4   # c" in out

    twice = "a: 1\na: 2   # the safe loader keeps the last\nb: 3\n"
    assert yaml.safe_load(edit_yaml(twice, {"a": 2, "b": 4})) == {"a": 2, "b": 4}


# -- hostile documents never reach the round-trip reader -------------------------------------------------


def test_an_alias_bomb_is_refused_before_the_builder_walks_it():
    bomb = ["key: x", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        bomb.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    texts = Texts('{"type": "object", "properties": {}}', "\n".join(bomb) + "\n")
    started = time.monotonic()
    with pytest.raises(ValidationFailed) as exc:
        Draft.parse(texts)
    assert time.monotonic() - started < 5
    [problem] = exc.value.problems
    assert problem.path == "type.yaml" and "too large" in problem.message and "aliases count" in problem.message


def test_too_long_and_too_deep_documents_are_refused():
    schema = '{"type": "object", "properties": {}}'
    with pytest.raises(ValidationFailed) as exc:
        Draft.parse(Texts(schema, "key: x\nnotes: " + "x" * 1_000_001 + "\n"))
    assert "characters long" in exc.value.problems[0].message
    with pytest.raises(ValidationFailed) as exc:
        Draft.parse(Texts(schema, "key: x\n", "deep: " + "[" * 60 + "]" * 60 + "\n"))
    assert exc.value.problems[0].path == "workflow" and "levels deep" in exc.value.problems[0].message


def test_a_python_tag_is_refused_and_the_round_trip_reader_builds_no_objects(monkeypatch):
    hostile = "key: !!python/object/apply:os.system ['echo owned']\n"
    with pytest.raises(ValidationFailed) as exc:
        Draft.parse(Texts('{"type": "object"}', hostile))
    assert exc.value.problems[0].message.startswith("The type.yaml document is not valid YAML")

    def refuse(*args):
        raise AssertionError("the round-trip reader ran a command")

    monkeypatch.setattr(os, "system", refuse)
    value = load_round_trip(hostile)  # ruamel's round-trip mode keeps the tag as data
    assert not callable(value["key"]) and isinstance(value["key"], list)


# -- the Documents tab says what cannot be kept --------------------------------------------------------


@pytest.fixture
def admin(new_app):
    app = new_app(RATELIMIT_ENABLED=False)
    create_users(app, boss=["admin"])
    client = app.test_client()
    sign_in(client, "boss")
    return app, client


def post(client, url: str, data: dict):
    return client.post(url, data={**data, "csrf_token": csrf(client, url)})


def test_editor_edits_of_a_copied_type_keep_its_comments_and_the_documents_tab_says_what_they_cannot(admin):
    app, client = admin
    r = post(
        client,
        "/admin/types/new",
        {"key": "appr_copy", "name": "Apprenticeship copy", "subject": "learner", "copy_from": "apprenticeship"},
    )
    assert r.status_code == 303
    base = "/admin/types/appr_copy"
    state = {"action": "add_state", "key": "paused", "label": "Paused", "category": "open"}
    r = post(client, f"{base}/workflow", state)
    assert r.status_code == 303
    r = post(client, f"{base}/assignment", {"rule": "round_robin", "role": "assessor", "field": ""})
    assert r.status_code == 303

    rt = app.extensions["tracker"]
    with rt.session() as session:
        texts = rt.definitions(session, Actor.system()).texts_of("appr_copy")
    assert comments(texts.workflow_yaml) == comments(read("workflows/apprenticeship.yaml"))
    assert comments(texts.type_yaml) == comments(read("tracker_types/apprenticeship/type.yaml"))
    assert "  - {key: paused, label: Paused, category: open}\n" in texts.workflow_yaml
    assert yaml.safe_load(texts.type_yaml)["assignment"] == {"rule": "round_robin", "role": "assessor"}

    page = client.get(f"{base}/documents").get_data(as_text=True)
    note = re.search(r'<p class="help" id="builder-edits-note">(.*?)</p>', page, re.S)
    assert note is not None
    words = " ".join(note.group(1).split())
    assert "keeps their comments, key order and layout" in words
    assert "a comment beside something the change removes goes with it" in words
    assert "a document that gives a key twice is written out afresh" in words
