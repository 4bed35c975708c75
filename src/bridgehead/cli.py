"""The ``bridgehead`` command: a thin layer over the services and ``create_app``."""

from __future__ import annotations

import getpass
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console as RichConsole
from rich.table import Table

from bridgehead import __version__
from bridgehead.audit.service import ActorRef
from bridgehead.data.commands import data_cli
from bridgehead.errors import BridgeheadError
from bridgehead.hookspecs import plugin_manager
from bridgehead.settings import Settings
from bridgehead.store import Database, upgrade

__all__ = ["cli", "main"]

cli = typer.Typer(
    name="bridgehead",
    help="Bridgehead: take AI from pilot to production, with governance built in.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
admin_cli = typer.Typer(help="Administrators.", no_args_is_help=True)
token_cli = typer.Typer(help="API tokens for the SDK, CLI and HTTP clients.", no_args_is_help=True)
audit_cli = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(admin_cli, name="admin")
cli.add_typer(token_cli, name="token")
cli.add_typer(audit_cli, name="audit")
cli.add_typer(data_cli, name="data")

out = RichConsole(soft_wrap=True)
err = RichConsole(stderr=True, soft_wrap=True)


def _actor() -> ActorRef:
    return ActorRef(email=f"cli:{getpass.getuser()}@{socket.gethostname()}")


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment; a bad value is a clear error (exit 2), not a traceback."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        for problem in exc.errors():
            field = ".".join(str(x) for x in problem["loc"])
            err.print(f"[red]error:[/red] setting BRIDGEHEAD_{field.upper()}: {problem['msg']}")
        raise typer.Exit(2) from None


def _database(settings: Settings, migrate: bool = True) -> Database:
    settings.home.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    if migrate:
        upgrade(db)
    return db


def _fail(exc: BridgeheadError) -> None:
    err.print(f"[red]error:[/red] {exc.message}")
    raise typer.Exit(2)


@cli.command()
def version() -> None:
    """Print the installed version."""
    out.print(__version__)


@cli.command()
def server(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default: BRIDGEHEAD_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: BRIDGEHEAD_PORT or 8080).")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
) -> None:
    """Run the Bridgehead server (API, console, health checks)."""
    import uvicorn

    settings = _settings()
    bind_host, bind_port = host or settings.host, port or settings.port
    if workers == 1:
        from bridgehead.app import create_app

        # access_log off: the bridgehead.http line already records each request, with its id.
        uvicorn.run(create_app(settings), host=bind_host, port=bind_port, log_config=None, access_log=False)
    else:
        # Migrate once here, so that the workers do not race each other over the schema; the workers
        # build their settings from the environment, hence the variable rather than an argument.
        if settings.migrate_on_start:
            try:
                upgrade(_database(settings, migrate=False))
            except BridgeheadError as exc:
                _fail(exc)
        os.environ["BRIDGEHEAD_MIGRATE_ON_START"] = "false"
        uvicorn.run(
            "bridgehead.app:create_app",
            factory=True,
            host=bind_host,
            port=bind_port,
            workers=workers,
            log_config=None,
            access_log=False,
        )


@db_cli.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply database migrations."""
    from bridgehead.store.migrate import current_revision

    settings = _settings()
    try:
        db = _database(settings, migrate=False)
        upgrade(db, revision)
        out.print(f"database at revision {current_revision(db)}")
    except BridgeheadError as exc:
        _fail(exc)


@admin_cli.command("create")
def admin_create(
    email: Annotated[str, typer.Option(help="Admin's e-mail, used to sign in.")],
    password: Annotated[
        str,
        typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="At least 12 characters."),
    ],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
) -> None:
    """Create a chief AI officer (admin) in the central platform team."""
    from bridgehead.org.service import create_admin

    try:
        with _database(_settings()).session(write=True) as session:
            person = create_admin(session, _actor(), email, password, name)
            out.print(f"admin {person.email} created")
    except BridgeheadError as exc:
        _fail(exc)


@token_cli.command("create")
def token_create(
    email: Annotated[str, typer.Option(help="Whose token.")],
    name: Annotated[str, typer.Option(help="What the token is for.")],
    days: Annotated[int | None, typer.Option(min=1, max=3650, help="Lifetime in days.")] = None,
) -> None:
    """Create an API token. The token is printed alone on the last line, once."""
    from bridgehead.auth.tokens import create_token, find_person

    settings = _settings()
    try:
        with _database(settings).session(write=True) as session:
            person = find_person(session, email)
            token, secret = create_token(session, _actor(), person, name, days or settings.token_default_days)
            err.print(
                f"token {token.id} for {person.email}, expires {token.expires_at:%Y-%m-%d}; store it now:"
            )
    except BridgeheadError as exc:
        _fail(exc)
    print(secret)


@token_cli.command("list")
def token_list(email: Annotated[str | None, typer.Option(help="Only this person's tokens.")] = None) -> None:
    """List tokens (never their secrets)."""
    from bridgehead.auth.models import Person
    from bridgehead.auth.tokens import find_person, list_tokens

    try:
        with _database(_settings()).session() as session:
            owner = find_person(session, email).id if email else None
            table = Table("id", "person", "name", "prefix", "expires", "state")
            for t in list_tokens(session, owner):
                person = session.get(Person, t.person_id)
                table.add_row(
                    t.id,
                    person.email if person else "?",
                    t.name,
                    t.prefix + "…",
                    f"{t.expires_at:%Y-%m-%d}",
                    "revoked" if t.revoked_at else "active",
                )
            out.print(table)
    except BridgeheadError as exc:
        _fail(exc)


@token_cli.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="Token id from `bridgehead token list`.")],
) -> None:
    """Revoke a token at once."""
    from bridgehead.auth.tokens import revoke_token

    try:
        with _database(_settings()).session(write=True) as session:
            revoke_token(session, _actor(), token_id)
        out.print(f"token {token_id} revoked")
    except BridgeheadError as exc:
        _fail(exc)


@audit_cli.command("verify")
def audit_verify() -> None:
    """Recompute the hash chain; exit 1 naming the first edited, deleted or reordered event."""
    from bridgehead.audit.service import verify
    from bridgehead.store.migrate import current_revision

    try:
        db = _database(_settings(), migrate=False)
        if current_revision(db) is None:
            err.print(
                "[red]error:[/red] this database has no Bridgehead schema; run `bridgehead db upgrade`."
            )
            raise typer.Exit(2)
        with db.session() as session:
            result = verify(session)
    except BridgeheadError as exc:
        _fail(exc)
    if result.ok:
        out.print(f"audit chain intact: {result.checked} events, head {result.head_hash}")
        return
    err.print(
        f"[red]audit chain broken[/red] at event #{result.bad_seq} (id {result.bad_id}): {result.reason}"
    )
    err.print(f"{result.checked} events before it verified.")
    raise typer.Exit(1)


@cli.command()
def demo(
    home: Annotated[Path | None, typer.Option(help="Demo home (default: a new temporary directory).")] = None,
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8080,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    serve: Annotated[bool, typer.Option(help="Start the server after seeding.")] = True,
) -> None:
    """Create a fresh demo home, seed a demo organization, train and register real models, print the
    logins and serve the console."""
    import threading
    import time

    import httpx
    import uvicorn

    from bridgehead.app import create_app
    from bridgehead.demo import DEMO_PASSWORD, demo_tokens, seed, train_models

    demo_home = home or Path(tempfile.mkdtemp(prefix="bridgehead-demo-"))
    if (demo_home / "bridgehead.db").exists():
        err.print(f"[red]error:[/red] {demo_home} already holds a Bridgehead database; give an empty --home.")
        raise typer.Exit(2)
    overrides: dict[str, Any] = {
        "home": demo_home,
        "database_url": f"sqlite:///{demo_home / 'bridgehead.db'}",
        "artifact_root": str(demo_home / "artifacts"),
        "host": host,
        "port": port,
        "log_level": "WARNING",
    }
    settings = _settings(**overrides)
    db = _database(settings)
    people = seed(db, _actor())
    tokens = demo_tokens(db, _actor())
    # The demo logs through the real HTTP API, as users do, so the server starts first.
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host=host, port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, name="bridgehead-demo-server", daemon=True)
    thread.start()
    url = f"http://{host}:{port}"
    deadline = time.time() + 30
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            err.print(f"[red]error:[/red] the server did not start on {host}:{port} (is the port in use?).")
            raise typer.Exit(2)
        time.sleep(0.1)
    with err.status("training and registering demo models…") as status:
        try:
            train_models(url, tokens, lambda message: status.update(message), settings)
        except ImportError as exc:
            err.print(f"models skipped ({exc.name} is not installed): pip install 'bridgehead[demo]'")
    httpx.get(f"{url}/readyz", timeout=10).raise_for_status()
    table = Table(title=f"Demo organization (password for all: {DEMO_PASSWORD})")
    table.add_column("e-mail", no_wrap=True)
    table.add_column("role")
    table.add_column("business unit")
    for email, role, unit in people:
        table.add_row(email, role, unit)
    out.print(table)
    out.print(f"demo home: {demo_home}")
    out.print(f"console: {url}/  (sign in as admin@demo.bridgehead.dev)")
    sys.stdout.flush()
    try:
        while serve and thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        thread.join(10)


def main() -> None:
    plugin_manager().hook.register_commands(cli=cli)
    cli()
