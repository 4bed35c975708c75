"""The one settings registry: BRIDGEHEAD_ environment, embedded defaults, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bridgehead.settings import Settings


def test_embedded_default_is_sqlite_in_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("BRIDGEHEAD_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    s = Settings()
    assert s.home == tmp_path / ".bridgehead"
    assert s.resolved_database_url == f"sqlite:///{tmp_path / '.bridgehead' / 'bridgehead.db'}"
    assert s.resolved_artifact_root == str(tmp_path / ".bridgehead" / "artifacts")


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BRIDGEHEAD_HOME", str(tmp_path))
    monkeypatch.setenv("BRIDGEHEAD_DATABASE_URL", "postgresql+psycopg://u:p@db:5432/bh")
    monkeypatch.setenv("BRIDGEHEAD_PORT", "9000")
    monkeypatch.setenv("BRIDGEHEAD_LOG_LEVEL", "DEBUG")
    s = Settings()
    assert (s.home, s.port, s.log_level) == (tmp_path, 9000, "DEBUG")
    assert s.resolved_database_url == "postgresql+psycopg://u:p@db:5432/bh"


@pytest.mark.parametrize(
    "field,value",
    [
        ("database_url", "mysql://x"),
        ("port", 0),
        ("port", 70000),
        ("log_level", "LOUD"),
        ("max_body_bytes", 1),
        ("public_url", "bridgehead.bank.example"),
        ("public_url", "ftp://bridgehead.bank.example"),
        ("public_url", "https://"),
        ("public_url", "https://bh.example/?x=1"),
    ],
)
def test_invalid_values_are_refused_with_the_field_named(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(**{field: value})
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (None, None),
        ("", None),
        ("https://bridgehead.bank.example/", "https://bridgehead.bank.example"),
        (" http://10.0.0.5:8000/bh ", "http://10.0.0.5:8000/bh"),
    ],
)
def test_public_url_is_kept_without_its_trailing_slash(given: str | None, kept: str | None) -> None:
    assert Settings(public_url=given).public_url == kept


def test_secret_key_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    key = s.resolved_secret_key()
    assert len(key) >= 48
    assert Settings(home=tmp_path).resolved_secret_key() == key
    assert (tmp_path / "secret.key").stat().st_mode & 0o077 == 0
    assert Settings(home=tmp_path, secret_key="explicit").resolved_secret_key() == "explicit"
