"""The demo organization: three business units, the central team, and a person in every role."""

from __future__ import annotations

from bridgehead.audit.service import Actor
from bridgehead.auth.roles import ROLE_LABELS, Role
from bridgehead.org import service
from bridgehead.org.models import BusinessUnit
from bridgehead.store import Database

__all__ = ["DEMO_PASSWORD", "seed"]

DEMO_PASSWORD = "bridgehead-demo"  # noqa: S105 — printed to the user on purpose; demo data only
DOMAIN = "demo.bridgehead.dev"

UNITS = [
    ("retail-banking", "Retail Banking", "Current accounts, cards and consumer credit."),
    ("corporate-lending", "Corporate Lending", "Loans and credit lines for businesses."),
    ("insurance", "Insurance", "Home, motor and life insurance."),
]

# (local part, name, role, unit slug; None = central platform team)
PEOPLE: list[tuple[str, str, Role, str | None]] = [
    ("admin", "Amara Okafor", Role.CHIEF_AI_OFFICER, None),
    ("pm", "Lukas Brenner", Role.AI_PROGRAM_MANAGER, None),
    ("ethics", "Sofia Marchetti", Role.ETHICS_COMPLIANCE_OFFICER, None),
    ("ds.retail", "Priya Raman", Role.DATA_SCIENTIST, "retail-banking"),
    ("mle.retail", "Jonas Weber", Role.ML_ENGINEER, "retail-banking"),
    ("de.retail", "Chen Wei", Role.DATA_ENGINEER, "retail-banking"),
    ("champion.retail", "Fatima Zahra", Role.AI_CHAMPION, "retail-banking"),
    ("user.retail", "Tom Hughes", Role.BUSINESS_USER, "retail-banking"),
    ("ds.lending", "Elena Petrova", Role.DATA_SCIENTIST, "corporate-lending"),
    ("mle.lending", "Kwame Mensah", Role.ML_ENGINEER, "corporate-lending"),
    ("user.lending", "Grace Kim", Role.BUSINESS_USER, "corporate-lending"),
    ("ds.insurance", "Mateo García", Role.DATA_SCIENTIST, "insurance"),
    ("champion.insurance", "Aiko Tanaka", Role.AI_CHAMPION, "insurance"),
    ("user.insurance", "Noah Fischer", Role.BUSINESS_USER, "insurance"),
]


def seed(db: Database, actor: Actor) -> list[tuple[str, str, str]]:
    """Seed the organization; returns (e-mail, role label, unit name) for each person."""
    created: list[tuple[str, str, str]] = []
    with db.session(write=True) as session:
        central = service.ensure_central_unit(session, actor)
        units: dict[str | None, BusinessUnit] = {None: central}
        for slug, name, description in UNITS:
            units[slug] = service.create_unit(session, actor, slug, name, description)
        for local, name, role, unit_slug in PEOPLE:
            unit = units[unit_slug]
            person, _ = service.invite_person(
                session,
                actor,
                email=f"{local}@{DOMAIN}",
                name=name,
                role=role,
                business_unit_id=unit.id,
                password=DEMO_PASSWORD,
            )
            created.append((person.email, ROLE_LABELS[role], unit.name))
    return created
