"""The docs are tested: each test fails when docs/ drifts from the code it describes."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import bridgehead
import bridgehead.app
from bridgehead.audit.service import ActorRef
from bridgehead.auth.roles import MATRIX, Action, Role
from bridgehead.auth.tokens import create_token
from bridgehead.cli import cli
from bridgehead.errors import BridgeheadError
from bridgehead.hookspecs import DEFAULT_PLUGINS, plugin_manager
from bridgehead.org import service as org
from bridgehead.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SRC = ROOT / "src" / "bridgehead"
REQUIRED = ["architecture", "install", "configuration", "roles", "audit", "cli", "api", "plugins"]


def doc(name: str) -> str:
    return (DOCS / f"{name}.md").read_text(encoding="utf-8")


def env_var(field: str) -> str:
    return "BRIDGEHEAD_" + field.upper()


def test_every_required_page_exists() -> None:
    missing = [name for name in REQUIRED if not (DOCS / f"{name}.md").is_file()]
    assert not missing, f"missing docs pages: {missing}"


# --- configuration ----------------------------------------------------------------------------


def test_every_setting_is_documented() -> None:
    text = doc("configuration")
    rows = {line.split("|")[1].strip().strip("`") for line in text.splitlines() if line.startswith("| `")}
    missing = [env_var(f) for f in Settings.model_fields if env_var(f) not in rows]
    assert not missing, f"docs/configuration.md has no table row for {missing}"


def test_docs_name_no_setting_that_does_not_exist() -> None:
    known = {env_var(f) for f in Settings.model_fields} | {"BRIDGEHEAD_TEST_POSTGRES_URL"}
    for path in sorted(DOCS.glob("*.md")):
        unknown = set(re.findall(r"BRIDGEHEAD_[A-Z0-9_]+", path.read_text(encoding="utf-8"))) - known
        assert not unknown, f"{path.name} names settings that do not exist: {sorted(unknown)}"


# --- CLI --------------------------------------------------------------------------------------


def _command_paths(command: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    # typer ships its own copy of click, so its command classes are not click's.
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        path = f"{prefix} {name}".strip()
        yield path, sub
        yield from _command_paths(sub, path)


def _full_cli() -> Any:
    """The CLI as `bridgehead` runs it: with the commands plugins add (main() registers them the same way)."""
    from bridgehead.hookspecs import plugin_manager

    full = typer.Typer()
    full.registered_commands = list(cli.registered_commands)
    full.registered_groups = list(cli.registered_groups)
    full.registered_callback = cli.registered_callback
    plugin_manager(load_entry_points=False).hook.register_commands(cli=full)
    return typer.main.get_command(full)


CLI_PATHS = dict(_command_paths(_full_cli()))


def _cli_sections() -> dict[str, str]:
    """'bridgehead token create' -> the text under that heading, up to the next heading."""
    sections: dict[str, str] = {}
    current = None
    for line in doc("cli").splitlines():
        heading = re.match(r"^#+ (.*)$", line)
        if heading:
            current = heading.group(1).strip()
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def test_cli_walk_finds_the_commands() -> None:
    assert {
        "server",
        "db upgrade",
        "audit verify",
        "token create",
        "endpoint deploy",
        "serve",
        "score",
    } <= set(CLI_PATHS)


@pytest.mark.parametrize("path", sorted(CLI_PATHS))
def test_every_cli_command_has_a_section(path: str) -> None:
    assert f"bridgehead {path}" in _cli_sections(), f"docs/cli.md has no heading 'bridgehead {path}'"


@pytest.mark.parametrize("path", sorted(CLI_PATHS))
def test_every_cli_option_and_argument_is_documented(path: str) -> None:
    section = _cli_sections().get(f"bridgehead {path}", "")
    for param in CLI_PATHS[path].params:
        if param.param_type_name == "option":
            names = [o for o in [*param.opts, *param.secondary_opts] if o != "--help"]
        else:
            names = [str(param.name).upper()]
        for name in names:
            assert name in section, f"docs/cli.md, section 'bridgehead {path}', does not mention {name}"


def test_cli_doc_headings_name_real_commands() -> None:
    for heading in _cli_sections():
        if heading.startswith("bridgehead"):
            path = heading.removeprefix("bridgehead").strip()
            assert path in CLI_PATHS, f"docs/cli.md documents '{heading}', which does not exist"


# --- errors -----------------------------------------------------------------------------------


def _import_all() -> None:
    # Migrations run Alembic on import; they define no errors.
    for info in pkgutil.walk_packages(bridgehead.__path__, "bridgehead."):
        if ".migrations" not in info.name:
            importlib.import_module(info.name)


def _subclasses(cls: type[BridgeheadError]) -> Iterator[type[BridgeheadError]]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _subclasses(sub)


def _literal_codes() -> set[str]:
    """Codes app.py writes literally: respond(request, status, "<code>", ...), {"code": "<code>"},
    and the fallback in _STATUS_CODES.get(status, "<code>")."""
    tree = ast.parse((SRC / "app.py").read_text(encoding="utf-8"))
    found: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "respond" and len(node.args) >= 3:
                found.append(node.args[2])
            if isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "_STATUS_CODES":
                found.extend(node.args[1:])
        if isinstance(node, ast.Dict):
            found.extend(
                v for k, v in zip(node.keys, node.values, strict=True) if getattr(k, "value", None) == "code"
            )
    return {str(n.value) for n in found if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_every_error_code_is_documented_with_its_status() -> None:
    _import_all()
    text = doc("api")
    expected = {(cls.status, cls.code) for cls in _subclasses(BridgeheadError)}
    expected |= set(bridgehead.app._STATUS_CODES.items())
    expected |= {(400, "invalid_json"), (422, "validation_failed"), (500, "internal_error")}
    missing = [
        f"{status} {code}" for status, code in sorted(expected) if f"| {status} | `{code}` |" not in text
    ]
    assert not missing, f"docs/api.md error table lacks rows: {missing}"


def test_every_literal_error_code_in_app_is_documented() -> None:
    codes = _literal_codes()
    assert {"invalid_json", "internal_error", "http_error"} <= codes
    text = doc("api")
    missing = sorted(code for code in codes if f"`{code}`" not in text)
    assert not missing, f"docs/api.md does not mention {missing}"


# --- plugins ----------------------------------------------------------------------------------


def test_every_hook_and_builtin_plugin_is_documented() -> None:
    text = doc("plugins")
    hooks = [name for name in vars(plugin_manager(load_entry_points=False).hook) if not name.startswith("_")]
    assert hooks
    missing = [name for name in [*hooks, *DEFAULT_PLUGINS] if f"`{name}" not in text]
    assert not missing, f"docs/plugins.md does not mention {missing}"


def _example_plugin() -> types.ModuleType:
    blocks = re.findall(r"```python\n(.*?)```", doc("plugins"), flags=re.DOTALL)
    assert blocks, "docs/plugins.md has no python example"
    module = types.ModuleType("bridgehead_docs_example_plugin")
    sys.modules[module.__name__] = module
    exec(compile(blocks[0], "docs/plugins.md", "exec"), module.__dict__)  # noqa: S102 — our own docs
    return module


def test_plugin_example_registers_a_command() -> None:
    pm = plugin_manager(load_entry_points=False)
    pm.register(_example_plugin())  # pluggy refuses hooks whose names or parameters do not match
    app = typer.Typer()

    @app.callback()
    def _group() -> None:
        pass

    pm.hook.register_commands(cli=app)
    result = CliRunner().invoke(app, ["hello", "--name", "bank"])
    assert result.exit_code == 0, result.output
    assert "hello bank" in result.output


def test_plugin_example_serves_its_route(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pm = plugin_manager(load_entry_points=False)
    pm.register(_example_plugin())
    monkeypatch.setattr(bridgehead.app, "plugin_manager", lambda: pm)
    app = bridgehead.app.create_app(Settings(home=tmp_path, log_level="ERROR"))
    with TestClient(app) as client:
        db = app.state.db
        with db.session(write=True) as session:
            actor = ActorRef(email="test:docs")
            person = org.create_admin(session, actor, "docs@bank.example", "correct-horse-battery", "Docs")
            _, secret = create_token(session, actor, person, "docs", 1)
        assert client.get("/api/v1/example/hello").json()["error"]["code"] == "unauthenticated"
        answer = client.get("/api/v1/example/hello", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200
    assert answer.json() == {"hello": "Docs"}


# --- roles ------------------------------------------------------------------------------------


def test_every_role_and_action_is_documented() -> None:
    text = doc("roles")
    missing = [f"`{v}`" for v in [*Role, *Action] if f"`{v.value}`" not in text]
    assert not missing, f"docs/roles.md does not mention {missing}"


def test_permission_matrix_table_matches_the_code() -> None:
    lines = doc("roles").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| role | `"))
    columns = [c.strip().strip("`") for c in lines[start].strip("|").split("|")][1:]
    assert sorted(columns) == sorted(a.value for a in Action)
    table: dict[str, set[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        table[cells[0].strip("`")] = {
            col for col, cell in zip(columns, cells[1:], strict=True) if cell == "✓"
        }
    assert set(table) == {r.value for r in Role}
    for role in Role:
        granted = {a.value for a in Action if role in MATRIX[a]}
        assert table[role.value] == granted, f"docs/roles.md matrix row for {role.value} is wrong"


# --- audit ------------------------------------------------------------------------------------


def _recorded_actions() -> set[str]:
    """Action strings passed to record(session, actor, "<action>", ...) anywhere in src/."""
    actions = set()
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # A module may spell its actions out in a dict named AUDIT_EVENTS and pass AUDIT_EVENTS[kind].
        events = [
            v.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and any(getattr(t, "id", None) == "AUDIT_EVENTS" for t in node.targets)
            and isinstance(node.value, ast.Dict)
            for v in node.value.values
            if isinstance(v, ast.Constant)
        ]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            if getattr(node.func, "id", getattr(node.func, "attr", None)) != "record":
                continue
            candidates = node.args[2:3] + [k.value for k in node.keywords if k.arg == "action"]
            # `"x.delete" if ... else "x.restore"` names two actions.
            candidates += [b for c in candidates if isinstance(c, ast.IfExp) for b in (c.body, c.orelse)]
            actions |= {str(c.value) for c in candidates if isinstance(c, ast.Constant)}
            if any(
                isinstance(c, ast.Subscript) and getattr(c.value, "id", None) == "AUDIT_EVENTS"
                for c in candidates
            ):
                actions |= {str(e) for e in events}
    return actions


def test_every_audit_action_is_documented() -> None:
    actions = _recorded_actions()
    assert {"person.invite", "token.create", "session.login"} <= actions
    text = doc("audit")
    missing = sorted(a for a in actions if f"| `{a}` |" not in text)
    assert not missing, f"docs/audit.md action table lacks {missing}"


def test_audit_doc_lists_no_action_the_code_does_not_record() -> None:
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", doc("audit"), flags=re.MULTILINE))
    assert documented
    assert documented <= _recorded_actions()


# --- architecture and links -------------------------------------------------------------------


def _layout_block() -> list[str]:
    text = doc("architecture")
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    return block.splitlines()


def test_layout_lists_what_exists_and_marks_the_rest_planned() -> None:
    entries: dict[str, bool] = {}  # name -> planned
    for line in _layout_block():
        match = re.match(r"^\s{2,}([\w.]+/?)(?:\s+(.*))?$", line)
        if match:
            entries[match.group(1).rstrip("/")] = (match.group(2) or "").startswith("planned")
    skip = {"__init__.py", "__pycache__", "py.typed"}
    present = {p.name for d in (SRC, SRC / "store") for p in d.iterdir() if p.name not in skip}
    missing = sorted(p for p in present if p not in entries or entries[p])
    assert not missing, f"docs/architecture.md layout omits (or marks planned) {missing}"
    built = sorted(name for name, planned in entries.items() if planned and name in present)
    assert not built, f"docs/architecture.md marks as planned what exists: {built}"


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_between_docs_resolve() -> None:
    anchors = {
        path.name: {_slug(h) for h in re.findall(r"^#+ (.*)$", path.read_text(encoding="utf-8"), re.M)}
        for path in DOCS.glob("*.md")
    }
    for path in sorted(DOCS.glob("*.md")):
        for target, anchor in re.findall(
            r"\]\(([\w-]+\.md)(?:#([\w-]+))?\)", path.read_text(encoding="utf-8")
        ):
            assert target in anchors, f"{path.name} links to missing {target}"
            if anchor:
                assert anchor in anchors[target], f"{path.name} links to missing {target}#{anchor}"


# --- public API -------------------------------------------------------------------------------


def test_public_names_exist() -> None:
    assert bridgehead.__all__
    for name in bridgehead.__all__:
        assert hasattr(bridgehead, name), f"bridgehead.__all__ names {name!r}, which does not exist"
