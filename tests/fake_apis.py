"""Local stand-ins for the outside services the built-in plugins call.

Each fake is a threaded ``http.server`` on 127.0.0.1 at a free port that speaks the service's
request and response shapes (paths, methods, authentication, JSON bodies, status codes): the
real public API's where it has one, and for the LRS (a SOAP service) the JSON shape the ULN
plugin documents. The plugins are tested over real HTTP with their base URL pointed here:

- :class:`FakePostcodes`: a postcodes.io-compatible API (``GET /postcodes/<pc>``,
  ``/postcodes/<pc>/validate``, ``/postcodes/<pc>/autocomplete``).
- :class:`FakeCompaniesHouse`: the Companies House public data API (``GET /company/<number>``,
  HTTP basic authentication with the API key as the user name, 404 and 429 bodies).
- :class:`FakeLrs`: a Learning Records Service "learner by demographics" search in the JSON
  shape :mod:`plugins.uln` documents (``POST /learners/find-by-demographics``).
- :class:`FakeEportfolio`: an e-portfolio receiving Tracker's signed webhooks.

Every fake records the requests it got (:attr:`FakeApi.requests`) and can misbehave on demand:
``outage = 503`` answers every request with that status, ``hang = True`` holds every request
until the fake stops (a service that never answers: the client's timeout decides), and
``fail_next = n`` answers the next ``n`` requests with 503 and then recovers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, Any, dict[str, str]]


@dataclass
class Recorded:
    """One request a fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    #: the status the fake answered with (0: it never answered)
    status: int = 0

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeApi:
    """The server part every fake shares; subclasses answer in :meth:`route`."""

    requests: list[Recorded] = field(default_factory=list)
    #: answer every request with this status (e.g. 503) instead of routing it
    outage: int | None = None
    #: hold every request until the fake stops: a service that never answers
    hang: bool = False
    #: answer this many of the next requests with 503, then behave again
    fail_next: int = 0

    def __post_init__(self) -> None:
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake first"
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> FakeApi:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the http.server protocol
                fake._serve(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parsed = urllib.parse.urlsplit(handler.path)
        request = Recorded(
            handler.command,
            urllib.parse.unquote(parsed.path),
            dict(urllib.parse.parse_qsl(parsed.query)),
            {k.lower(): v for k, v in handler.headers.items()},
            body,
        )
        with self._lock:
            self.requests.append(request)
            failing = self.fail_next > 0
            if failing:
                self.fail_next -= 1
        if self.hang:
            self._release.wait()
            return
        if self.outage is not None or failing:
            status, payload, headers = self.outage or 503, {"error": "Service unavailable"}, {}
        else:
            status, payload, headers = self.route(request)
        request.status = status
        data = payload if isinstance(payload, bytes) else (json.dumps(payload).encode() if payload is not None else b"")
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
            handler.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass  # the client gave up (its timeout); nothing to tell it

    def route(self, request: Recorded) -> Reply:
        return 404, {"error": "Not found"}, {}


def _basic_user(request: Recorded) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password


# -- postcodes.io ------------------------------------------------------------------------------------


def postcode_result(postcode: str, **fields: Any) -> dict:
    """A postcodes.io ``result`` object with the fields the service returns."""
    outcode, incode = postcode.split(" ")
    base = {
        "postcode": postcode,
        "quality": 1,
        "eastings": 529090,
        "northings": 179645,
        "country": "England",
        "nhs_ha": "London",
        "longitude": -0.141588,
        "latitude": 51.501009,
        "european_electoral_region": "London",
        "primary_care_trust": "Westminster",
        "region": "London",
        "lsoa": "Westminster 018C",
        "msoa": "Westminster 018",
        "incode": incode,
        "outcode": outcode,
        "parliamentary_constituency": "Cities of London and Westminster",
        "admin_district": "Westminster",
        "parish": "Westminster, unparished area",
        "admin_county": None,
        "admin_ward": "St James's",
        "ced": None,
        "ccg": "NHS North West London",
        "nuts": "Westminster",
        "codes": {"admin_district": "E09000033", "admin_county": "E99999999", "admin_ward": "E05013806"},
    }
    return {**base, **fields}


POSTCODES = {
    "SW1A1AA": postcode_result("SW1A 1AA"),
    "SO418AN": postcode_result(
        "SO41 8AN",
        admin_district="New Forest",
        region="South East",
        admin_county="Hampshire",
        admin_ward="Lymington Town",
        longitude=-1.544,
        latitude=50.758,
        parliamentary_constituency="New Forest West",
    ),
    # Scottish postcodes have no English region: the service sends null
    "EH11YZ": postcode_result(
        "EH1 1YZ",
        country="Scotland",
        region=None,
        admin_district="City of Edinburgh",
        admin_ward="City Centre",
        longitude=-3.19,
        latitude=55.95,
    ),
}


class FakePostcodes(FakeApi):
    """postcodes.io: ``{"status": 200, "result": {...}}`` or ``{"status": 404, "error": ...}``."""

    def __init__(self, postcodes: dict[str, dict] | None = None) -> None:
        super().__init__()
        self.postcodes = dict(POSTCODES if postcodes is None else postcodes)

    def route(self, request: Recorded) -> Reply:
        parts = request.path.strip("/").split("/")
        if request.method != "GET" or not parts or parts[0] != "postcodes" or len(parts) < 2:
            return 404, {"status": 404, "error": "Resource not found"}, {}
        key = parts[1].replace(" ", "").upper()
        if len(parts) == 3 and parts[2] == "validate":
            return 200, {"status": 200, "result": key in self.postcodes}, {}
        if len(parts) == 3 and parts[2] == "autocomplete":
            found = [r["postcode"] for k, r in sorted(self.postcodes.items()) if k.startswith(key)]
            return 200, {"status": 200, "result": found[:10] or None}, {}
        if len(parts) != 2:
            return 404, {"status": 404, "error": "Resource not found"}, {}
        if key in self.postcodes:
            return 200, {"status": 200, "result": self.postcodes[key]}, {}
        if len(key) < 5 or not key[-3].isdigit():
            return 404, {"status": 404, "error": "Invalid postcode"}, {}
        return 404, {"status": 404, "error": "Postcode not found"}, {}


# -- Companies House ---------------------------------------------------------------------------------

CH_KEY = "test-companies-house-key"

COMPANIES = {
    "04828784": {
        "company_name": "NEW FOREST TRAINING LIMITED",
        "company_number": "04828784",
        "company_status": "active",
        "type": "ltd",
        "date_of_creation": "2003-07-10",
        "jurisdiction": "england-wales",
        "has_charges": False,
        "registered_office_address": {
            "address_line_1": "1 High Street",
            "address_line_2": "Old Town",
            "locality": "Lymington",
            "region": "Hampshire",
            "postal_code": "SO41 8AN",
            "country": "England",
        },
        "sic_codes": ["85320"],
        "links": {"self": "/company/04828784"},
        "etag": "0f2a6e2b1b",
    },
    "SC123456": {
        "company_name": "CALEDONIAN APPRENTICESHIPS LTD",
        "company_number": "SC123456",
        "company_status": "active",
        "type": "ltd",
        "jurisdiction": "scotland",
        "registered_office_address": {
            "premises": "Unit 4",
            "address_line_1": "Leith Walk",
            "locality": "Edinburgh",
            "postal_code": "EH1 1YZ",
            "country": "Scotland",
        },
        "links": {"self": "/company/SC123456"},
    },
    "01234567": {
        "company_name": "GONE BEFORE LIMITED",
        "company_number": "01234567",
        "company_status": "dissolved",
        "type": "ltd",
        "registered_office_address": {"address_line_1": "2 Low Road", "locality": "Leeds", "postal_code": "LS1 4AP"},
        "links": {"self": "/company/01234567"},
    },
}


class FakeCompaniesHouse(FakeApi):
    """The public data API: basic auth with the key as user name; ``rate_limited`` answers 429."""

    def __init__(self, key: str = CH_KEY) -> None:
        super().__init__()
        self.key = key
        self.companies = {k: json.loads(json.dumps(v)) for k, v in COMPANIES.items()}
        self.rate_limited = False

    def route(self, request: Recorded) -> Reply:
        auth = _basic_user(request)
        if auth is None or auth[0] != self.key:
            return 401, {"error": "Invalid Authorization", "type": "ch:service"}, {}
        limits = {"X-Ratelimit-Limit": "600", "X-Ratelimit-Window": "5m", "X-Ratelimit-Reset": "1700000300"}
        if self.rate_limited:
            return 429, None, {**limits, "X-Ratelimit-Remain": "0"}
        parts = request.path.strip("/").split("/")
        if request.method != "GET" or len(parts) != 2 or parts[0] != "company":
            return 404, {"errors": [{"error": "not-found", "type": "ch:service"}]}, {}
        company = self.companies.get(parts[1])
        if company is None:
            return 404, {"errors": [{"error": "company-profile-not-found", "type": "ch:service"}]}, limits
        return 200, company, {**limits, "X-Ratelimit-Remain": "599"}


# -- Learning Records Service -----------------------------------------------------------------------

LRS_USER, LRS_PASSWORD, LRS_UKPRN = "lrs-user", "lrs-password", "10000001"

LRS_LEARNERS = [
    {
        "ULN": "1000000043",
        "GivenName": "Jane",
        "FamilyName": "Smith",
        "DateOfBirth": "2001-02-03",
        "Gender": "2",
        "LastKnownPostCode": "SW1A 1AA",
    },
    {
        "ULN": "1000000027",
        "GivenName": "Jane",
        "FamilyName": "Smith",
        "DateOfBirth": "2001-02-03",
        "Gender": "2",
        "LastKnownPostCode": "LS1 4AP",
    },
    {
        "ULN": "1000000051",
        "GivenName": "Omar",
        "FamilyName": "Khan",
        "DateOfBirth": "1999-11-30",
        "Gender": "1",
        "LastKnownPostCode": "SO41 8AN",
    },
]


class FakeLrs(FakeApi):
    """Finds learners by demographics (FindType ``FUL``).

    Name and date of birth must match; when exactly one such learner also has the postcode
    given it is an exact match (``WSRC0003``), otherwise every name and birth-date match is a
    possible match (``WSRC0004``); none is ``WSRC0001``; more than ``too_many`` is ``WSRC0002``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.learners = [dict(learner) for learner in LRS_LEARNERS]
        self.too_many = 10

    def route(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path.rstrip("/") != "/learners/find-by-demographics":
            return 404, {"error": "Not found"}, {}
        if _basic_user(request) != (LRS_USER, LRS_PASSWORD):
            return 401, {"ResponseCode": "WSEC0206", "Message": "The organisation credentials are not valid"}, {}
        try:
            query = request.json()
        except ValueError:
            return 400, {"ResponseCode": "WSEC0001", "Message": "The request is not JSON"}, {}
        missing = [k for k in ("FindType", "UKPRN", "GivenName", "FamilyName", "DateOfBirth") if not query.get(k)]
        if missing or query["FindType"] != "FUL":
            return 400, {"ResponseCode": "WSEC0001", "Message": f"Missing or wrong fields: {missing}"}, {}

        def same(a: str, b: str) -> bool:
            return a.replace(" ", "").upper() == (b or "").replace(" ", "").upper()

        candidates = [
            learner
            for learner in self.learners
            if same(learner["GivenName"], query["GivenName"])
            and same(learner["FamilyName"], query["FamilyName"])
            and learner["DateOfBirth"] == query["DateOfBirth"]
            and (not query.get("Gender") or learner["Gender"] == query["Gender"])
        ]
        exact = [
            c
            for c in candidates
            if query.get("LastKnownPostCode") and same(c["LastKnownPostCode"], query["LastKnownPostCode"])
        ]
        answer = {k: query.get(k) for k in ("FamilyName", "GivenName", "DateOfBirth", "Gender", "LastKnownPostCode")}
        if len(exact) == 1:
            return 200, {**answer, "ResponseCode": "WSRC0003", "Learners": exact}, {}
        if len(candidates) > self.too_many:
            return 200, {**answer, "ResponseCode": "WSRC0002", "Learners": []}, {}
        if candidates:
            return 200, {**answer, "ResponseCode": "WSRC0004", "Learners": candidates}, {}
        return 200, {**answer, "ResponseCode": "WSRC0001", "Learners": []}, {}


# -- e-portfolio -----------------------------------------------------------------------------------

EPORTFOLIO_SECRET = "shared-webhook-secret"


class FakeEportfolio(FakeApi):
    """Receives Tracker's webhooks at ``POST /hooks/tracker`` and checks each signature the
    way an e-portfolio would: HMAC-SHA256 over ``<timestamp>.<raw body>``."""

    def __init__(self, secret: str = EPORTFOLIO_SECRET) -> None:
        super().__init__()
        self.secret = secret

    def signature_ok(self, request: Recorded) -> bool:
        timestamp = request.headers.get("x-tracker-timestamp", "")
        expected = hmac.new(self.secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256)
        return hmac.compare_digest(request.headers.get("x-tracker-signature", ""), "sha256=" + expected.hexdigest())

    def received(self) -> list[dict]:
        """The payloads of the webhooks delivered (answered 2xx), in order."""
        return [r.json() for r in self.requests if r.path == "/hooks/tracker" and 200 <= r.status < 300]

    def route(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != "/hooks/tracker":
            return 404, {"error": "Not found"}, {}
        if not self.signature_ok(request):
            return 401, {"error": "Bad signature"}, {}
        return 202, {"accepted": True}, {}


# -- running one in a test --------------------------------------------------------------------


def running(fake: FakeApi) -> Iterator[FakeApi]:
    """Start ``fake`` for the length of a fixture: ``yield from running(FakePostcodes())``."""
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
