"""Personal-data detection per column, from column names and value patterns (pure; pyarrow and re).

Each column gets zero or more tags:

- ``pii``: it identifies a person (e-mail, phone, IBAN, card number, national id, IP address, a name, ...);
- ``sensitive``: special categories (GDPR art. 9: health, religion, political opinion, union membership,
  biometrics, sexual orientation, criminal records) and financial secrets;
- ``protected``: an attribute fairness audits group by (sex/gender, race/ethnicity, age, religion,
  disability, marital status, nationality).

Values are checked on a sample (the first rows read); a pattern must match a clear majority of the sampled
non-empty values, with checksums where the format has one (Luhn for cards, ISO 7064 mod 97 for IBANs, the
11-test for Dutch BSNs), so that an order number is not taken for a card. Detection proposes; people can
change the tags.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import pyarrow as pa

__all__ = [
    "MASKED_TAGS",
    "TAGS",
    "ColumnFinding",
    "detect_columns",
    "detect_names",
    "iban_ok",
    "luhn_ok",
    "merge_tags",
]

TAGS = ("pii", "sensitive", "protected")
# Columns whose values are hidden from readers without the data.pii permission.
MASKED_TAGS = frozenset({"pii", "sensitive"})
SAMPLE_VALUES = 2000
MATCH_SHARE = 0.8


@dataclass
class ColumnFinding:
    column: str
    tags: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def add(self, tag: str, kind: str, reason: str) -> None:
        if tag not in self.tags:
            self.tags.append(tag)
        if kind not in self.kinds:
            self.kinds.append(kind)
        self.reasons.append(reason)

    def as_dict(self) -> dict[str, Any]:
        return {"tags": sorted(self.tags), "kinds": self.kinds, "reasons": self.reasons, "source": "detected"}


# -- column names -------------------------------------------------------------------------------------------


def _words(name: str) -> set[str]:
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return {w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w}


_NAME_RULES: list[tuple[str, str, set[str] | frozenset[str]]] = [
    ("pii", "email", {"email", "mail", "e-mail"}),
    ("pii", "phone", {"phone", "mobile", "telephone", "tel", "msisdn", "fax"}),
    ("pii", "iban", {"iban", "bic", "account"}),
    ("pii", "card", {"card", "pan", "cc", "creditcard"}),
    ("pii", "national_id", {"ssn", "nino", "bsn", "passport", "nationalid", "tin", "taxid", "insee"}),
    ("pii", "person_name", {"firstname", "lastname", "surname", "fullname", "forename", "givenname"}),
    ("pii", "address", {"address", "street", "postcode", "zip", "zipcode", "city"}),
    ("pii", "birth_date", {"dob", "birthdate", "birthday", "birth"}),
    ("pii", "ip_address", {"ip", "ipv4", "ipv6"}),
    ("sensitive", "health", {"health", "diagnosis", "medical", "disease", "illness", "medication"}),
    ("sensitive", "beliefs", {"religion", "political", "union", "belief"}),
    ("sensitive", "biometric", {"biometric", "fingerprint", "faceprint"}),
    ("sensitive", "criminal", {"criminal", "conviction", "offence", "offense"}),
    ("sensitive", "orientation", {"orientation", "sexuality"}),
    ("protected", "sex", {"sex", "gender"}),
    ("protected", "race", {"race", "ethnicity", "ethnic"}),
    ("protected", "age", {"age"}),
    ("protected", "religion", {"religion"}),
    ("protected", "disability", {"disability", "disabled", "handicap"}),
    ("protected", "marital_status", {"marital", "married"}),
    ("protected", "nationality", {"nationality", "citizenship"}),
]


def _name_findings(name: str, finding: ColumnFinding) -> None:
    words = _words(name)
    joined = "".join(sorted(words)) if len(words) <= 3 else ""
    compact = re.sub(r"[^a-z0-9]", "", name.lower())
    for tag, kind, keys in _NAME_RULES:
        if words & keys or compact in keys or joined in keys:
            finding.add(tag, kind, f"column name {name!r}")
    if words & {"name"} and words & {
        "first",
        "last",
        "full",
        "given",
        "family",
        "customer",
        "person",
        "client",
    }:
        finding.add("pii", "person_name", f"column name {name!r}")


# -- values -------------------------------------------------------------------------------------------------

_EMAIL = re.compile(r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}$")
_PHONE = re.compile(r"^\+?[0-9(][0-9 ()./\-]{6,18}[0-9]$")
_IBAN = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")
_CARD = re.compile(r"^[0-9][0-9 \-]{11,21}[0-9]$")
_SSN = re.compile(r"^(?!000|666|9[0-9]{2})[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}$")
_NINO = re.compile(r"^(?![DFIQUV])[A-Z](?![DFIQUVO])[A-Z] ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]$")
_BSN = re.compile(r"^[0-9]{9}$")
_DATE = re.compile(r"^([0-9]{1,4})[/.\-]([0-9]{1,2})[/.\-]([0-9]{1,4})([ T].*)?$")


def luhn_ok(text: str) -> bool:
    digits = [int(c) for c in text if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    compact = text.replace(" ", "").upper()
    if not _IBAN.match(compact):
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def _bsn_ok(text: str) -> bool:
    if not _BSN.match(text):
        return False
    weights = [9, 8, 7, 6, 5, 4, 3, 2, -1]
    return sum(int(c) * w for c, w in zip(text, weights, strict=True)) % 11 == 0 and text != "000000000"


def _ip_ok(text: str) -> bool:
    if not any(c in text for c in ".:") or len(text) > 45:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _phone_ok(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    # A bare run of digits is as likely an order or account number: a phone number shows its "+" or its grouping.
    shaped = text.startswith("+") or any(c in text for c in " ()-./")
    if _DATE.match(text):
        return False  # 23/01/2026 has the digits and the separators of a phone number
    return shaped and bool(_PHONE.match(text)) and 8 <= digits <= 15 and not luhn_ok(text)


@cache
def _first_names() -> frozenset[str]:
    text = resources.files("bridgehead.data").joinpath("first_names.txt").read_text(encoding="utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def _name_ok(text: str) -> bool:
    parts = text.replace(",", " ").split()
    return 1 <= len(parts) <= 4 and any(p.lower() in _first_names() for p in parts)


_VALUE_RULES: list[tuple[str, str, Callable[[str], bool]]] = [
    ("pii", "email", lambda v: bool(_EMAIL.match(v))),
    ("pii", "iban", iban_ok),
    ("pii", "card", lambda v: bool(_CARD.match(v)) and luhn_ok(v)),
    ("pii", "national_id", lambda v: bool(_SSN.match(v) or _NINO.match(v.upper())) or _bsn_ok(v)),
    ("pii", "ip_address", _ip_ok),
    ("pii", "phone", _phone_ok),
    ("pii", "person_name", _name_ok),
]


def _value_findings(values: list[str], finding: ColumnFinding) -> None:
    if not values:
        return
    for tag, kind, check in _VALUE_RULES:
        hits = sum(1 for v in values if check(v))
        if hits >= MATCH_SHARE * len(values):
            finding.add(
                tag, kind, f"{hits} of {len(values)} sampled values look like {kind.replace('_', ' ')}"
            )
            return  # one value kind per column: the first (most specific) rule that fits


def _sample(column: pa.Array | pa.ChunkedArray) -> list[str]:
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        else:
            return []
    values = column.drop_null().slice(0, SAMPLE_VALUES).to_pylist()
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


def detect_columns(
    table: pa.Table | pa.RecordBatch, names: Iterable[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Tags per column (only columns with at least one tag), from names and a sample of values."""
    out: dict[str, dict[str, Any]] = {}
    for name in names or table.schema.names:
        finding = ColumnFinding(name)
        _name_findings(name, finding)
        _value_findings(_sample(table.column(name)), finding)
        if finding.tags:
            out[name] = finding.as_dict()
    return out


def detect_names(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Tags from column names alone (when no values are at hand, e.g. a schema logged with a run)."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        finding = ColumnFinding(name)
        _name_findings(name, finding)
        if finding.tags:
            out[name] = finding.as_dict()
    return out


def merge_tags(*sources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Union of several detections, column by column (tags, kinds and reasons combined)."""
    out: dict[str, dict[str, Any]] = {}
    for source in sources:
        for column, entry in source.items():
            merged = out.setdefault(
                column, {"tags": [], "kinds": [], "reasons": [], "source": entry.get("source", "")}
            )
            for key in ("tags", "kinds", "reasons"):
                for item in entry.get(key, []):
                    if item not in merged[key]:
                        merged[key].append(item)
            merged["tags"].sort()
    return out
