"""Roles as enterprises staff AI, and the one permission matrix (role x action).

Every route declares the action it performs; ``allowed`` answers from this table alone.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CENTRAL_ROLES", "MATRIX", "ROLE_LABELS", "Action", "Role", "allowed"]


class Role(StrEnum):
    CHIEF_AI_OFFICER = "chief_ai_officer"
    AI_PROGRAM_MANAGER = "ai_program_manager"
    DATA_SCIENTIST = "data_scientist"
    ML_ENGINEER = "ml_engineer"
    DATA_ENGINEER = "data_engineer"
    ETHICS_COMPLIANCE_OFFICER = "ethics_compliance_officer"
    AI_CHAMPION = "ai_champion"
    BUSINESS_USER = "business_user"


ROLE_LABELS: dict[Role, str] = {
    Role.CHIEF_AI_OFFICER: "Chief AI officer (admin)",
    Role.AI_PROGRAM_MANAGER: "AI program manager",
    Role.DATA_SCIENTIST: "Data scientist",
    Role.ML_ENGINEER: "ML engineer",
    Role.DATA_ENGINEER: "Data engineer",
    Role.ETHICS_COMPLIANCE_OFFICER: "Ethics & compliance officer",
    Role.AI_CHAMPION: "AI champion",
    Role.BUSINESS_USER: "Business user (read-only)",
}

# Roles whose work spans the organization: they see every business unit's objects.
CENTRAL_ROLES: frozenset[Role] = frozenset(
    {Role.CHIEF_AI_OFFICER, Role.AI_PROGRAM_MANAGER, Role.ETHICS_COMPLIANCE_OFFICER}
)


class Action(StrEnum):
    ORG_READ = "org.read"
    UNIT_MANAGE = "unit.manage"
    PERSON_MANAGE = "person.manage"
    TOKEN_CREATE_OWN = "token.create_own"  # noqa: S105
    TOKEN_MANAGE_ANY = "token.manage_any"  # noqa: S105
    AUDIT_READ = "audit.read"
    TRACKING_READ = "tracking.read"
    TRACKING_WRITE = "tracking.write"
    MODEL_REGISTER = "model.register"
    MODEL_ALIAS = "model.alias"
    DATA_READ = "data.read"
    DATA_WRITE = "data.write"
    DATA_PII = "data.pii"
    SERVING_READ = "serving.read"
    SERVING_DEPLOY = "serving.deploy"
    SERVING_INVOKE = "serving.invoke"
    SERVING_FEEDBACK = "serving.feedback"
    JOBS_READ = "jobs.read"
    JOBS_CANCEL = "jobs.cancel"
    MONITORING_READ = "monitoring.read"
    MONITORING_MANAGE = "monitoring.manage"
    INCIDENT_HANDLE = "incident.handle"


_ALL = frozenset(Role)

MATRIX: dict[Action, frozenset[Role]] = {
    Action.ORG_READ: _ALL,
    Action.UNIT_MANAGE: frozenset({Role.CHIEF_AI_OFFICER}),
    Action.PERSON_MANAGE: frozenset({Role.CHIEF_AI_OFFICER}),
    Action.TOKEN_CREATE_OWN: _ALL,
    Action.TOKEN_MANAGE_ANY: frozenset({Role.CHIEF_AI_OFFICER}),
    Action.AUDIT_READ: frozenset({Role.CHIEF_AI_OFFICER, Role.ETHICS_COMPLIANCE_OFFICER}),
    # Experiments, runs, registered models: reading is open to every role (visibility still applies).
    Action.TRACKING_READ: _ALL,
    Action.TRACKING_WRITE: frozenset(
        {Role.CHIEF_AI_OFFICER, Role.DATA_SCIENTIST, Role.ML_ENGINEER, Role.DATA_ENGINEER}
    ),
    Action.MODEL_REGISTER: frozenset({Role.CHIEF_AI_OFFICER, Role.DATA_SCIENTIST, Role.ML_ENGINEER}),
    # Moving an alias such as "champion" changes what downstream consumers load.
    Action.MODEL_ALIAS: frozenset({Role.CHIEF_AI_OFFICER, Role.DATA_SCIENTIST, Role.ML_ENGINEER}),
    # Datasets: reading follows visibility; registering datasets, versions, contracts and validations is the
    # work of the people who build pipelines and models.
    Action.DATA_READ: _ALL,
    Action.DATA_WRITE: frozenset(
        {Role.CHIEF_AI_OFFICER, Role.DATA_SCIENTIST, Role.ML_ENGINEER, Role.DATA_ENGINEER}
    ),
    # Seeing personal data unmasked in profiles and sample rows: those who run the pipelines and those who
    # audit them; model builders work on masked views.
    Action.DATA_PII: frozenset({Role.CHIEF_AI_OFFICER, Role.DATA_ENGINEER, Role.ETHICS_COMPLIANCE_OFFICER}),
    # Endpoints: everyone may look; deploying, changing traffic, promoting and rolling back is the ML
    # engineers' job (governance adds its own checks through the check_transition hook).
    Action.SERVING_READ: _ALL,
    Action.SERVING_DEPLOY: frozenset({Role.CHIEF_AI_OFFICER, Role.ML_ENGINEER}),
    # Calling a model: anyone in the endpoint's unit (or granted by the endpoint), applications included.
    Action.SERVING_INVOKE: _ALL,
    # Ground truth and overrides come from the pipelines that join outcomes and from AI champions in the
    # business (business users are read-only).
    Action.SERVING_FEEDBACK: frozenset(
        {
            Role.CHIEF_AI_OFFICER,
            Role.ML_ENGINEER,
            Role.DATA_ENGINEER,
            Role.DATA_SCIENTIST,
            Role.AI_CHAMPION,
        }
    ),
    # Background jobs (batch scoring, monitors): everyone may follow the jobs of their unit; a job's author may
    # always cancel it, cancelling a colleague's job is for those who run the unit's pipelines and services.
    Action.JOBS_READ: _ALL,
    Action.JOBS_CANCEL: frozenset({Role.CHIEF_AI_OFFICER, Role.ML_ENGINEER, Role.DATA_ENGINEER}),
    # Monitoring: everyone may see how models behave; setting up monitors, rules and notification channels is
    # for those who build and run the models; incidents are acknowledged and resolved by them and by the
    # people accountable for the model's conduct (ethics & compliance, the chief AI officer).
    Action.MONITORING_READ: _ALL,
    Action.MONITORING_MANAGE: frozenset({Role.CHIEF_AI_OFFICER, Role.ML_ENGINEER, Role.DATA_SCIENTIST}),
    Action.INCIDENT_HANDLE: frozenset(
        {Role.CHIEF_AI_OFFICER, Role.ML_ENGINEER, Role.DATA_SCIENTIST, Role.ETHICS_COMPLIANCE_OFFICER}
    ),
}


def allowed(role: Role | str, action: Action) -> bool:
    return Role(role) in MATRIX[action]
