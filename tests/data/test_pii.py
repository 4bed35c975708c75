"""Personal-data detection: names and value patterns, checksums that keep look-alikes out."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from bridgehead.data.pii import detect_columns, detect_names, iban_ok, luhn_ok, merge_tags


def _kinds(found: dict[str, dict[str, Any]], column: str) -> list[str]:
    kinds: list[str] = found.get(column, {}).get("kinds", [])
    return kinds


def test_value_patterns_are_recognised_whatever_the_column_is_called() -> None:
    table = pa.table(
        {
            "c1": ["anna@example.com", "b.smith@bank.example", "x@y.org"],
            "c2": ["+44 20 7946 0958", "+49 30 1234567", "(212) 555-0188"],
            "c3": ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "NL91ABNA0417164300"],
            "c4": ["4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009"],
            "c5": ["123-45-6789", "078-05-1120", "219-09-9999"],
            "c6": ["10.0.0.1", "2001:db8::1", "192.168.1.20"],
            "c7": ["Anna Schmidt", "John Smith", "Maria Rossi"],
        }
    )
    found = detect_columns(table)
    expected = {
        "c1": "email",
        "c2": "phone",
        "c3": "iban",
        "c4": "card",
        "c5": "national_id",
        "c6": "ip_address",
    }
    for column, kind in expected.items():
        assert _kinds(found, column) == [kind], (column, found.get(column))
        assert found[column]["tags"] == ["pii"]
    assert _kinds(found, "c7") == ["person_name"]


def test_look_alikes_are_not_personal_data() -> None:
    table = pa.table(
        {
            "order_no": ["123456789012", "000000000001", "555555555555"],  # digits only: not a phone
            "reference": ["4111 1111 1111 1112", "1234 5678 9012 3456", "5500 0000 0000 0005"],  # Luhn fails
            "code": ["GB00 WEST 1234 5698 7654 32", "DE00370400440532013000", "XX12ABC"],  # mod 97 fails
            "product": ["red chair", "blue table", "lamp"],
            "version": ["1.2.3.4.5", "2.0", "3.1"],
            "applied_on": ["23/01/2026", "2026-11-26", "01.02.2025"],  # dates, not phone numbers
        }
    )
    assert detect_columns(table) == {}


def test_checksums() -> None:
    assert luhn_ok("4539 1488 0343 6467")
    assert not luhn_ok("4539 1488 0343 6468")
    assert iban_ok("FR14 2004 1010 0505 0001 3M02 606")
    assert not iban_ok("FR15 2004 1010 0505 0001 3M02 606")


@pytest.mark.parametrize(
    ("column", "tag", "kind"),
    [
        ("Gender", "protected", "sex"),
        ("ethnicity", "protected", "race"),
        ("applicant_age", "protected", "age"),
        ("marital_status", "protected", "marital_status"),
        ("diagnosis_code", "sensitive", "health"),
        ("religion", "sensitive", "beliefs"),
        ("customerEmail", "pii", "email"),
        ("first_name", "pii", "person_name"),
        ("date_of_birth", "pii", "birth_date"),
        ("postcode", "pii", "address"),
    ],
)
def test_column_names(column: str, tag: str, kind: str) -> None:
    found = detect_names([column])
    assert tag in found[column]["tags"], found
    assert kind in found[column]["kinds"], found


def test_ordinary_names_are_left_alone() -> None:
    assert detect_names(["amount", "region", "score", "message", "page", "usage", "language"]) == {}


def test_merge_combines_detections() -> None:
    merged = merge_tags(
        detect_names(["email"]), {"email": {"tags": ["pii"], "kinds": ["email"], "reasons": ["x"]}}
    )
    assert merged["email"]["tags"] == ["pii"]
    assert merged["email"]["reasons"] == ["column name 'email'", "x"]
