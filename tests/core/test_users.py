"""The broker's users: logins, permissions, saved with the queue definitions, and a data
directory written before the broker owned them opening with its users."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wharf.core.broker import Broker
from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.users import Access, Permission, hash_password
from wharf.errors import AccessRefusedError

CONFIG = BrokerConfig(fsync=FsyncPolicy.NEVER)


async def test_users_and_passwords(tmp_path: Path) -> None:
    async with Broker.open(tmp_path, CONFIG) as broker:
        users = broker.users
        assert users.authenticate("guest", "guest").name == "guest"
        with pytest.raises(AccessRefusedError):
            users.authenticate("guest", "wrong")
        with pytest.raises(AccessRefusedError):
            users.authenticate("guest", "guest", loopback=False)
        with pytest.raises(AccessRefusedError):
            users.authenticate("nobody", "x")
        users.check("guest", "/", Access.CONFIGURE, "anything")
        with pytest.raises(AccessRefusedError):
            users.check("guest", "other", Access.READ, "q")
        users.put_user("bob", hash_password("hunter2-plain"))
        assert users.authenticate("bob", "hunter2-plain").name == "bob"
        await broker.save_users()
    # the snapshot and the journal of the changes since
    saved = b"".join(p.read_bytes() for p in (tmp_path / "queues").glob("definitions.*"))
    assert b'"bob"' in saved and b"hunter2-plain" not in saved
    async with Broker.open(tmp_path, CONFIG) as broker:
        assert broker.users.authenticate("bob", "hunter2-plain").name == "bob"
        broker.users.delete_user("bob")
        with pytest.raises(AccessRefusedError):
            broker.users.authenticate("bob", "hunter2-plain")


async def test_deleting_a_vhost_drops_its_permissions(tmp_path: Path) -> None:
    async with Broker.open(tmp_path, CONFIG) as broker:
        await broker.vhosts.create("other")
        broker.users.set_permissions("guest", "other", Permission())
        await broker.save_users()
        await broker.vhosts.delete("other")
        assert not broker.users.can_access_vhost("guest", "other")
    async with Broker.open(tmp_path, CONFIG) as broker:
        assert not broker.users.can_access_vhost("guest", "other")
        assert broker.users.can_access_vhost("guest", "/")


async def test_a_data_dir_written_by_the_previous_version_opens_with_its_users(
    tmp_path: Path,
) -> None:
    # The definitions file as the vhost registry wrote it when it owned the users.
    (tmp_path / "queues").mkdir()
    saved = {
        "users": [
            {
                "name": "alice",
                "password_hash": hash_password("s3cret"),
                "tags": ["management"],
                "loopback_only": False,
            }
        ],
        "permissions": [
            {"user": "alice", "vhost": "/", "configure": "", "write": "^out$", "read": ".*"}
        ],
        "vhosts": [{"name": "/"}],
        "exchanges": [],
        "queues": [],
        "bindings": [],
    }
    (tmp_path / "queues" / "definitions.json").write_text(json.dumps(saved))
    async with Broker.open(tmp_path, CONFIG) as broker:
        assert broker.users.authenticate("alice", "s3cret", loopback=False).tags == ["management"]
        broker.users.check("alice", "/", Access.WRITE, "out")
        with pytest.raises(AccessRefusedError):
            broker.users.check("alice", "/", Access.CONFIGURE, "out")
        with pytest.raises(AccessRefusedError):
            broker.users.authenticate("guest", "guest")  # not in that directory's users
