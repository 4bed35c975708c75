"""Imports every domain's tables so that Alembic and the tests see one complete metadata."""

from bridgehead.audit import models as _audit  # noqa: F401
from bridgehead.auth import models as _auth  # noqa: F401
from bridgehead.data import models as _data  # noqa: F401
from bridgehead.jobs import models as _jobs  # noqa: F401
from bridgehead.monitoring import models as _monitoring  # noqa: F401
from bridgehead.org import models as _org  # noqa: F401
from bridgehead.registry import models as _registry  # noqa: F401
from bridgehead.serving import models as _serving  # noqa: F401
from bridgehead.store.base import Base
from bridgehead.tracking import models as _tracking  # noqa: F401

metadata = Base.metadata

__all__ = ["metadata"]
