"""Users and their permissions (the logins of AMQP and of Kafka's SASL PLAIN): list, create or
replace, delete, and grant or revoke access to a virtual host. Password hashes never leave the
broker. Every change is saved with the definitions at once."""

from __future__ import annotations

import asyncio

from aiohttp import web

from wharf.core.users import Permission, UserStore, hash_password
from wharf.errors import InvalidArgumentError, NotFoundError
from wharf.http.api.queues import VHOST, vhost_of
from wharf.http.context import context_of
from wharf.http.routing import Endpoint, json_response, read_body
from wharf.http.schemas import PutUser, UserInfo, UserPermission


def _info(users: UserStore, name: str) -> UserInfo:
    user = users.users[name]
    return UserInfo(
        name=user.name,
        tags=list(user.tags),
        loopback_only=user.loopback_only,
        permissions={
            vhost: UserPermission(p.configure, p.write, p.read)
            for (who, vhost), p in sorted(users.permissions.items())
            if who == name
        },
    )


async def _list_users(request: web.Request) -> web.StreamResponse:
    users = context_of(request).broker.users
    return json_response([_info(users, name) for name in sorted(users.users)])


async def _describe_user(request: web.Request) -> web.StreamResponse:
    users = context_of(request).broker.users
    name = request.match_info["name"]
    if name not in users.users:
        raise NotFoundError(f"no user '{name}'")
    return json_response(_info(users, name))


async def _put_user(request: web.Request) -> web.StreamResponse:
    spec = await read_body(request, PutUser)
    if not spec.password:
        raise InvalidArgumentError("a user needs a password")
    broker = context_of(request).broker
    name = request.match_info["name"]
    # hashing takes milliseconds: a worker thread hashes, the loop's thread stores
    hashed = await asyncio.get_running_loop().run_in_executor(None, hash_password, spec.password)
    broker.users.put_user(name, hashed, tags=spec.tags, loopback_only=spec.loopback_only)
    await broker.save_users()
    return json_response(_info(broker.users, name))


async def _delete_user(request: web.Request) -> web.StreamResponse:
    broker = context_of(request).broker
    broker.users.delete_user(request.match_info["name"])
    await broker.save_users()
    return web.Response(status=204)


async def _set_permissions(request: web.Request) -> web.StreamResponse:
    spec = await read_body(request, UserPermission)
    broker = context_of(request).broker
    vhost = vhost_of(request)
    if vhost not in broker.vhosts:
        raise NotFoundError(f"no vhost '{vhost}'")
    name = request.match_info["name"]
    broker.users.set_permissions(name, vhost, Permission(spec.configure, spec.write, spec.read))
    await broker.save_users()
    return json_response(_info(broker.users, name))


async def _clear_permissions(request: web.Request) -> web.StreamResponse:
    broker = context_of(request).broker
    name, vhost = request.match_info["name"], vhost_of(request)
    if broker.users.permissions.pop((name, vhost), None) is None:
        raise NotFoundError(f"user '{name}' has no permissions in vhost '{vhost}'")
    await broker.save_users()
    return web.Response(status=204)


ENDPOINTS = [
    Endpoint("GET", "/api/users", _list_users, "List users with their permissions", "users",
             response=list[UserInfo]),
    Endpoint("GET", "/api/users/{name}", _describe_user, "One user", "users",
             response=UserInfo),
    Endpoint("PUT", "/api/users/{name}", _put_user,
             "Create or replace a user (AMQP and Kafka SASL PLAIN logins)", "users",
             body=PutUser, response=UserInfo),
    Endpoint("DELETE", "/api/users/{name}", _delete_user, "Delete a user", "users", status=204),
    Endpoint("PUT", "/api/users/{name}/permissions", _set_permissions,
             "Grant a user access to a virtual host (regular expressions per access kind)",
             "users", body=UserPermission, response=UserInfo, query=(VHOST,)),
    Endpoint("DELETE", "/api/users/{name}/permissions", _clear_permissions,
             "Revoke a user's access to a virtual host", "users", status=204, query=(VHOST,)),
]
