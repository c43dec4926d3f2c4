"""Writing definition documents as text: new types from scratch, copies under a new key,
the version line of a publish, and readable diffs between versions.

Edits that change one top-level scalar (``key:``, ``version:``) are made on the text, so an
admin's comments and layout survive. Edits of structure (the field builder) write schema.json
with :func:`dump_json` and a YAML document with :func:`edit_yaml`, which keeps the document's
comments, key order and layout wherever they still apply.
"""

from __future__ import annotations

import copy
import difflib
import io
import json
import re
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.error import YAMLError as RoundTripError
from ruamel.yaml.tokens import CommentToken

from engine import limits
from engine.definitions.store import DOCUMENTS, Texts


def dump_yaml(value: Any) -> str:
    """YAML as an admin would write it: keys in their order, block style, no width wrapping."""
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)


def dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _scalar(value: Any) -> str:
    """A YAML scalar on one line: JSON's double-quoted strings are valid YAML."""
    if isinstance(value, bool | int) or (isinstance(value, str) and re.fullmatch(r"[a-z][a-z0-9_]*", value)):
        return json.dumps(value) if isinstance(value, bool) else str(value)
    return json.dumps(value, ensure_ascii=False)


def set_top_level(text: str, key: str, value: Any) -> str:
    """``text`` with the top-level ``key:`` set to ``value`` (added after the first line when
    it is missing); the rest of the text, comments included, is left as it was."""
    line = f"{key}: {_scalar(value)}"
    pattern = re.compile(rf"^{re.escape(key)}:[ \t]*([^\n#]*?)[ \t]*(#.*)?$", re.MULTILINE)
    found = pattern.search(text)
    if found is not None and found.group(1).strip() and not found.group(1).strip().startswith(("|", ">")):
        comment = f"  {found.group(2)}" if found.group(2) else ""
        return text[: found.start()] + line + comment + text[found.end() :]
    if found is not None:  # a block value: rewrite the document, keeping what still applies
        try:
            data = yaml.safe_load(text)
            limits.check_structure(data)
        except (yaml.YAMLError, limits.DefinitionTooLarge, RecursionError):
            data = None
        if isinstance(data, dict):
            data[key] = value
            return edit_yaml(text, data)
    lines = text.splitlines(keepends=True)
    first = next((i for i, s in enumerate(lines) if s.strip() and not s.lstrip().startswith("#")), None)
    if first is None:
        return line + "\n" + text
    lines.insert(first + 1, line + "\n")
    return "".join(lines)


def drop_top_level(text: str, key: str) -> str:
    """``text`` without the top-level ``key:`` and its block; everything else as it was."""
    lines = text.splitlines(keepends=True)
    out, skipping = [], False
    for line in lines:
        starts_entry = bool(line.strip()) and not line[0].isspace() and not line.startswith("#")
        if starts_entry:
            skipping = re.match(rf"{re.escape(key)}\s*:", line) is not None
        if not skipping:
            out.append(line)
    return "".join(out)


def without_migrations(texts: Texts) -> Texts:
    """A version's ``migrations:`` bring items of the version before it; a new version
    starting from it must declare its own."""
    return Texts(
        texts.schema_json, drop_top_level(texts.type_yaml, "migrations"), texts.workflow_yaml, texts.roles_yaml
    )


def new_type_texts(key: str, name: str, subject: str = "none") -> Texts:
    """A small working type: a title field and a two-state workflow of its own."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": name,
        "type": "object",
        "properties": {"title": {"type": "string", "title": "Title", "minLength": 1, "maxLength": 200}},
        "required": ["title"],
    }
    manifest = {
        "key": key,
        "name": name,
        "version": 1,
        "workflow": key,
        "subject": subject,
        "title": "{{ data.title }}",
        "list_columns": ["title"],
    }
    workflow = {
        "key": key,
        "name": name,
        "states": [
            {"key": "open", "label": "Open", "category": "open", "initial": True},
            {"key": "done", "label": "Done", "category": "done"},
        ],
        "transitions": [
            {"key": "finish", "from": ["open"], "to": "done", "label": "Finish"},
            {"key": "reopen", "from": ["done"], "to": "open", "label": "Reopen"},
        ],
    }
    return Texts(dump_json(schema), dump_yaml(manifest), dump_yaml(workflow), "")


def renamed_texts(texts: Texts, key: str, name: str, *, own_workflow: bool) -> Texts:
    """A copy of ``texts`` under a new key and name, at version 1. With ``own_workflow`` the
    workflow document is renamed to the new key too, and type.yaml points at it."""
    manifest = set_top_level(texts.type_yaml, "key", key)
    manifest = set_top_level(manifest, "name", name)
    manifest = set_top_level(manifest, "version", 1)
    workflow = texts.workflow_yaml
    if own_workflow and workflow.strip():
        workflow = set_top_level(set_top_level(workflow, "key", key), "name", name)
        manifest = set_top_level(manifest, "workflow", key)
    return Texts(texts.schema_json, manifest, workflow, texts.roles_yaml)


def diff(old: Texts | None, new: Texts, old_label: str = "before", new_label: str = "after") -> str:
    """A unified diff of every document that changed; an empty string when none did."""
    before = old.by_document() if old else dict.fromkeys(DOCUMENTS, "")
    parts = []
    for name, text in new.by_document().items():
        if before[name] == text:
            continue
        parts.append(
            "".join(
                difflib.unified_diff(
                    _lines(before[name]),
                    _lines(text),
                    fromfile=f"{old_label}/{name}",
                    tofile=f"{new_label}/{name}",
                )
            )
        )
    return "".join(parts)


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines


# -- builder edits that keep the admin's text ---------------------------------------------------------
#
# The builder edits plain values (what yaml.safe_load gives). To write a YAML document back
# without losing what the admin wrote, the new value is laid over the document's round-trip
# tree (ruamel.yaml keeps comments, key order, flow or block style and quoting on it): every
# key and list item that is still there keeps its comments and style, new ones are written in
# the style of their neighbours. A three-way merge of the lines then keeps the admin's own
# layout (lists wrapped by hand) wherever the edit did not reach, and the result is read back
# with the safe loader: whatever the merge gives must mean exactly the edited value, or the
# plainer text is used.


def _round_trip() -> YAML:
    """The repository's style: 2-space mappings, sequences indented under their key, no wrapping."""
    rt = YAML(typ="rt", pure=True)
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.width = 4096
    rt.preserve_quotes = True
    return rt


def load_round_trip(text: str) -> Any:
    """``text`` as ruamel's round-trip tree. Call it only on text the safe loader has read and
    the limits of :mod:`engine.limits` have passed: the round-trip loader builds only
    mappings, lists and scalars, but it does not count aliases."""
    return _round_trip().load(text)


def dump_round_trip(value: Any) -> str:
    out = io.StringIO()
    _round_trip().dump(value, out)
    return out.getvalue()


def edit_yaml(text: str, after: Any) -> str:
    """``text`` (a YAML document the safe loader has read) changed to mean ``after``, keeping
    its comments, order and layout wherever they still apply; "" when ``after`` is empty."""
    if not after:
        return ""
    try:
        old = load_round_trip(text) if text.strip() else None
    except RoundTripError:  # e.g. a key given twice, which the safe loader lets through
        old = None
    base = dump_round_trip(old) if old is not None else ""
    edited = dump_round_trip(_carry(old, after))
    candidates = [_merge_lines(base, text, edited), edited] if old is not None else [edited]
    return next((c for c in candidates if _means(c, after)), dump_yaml(after))


def _means(text: str, value: Any) -> bool:
    try:
        return dump_yaml(yaml.safe_load(text)) == dump_yaml(value)
    except yaml.YAMLError:
        return False


def _same(old: Any, new: Any) -> bool:
    """Whether the round-trip node ``old`` means ``new`` (in order, except where ``<<:`` merges
    keys in, whose order the safe loader decides)."""
    if isinstance(new, dict):
        if not isinstance(old, dict) or len(old) != len(new):
            return False
        if list(old) != list(new) and not getattr(old, "merge", None):
            return False
        return all(key in old and _same(old[key], value) for key, value in new.items())
    if isinstance(new, list):
        return isinstance(old, list) and len(old) == len(new) and all(map(_same, old, new))
    return not isinstance(old, dict | list) and isinstance(old, bool) == isinstance(new, bool) and old == new


def _carry(old: Any, new: Any, peer: Any = None) -> Any:
    """``new`` as round-trip nodes, taking from ``old`` (the node it replaces) what still
    applies: a part that did not change is kept whole (comments, quoting, anchors), a changed
    one keeps the comments and style of its entries that are still there. New parts are
    written like ``peer``, a neighbour of the same shape (another state, task list...)."""
    if old is not None and _same(old, new):
        return old
    if isinstance(new, dict) and isinstance(old, CommentedMap):
        return _carry_map(old, new, peer)
    if isinstance(new, list) and isinstance(old, CommentedSeq):
        return _carry_seq(old, new, peer)
    return _fresh(new, peer)


def _fresh(value: Any, like: Any) -> Any:
    """``value`` written as ``like`` is (flow or block style, all the way down); with nothing
    to go by, lists of scalars on one line (``roles: [a, b]``) and mappings in blocks."""
    if isinstance(value, dict):
        out: Any = CommentedMap(
            (key, _fresh(item, like.get(key) if isinstance(like, dict) else None)) for key, item in value.items()
        )
    elif isinstance(value, list):
        sample = like[0] if isinstance(like, list) and like else None
        out = CommentedSeq(_fresh(item, sample) for item in value)
    else:
        return value
    if isinstance(like, CommentedMap | CommentedSeq) and isinstance(like, dict) == isinstance(value, dict):
        flow = like.fa.flow_style()
    else:
        flow = isinstance(value, list) and not any(isinstance(item, dict | list) for item in value)
    if flow:
        out.fa.set_flow_style()
    return out


def _carry_map(old: CommentedMap, new: dict, peer: Any) -> CommentedMap:
    out = CommentedMap()
    peer = peer if isinstance(peer, dict) else {}
    for key, value in new.items():
        out[key] = _carry(old[key], value, peer.get(key)) if key in old else _fresh(value, peer.get(key))
    _restyle(out, old)
    for key in new:
        if key in old and key in old.ca.items:
            out.ca.items[key] = list(old.ca.items[key])
            if isinstance(old[key], CommentedSeq) and out[key] is not old[key] and _first_dropped(old[key], new[key]):
                out.ca.items[key][3] = None  # the comment above a list's first entry goes with it
    for key in new:
        if key in old:
            _keep_tail(old, out, key)
    _move_tails(old, list(old), out, list(new), [key if key in old else _NEW for key in new])
    return out


def _carry_seq(old: CommentedSeq, new: list, peer: Any) -> CommentedSeq:
    out = CommentedSeq()
    pairs = _pair_items(old, new)
    for j, value in enumerate(new):
        i = pairs.get(j)
        like = next((o for o in (old[k] for k in (i, j - 1, j, 0) if k is not None and 0 <= k < len(old))), None)
        neighbour = old[j - 1] if i is not None and 0 < j <= len(old) else like
        out.append(_carry(old[i], value, neighbour) if i is not None else _fresh(value, like))
    _restyle(out, old)
    kept = [pairs.get(j, _NEW) for j in range(len(new))]
    for j, i in enumerate(kept):
        if i is not _NEW and i in old.ca.items:
            out.ca.items[j] = list(old.ca.items[i])
    for j, i in enumerate(kept):
        if i is not _NEW:
            _keep_tail(old, out, i, j)
    _move_tails(old, list(range(len(old))), out, list(range(len(new))), kept)
    return out


def _block(value: Any) -> bool:
    return isinstance(value, CommentedMap | CommentedSeq) and len(value) > 0 and not value.fa.flow_style()


def _keep_tail(old: Any, out: Any, slot: Any, new_slot: Any = None) -> None:
    """A block that became a scalar, an empty or a one-line value had the comment lines after it
    kept on its last entry: keep them after the value that took its place."""
    new_slot = slot if new_slot is None else new_slot
    before, after = old[slot], out[new_slot]
    if _block(before) and not (_block(after) and isinstance(after, dict) == isinstance(before, dict)):
        lines = _tail_lines(_tail(old, slot))
        if lines:
            _set_tail_lines(_tail(out, new_slot), lines)


def _first_dropped(old: list, new: list) -> bool:
    return bool(old) and 0 not in _pair_items(old, new).values()


_NEW = object()


def _restyle(out: CommentedMap | CommentedSeq, old: CommentedMap | CommentedSeq) -> None:
    if old.fa.flow_style():
        out.fa.set_flow_style()
    out.ca.comment = copy.copy(old.ca.comment)
    out.ca.end = list(old.ca.end or [])


def _signature(item: Any) -> str:
    """What identifies a list item across an edit: the key of a state, transition, task list,
    role; the section of a layout entry; the field of a migration step; else its whole value."""
    if isinstance(item, dict):
        for name in ("key", "section"):
            if isinstance(item.get(name), str):
                return f"{name}={item[name]}"
        if len(item) == 1:
            [(kind, body)] = item.items()
            if isinstance(body, dict) and isinstance(body.get("field"), str):
                return f"{kind}={body['field']}"
    return json.dumps(item, sort_keys=True, default=str)


def _pair_items(old: list, new: list) -> dict[int, int]:
    """``{new index: old index}``: items that kept their identity (also when moved), and items
    edited in place (an unmatched run of new items facing an unmatched run of old ones, paired
    in order)."""
    matcher = difflib.SequenceMatcher(None, [_signature(v) for v in old], [_signature(v) for v in new], autojunk=False)
    pairs = {}
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op in ("equal", "replace"):
            pairs.update({j: i for i, j in zip(range(i1, i2), range(j1, j2), strict=False)})
    moved = {}  # an item moved up or down the list is the same item
    for i, item in enumerate(old):
        if i not in pairs.values():
            moved.setdefault(_signature(item), i)
    for j, item in enumerate(new):
        if j not in pairs and _signature(item) in moved:
            pairs[j] = moved.pop(_signature(item))
    return pairs


def _move_tails(old: Any, old_slots: list, out: Any, new_slots: list, kept: list) -> None:
    """Comment lines between two entries are kept by ruamel on the entry before them, though
    they belong to the one after. Where entries were dropped or inserted, move them so they
    stay in front of the entry they were written above; those in front of a dropped entry go
    with it."""
    order = {slot: n for n, slot in enumerate(old_slots)}
    positions = [order[k] if k is not _NEW else None for k in kept]
    known = [p for p in positions if p is not None]
    if known != sorted(known):
        return  # reordered: each entry keeps its own lines
    last_old, last_new = -1, -1  # the kept entry before this point, in the old and the new order
    for n, position in enumerate([*positions, len(old_slots)]):
        if position is None:
            continue
        if position - last_old > 1 or n - last_new > 1:
            lines = _tail_lines(_tail(old, old_slots[position - 1])) if position > 0 else ""
            if last_new >= 0:
                _set_tail_lines(_tail(out, new_slots[last_new]), "")
            if n > 0 and lines:
                _set_tail_lines(_tail(out, new_slots[n - 1]), lines)
        last_old, last_new = position, n


def _tail(container: Any, slot: Any) -> tuple[Any, Any]:
    """Where the comment written after ``container[slot]`` is kept: ``(holder, index)``."""
    value = container[slot]
    if isinstance(value, CommentedMap | CommentedSeq) and len(value) and not value.fa.flow_style():
        if value.ca.end:
            return (value.ca, "end")
        return _tail(value, list(value)[-1] if isinstance(value, dict) else len(value) - 1)
    entry = container.ca.items.setdefault(slot, [None, None, None, None])
    return (entry, 2 if isinstance(container, dict) else 0)


def _tail_lines(tail: tuple[Any, Any]) -> str:
    holder, index = tail
    if index == "end":
        return "".join(t.value for t in holder.end or ())
    token = holder[index]
    value = token.value if isinstance(token, CommentToken) else ""
    return value.partition("\n")[2]


def _set_tail_lines(tail: tuple[Any, Any], lines: str) -> None:
    holder, index = tail
    if index == "end":
        holder.end = [CommentToken(lines, CommentMark(0), None)] if lines else []
        return
    token = holder[index]
    if isinstance(token, CommentToken):
        eol = token.value.partition("\n")[0]
        holder[index] = CommentToken(f"{eol}\n{lines}", token.start_mark, None) if eol or lines else None
    elif lines:
        holder[index] = CommentToken(f"\n{lines}", CommentMark(0), None)


def _merge_lines(base: str, mine: str, edited: str) -> str:
    """A three-way merge by lines: ``mine`` (the admin's text) where only the layout differs
    from ``base`` (ruamel's writing of the same value), ``edited`` where the edit changed
    ``base``, and ``edited`` where both differ."""
    base_l, mine_l, edited_l = (s.splitlines(keepends=True) for s in (base, mine, edited))
    syncs = []
    to_mine = difflib.SequenceMatcher(None, base_l, mine_l, autojunk=False).get_matching_blocks()
    to_edited = difflib.SequenceMatcher(None, base_l, edited_l, autojunk=False).get_matching_blocks()
    a = b = 0
    while a < len(to_mine) and b < len(to_edited):
        (ab, am, al), (bb, bm, bl) = to_mine[a], to_edited[b]
        start, end = max(ab, bb), min(ab + al, bb + bl)
        if start < end:
            syncs.append((start, end, am + start - ab, bm + start - bb))
        if ab + al < bb + bl:
            a += 1
        else:
            b += 1
    syncs.append((len(base_l), len(base_l), len(mine_l), len(edited_l)))
    out: list[str] = []
    z = m = e = 0
    for start, end, at_mine, at_edited in syncs:
        was, ours, theirs = base_l[z:start], mine_l[m:at_mine], edited_l[e:at_edited]
        out += ours if was == theirs else theirs
        out += mine_l[at_mine : at_mine + end - start]
        z, m, e = end, at_mine + end - start, at_edited + end - start
    return "".join(out)
