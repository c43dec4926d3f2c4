"""The import service: files read, columns mapped, every bad row reported by line and column,
duplicates reported and not created, batches that never leave half a record."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from engine.definitions.model import Role
from engine.errors import NotFound, PermissionDenied
from engine.models import Event, Item, Outbox
from engine.permissions import Actor
from engine.services import ItemService
from engine.services.import_files import FileRefused
from engine.services.imports import ImportService, coerce
from tests.conftest import LEARNER
from tests.import_helpers import ULNS, csv_bytes, learners_xlsx, xlsx_bytes

HEADER = "given_name,family_name,date_of_birth,uln,postcode"


@pytest.fixture
def clerk(make_user) -> Actor:
    return make_user("clerk", "tracker_creator")


@pytest.fixture
def importer(service_for, clerk) -> ImportService:
    return ImportService(service_for(clerk))


@pytest.fixture
def forking(monkeypatch) -> list[int]:
    """Workers fork even though an earlier test left a thread behind (a fake server, a
    listener) that makes :func:`may_fork` decline; the list counts the forked runs, so a test
    can show its chunks really were validated in other processes."""
    from engine.services import import_workers

    runs: list[int] = []
    pool = import_workers.prepared_chunks

    def counted(*args, **kwargs):
        runs.append(1)
        yield from pool(*args, **kwargs)

    monkeypatch.setattr(import_workers, "may_fork", import_workers.available)
    monkeypatch.setattr(import_workers, "prepared_chunks", counted)
    return runs


def counts(session) -> tuple[int, int, int]:
    session.rollback()
    return tuple(session.scalar(select(func.count()).select_from(m)) for m in (Item, Event, Outbox))


def by_line(problems) -> dict[int, list[tuple[str, str]]]:
    out: dict[int, list[tuple[str, str]]] = {}
    for p in problems:
        out.setdefault(p.line, []).append((p.column, p.message))
    return out


# -- the dry run -------------------------------------------------------------------------------------------


def test_dry_run_reports_every_bad_row_with_line_column_and_message_and_saves_nothing(importer, session):
    content = csv_bytes(
        HEADER,
        f"Ann,Lee,2001-02-03,{ULNS[0]},M14 5TQ",
        "Bob,,2001-13-40,123,m1 1aa",  # three schema problems, one row
        f"Cat,Ray,2001-02-03,{ULNS[1][:-1]}4,",  # fails the ULN check digit (a rule, ULN_04)
        "Dan,Fox,31/12/1999,,",  # a UK date is read as a date
    )
    plan = importer.open("learner", "learners.csv", content)
    report = importer.check(plan)
    assert (report.total, report.valid, report.invalid_lines) == (4, 2, 2)
    lines = by_line(report.problems)
    assert sorted(lines) == [3, 4]
    assert ("family_name", "Family name is required") in lines[3]
    assert ("date_of_birth", "Date of birth must be a date") in lines[3]
    assert ("uln", "ULN is not in the expected format") in lines[3]
    assert ("postcode", "Home postcode is not in the expected format") in lines[3]
    assert lines[4] == [("uln", "ULN_04: the ULN fails the check-digit test, so it is not a real ULN")]
    # the same advice a form shows
    uln_problem = next(p for p in report.problems if p.line == 4)
    assert uln_problem.advice.startswith("Re-type the ULN")
    assert counts(session) == (0, 0, 0)


def test_headers_may_be_titles_and_choices_labels(importer):
    content = csv_bytes(
        "Given name,FAMILY NAME,Date of birth,Preferred contact method",
        "Ann,Lee,2001-02-03,SMS",
        "Bob,Ray,2001-02-03,carrier pigeon",
    )
    plan = importer.open("learner", "l.csv", content)
    assert [c.target for c in plan.columns] == ["given_name", "family_name", "date_of_birth", "preferred_contact"]
    report = importer.check(plan)
    assert report.valid == 1
    assert [(p.line, p.column) for p in report.problems] == [(3, "Preferred contact method")]
    assert report.problems[0].message.startswith("Preferred contact method must be one of")


def test_cells_are_read_as_the_schema_wants():
    assert coerce("12", {"type": "integer"}) == 12
    assert coerce("12.0", {"type": "integer"}) == 12
    assert coerce("twelve", {"type": "integer"}) == "twelve"  # left for validation to name
    assert coerce("2.5", {"type": "number"}) == 2.5
    assert coerce("Yes", {"type": "boolean"}) is True
    assert coerce("n", {"type": "boolean"}) is False
    assert coerce("07/08/2025", {"type": "string", "format": "date"}) == "2025-08-07"
    assert coerce("31/02/2025", {"type": "string", "format": "date"}) == "31/02/2025"
    assert coerce(1000000043.0, {"type": "string"}) == "1000000043"
    assert coerce('[{"date": "2025-01-01"}]', {"type": "array"}) == [{"date": "2025-01-01"}]
    assert coerce("High", {"oneOf": [{"const": "high", "title": "High"}]}) == "high"
    assert coerce("  ", {"type": "string"}) is None


def test_nested_fields_are_dotted_columns(service_for, clerk):
    importer = ImportService(service_for(clerk))
    content = csv_bytes(
        "name,company_number,address.line1,address.town,address.postcode",
        "Acme Ltd,01234567,1 High Street,Leeds,LS1 4AP",
        "Bad Ltd,07654321,2 Low Road,Leeds,ls1",
    )
    summary = importer.run(importer.open("employer", "employers.csv", content))
    assert summary.created == 1
    assert [(p.line, p.column) for p in summary.problems] == [(3, "address.postcode")]
    item = service_for(clerk).get(summary.created_ids[0])
    assert item.data["address"] == {"line1": "1 High Street", "town": "Leeds", "postcode": "LS1 4AP"}


# -- the import --------------------------------------------------------------------------------------------


def test_import_creates_valid_rows_with_history_and_outbox_like_a_save(importer, service_for, clerk, session):
    content = csv_bytes(HEADER, f"Ann,Lee,2001-02-03,{ULNS[0]},M14 5TQ", "Bob,,2001-02-03,,")
    summary = importer.run(importer.open("learner", "l.csv", content))
    assert (summary.created, summary.failed, summary.duplicates) == (1, 1, 0)
    service = service_for(clerk)
    imported = service.get(summary.created_ids[0])
    saved = service.create("learner", {**LEARNER, "uln": ULNS[1]})
    for column in ("type_key", "type_version", "status", "title", "problems", "problem_count", "due_date"):
        assert getattr(imported, column) == getattr(saved, column) or column == "title", column
    assert imported.title == "Ann Lee"
    assert imported.identity_key == f'["{ULNS[0]}"]'
    assert (imported.created_by_id, imported.version) == (clerk.user_id, 1)
    history = service.history(imported.id)
    assert [(e.kind, e.actor_id, e.payload) for e in history] == [("created", clerk.user_id, {"data": imported.data})]
    assert [e.kind for e in service.history(saved.id)] == ["created"]
    rows = {o.item_id: o for o in session.scalars(select(Outbox))}
    assert rows[imported.id].kind == rows[saved.id].kind == "item_event"
    assert set(rows[imported.id].payload) == set(rows[saved.id].payload)
    assert rows[imported.id].payload == {
        "event": "created",
        "item_id": imported.id,
        "type": "learner",
        "actor": "clerk",
    }
    assert summary.outbox_ids == [rows[imported.id].id]
    assert rows[imported.id].status == "pending"


def test_duplicates_of_existing_items_and_of_earlier_lines_are_reported_not_created(importer, system, session):
    existing = system.create("learner", {**LEARNER, "uln": ULNS[0]})
    content = csv_bytes(
        HEADER,
        f"Ann,Lee,2001-02-03,{ULNS[0]},",  # the learner already held
        f"Bob,Ray,2001-02-03,{ULNS[1]},",
        f"Bob,Ray,2001-02-03,{ULNS[1]},",  # again in the same file
        "Cat,Fox,2001-02-03,,",  # no ULN: no identity, never a duplicate
        "Cat,Fox,2001-02-03,,",
    )
    plan = importer.open("learner", "l.csv", content)
    report = importer.check(plan)
    assert (report.valid, report.duplicate_lines) == (3, 2)
    first, second = sorted(report.problems, key=lambda p: p.line)
    assert (first.line, first.column, first.kind, first.existing_id) == (2, "uln", "duplicate", existing.id)
    assert (
        f"#{existing.id}" in first.message
        and first.advice == f"Open item #{existing.id} instead of creating a duplicate."
    )
    assert (second.line, second.kind, second.same_as_line) == (4, "duplicate", 3)
    assert "already on line 3 of this file" in second.message

    summary = importer.run(plan)
    assert (summary.created, summary.duplicates, summary.failed) == (3, 2, 0)
    again = next(p for p in summary.problems if p.line == 4)
    created_bob = session.scalar(select(Item.id).where(Item.identity_key == f'["{ULNS[1]}"]'))
    assert again.existing_id == created_bob
    assert counts(session)[0] == 4


def test_rows_are_chunked_and_duplicates_found_across_chunks(service_for, clerk, session):
    importer = ImportService(service_for(clerk), chunk_size=2)
    rows = [f"L{i},Smith,2001-02-03,{uln}," for i, uln in enumerate(ULNS[:5])]
    content = csv_bytes(HEADER, *rows, f"Again,Smith,2001-02-03,{ULNS[0]},")
    seen = []
    summary = importer.run(importer.open("learner", "l.csv", content), progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 6), (4, 6), (6, 6)]
    assert summary.created == 5
    assert [(p.line, p.kind, p.existing_id) for p in summary.problems] == [(7, "duplicate", summary.created_ids[0])]
    assert counts(session) == (5, 5, 5)


def test_a_batch_that_fails_is_saved_row_by_row_so_no_row_is_half_written(
    service_for, clerk, system, session, monkeypatch
):
    """Someone saves the same ULN between the duplicate check and the batch's insert: the
    batch rolls back whole, then each row is saved on its own; the clash is reported."""
    importer = ImportService(service_for(clerk))
    check = ImportService._find_duplicates

    def then_someone_else_saves(self, plan, rows, seen):
        check(self, plan, rows, seen)
        other = ItemService(session, Actor.system(), system.registry)
        other.create("learner", {**LEARNER, "uln": ULNS[2]})

    monkeypatch.setattr(ImportService, "_find_duplicates", then_someone_else_saves)
    content = csv_bytes(HEADER, *(f"P{i},Smith,2001-02-03,{uln}," for i, uln in enumerate(ULNS[:4])))
    summary = importer.run(importer.open("learner", "l.csv", content))
    assert summary.created == 3
    assert [(p.line, p.kind) for p in summary.problems] == [(4, "duplicate")]
    assert summary.problems[0].existing_id is not None
    items, events, outbox = counts(session)
    assert (items, events, outbox) == (4, 4, 4)  # three imported and the other one, each whole
    orphans = session.scalar(select(func.count()).select_from(Event).where(Event.item_id.not_in(select(Item.id))))
    assert orphans == 0


def test_rows_with_an_assignee_are_saved_one_by_one_and_notify(service_for, clerk, make_user, session):
    make_user("tutor", "tracker_creator")
    importer = ImportService(service_for(clerk))
    content = csv_bytes(
        HEADER + ",assignee,description",
        f"Ann,Lee,2001-02-03,{ULNS[0]},,tutor,Call her",
        f"Bob,Ray,2001-02-03,{ULNS[1]},,nobody,",
    )
    summary = importer.run(importer.open("learner", "l.csv", content))
    assert summary.created == 1
    assert [(p.line, p.column, p.message) for p in summary.problems] == [
        (3, "assignee", "There is no active user 'nobody'")
    ]
    item = service_for(clerk).get(summary.created_ids[0])
    assert (item.assignee.username, item.description) == ("tutor", "Call her")
    assert [e.kind for e in service_for(clerk).history(item.id)] == ["created", "assigned"]
    kinds = sorted(o.kind for o in session.scalars(select(Outbox).where(Outbox.item_id == item.id)))
    assert "notify" in kinds


def test_rows_about_a_learner_find_them_by_uln_or_number(service_for, clerk, system):
    ann = system.create("learner", {**LEARNER, "uln": ULNS[0]})
    importer = ImportService(service_for(clerk))
    content = csv_bytes(
        "learner_uln,category,reported_on,severity",
        f"{ULNS[0]},online,2025-09-01,Low",
        "9999999999,online,2025-09-01,low",
        ",online,2025-09-01,low",
    )
    summary = importer.run(importer.open("concern", "c.csv", content))
    assert summary.created == 1
    assert service_for(clerk).get(summary.created_ids[0]).subject_id == ann.id
    lines = by_line(summary.problems)
    assert lines[3] == [("learner_uln", "There is no learner with ULN 9999999999")]
    assert lines[4] == [("learner_uln", "The learner is missing")]

    by_number = csv_bytes("subject_id,category,reported_on", f"#{ann.id},bullying,2025-09-02", "abc,online,2025-09-02")
    summary = importer.run(importer.open("concern", "c.csv", by_number))
    assert summary.created == 1
    assert by_line(summary.problems)[3] == [("subject_id", "'abc' is not a learner number")]


def test_a_learner_the_importer_may_not_see_is_not_found(make_user, service_for, system):
    """An importer whose role sees only their own items cannot attach rows to (or find out
    about) a learner they may not see."""
    hidden = system.create("learner", {**LEARNER, "uln": ULNS[0]})
    user = make_user("casey", "manager")  # any user; the role below is what counts
    own = Role("own_importer", "Own importer", frozenset({"items.create", "items.view", "items.import"}), "own")
    importer = ImportService(service_for(Actor(user.user_id, "casey", (own,))))
    content = csv_bytes("learner_uln,category,reported_on", f"{ULNS[0]},online,2025-09-01")
    report = importer.check(importer.open("concern", "c.csv", content))
    assert [(p.column, p.message) for p in report.problems] == [
        ("learner_uln", f"There is no learner with ULN {ULNS[0]}")
    ]
    assert hidden.id


# -- the file as a whole ----------------------------------------------------------------------------------


def test_xlsx_cells_are_read_with_their_types(importer, session):
    summary = importer.run(importer.open("learner", "learners.xlsx", learners_xlsx()))
    assert summary.created == 2 and not summary.problems
    data = [i.data for i in session.scalars(select(Item).order_by(Item.id))]
    assert data[0] == {
        "given_name": "Ann",
        "family_name": "Lee",
        "date_of_birth": "2001-02-03",
        "uln": ULNS[0],
        "preferred_contact": "email",
    }
    assert data[1]["date_of_birth"] == "1999-12-31" and data[1]["uln"] == ULNS[1]


def test_xlsx_problems_name_the_spreadsheet_row(importer):
    content = xlsx_bytes(
        [["given_name", "family_name", "date_of_birth"], ["Ann", "Lee", "2001-02-03"], [None], ["Bob", None, "x"]]
    )
    report = importer.check(importer.open("learner", "l.xlsx", content))
    assert sorted({p.line for p in report.problems}) == [4]


def test_unknown_columns_are_refused_by_name(importer):
    content = csv_bytes("given_name,family_name,date_of_birth,shoe_size,Favourite colour", "Ann,Lee,2001-02-03,9,red")
    with pytest.raises(FileRefused) as refused:
        importer.open("learner", "l.csv", content)
    assert [(p.path, p.message) for p in refused.value.problems] == [
        ("shoe_size", "'shoe_size' is not a field of Learner"),
        ("Favourite colour", "'Favourite colour' is not a field of Learner"),
    ]
    assert "given_name" in refused.value.message and "tracker types show learner" in refused.value.message


def test_missing_required_and_learner_columns_are_refused(importer):
    with pytest.raises(FileRefused) as refused:
        importer.open("concern", "c.csv", csv_bytes("category", "online"))
    messages = [p.message for p in refused.value.problems]
    assert "The file has no column saying which learner each row is about" in messages
    assert "The file has no column for Reported on (reported_on), which every Safeguarding concern needs" in messages
    with pytest.raises(FileRefused) as refused:
        importer.open(
            "concern", "c.csv", csv_bytes("learner_id,learner_uln,category,reported_on", "1,2,online,2025-01-01")
        )
    assert "use one way to find them" in refused.value.problems[0].message


def test_duplicate_and_unnamed_columns_are_refused(importer):
    with pytest.raises(FileRefused) as refused:
        importer.open(
            "learner", "l.csv", csv_bytes("given_name,Given_Name,family_name,date_of_birth,", "A,B,C,2001-01-01,x")
        )
    assert [p.message for p in refused.value.problems] == [
        "The column 'Given_Name' appears twice (columns 1 and 2)",
        "Column 5 has values but no name in the header line",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "l.csv is empty."),
        (b"\n \n", "l.csv is empty."),
        (b"given_name,family_name,date_of_birth\n\n,,\n", "l.csv has a header line but no rows to import."),
        (b"\n\ngiven_name\nAnn\n", "The first line of l.csv is empty, so its columns have no names."),
    ],
)
def test_an_empty_file_is_refused(importer, content, message):
    with pytest.raises(FileRefused) as refused:
        importer.open("learner", "l.csv", content)
    assert refused.value.problems[0].message == message
    assert refused.value.problems[0].advice


def test_a_file_in_another_encoding_is_refused_with_where_and_what_to_do(importer):
    content = csv_bytes("given_name,family_name,date_of_birth", "Zoë,Brontë,2001-02-03", encoding="cp1252")
    with pytest.raises(FileRefused) as refused:
        importer.open("learner", "l.csv", content)
    problem = refused.value.problems[0]
    assert problem.message == "l.csv is not UTF-8 text: the byte 0xEB on line 2 cannot be read."
    assert "CSV UTF-8" in problem.advice and "Windows-1252" in problem.advice
    plan = importer.open("learner", "l.csv", content, encoding="cp1252")
    assert importer.run(plan).created == 1


def test_a_file_with_too_many_rows_is_refused(service_for, clerk):
    importer = ImportService(service_for(clerk), max_rows=2)
    content = csv_bytes("given_name,family_name,date_of_birth", *["A,B,2001-01-01"] * 3)
    with pytest.raises(FileRefused) as refused:
        importer.open("learner", "l.csv", content)
    assert refused.value.status == 413
    assert refused.value.problems[0].message == "l.csv has more than 2 rows."


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "old.xls",
            b"\xd0\xcf\x11\xe0" + b"\0" * 100,
            "old.xls is an old Excel 97-2003 workbook (.xls), which cannot be read.",
        ),
        ("broken.xlsx", b"PK\x03\x04 not really a workbook", "broken.xlsx is not a readable Excel workbook"),
        ("bin.csv", b"given_name\x00\x01\x02\n", "bin.csv is not a CSV file (it holds binary data)."),
    ],
)
def test_files_that_are_not_tables_are_refused(importer, name, content, message):
    with pytest.raises(FileRefused) as refused:
        importer.open("learner", name, content)
    assert refused.value.problems[0].message.startswith(message)


def test_semicolon_separated_files_are_read(importer):
    plan = importer.open("learner", "l.csv", csv_bytes("given_name;family_name;date_of_birth", "Ann;Lee;2001-02-03"))
    assert importer.check(plan).valid == 1


# -- who may import ----------------------------------------------------------------------------------------


def test_importing_needs_the_import_capability(make_user, service_for):
    dsl = make_user("dee", "dsl")  # may create concerns, may not import
    with pytest.raises(PermissionDenied) as denied:
        ImportService(service_for(dsl)).open(
            "concern", "c.csv", csv_bytes("learner_id,category,reported_on", "1,online,2025-01-01")
        )
    assert "items.import" in denied.value.advice
    manager = make_user("mona", "manager")
    with pytest.raises(PermissionDenied):
        ImportService(service_for(manager)).open("learner", "l.csv", csv_bytes(HEADER, "A,B,2001-01-01,,"))
    assert ImportService(service_for(manager)).importable_types() == []


def test_importing_a_finance_field_needs_finance_view(importer):
    with pytest.raises(PermissionDenied) as denied:
        importer.open("concern", "c.csv", csv_bytes("learner_id,category,reported_on,cost", "1,online,2025-01-01,5"))
    assert "cost" in denied.value.message


def test_an_unknown_type_is_not_found(importer):
    with pytest.raises(NotFound):
        importer.open("unicorn", "u.csv", csv_bytes("a", "b"))


def test_a_format_a_plugin_adds_is_read_by_its_extension(service_for, clerk):
    """A plugin's ``tracker_import_formats`` reader (here JSON lines) feeds the same import."""
    from engine.hookspecs import hookimpl
    from engine.plugins import ImportFormat, Invalid
    from tests.plugin_helpers import host_of

    def read_json_lines(data: bytes):
        for number, line in enumerate(data.decode().splitlines(), start=1):
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError:
                raise Invalid(f"Line {number} is not JSON.", "Write one JSON object per line.") from None

    class JsonLines:
        @hookimpl
        def tracker_import_formats(self):
            return [ImportFormat("jsonl", "JSON lines", (".jsonl",), read_json_lines)]

    formats = host_of(("jsonlines", JsonLines())).import_formats()
    importer = ImportService(service_for(clerk), formats=formats)
    rows = [
        {"given_name": "Ann", "family_name": "Lee", "date_of_birth": "2001-02-03"},
        {"given_name": "Bob", "date_of_birth": "2001-02-03", "family_name": ""},
    ]
    content = "\n".join(json.dumps(r) for r in rows).encode()
    summary = importer.run(importer.open("learner", "people.jsonl", content))
    assert summary.created == 1
    assert [(p.line, p.column) for p in summary.problems] == [(2, "family_name")]
    with pytest.raises(FileRefused) as refused:
        importer.open("learner", "people.jsonl", b'{"given_name": "Ann"}\nnot json\n')
    assert refused.value.problems[0].message == "Line 2 is not JSON."


@pytest.mark.parametrize("workers", [1, 2])
def test_a_round_robin_gives_imported_rows_their_turns_and_the_dry_run_takes_none(session, tmp_path, workers, forking):
    """Checking a row assigns nobody, and each imported row takes exactly one turn."""
    from engine.definitions import load_registry
    from engine.services import UserService

    root = tmp_path / "defs"
    (root / "tracker_types" / "ticket").mkdir(parents=True)
    (root / "workflows").mkdir()
    (root / "workflows" / "ticket.yaml").write_text(
        "key: ticket\nname: Ticket\nstates:\n  - {key: new, label: New, initial: true}\ntransitions: []\n"
    )
    (root / "roles.yaml").write_text(
        "roles:\n  - key: desk\n    name: Desk\n    capabilities: [items.view, items.edit]\n"
    )
    (root / "tracker_types" / "ticket" / "type.yaml").write_text(
        "key: ticket\nname: Ticket\nversion: 1\nworkflow: ticket\ntitle: '{{ data.title }}'\n"
        "assignment: {rule: round_robin, role: desk}\n"
    )
    (root / "tracker_types" / "ticket" / "schema.json").write_text(
        json.dumps({"type": "object", "properties": {"title": {"type": "string"}}})
    )
    registry = load_registry([root])
    assert registry.problems == [], registry.problems
    users = UserService(session, registry)
    for name in ("dan", "dora"):
        users.create(name, ["desk"])
    importer = ImportService(ItemService(session, Actor.system(), registry), chunk_size=1, workers=workers)
    plan = importer.open("ticket", "t.csv", csv_bytes("title", "one", "two", "three"))
    assert importer.check(plan).valid == 3
    summary = importer.run(plan)
    assert summary.created == 3
    owners = [i.assignee.username for i in session.scalars(select(Item).order_by(Item.id))]
    assert owners == ["dan", "dora", "dan"]


def test_worker_processes_validate_chunks_with_the_same_results(service_for, clerk, system, session, forking):
    """With workers the chunks are validated in forked processes, each through its own item
    service; the report, the duplicates across chunks and what is saved are the same."""
    existing = system.create("learner", {**LEARNER, "uln": ULNS[4]})
    rows = [f"P{i},Smith,2001-02-03,{uln}," for i, uln in enumerate(ULNS[:4])]
    content = csv_bytes(
        HEADER,
        *rows,
        "Bad,,2001-02-03,,",  # line 6
        f"Again,Smith,2001-02-03,{ULNS[1]},",  # line 7: line 3 again, in another chunk
        f"Held,Smith,2001-02-03,{ULNS[4]},",  # line 8: the learner already held
    )
    outcomes = []
    for workers in (1, 2):
        importer = ImportService(service_for(clerk), chunk_size=2, workers=workers)
        plan = importer.open("learner", "l.csv", content)
        seen: list[tuple[int, int]] = []
        report = importer.check(plan, progress=lambda d, t, seen=seen: seen.append((d, t)))
        outcomes.append(
            (
                seen,
                report.valid,
                sorted((p.line, p.column, p.kind, p.existing_id, p.same_as_line) for p in report.problems),
            )
        )
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][0] == [(2, 7), (4, 7), (6, 7), (7, 7)]
    assert outcomes[1][2] == [
        (6, "family_name", "invalid", None, None),
        (7, "uln", "duplicate", None, 3),
        (8, "uln", "duplicate", existing.id, None),
    ]
    importer = ImportService(service_for(clerk), chunk_size=2, workers=2)
    summary = importer.run(importer.open("learner", "l.csv", content))
    assert (summary.created, summary.duplicates, summary.failed) == (4, 2, 1)
    assert counts(session) == (5, 5, 5)
    assert len(forking) == 2  # the check and the run with two workers


def test_a_worker_that_never_answers_stops_the_import_with_what_to_do(
    service_for, clerk, session, monkeypatch, forking
):
    """Even when this process handles SIGTERM itself (as an RQ worker or the scheduler
    does), the stuck worker is ended and the import stops with its message."""
    import faulthandler
    import os
    import signal
    import threading

    from engine.errors import TrackerError
    from engine.services import import_workers

    parent = os.getpid()
    prepare = ImportService._prepare

    def stuck_in_a_worker(self, plan, chunk):
        if os.getpid() != parent:
            threading.Event().wait()  # never answers
        return prepare(self, plan, chunk)

    monkeypatch.setattr(ImportService, "_prepare", stuck_in_a_worker)
    monkeypatch.setattr(import_workers, "CHUNK_TIMEOUT", 1)
    importer = ImportService(service_for(clerk), chunk_size=1, workers=2)
    plan = importer.open("learner", "l.csv", csv_bytes(HEADER, "A,B,2001-01-01,,", "C,D,2001-01-01,,"))
    graceful = signal.signal(signal.SIGTERM, lambda *_: None)
    faulthandler.dump_traceback_later(300, exit=True)  # a hang ends the run with a traceback, not silence
    try:
        with pytest.raises(TrackerError) as stopped:
            importer.run(plan)
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGTERM, graceful)
    assert "gave no answer" in stopped.value.message and "--workers 1" in stopped.value.advice
    assert forking == [1]
    assert counts(session) == (0, 0, 0)
