"""Keystone v3 identity over HTTP (issue 5; TEN-1, TEN-2, SEC-1): httpx's ASGI transport for the
rules, and one end-to-end run of openstacksdk against uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyotp
import pytest
from argon2 import PasswordHasher
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Route

from actors.identity import PROVIDER_PROJECT, Directory, Role
from daemon.api.app import create_app
from runtime.secrets import SeededSecrets

T0 = datetime(2025, 3, 3, 9, 0, 0, tzinfo=UTC)  # a multiple of 30 s: a TOTP step starts here
PASSWORD = "correct horse battery"
URL = "http://api.test"
TOKENS = "/identity/v3/auth/tokens"
# Cheap argon2id parameters so that tests stay fast; production uses the library defaults.
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class Clock:
    """A fake wall clock the test advances."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def directory() -> Directory:
    d = Directory(SeededSecrets(1), hasher=CHEAP)
    for project in ("acme", "globex"):
        d.create_project(project)
        d.create_user(project, "alice", PASSWORD, frozenset({Role.ADMIN}))
        d.create_user(project, "bob", PASSWORD, frozenset({Role.MEMBER}))
    d.create_user(PROVIDER_PROJECT, "root", PASSWORD, frozenset({Role.CLOUD_ADMIN}))
    return d


def auth_body(user: str = "alice", project: str = "acme", password: str = PASSWORD,
              totp: str | None = None) -> dict[str, Any]:
    """What keystoneauth sends for a password login scoped to a project by name."""
    identity: dict[str, Any] = {
        "methods": ["password"],
        "password": {"user": {"name": user, "domain": {"name": "Default"}, "password": password}}}
    if totp is not None:
        identity["methods"].append("totp")
        identity["totp"] = {"user": {"name": user, "domain": {"name": "Default"}, "passcode": totp}}
    return {"auth": {"identity": identity,
                     "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}


class Api:
    """Synchronous calls into the app through httpx's ASGI transport (no socket)."""

    def __init__(self, d: Directory | None = None, clock: Clock | None = None) -> None:
        self.directory = d or directory()
        self.clock = clock or Clock()
        self.app = create_app(self.directory, self.clock, URL)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=URL) as client:
                return await client.request(method, path, **kwargs)
        return asyncio.run(go())

    def login(self, user: str = "alice", project: str = "acme") -> str:
        response = self.call("POST", TOKENS, json=auth_body(user, project))
        assert response.status_code == 201, response.text
        return response.headers["X-Subject-Token"]

    def check(self, token: str, subject: str | None = None) -> httpx.Response:
        return self.call("GET", TOKENS, headers={"X-Auth-Token": token, "X-Subject-Token": subject or token})


def error(response: httpx.Response, code: int) -> str:
    """The message of a Keystone-format error with `code`."""
    assert response.status_code == code, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["title"]
    message = body["error"]["message"]
    assert isinstance(message, str)
    return message


# -- discovery and authentication ----------------------------------------------------------

def test_version_discovery_points_at_v3() -> None:
    api = Api()
    versions = api.call("GET", "/identity")
    assert versions.status_code == 300
    [v3] = versions.json()["versions"]["values"]
    assert v3["id"] == "v3.14" and v3["links"] == [{"rel": "self", "href": f"{URL}/identity/v3"}]
    assert api.call("GET", "/identity/v3").json() == {"version": v3}


def test_ten2_password_auth_gives_201_the_token_in_the_header_and_an_identity_only_catalog() -> None:
    api = Api()
    response = api.call("POST", TOKENS, json=auth_body("bob"))
    assert response.status_code == 201
    token_id = response.headers["X-Subject-Token"]
    assert api.directory.validate(token_id, T0).user == "bob"
    token = response.json()["token"]
    assert token["methods"] == ["password"]
    assert token["user"] == {"id": "acme:bob", "name": "bob", "domain": {"id": "default", "name": "Default"},
                             "password_expires_at": None}
    assert token["project"] == {"id": "acme", "name": "acme", "domain": {"id": "default", "name": "Default"}}
    assert token["roles"] == [{"id": "member", "name": "member"}]
    assert (token["issued_at"], token["expires_at"]) == ("2025-03-03T09:00:00.000000Z", "2025-03-04T09:00:00.000000Z")
    assert [(s["type"], [e["url"] for e in s["endpoints"]]) for s in token["catalog"]] == [
        ("identity", [f"{URL}/identity/v3"] * 3)]
    assert token_id not in response.text  # SEC-1: the secret travels in the header only


def test_ten2_project_scope_by_id_works_too() -> None:
    body = auth_body()
    body["auth"]["scope"] = {"project": {"id": "acme"}}
    assert Api().call("POST", TOKENS, json=body).status_code == 201


def test_sec1_wrong_password_unknown_user_and_unknown_project_get_the_same_401() -> None:
    api = Api()
    messages = {error(api.call("POST", TOKENS, json=body), 401) for body in (
        auth_body(password="wrong password!"), auth_body(user="mallory"), auth_body(project="initech"))}
    assert len(messages) == 1
    response = api.call("POST", TOKENS, json=auth_body(password="wrong password!"))
    assert response.headers["WWW-Authenticate"] == f'Keystone uri="{URL}/identity/v3"'
    assert PASSWORD not in response.text and "wrong password!" not in response.text


def test_ten2_a_token_expires_after_its_lifetime_on_the_fake_clock() -> None:
    api = Api()
    token = api.login()
    api.clock.now = T0 + timedelta(hours=24) - timedelta(seconds=1)
    assert api.check(token).status_code == 200
    api.clock.now = T0 + timedelta(hours=24)
    assert "expired" in error(api.check(token), 401)


def test_ten2_a_revoked_token_no_longer_validates() -> None:
    api = Api()
    token = api.login()
    validated = api.check(token)
    assert validated.status_code == 200 and validated.headers["X-Subject-Token"] == token
    assert validated.json()["token"]["user"]["name"] == "alice"
    assert api.call("DELETE", TOKENS, headers={"X-Auth-Token": token, "X-Subject-Token": token}).status_code == 204
    error(api.check(token), 401)
    assert token not in api.directory.tokens


MALFORMED: list[tuple[bytes | None, Any, str]] = [
    (b"{", None, "body: not valid JSON"),
    (b"", None, "body: required"),
    (b"\xff\xfe", None, "body: not valid JSON"),
    (None, [1, 2], "body: must be a JSON object"),
    (None, {}, "body.auth: required"),
    (None, {"auth": "x"}, "body.auth: must be a JSON object"),
    (None, {"auth": {"scope": {}}}, "body.auth.identity: required"),
    (None, {"auth": {"identity": {"password": {}}}}, "body.auth.identity.methods: must be a non-empty list"),
    (None, {"auth": {"identity": {"methods": ["token"]}}}, "body.auth.identity.methods: ['token'] is not supported"),
    (None, {"auth": {"identity": {"methods": ["password"]}}}, "body.auth.identity.password: required"),
    (None, {"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "alice"}}}}},
     "body.auth.identity.password.user.domain: required"),
    (None, {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "alice", "domain": {"name": "Default"}}}}}}, "body.auth.identity.password.user.password: required"),
    (None, {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "alice", "domain": {"name": "Default"}, "password": 12345678}}}}},
     "body.auth.identity.password.user.password: must be a non-empty string"),
    (None, {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "alice", "domain": {"name": "Corp"}, "password": PASSWORD}}}}},
     "body.auth.identity.password.user.domain: unknown domain 'Corp'"),
    (None, {"auth": {**auth_body()["auth"], "scope": None}}, "body.auth.scope: required"),
    (None, {"auth": {**auth_body()["auth"], "scope": {"project": {}}}}, "body.auth.scope.project: needs 'name'"),
    (None, {"auth": {**auth_body()["auth"], "scope": {"domain": {"name": "Default"}}}},
     "body.auth.scope.project: required"),
    (None, {"auth": {**auth_body()["auth"], "identity": {**auth_body()["auth"]["identity"], "methods": [
        "password", "totp"]}}}, "body.auth.identity.totp: required"),
]


@pytest.mark.parametrize(("raw", "payload", "expected"), MALFORMED)
def test_malformed_bodies_get_400_naming_the_field(raw: bytes | None, payload: Any, expected: str) -> None:
    api = Api()
    response = (api.call("POST", TOKENS, content=raw) if raw is not None
                else api.call("POST", TOKENS, json=payload))
    assert expected in error(response, 400)
    assert api.directory.tokens == {}


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                               st.sampled_from(["auth", "identity", "methods", "password", "user", "name", "id",
                                                "domain", "scope", "project", "totp", "passcode"]), inner,
                               max_size=4), max_leaves=12)


@settings(max_examples=60)
@given(payload=json_values)
def test_no_body_makes_the_server_fail(payload: Any) -> None:
    """Never a 500 for bad input: any JSON gets 201, 400 or 401 in Keystone's format."""
    response = Api().call("POST", TOKENS, json=payload)
    assert response.status_code in {201, 400, 401}
    if response.status_code != 201:
        error(response, response.status_code)


def test_ten2_a_totp_user_needs_the_code_as_a_second_method() -> None:
    api = Api()
    token = api.directory.authenticate("bob", "acme", PASSWORD, now=T0)
    secret = api.directory.enable_totp(token)
    api.clock.now = T0 + timedelta(minutes=5)
    assert "TOTP" in error(api.call("POST", TOKENS, json=auth_body("bob")), 401)
    code = pyotp.TOTP(secret).at(api.clock.now)
    response = api.call("POST", TOKENS, json=auth_body("bob", totp=code))
    assert response.status_code == 201
    assert response.json()["token"]["methods"] == ["password", "totp"]
    assert "already used" in error(api.call("POST", TOKENS, json=auth_body("bob", totp=code)), 401)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    api.clock.now += timedelta(seconds=30)
    assert "wrong" in error(api.call("POST", TOKENS, json=auth_body("bob", totp=wrong)), 401)


# -- protected routes and tenant isolation ---------------------------------------------------

def test_ten1_a_token_validates_itself_only_unless_it_is_the_cloud_admins() -> None:
    api = Api()
    alice, bob, root = api.login("alice"), api.login("bob"), api.login("root", PROVIDER_PROJECT)
    assert "may operate the cloud" in error(api.check(alice, bob), 403)
    assert "may operate the cloud" in error(
        api.call("DELETE", TOKENS, headers={"X-Auth-Token": alice, "X-Subject-Token": bob}), 403)
    assert api.check(bob).status_code == 200  # not revoked by the refused DELETE
    assert api.check(root, bob).json()["token"]["user"]["name"] == "bob"
    api.directory.revoke(bob)
    assert "X-Subject-Token" in error(api.check(root, bob), 404)


def test_every_protected_route_needs_a_valid_x_auth_token() -> None:
    api = Api()
    token = api.login()
    assert "X-Auth-Token header: required" in error(api.call("GET", TOKENS), 401)
    assert "X-Auth-Token header: required" in error(api.call("GET", "/identity/v3/projects"), 401)
    error(api.call("GET", TOKENS, headers={"X-Auth-Token": "forged", "X-Subject-Token": token}), 401)
    assert "X-Subject-Token header: required" in error(api.call("GET", TOKENS, headers={"X-Auth-Token": token}), 400)
    assert "no such path" in error(api.call("GET", "/identity/v3/projects", headers={"X-Auth-Token": token}), 404)
    assert "PUT is not allowed" in error(api.call("PUT", TOKENS, headers={"X-Auth-Token": token}), 405)


def test_the_openapi_description_lists_exactly_the_routes() -> None:
    api = Api()
    document = api.call("GET", "/openapi.json").json()
    assert isinstance(api.app, Starlette)
    served = {(path, method.lower()) for route in api.app.routes if isinstance(route, Route)
              for path in [route.path] for method in route.methods or () if method != "HEAD"}
    described = {(path, method) for path, operations in document["paths"].items() for method in operations}
    assert described == served
    assert ("/identity/v3/auth/tokens", "post") in described and document["openapi"] == "3.1.0"


# -- end to end: openstacksdk against uvicorn --------------------------------------------------

@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Directory, list[Any]]]:
    """uvicorn on 127.0.0.1 (a free port) in a thread; every outgoing connect() is recorded and any
    to another address is refused, so the test proves openstacksdk reached nothing else."""
    import uvicorn

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    d = directory()
    app = create_app(d, lambda: datetime.now(UTC), url)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    started = threading.Event()
    while thread.is_alive() and not server.started:
        started.wait(0.01)
    assert server.started, "uvicorn did not start"

    connects: list[Any] = []
    real_connect = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> None:
        connects.append(address)
        if address[:2] != ("127.0.0.1", port):
            raise ConnectionRefusedError(f"test forbids connecting to {address!r}")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield url, d, connects
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()


# openstacksdk 4.x builds an all-None InfluxDB section itself and then warns that InfluxDB is deprecated.
@pytest.mark.filterwarnings("ignore:Support for InfluxDB requires the influxdb library")
def test_ten2_openstacksdk_authenticates_against_the_real_server(served: tuple[str, Directory, list[Any]]) -> None:
    import openstack

    url, d, connects = served
    conn = openstack.connect(auth_url=f"{url}/identity/v3", username="alice", password=PASSWORD,
                             project_name="acme", user_domain_name="Default", project_domain_name="Default",
                             load_yaml_config=False, load_envvars=False)
    token_id = conn.authorize()
    token = d.tokens[token_id]
    assert (token.user, token.project) == ("alice", "acme")
    assert conn.session.get_project_id() == "acme"
    assert connects and all(address[:2] == ("127.0.0.1", int(url.rsplit(":", 1)[1])) for address in connects)
    conn.close()
