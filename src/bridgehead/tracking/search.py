"""MLflow's search filter grammar, parsed into a small AST. Pure: no database import.

Supported: ``<entity>.<key> <op> <value>`` clauses joined by AND, where entity is ``metrics``, ``params``,
``tags`` or ``attributes`` (``attribute``/``attr``/``run``), keys may be back-quoted or double-quoted,
values are numbers (metrics) or quoted strings; ops ``= != < <= > >= LIKE ILIKE IN NOT IN``.
Order-by: ``<entity>.<key> [ASC|DESC]``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from bridgehead.errors import BadRequest

__all__ = ["Clause", "OrderBy", "parse_filter", "parse_order_by"]

ENTITIES = {
    "metric": "metrics",
    "metrics": "metrics",
    "param": "params",
    "params": "params",
    "parameter": "params",
    "parameters": "params",
    "tag": "tags",
    "tags": "tags",
    "attribute": "attributes",
    "attributes": "attributes",
    "attr": "attributes",
    "run": "attributes",
    "dataset": "datasets",
    "datasets": "datasets",
}
ATTRIBUTES = {
    "run_id",
    "run_name",
    "status",
    "start_time",
    "end_time",
    "user_id",
    "artifact_uri",
    "lifecycle_stage",
    "experiment_id",
    "name",
    "created",
    "run_uuid",
}
OPS = ("NOT IN", "IN", "ILIKE", "LIKE", "!=", "<=", ">=", "=", "<", ">")

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<ident>(?:[A-Za-z_]+)\.(?:`[^`]*`|"[^"]*"|[A-Za-z0-9_.\-/:]+))
      | (?P<bare>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
      | (?P<op>!=|<=|>=|=|<|>)
      | (?P<paren>[(),])
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Clause:
    entity: str  # metrics | params | tags | attributes | datasets
    key: str
    op: str
    value: str | float | tuple[str, ...]


@dataclass(frozen=True)
class OrderBy:
    entity: str
    key: str
    ascending: bool


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "`\"'":
        return text[1:-1].replace("\\'", "'").replace('\\"', '"')
    return text


def _split_ident(ident: str, attributes: Collection[str] = ATTRIBUTES) -> tuple[str, str]:
    prefix, _, key = ident.partition(".")
    entity = ENTITIES.get(prefix.lower())
    if entity is None:
        raise BadRequest(f"Invalid entity type '{prefix}' in search expression.", details={"entity": prefix})
    key = _unquote(key)
    if entity == "attributes" and key not in attributes:
        raise BadRequest(f"Invalid attribute key '{key}'.", details={"key": key})
    return entity, key


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise BadRequest(f"Could not parse search filter near: {text[pos : pos + 30]!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def parse_filter(text: str | None, attributes: Collection[str] = ATTRIBUTES) -> list[Clause]:
    """Parse an MLflow search filter. Raises BadRequest naming the problem.

    ``attributes`` are the attribute keys of the searched object (runs by default; experiments, registered
    models and model versions have their own)."""
    if not text or not text.strip():
        return []
    tokens = _tokens(text)
    clauses: list[Clause] = []
    i = 0
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "ident":
            entity, key = _split_ident(value, attributes)
        elif kind == "bare" and value.lower() in attributes:
            entity, key = "attributes", value.lower()
        else:
            raise BadRequest(f"Expected '<entity>.<key>' in search filter, got {value!r}.")
        i += 1
        # Operators: symbols, LIKE/ILIKE/IN or NOT IN (bare words).
        if i >= len(tokens):
            raise BadRequest(f"Missing operator after '{value}'.")
        kind, op = tokens[i]
        if (
            kind == "bare"
            and op.upper() == "NOT"
            and i + 1 < len(tokens)
            and tokens[i + 1][1].upper() == "IN"
        ):
            op, i = "NOT IN", i + 2
        elif kind == "bare" and op.upper() in ("LIKE", "ILIKE", "IN"):
            op, i = op.upper(), i + 1
        elif kind == "op":
            i += 1
        else:
            raise BadRequest(f"Invalid operator {op!r} in search filter.")
        parsed: str | float | tuple[str, ...]
        if op in ("IN", "NOT IN"):
            if i >= len(tokens) or tokens[i][1] != "(":
                raise BadRequest("IN expects a parenthesised list of quoted values.")
            items: list[str] = []
            i += 1
            while i < len(tokens) and tokens[i][1] != ")":
                if tokens[i][0] == "string":
                    items.append(_unquote(tokens[i][1]))
                elif tokens[i][1] != ",":
                    raise BadRequest("IN expects quoted values.")
                i += 1
            if i >= len(tokens):
                raise BadRequest("Unclosed '(' in search filter.")
            i += 1
            parsed = tuple(items)
        else:
            if i >= len(tokens):
                raise BadRequest(f"Missing value after {op!r}.")
            vkind, raw = tokens[i]
            i += 1
            if vkind == "number":
                parsed = float(raw)
            elif vkind == "string":
                parsed = _unquote(raw)
            else:
                raise BadRequest(f"Expected a quoted string or a number, got {raw!r}.")
            if entity == "metrics" and not isinstance(parsed, float):
                raise BadRequest(f"Metric comparisons need a number, got {raw!r}.")
            if entity in ("params", "tags") and isinstance(parsed, float):
                raise BadRequest(f"Param and tag values must be quoted strings, got {raw!r}.")
            if entity == "metrics" and op in ("LIKE", "ILIKE"):
                raise BadRequest("LIKE is not supported on metrics.")
        clauses.append(Clause(entity, key, op, parsed))
        if i < len(tokens):
            kind, word = tokens[i]
            if kind == "bare" and word.upper() == "AND":
                i += 1
                if i >= len(tokens):
                    raise BadRequest("Dangling AND at the end of the search filter.")
            else:
                raise BadRequest(f"Expected AND between clauses, got {word!r} (OR is not supported).")
    return clauses


def parse_order_by(items: list[str] | None, attributes: Collection[str] = ATTRIBUTES) -> list[OrderBy]:
    result: list[OrderBy] = []
    for item in items or []:
        text = item.strip()
        ascending = True
        upper = text.upper()
        if upper.endswith(" DESC"):
            ascending, text = False, text[:-5].strip()
        elif upper.endswith(" ASC"):
            text = text[:-4].strip()
        if "." in text and text.split(".", 1)[0].lower() in ENTITIES:
            entity, key = _split_ident(text, attributes)
        elif text.lower() in attributes:
            entity, key = "attributes", text.lower()
        else:
            raise BadRequest(f"Invalid order_by clause {item!r}.")
        result.append(OrderBy(entity, key, ascending))
    return result
