"""What the pages of background jobs share (see :mod:`engine.background`): the JSON their
progress bars poll, the refresh for browsers without JavaScript, page numbers of long results."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

#: seconds between refreshes of a page whose job is still running (without JavaScript)
REFRESH_SECONDS = 3
#: rows of a long result (learners left out, items not migrated) per page
PER_PAGE = 50


def progress_response(state: dict[str, Any], page_url: str) -> Response:
    """The progress endpoint's answer: the job's state and the page to reload when it is over.
    Never cached: it changes from one poll to the next."""
    response = jsonify({**state, "page": page_url})
    response.headers["Cache-Control"] = "no-store"
    return response


def page_of(rows: list, per_page: int = PER_PAGE) -> dict[str, Any]:
    """The ``?page=`` of ``rows``: the rows shown, the page number and how many pages there are."""
    text = request.args.get("page", "1")
    pages = max((len(rows) + per_page - 1) // per_page, 1)
    page = min(int(text), pages) if text.isdigit() and int(text) > 0 else 1
    return {"rows": rows[(page - 1) * per_page : page * per_page], "page": page, "pages": pages, "count": len(rows)}
