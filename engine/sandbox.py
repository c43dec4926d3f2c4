"""The one small, safe language for titles, conditions and rules: sandboxed Jinja2.

Definitions are data written by admins, so their expressions run in Jinja's
``SandboxedEnvironment`` with undefined values that are falsy instead of errors.
"""

from __future__ import annotations

import math
import re
from contextvars import ContextVar
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.sandbox_helpers import register_helpers

#: the longest string or list one ``*`` may build
MAX_SEQUENCE = 100_000
#: the most numbers one ``range()`` may give, and all ``range()`` calls of one evaluation together
MAX_RANGE = 10_000
MAX_RANGE_TOTAL = 100_000
#: the largest power ``**`` may compute, in bits
MAX_POWER_BITS = 4096
#: the most characters a template may produce
MAX_OUTPUT = 100_000
#: the widest field a format (``'%10s'``, ``'{:>10}'``, ``center``, ``indent``) may pad to
MAX_WIDTH = 1000

_range_spent: ContextVar[list[int] | None] = ContextVar("_range_spent", default=None)
#: a width or precision of 4 digits or more in a %-format (``%9999s``, ``%.9999f``) or a
#: str.format field (``{:>9999}``, ``{0:.9999f}``); digits elsewhere in the text are fine
_WIDE = re.compile(r"%[#0 +\-]*(?:\d{4,}|\d*\.\d{4,})|\{[^{}]*:[^{}]*\d{4,}[^{}]*\}")


class _LimitedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox (no ``_``-attributes, no changing lists or dicts) with limits
    on what one expression may build: a definition cannot make a rule or title take the
    server's memory or time (``'a' * 10**9``, ``9 ** 9 ** 9``, ``range()`` loops in loops,
    ``'%999999999s' % x``)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int) and len(seq) * times > MAX_SEQUENCE:
                    raise SecurityError(f"'*' would build something longer than {MAX_SEQUENCE:,}")
        elif operator == "**" and isinstance(left, int | float) and isinstance(right, int | float):
            if abs(left) > 1 and right > 0 and right * math.log2(abs(left)) > MAX_POWER_BITS:
                raise SecurityError(f"'**' would make a number larger than 2**{MAX_POWER_BITS}")
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any):
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format(value.__self__)  # '{:>999999999}'.format(x)
        return wrapped


def _check_format(text: str) -> None:
    if _WIDE.search(text):
        raise SecurityError(f"a format may pad to at most {MAX_WIDTH} characters")


def _limited_range(*args: int) -> range:
    numbers = range(*args)
    spent = _range_spent.get()
    total = len(numbers) + (spent[0] if spent is not None else 0)
    if len(numbers) > MAX_RANGE or total > MAX_RANGE_TOTAL:
        raise SecurityError(f"range() may give at most {MAX_RANGE:,} numbers ({MAX_RANGE_TOTAL:,} in one evaluation)")
    if spent is not None:
        spent[0] = total
    return numbers


def _width_limited(name: str):
    original = _env.filters[name]

    def limited(value, width=80, *args, **kwargs):
        if isinstance(width, int) and width > MAX_WIDTH:
            raise SecurityError(f"{name} may pad to at most {MAX_WIDTH} characters")
        return original(value, width, *args, **kwargs)

    return limited


_env = _LimitedEnvironment(undefined=ChainableUndefined, autoescape=False)
_env.globals["range"] = _limited_range
_env.globals.pop("lipsum", None)  # made-up text of any length: nothing a definition needs
for _name in ("center", "indent"):
    _env.filters[_name] = _width_limited(_name)
_format_filter = _env.filters["format"]


def _limited_format(value, *args, **kwargs):
    if isinstance(value, str):
        _check_format(value)
    return _format_filter(value, *args, **kwargs)


_env.filters["format"] = _limited_format
# tests and filters for rules: ULN check digit, postcode and NI number formats, dates, duplicates
register_helpers(_env)

_RELATIVE = re.compile(r"^today(?:\s*([+-])\s*(\d+)\s*([dwmy]))?$")


def relative_date(value: str, today: date | None = None) -> date | None:
    """``today``, ``today+30d``, ``today-2w``, ``today+6m`` or an ISO date, as a date.

    Returns ``None`` when the text is neither.
    """
    today = today or date.today()
    text = str(value).strip()
    match = _RELATIVE.match(text)
    if match:
        sign, amount, unit = match.groups()
        if not sign:
            return today
        days = int(amount) * {"d": 1, "w": 7, "m": 30, "y": 365}[unit]
        return today + timedelta(days=days if sign == "+" else -days)
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


class ExpressionError(ValueError):
    """An expression or template that does not compile, or reaches for something the sandbox
    forbids; the message says what."""


def _refuse_hidden(tree: nodes.Node) -> None:
    """Refuse ``x.__class__``, ``x['__globals__']`` and the like when the definition is read:
    the sandbox would only make them undefined at run time, which hides the mistake."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if isinstance(name, str) and name.startswith("_"):
            raise ExpressionError(
                f"'{name}' is a hidden attribute; expressions may use only the item's data and fields"
            )


@lru_cache(maxsize=2048)
def compile_expression(source: str):
    try:
        _refuse_hidden(_env.parse(f"{{{{ {source} }}}}"))
        return _env.compile_expression(source, undefined_to_none=False)
    except TemplateSyntaxError as exc:
        raise ExpressionError(exc.message or str(exc)) from None


@lru_cache(maxsize=2048)
def compile_template(source: str):
    try:
        _refuse_hidden(_env.parse(source))
        return _env.from_string(source)
    except TemplateSyntaxError as exc:
        raise ExpressionError(exc.message or str(exc)) from None


def check_limits(source: str, template: bool = False) -> str | None:
    """What is wrong when ``source``, run on empty data, already goes past the sandbox's limits
    (``'x' * 10**9``, ``range(10**8)``); None otherwise. Definitions are checked with it when
    they are read, so a bomb built of constants is refused with its line, not met at run time."""
    context = context_for({})
    try:
        render(source, context) if template else evaluate(source, context)
    except SecurityError as exc:
        return str(exc)
    except Exception:  # noqa: BLE001 - empty data may well make a sound expression fail
        return None
    return None


def evaluate(source: str, context: dict[str, Any]) -> bool:
    """Evaluate a compiled-once expression to a bool."""
    # What TemplateExpression.__call__ does, with the globals laid under the context in one
    # step instead of Jinja's per-call merge: a third of the time, and rules run for every
    # row of every item saved or exported.
    template = compile_expression(source)._template
    frame = template.new_context({**_env.globals, **context}, shared=True)
    token = _range_spent.set([0])
    try:
        for _chunk in template.root_render_func(frame):
            pass
    finally:
        _range_spent.reset(token)
    return bool(frame.vars.get("result"))


def render(source: str, context: dict[str, Any]) -> str:
    """The template rendered; raises SecurityError past :data:`MAX_OUTPUT` characters."""
    token = _range_spent.set([0])
    try:
        out, size = [], 0
        for chunk in compile_template(source).generate(**context):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise SecurityError(f"the template produced more than {MAX_OUTPUT:,} characters")
            out.append(chunk)
        return "".join(out).strip()
    finally:
        _range_spent.reset(token)


def context_for(data: dict, item: dict | None = None, subject: dict | None = None) -> dict:
    """The names every expression sees; see docs/definitions.md."""
    return {
        "data": data or {},
        "item": item or {},
        "subject": subject or {},
        "today": date.today().isoformat(),
    }
