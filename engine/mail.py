"""E-mail over SMTP: settings from ``TRACKER_SMTP_URL``, messages from Jinja templates.

Templates ship in ``engine/templates/email/``; an admin overrides any of them by putting
a file of the same name in ``<instance>/templates/email/``. Each message kind ``NAME``
has ``NAME.subject.txt``, ``NAME.txt`` (plain text) and ``NAME.html``.
"""

from __future__ import annotations

import functools
import logging
import re
import smtplib
import ssl
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from engine.errors import TrackerError

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates" / "email"
_POLICY = policy.SMTP.clone(max_line_length=998)


class MailError(Exception):
    """The SMTP server could not be reached or refused the message; worth trying again later."""


@dataclass(frozen=True)
class SmtpConfig:
    """Where to send e-mail, parsed from ``smtp://[user:password@]host[:port][?starttls]``
    (``smtps://`` for TLS from the first byte)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    tls: bool = False
    timeout: float = 20.0

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """Parse ``url``; raises TrackerError saying what is wrong with it."""
        parts = urlsplit(url)
        advice = "Write it as smtp://host:port, smtp://user:password@host:587?starttls or smtps://host:465."
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise TrackerError(f"TRACKER_SMTP_URL is not an SMTP address: '{_safe(url)}'.", advice)
        try:
            port = parts.port
        except ValueError:
            raise TrackerError(f"TRACKER_SMTP_URL has a port that is not a number: '{_safe(url)}'.", advice) from None
        options = parse_qs(parts.query, keep_blank_values=True)
        unknown = set(options) - {"starttls", "timeout"}
        if unknown:
            raise TrackerError(f"TRACKER_SMTP_URL has unknown options: {', '.join(sorted(unknown))}.", advice)
        timeout = 20.0
        if options.get("timeout"):
            try:
                timeout = float(options["timeout"][0])
            except ValueError:
                raise TrackerError("The timeout in TRACKER_SMTP_URL is not a number of seconds.", advice) from None
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=port or (465 if tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            starttls="starttls" in options,
            tls=tls,
            timeout=timeout,
        )


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


class Mailer:
    """Sends messages over one SMTP connection, opened on first use and kept for the next
    message (a relay sends a batch); any failure closes it and raises :class:`MailError`.

    Use as a context manager, or call :meth:`close`.
    """

    #: an idle connection older than this is checked with NOOP before it is used again
    IDLE_CHECK_SECONDS = 10.0

    def __init__(self, config: SmtpConfig, mail_from: str) -> None:
        self.config = config
        self.mail_from = mail_from
        self._smtp: smtplib.SMTP | None = None
        self._last_used = 0.0

    @classmethod
    def from_settings(cls, smtp_url: str, mail_from: str) -> Mailer | None:
        """A mailer for the settings, or None when no SMTP server is configured."""
        if not smtp_url:
            return None
        return cls(SmtpConfig.from_url(smtp_url), mail_from)

    def __enter__(self) -> Mailer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def send(self, message: EmailMessage) -> None:
        """Hand ``message`` to the SMTP server. Raises MailError when it was not accepted."""
        try:
            smtp = self._connection()
            smtp.send_message(message)
            self._last_used = time.monotonic()
        except (smtplib.SMTPException, OSError) as exc:
            self.close()
            raise MailError(f"SMTP {self.config.host}:{self.config.port}: {_describe(exc)}") from exc

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is not None and time.monotonic() - self._last_used > self.IDLE_CHECK_SECONDS:
            try:
                self._smtp.noop()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
                self._smtp = None
        if self._smtp is None:
            c = self.config
            if c.tls:
                smtp = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
                if c.starttls:
                    smtp.starttls(context=ssl.create_default_context())
            if c.username:
                smtp.login(c.username, c.password or "")
            self._smtp = smtp
        return self._smtp


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        error = exc.smtp_error
        return f"{exc.smtp_code} {error.decode(errors='replace') if isinstance(error, bytes) else error}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):  # the server's answer says whether to try again
        return "recipient refused: " + ", ".join(
            f"{address} ({code} {answer.decode(errors='replace') if isinstance(answer, bytes) else answer})"
            for address, (code, answer) in exc.recipients.items()
        )
    return str(exc) or type(exc).__name__


class MailTemplates:
    """Renders e-mail templates, preferring the instance folder's copies over the built-ins.

    Templates run in Jinja2's sandbox; the HTML ones are auto-escaped.
    """

    def __init__(self, instance_path: Path | None = None) -> None:
        loaders = []
        if instance_path is not None:
            loaders.append(FileSystemLoader(str(Path(instance_path) / "templates" / "email")))
        loaders.append(FileSystemLoader(str(TEMPLATES)))
        self.env = SandboxedEnvironment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, name: str, context: dict[str, Any]) -> tuple[str, str, str]:
        """(subject, plain text, HTML) for the message kind ``name``."""
        subject = self.env.get_template(f"{name}.subject.txt").render(context)
        text = self.env.get_template(f"{name}.txt").render(context)
        html = self.env.get_template(f"{name}.html").render(context)
        return " ".join(subject.split())[:250], text, html


@functools.lru_cache(maxsize=8)
def templates_for(instance_path: Path | None) -> MailTemplates:
    """One template environment per instance folder and process: Jinja compiles each
    template once, and again when its file changes; a newly added override is used after
    a restart."""
    return MailTemplates(instance_path)


def message_id(key: str, mail_from: str) -> str:
    """A Message-ID derived from a delivery's idempotency key: a resent copy carries the
    same id, so mail programs show it once."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "tracker.invalid"
    token = re.sub(r"[^A-Za-z0-9.-]", ".", key)
    return f"<tracker.{token}@{domain}>"


def build_message(
    *, mail_from: str, to: str, subject: str, text: str, html: str, msg_id: str, link: str | None = None
) -> EmailMessage:
    """A multipart (plain text + HTML) message marked as automatically generated.

    Header lines may be up to RFC 5322's 998 characters: Python folds a subject that fits
    in 78 characters onto a line of its own otherwise, which some readers show as a
    leading space."""
    message = EmailMessage(policy=_POLICY)
    message["From"] = mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = msg_id
    message["Date"] = formatdate(localtime=True)
    message["Auto-Submitted"] = "auto-generated"
    if link:
        message["X-Tracker-Link"] = link
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message
