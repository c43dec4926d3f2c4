"""``tracker import TYPE FILE`` end to end, in a subprocess: dry run, progress, problems by line
and column, the report of rows not imported, exit codes, and files refused as a whole."""

from __future__ import annotations

import csv
import json

from tests.import_helpers import ULNS, csv_bytes, learners_xlsx

HEADER = "given_name,family_name,date_of_birth"


def test_dry_run_then_import_with_progress_and_a_report(run, tmp_path):
    run("db", "upgrade")
    rows = [f"P{i},Smith,2001-02-03" for i in range(2500)]
    rows[1199] = "Bad,,2001-02-03"  # line 1201
    rows[2399] = "Worse,Jones,03/13/2001"  # line 2401: month 13
    path = tmp_path / "learners.csv"
    path.write_bytes(csv_bytes(HEADER, *rows))

    dry = run("import", "learner", str(path), "--dry-run", ok=False)
    assert dry.returncode == 1
    assert dry.stdout.startswith("Read 2,500 rows of Learner from learners.csv.")
    assert "line 1201, family_name: Family name is required\n" in dry.stdout
    assert "line 2401, date_of_birth: Date of birth must be a date\n" in dry.stdout
    assert "    -> Enter the date as YYYY-MM-DD, for example 2004-09-17" in dry.stdout
    assert (
        "Dry run: 2,498 of 2,500 rows can be imported; 2 have problems, 0 are duplicates. Nothing was saved."
        in dry.stdout
    )
    assert dry.stderr.splitlines() == [
        "Checking: 40% (1,000 of 2,500 rows)",
        "Checking: 80% (2,000 of 2,500 rows)",
        "Checking: 100% (2,500 of 2,500 rows)",
    ]
    assert "0 of 0 shown" in run("items", "list", "--type", "learner").stdout

    report = tmp_path / "not-imported.csv"
    done = run("import", "learner", str(path), "--report", str(report), ok=False)
    assert done.returncode == 1
    assert "Imported 2,498 of 2,500 rows: 2,498 created, 0 duplicates not created, 2 failed." in done.stdout
    assert done.stderr.splitlines()[-1] == "Importing: 100% (2,500 of 2,500 rows)"
    assert "of 2498 shown" in run("items", "list", "--type", "learner", "--limit", "1").stdout
    lines = list(csv.reader(report.read_text(encoding="utf-8-sig").splitlines()))
    assert lines[0] == ["line", "problems", "given_name", "family_name", "date_of_birth"]
    assert [(r[0], r[2]) for r in lines[1:]] == [("1201", "Bad"), ("2401", "Worse")]

    again = run("import", "learner", str(path), ok=False)  # no identity: nothing is a duplicate of those
    assert "2,498 created" in again.stdout


def test_duplicates_are_reported_with_the_existing_item(run, tmp_path):
    run("db", "upgrade")
    path = tmp_path / "learners.xlsx"
    path.write_bytes(learners_xlsx())
    first = run("import", "learner", str(path))
    assert "Imported 2 of 2 rows: 2 created" in first.stdout
    second = run("import", "learner", str(path), ok=False)
    assert second.returncode == 1
    assert f"line 2, uln: A Learner with ULN {ULNS[0]} already exists: #1 Ann Lee\n    -> Open item #1" in second.stdout
    assert "0 created, 2 duplicates not created, 0 failed." in second.stdout


def test_qualifications_for_learners_found_by_uln(run, tmp_path):
    run("db", "upgrade")
    learner = {"given_name": "Ann", "family_name": "Lee", "date_of_birth": "2001-02-03", "uln": ULNS[0]}
    run("items", "create", "--type", "learner", "--data", json.dumps(learner))
    path = tmp_path / "quals.csv"
    path.write_bytes(
        csv_bytes(
            "learner_uln,qan,title,awarding_body,level,anticipated_award_date",
            f"{ULNS[0]},603/2994/6,BTEC National Extended Diploma in Engineering,Pearson,Level 3,31/07/2027",
            f"{ULNS[0]},60329946,Maths,Pearson,2,",
            f"{ULNS[0]},603/2994/6,Again,Pearson,3,",
        )
    )
    result = run("import", "qualification", str(path), ok=False)
    assert "line 3, qan: QAN is not in the expected format\n    -> Write the QAN as three digits" in result.stdout
    assert (
        "line 4, qan: A Qualification with learner #1, QAN 603/2994/6 is already on line 2 of this file"
        in result.stdout
    )
    assert "1 created, 1 duplicates not created, 1 failed." in result.stdout
    shown = json.loads(run("items", "show", "2", "--json").stdout)
    assert shown["subject"] == 1 and shown["data"]["anticipated_award_date"] == "2027-07-31"
    assert shown["data"]["level"] == "3" and shown["due_date"] == "2027-07-31"


def test_importing_needs_the_import_capability(run, tmp_path):
    run("db", "upgrade")
    run("users", "create", "mona", "--role", "manager")
    path = tmp_path / "l.csv"
    path.write_bytes(csv_bytes(HEADER, "Ann,Lee,2001-02-03"))
    refused = run("import", "learner", str(path), "--as", "mona", ok=False)
    assert refused.returncode == 1
    assert "mona may not use 'items.import'" in refused.stderr or "may not" in refused.stderr
    assert "'items.import' capability" in refused.stderr
    assert "0 of 0 shown" in run("items", "list", "--type", "learner").stdout


def test_files_that_cannot_be_imported_are_refused_with_what_to_do(run, tmp_path):
    run("db", "upgrade")
    cases = {
        "columns.csv": (
            csv_bytes("given_name,family_name,date_of_birth,hat", "A,B,2001-01-01,x"),
            "'hat' is not a field of Learner",
        ),
        "empty.csv": (b"", "empty.csv is empty."),
        "latin.csv": (csv_bytes(HEADER, "Zoë,B,2001-01-01", encoding="cp1252"), "latin.csv is not UTF-8 text"),
    }
    for name, (content, says) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        result = run("import", "learner", str(path), ok=False)
        assert result.returncode == 1, name
        assert says in result.stderr, (name, result.stderr)
        assert "  -> " in result.stderr, name
    fixed = run("import", "learner", str(tmp_path / "latin.csv"), "--encoding", "cp1252")
    assert "1 created" in fixed.stdout

    big = tmp_path / "big.csv"
    big.write_bytes(csv_bytes(HEADER, *["Ann,Lee,2001-02-03"] * 200))
    run.env["TRACKER_IMPORT_MAX_BYTES"] = "2K"
    too_large = run("import", "learner", str(big), ok=False)
    assert too_large.returncode == 1 and "imports take at most" in too_large.stderr
    run.env["TRACKER_IMPORT_MAX_BYTES"] = ""
    run.env["TRACKER_IMPORT_MAX_ROWS"] = "100"
    too_many = run("import", "learner", str(big), ok=False)
    assert "big.csv has more than 100 rows." in too_many.stderr
    wrong = run("import", "learner", str(big), "--encoding", "ebcdic", ok=False)
    assert wrong.returncode == 2 and "ebcdic" in wrong.stderr
