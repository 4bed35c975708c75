"""Request and response bodies for business units and people."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from bridgehead.auth.roles import Role

SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class UnitCreate(_In):
    slug: str = Field(pattern=SLUG, description="Short stable identifier: lowercase letters, digits, dashes.")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)


class UnitUpdate(_In):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=4000)


class UnitOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    slug: str
    name: str
    description: str
    is_central: bool
    created_at: datetime


class PersonCreate(_In):
    email: EmailStr
    name: str = Field(min_length=1, max_length=200)
    role: Role
    business_unit_id: str = Field(min_length=1, max_length=64, description="Id or slug of the business unit.")
    password: str | None = Field(
        default=None,
        min_length=12,
        max_length=200,
        description="Initial password; omitted, a one-time password is generated and returned once.",
    )


class PersonUpdate(_In):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    role: Role | None = None
    business_unit_id: str | None = Field(default=None, min_length=1, max_length=64)
    is_active: bool | None = None


class PersonOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    email: str
    name: str
    role: Role
    business_unit_id: str
    is_active: bool
    created_at: datetime


class PersonCreated(PersonOut):
    initial_password: str | None = Field(
        default=None, description="Shown once when the server generated the password."
    )
