"""Fixtures shared by the suite. Every database test runs on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from bridgehead.app import create_app
from bridgehead.audit.service import ActorRef
from bridgehead.auth import service as auth_service
from bridgehead.auth.models import Person
from bridgehead.auth.roles import Role
from bridgehead.auth.tokens import create_token
from bridgehead.org import service as org
from bridgehead.settings import Settings
from bridgehead.store import Database, upgrade
from tests.pg import PostgresServer

ENGINES = ["sqlite", "postgresql"]
PASSWORD = "correct-horse-battery"
CLI_ACTOR = ActorRef(email="test:fixture")


@pytest.fixture(autouse=True)
def _cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Still argon2id, at the lowest cost: the production cost (~0.1 s a hash) would dominate the run."""
    monkeypatch.setattr(auth_service, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Base URL of a PostgreSQL server: the given one, or a throwaway cluster started for this run."""
    given = os.environ.get("BRIDGEHEAD_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    server = PostgresServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _admin_conninfo(url: str) -> str:
    u = make_url(url)
    return f"host={u.host} port={u.port} user={u.username} dbname={u.database or 'postgres'}" + (
        f" password={u.password}" if u.password else ""
    )


@pytest.fixture(scope="session")
def pg_template(postgres_url: str) -> str:
    """A database migrated once; each test copies it (CREATE DATABASE ... TEMPLATE) in milliseconds."""
    name = f"bh_template_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_admin_conninfo(postgres_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = Database(make_url(postgres_url).set(database=name).render_as_string(hide_password=False))
    upgrade(db)
    db.dispose()
    return name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "bridgehead.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    db.dispose()
    return path


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(engine_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database for one test, on the engine of this parametrization."""
    if engine_name == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "bridgehead.db"
        shutil.copy(template, target)
        yield f"sqlite:///{target}"
        return
    base: str = request.getfixturevalue("postgres_url")
    template_name: str = request.getfixturevalue("pg_template")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_conninfo(base), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_admin_conninfo(base), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        secret_key="test-secret-key-not-for-production",
        log_level="INFO",
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.resolved_database_url)
    yield database
    database.dispose()


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    # https so that the Secure session cookie is sent back, as a browser would.
    with TestClient(app, base_url="https://testserver", raise_server_exceptions=False) as c:
        yield c


# A caller authenticated by an API token, for unit tests of the token cache.
TOKEN_CALLER = auth_service.Principal(
    person_id="p",
    email="a@b.c",
    name="A",
    role=Role.ML_ENGINEER,
    business_unit_id="bu",
    unit_is_central=False,
    via="token",
)


@dataclass
class Member:
    id: str
    email: str
    role: Role
    business_unit_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Org:
    """Builds people and units straight through the services, as the CLI does."""

    def __init__(self, db: Database) -> None:
        self.db = db
        with db.session(write=True) as session:
            self.central_id = org.ensure_central_unit(session, CLI_ACTOR).id
        self.units: dict[str, str] = {}

    def unit(self, slug: str) -> str:
        if slug not in self.units:
            with self.db.session(write=True) as session:
                self.units[slug] = org.create_unit(session, CLI_ACTOR, slug, slug.title()).id
        return self.units[slug]

    def member(self, role: Role, unit: str | None = None, email: str | None = None) -> Member:
        unit_id = self.unit(unit) if unit else self.central_id
        email = email or f"{role.value}.{uuid.uuid4().hex[:6]}@example.com"
        with self.db.session(write=True) as session:
            person, _ = org.invite_person(
                session,
                CLI_ACTOR,
                email=email,
                name=email.split("@")[0],
                role=role,
                business_unit_id=unit_id,
                password=PASSWORD,
            )
            found = session.get(Person, person.id)
            assert found is not None
            _, secret = create_token(session, CLI_ACTOR, found, "test", 30)
        return Member(person.id, email, role, unit_id, secret)


@pytest.fixture
def orgs(client: TestClient, db: Database) -> Org:
    """An organization on the test's database (the client fixture has already migrated it)."""
    return Org(db)


@pytest.fixture
def admin(orgs: Org) -> Member:
    return orgs.member(Role.CHIEF_AI_OFFICER, email="admin@example.com")
