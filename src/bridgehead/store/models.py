"""Imports every domain's tables so that Alembic and the tests see one complete metadata."""

from bridgehead.audit import models as _audit  # noqa: F401
from bridgehead.auth import models as _auth  # noqa: F401
from bridgehead.org import models as _org  # noqa: F401
from bridgehead.store.base import Base

metadata = Base.metadata

__all__ = ["metadata"]
