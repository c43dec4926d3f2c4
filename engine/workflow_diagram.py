"""A workflow drawn as SVG, on the server, with no library.

States are boxes laid out left to right by their distance from the initial state (a
breadth-first walk over the transitions); states no transition reaches come last.
Transitions are labelled arrows: straight when they go one column on, curved above the
boxes when they go further or back, a loop for a state to itself. A transition ``from: "*"``
starts at a small "any state" mark above the diagram. The result carries a ``<title>`` and
``<desc>`` for screen readers; the page lists the transitions as a table too.
"""

from __future__ import annotations

from collections import deque
from html import escape

from engine.definitions.model import Workflow

BOX_W, BOX_H = 150, 46
COL_GAP, ROW_GAP = 170, 60
MARGIN_X, MARGIN_TOP, MARGIN_BOTTOM = 20, 70, 60
_COLOURS = {"open": ("#eef4ff", "#3558a8"), "done": ("#e9f7ee", "#2c7a47"), "cancelled": ("#f4f4f4", "#777777")}


def columns(workflow: Workflow) -> dict[str, int]:
    """Each state's column: its distance in transitions from the initial state; states where
    items end up (done, cancelled) after every open state."""
    initial = next((s.key for s in workflow.states if s.initial), workflow.states[0].key if workflow.states else None)
    depth: dict[str, int] = {}
    if initial is None:
        return depth
    depth[initial] = 0
    queue = deque([initial])
    while queue:
        here = queue.popleft()
        for t in workflow.transitions:
            if t.leaves(here) and t.target not in depth:
                depth[t.target] = depth[here] + 1
                queue.append(t.target)
    unreached = max(depth.values(), default=-1) + 1
    for state in workflow.states:
        depth.setdefault(state.key, unreached)
    # where items end up (done, cancelled) reads best at the right-hand end
    last = max((depth[s.key] for s in workflow.states if s.category == "open"), default=-1) + 1
    for state in workflow.states:
        if state.category != "open" and depth[state.key] < last:
            depth[state.key] = last
    return depth


def render(workflow: Workflow, *, title: str | None = None) -> str:
    """The SVG markup (an inline ``<svg>`` element) of ``workflow``."""
    depth = columns(workflow)
    top = MARGIN_TOP + 18 * _stacked_curves(workflow, depth)
    rows: dict[int, list[str]] = {}
    for state in workflow.states:
        rows.setdefault(depth[state.key], []).append(state.key)
    places: dict[str, tuple[float, float]] = {}
    for col, keys in rows.items():
        for row, key in enumerate(keys):
            places[key] = (MARGIN_X + col * (BOX_W + COL_GAP), top + row * (BOX_H + ROW_GAP))
    width = MARGIN_X * 2 + max(len(rows), 1) * (BOX_W + COL_GAP) - COL_GAP
    height = top + max((len(v) for v in rows.values()), default=1) * (BOX_H + ROW_GAP) - ROW_GAP + MARGIN_BOTTOM
    height += 18 * _stacked_curves(workflow, depth, back=True)
    name = title or f"Workflow {workflow.name}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="workflow-diagram" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" aria-labelledby="wf-title wf-desc" '
        'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif">',
        f'<title id="wf-title">{escape(name)}</title>',
        f'<desc id="wf-desc">{escape(_describe(workflow))}</desc>',
        '<defs><marker id="wf-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#444"/></marker></defs>',
    ]
    seen: dict[tuple[str, str], int] = {}
    curves: dict[str, int] = {}
    labels: list[str] = []
    for t in workflow.transitions:
        sources = [s.key for s in workflow.states] if "*" in t.sources else list(t.sources)
        if "*" in t.sources:
            parts.append(_from_anywhere(places.get(t.target), t.label, labels, top))
            continue
        for source in sources:
            if source not in places or t.target not in places:
                continue
            n = seen.get((source, t.target), 0)
            seen[(source, t.target)] = n + 1
            straight = depth[t.target] == depth[source] + 1 and source != t.target
            if not straight:  # curves into the same state are stacked, not drawn over each other
                n = curves.get(t.target, 0)
                curves[t.target] = n + 1
            parts.append(_edge(places[source], places[t.target], depth[source], depth[t.target], n, t.label, labels))
    for state in workflow.states:
        x, y = places[state.key]
        fill, stroke = _COLOURS.get(state.category, _COLOURS["open"])
        border = 3 if state.initial else 1.5
        parts.append(
            f'<g class="wf-state" data-state="{escape(state.key)}">'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="{fill}" stroke="{stroke}" '
            f'stroke-width="{border}"/>'
            f'<text x="{x + BOX_W / 2}" y="{y + 20}" text-anchor="middle" font-size="14" font-weight="600" '
            f'fill="#1b1b1b">{escape(_fit(state.label, 18))}</text>'
            f'<text x="{x + BOX_W / 2}" y="{y + 37}" text-anchor="middle" font-size="11" fill="{stroke}">'
            f"{escape(state.category + (' · start' if state.initial else ''))}</text></g>"
        )
    parts.extend(labels)  # labels last, so boxes and arrows never cover them
    parts.append("</svg>")
    return "".join(parts)


def _edge(a, b, col_a: int, col_b: int, n: int, label: str, labels: list[str]) -> str:
    (ax, ay), (bx, by) = a, b
    if a == b:  # a loop on the state itself, above its box
        x1, y1 = ax + BOX_W * 0.35, ay
        x2, y2 = ax + BOX_W * 0.65, ay
        lift = 38 + 14 * n
        path = f"M {x1} {y1} C {x1 - 10} {y1 - lift}, {x2 + 10} {y2 - lift}, {x2} {y2}"
        labels.append(_label(ax + BOX_W / 2, ay - lift + 6, label))
    elif col_b == col_a + 1:  # one column on: straight, fanned out when there are several
        x1, y1 = ax + BOX_W, ay + BOX_H / 2 + (n * 8 - 4 if n else 0)
        x2, y2 = bx, by + BOX_H / 2 + (n * 8 - 4 if n else 0)
        path = f"M {x1} {y1} L {x2} {y2}"
        labels.append(_label((x1 + x2) / 2, (y1 + y2) / 2 - 7 - n * 16, label))
    else:  # further on, back, or within a column: a curve above the boxes (below when going back)
        back = col_b <= col_a
        x1, x2 = ax + BOX_W / 2 + (12 if back else -12), bx + BOX_W / 2 + (-12 if back else 12)
        if back:
            y1, y2 = ay + BOX_H, by + BOX_H
            bend = max(y1, y2) + 30 + 18 * n
        else:
            y1, y2 = ay, by
            bend = min(y1, y2) - 26 - 18 * n
        path = f"M {x1} {y1} C {x1} {bend}, {x2} {bend}, {x2} {y2}"
        labels.append(_label((x1 + x2) / 2, bend + (14 if back else -8) * 0.75, label))
    return (
        f'<path class="wf-edge" d="{path}" fill="none" stroke="#444" stroke-width="1.5" marker-end="url(#wf-arrow)"/>'
    )


def _from_anywhere(target, label: str, labels: list[str], top: float) -> str:
    if target is None:
        return ""
    tx, ty = target
    x, y = tx + BOX_W / 2, ty
    start = top - 52
    labels.append(_label(x, start - 2, f"any state: {label}"))
    return (
        f'<path class="wf-edge wf-any" d="M {x} {start + 4} L {x} {y}" fill="none" stroke="#777" '
        'stroke-width="1.5" stroke-dasharray="5 4" marker-end="url(#wf-arrow)"/>'
    )


def _stacked_curves(workflow: Workflow, depth: dict[str, int], *, back: bool = False) -> int:
    """How many curves may stack above (``back``: below) the boxes, for the margin they need."""
    count: dict[str, int] = {}
    for t in workflow.transitions:
        if "*" in t.sources:
            continue
        for source in t.sources:
            if source not in depth or t.target not in depth:
                continue
            going_back = depth[t.target] <= depth[source] and source != t.target
            forward_far = depth[t.target] > depth[source] + 1
            if (back and going_back) or (not back and forward_far):
                count[t.target] = count.get(t.target, 0) + 1
    return max(count.values(), default=0)


def _label(x: float, y: float, text: str) -> str:
    text = _fit(text, 26)
    w = 6.2 * len(text) + 10
    return (
        f'<g class="wf-label"><rect x="{x - w / 2}" y="{y - 12}" width="{w}" height="17" rx="3" fill="#ffffff" '
        f'fill-opacity="0.92"/><text x="{x}" y="{y}" text-anchor="middle" font-size="11" fill="#222">'
        f"{escape(text)}</text></g>"
    )


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(workflow: Workflow) -> str:
    states = ", ".join(f"{s.label} ({s.category})" for s in workflow.states)
    moves = "; ".join(
        f"{t.label}: from {'any state' if '*' in t.sources else ', '.join(t.sources)} to {t.target}"
        for t in workflow.transitions
    )
    return f"States: {states}. Transitions: {moves or 'none'}."
