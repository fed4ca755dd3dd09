"""Users, passwords and per-virtual-host permissions, RabbitMQ style.

A user has a salted PBKDF2-SHA256 password hash (never the password itself), tags (e.g.
``administrator``) and a ``loopback_only`` flag (the default ``guest`` may only connect from
127.0.0.1/::1, as in RabbitMQ). Permissions are three regular expressions per (user, vhost):
*configure* (declare/delete), *write* (publish, bind to the queue side) and *read* (consume,
get, bind from the exchange side). A fresh broker has ``guest``/``guest`` with full permissions
on ``/``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from wharf.errors import AccessRefusedError, InvalidArgumentError, NotFoundError

__all__ = ["Access", "Permission", "User", "UserStore", "hash_password"]

_ITERATIONS = 20_000


class Access(StrEnum):
    CONFIGURE = "configure"
    WRITE = "write"
    READ = "read"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>``."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, _ITERATIONS)
    return f"pbkdf2-sha256${_ITERATIONS}${salt.hex()}${digest.hex()}"


def _verify(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt_hex, digest_hex = stored.split("$")
        salt = bytes.fromhex(salt_hex)
        expected = bytes.fromhex(digest_hex)
        rounds = int(iterations)
    except ValueError:
        return False
    if scheme != "pbkdf2-sha256":
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, rounds)
    return hmac.compare_digest(digest, expected)


@dataclass(slots=True)
class User:
    name: str
    password_hash: str
    tags: list[str] = field(default_factory=list)
    loopback_only: bool = False


@dataclass(frozen=True, slots=True)
class Permission:
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"

    def allows(self, access: Access, resource: str) -> bool:
        pattern = getattr(self, access.value)
        return pattern != "" and re.fullmatch(pattern, resource) is not None


class UserStore:
    """Users and permissions: ``broker.users``. The broker saves them with the queue
    definitions (``<data>/queues/definitions.json``, the ``users`` and ``permissions`` lists
    of :meth:`to_json`), after every change made through it."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.permissions: dict[tuple[str, str], Permission] = {}

    @classmethod
    def with_defaults(cls) -> UserStore:
        store = cls()
        store.put_user("guest", hash_password("guest"), tags=["administrator"], loopback_only=True)
        store.set_permissions("guest", "/", Permission())
        return store

    def put_user(
        self,
        name: str,
        password_hash: str,
        *,
        tags: list[str] | None = None,
        loopback_only: bool = False,
    ) -> User:
        """Create or replace a user whose password is hashed already (with
        :func:`hash_password`, which callers on an event loop run on a worker thread)."""
        if not name:
            raise InvalidArgumentError("a user needs a name")
        user = User(name, password_hash, list(tags or []), loopback_only)
        self.users[name] = user
        return user

    def delete_user(self, name: str) -> None:
        if self.users.pop(name, None) is None:
            raise NotFoundError(f"no user '{name}'")
        for key in [k for k in self.permissions if k[0] == name]:
            del self.permissions[key]

    def authenticate(self, name: str, password: str, *, loopback: bool = True) -> User:
        """The user if the password matches; AccessRefusedError (403) otherwise, and for a
        loopback-only user connecting from elsewhere."""
        user = self.users.get(name)
        if user is None or not _verify(password, user.password_hash):
            raise AccessRefusedError(
                "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"
            )
        if user.loopback_only and not loopback:
            raise AccessRefusedError(f"user '{name}' can only connect via localhost")
        return user

    def set_permissions(self, user: str, vhost: str, permission: Permission) -> None:
        if user not in self.users:
            raise NotFoundError(f"no user '{user}'")
        for pattern in (permission.configure, permission.write, permission.read):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise InvalidArgumentError(f"invalid permission regex {pattern!r}: {exc}") from None
        self.permissions[(user, vhost)] = permission

    def forget_vhost(self, vhost: str) -> None:
        """Drop every permission on ``vhost`` (it was deleted)."""
        for key in [k for k in self.permissions if k[1] == vhost]:
            del self.permissions[key]

    def can_access_vhost(self, user: str, vhost: str) -> bool:
        return (user, vhost) in self.permissions

    def check(self, user: str, vhost: str, access: Access, resource: str) -> None:
        """Raise AccessRefusedError (403) unless ``user`` may ``access`` ``resource``."""
        permission = self.permissions.get((user, vhost))
        if permission is None or not permission.allows(access, resource):
            raise AccessRefusedError(
                f"access to '{resource}' in vhost '{vhost}' refused for user '{user}' "
                f"({access.value})"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "users": [
                {
                    "name": u.name,
                    "password_hash": u.password_hash,
                    "tags": u.tags,
                    "loopback_only": u.loopback_only,
                }
                for u in self.users.values()
            ],
            "permissions": [
                {
                    "user": user,
                    "vhost": vhost,
                    "configure": p.configure,
                    "write": p.write,
                    "read": p.read,
                }
                for (user, vhost), p in self.permissions.items()
            ],
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Replace every user and permission with those of :meth:`to_json`'s ``data``."""
        self.users.clear()
        self.permissions.clear()
        for u in data.get("users", []):
            self.users[u["name"]] = User(
                u["name"],
                u["password_hash"],
                list(u.get("tags", [])),
                bool(u.get("loopback_only", False)),
            )
        for p in data.get("permissions", []):
            self.permissions[(p["user"], p["vhost"])] = Permission(
                p["configure"], p["write"], p["read"]
            )
