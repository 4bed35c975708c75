"""Authentication and authorization kernel: people, roles, the permission matrix, tokens, sessions, CSRF."""

from bridgehead.auth.roles import CENTRAL_ROLES, MATRIX, Action, Role, allowed

__all__ = ["CENTRAL_ROLES", "MATRIX", "Action", "Role", "allowed"]
