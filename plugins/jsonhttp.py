"""A small JSON-over-HTTP client for the built-in integrations (standard library only).

Each integration speaks to one outside service whose base URL is configuration. What they
share is how a call can fail: the service may be down, slow or broken (:class:`ServiceUnavailable`,
which the pages turn into "... is unavailable just now"), or it may answer with a 4xx that means
something (a postcode it does not know, a company that does not exist), which the caller reads
from :class:`JsonResponse`.
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

#: seconds a lookup waits for an answer before it gives up; a form must not hang on it
DEFAULT_TIMEOUT = 5.0


class ServiceUnavailable(Exception):
    """The service did not answer in time, refused the connection, answered 5xx or with
    something that is not JSON. ``reason`` says which, in words for a log or an admin."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service}: {reason}")
        self.service = service
        self.reason = reason


@dataclass
class JsonResponse:
    """A 2xx, 3xx or 4xx answer; ``body`` is the parsed JSON (None for an empty body)."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def join(base_url: str, *parts: str, query: dict[str, str] | None = None) -> str:
    """``base_url`` with each part appended as one path segment (quoted, so a postcode's space
    or a slash typed by a user cannot change the path)."""
    path = "/".join(urllib.parse.quote(p, safe="") for p in parts)
    url = base_url.rstrip("/") + "/" + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    return url


def basic_auth(username: str, password: str = "") -> str:
    """The value of an ``Authorization`` header for HTTP basic authentication."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def request_json(
    service: str,
    method: str,
    url: str,
    *,
    body: Any = None,
    raw_body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> JsonResponse:
    """Send one request and read a JSON answer.

    Args:
        service: the service's name, for messages ("Postcode lookup").
        body: sent as JSON; or ``raw_body``, sent as it is (e.g. bytes that were signed).
        timeout: seconds to wait for the connection and for each read.

    Returns the answer for statuses below 500. Raises :class:`ServiceUnavailable` for a
    timeout, a refused connection, a 5xx, or an answer that is not JSON.
    """
    data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
    sent = {"Accept": "application/json", **(headers or {})}
    if data is not None:
        sent.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the URL is configuration
            return _parse(service, response.status, response.read(), response.headers)
    except urllib.error.HTTPError as exc:
        content = exc.read()
        if exc.code >= 500:
            raise ServiceUnavailable(service, f"it answered {exc.code} {exc.reason}") from exc
        return _parse(service, exc.code, content, exc.headers)
    except TimeoutError as exc:
        raise ServiceUnavailable(service, f"no answer within {timeout:g} seconds") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise ServiceUnavailable(service, f"no answer within {timeout:g} seconds") from exc
        raise ServiceUnavailable(service, f"it could not be reached ({reason})") from exc
    except (ConnectionError, OSError, http.client.HTTPException) as exc:
        raise ServiceUnavailable(service, f"the connection failed ({exc})") from exc


def _parse(service: str, status: int, content: bytes, headers: Any) -> JsonResponse:
    found = {k.lower(): v for k, v in (headers.items() if headers is not None else [])}
    if not content.strip():
        return JsonResponse(status, None, found)
    try:
        body = json.loads(content)
    except ValueError as exc:
        raise ServiceUnavailable(service, f"it answered {status} with something that is not JSON") from exc
    return JsonResponse(status, body, found)
