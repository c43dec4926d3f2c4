"""How a failed connection is named: a server that cannot be reached (nothing was saved, try
again later) versus one that answered and refused (a configuration error to show as it is)."""

from __future__ import annotations

import socket
import threading

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from engine import db


class HangingUp:
    """Accepts each connection and closes it at once, as PostgreSQL can while it shuts down."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            client.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def hanging_up():
    server = HangingUp()
    yield server
    server.close()


def _connect_error(url: str, retry_seconds: float) -> DBAPIError:
    engine = db.make_engine(url, connect_retry_seconds=retry_seconds)
    try:
        with pytest.raises(DBAPIError) as failed:
            engine.connect()
    finally:
        engine.dispose()
    return failed.value


def test_a_server_that_hangs_up_while_connecting_cannot_be_reached_and_is_tried_again(hanging_up):
    error = _connect_error(f"postgresql+psycopg://postgres@127.0.0.1:{hanging_up.port}/test", 0.5)
    assert "server closed the connection unexpectedly" in str(error)
    assert hanging_up.accepted > 1  # tried again within the budget before giving up
    assert db.connection_lost(error)
    unavailable = db.lost_connection_error(error)
    assert unavailable.status == 503 and unavailable.saved is False and not unavailable.retry
    assert unavailable.message == "The database cannot be reached just now, so nothing was saved."


def test_a_closed_port_cannot_be_reached(hanging_up):
    port = hanging_up.port
    hanging_up.close()
    error = _connect_error(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test", 0)
    assert db.lost_connection_error(error).message.startswith("The database cannot be reached")


@pytest.mark.postgres
def test_a_server_that_answers_no_is_not_an_outage(pg_database):
    """A database that does not exist is a mistake in the settings: shown as it is, not as
    'try again in a moment', and not tried again."""
    url = make_url(pg_database).set(database="tracker_no_such_database")
    error = _connect_error(url.render_as_string(hide_password=False), 0.5)
    assert 'database "tracker_no_such_database" does not exist' in str(error)
    assert not db.connection_lost(error)
