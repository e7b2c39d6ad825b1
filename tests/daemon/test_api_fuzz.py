"""Fuzzing the daemon's API from its own OpenAPI description (issue 5, "Done when": API fuzzing;
TEN-1, TEN-2, SEC-1).

A real daemon runs in-process (daemon.service.Daemon on libvirt `test:///default`, uvicorn on a
socket of 127.0.0.1). schemathesis reads `/openapi.json` from it, so every route another module
adds (Cinder, more Nova, traces, metrics) is fuzzed as soon as it is described there, and
generates requests for every operation, positive (what the schema allows) and negative (what it
does not). Each request goes over HTTP; each response is checked:

- never a 5xx (`not_a_server_error`), and its status, content type and body conform to what the
  description documents for that operation (`status_code_conformance`, `content_type_conformance`,
  `response_schema_conformance`);
- no cross-tenant leak (TEN-1): project B has servers (and volumes when the daemon has a
  `[storage]`) with distinctive names and ids, a user and a live token; no response to project A
  (member, then reader) shows any of them in its body or headers, unless the request itself
  carried that string (an error message may echo what the caller sent);
- B's ids and names put into every path parameter, with A's token (and A's own project in the
  project parameters), are refused (400, 403 or 404, never 2xx) exactly as a decoy id that names
  nothing is (same status, same body): not even B's resources' existence shows; B's servers are
  all still there and running afterwards;
- without a token, or with a bad one, every operation that the description does not let answer
  anonymously (`security: []`, or `{}` among its requirements as /metrics for loopback clients)
  answers 401.

Requests are generated from a copy of the description without its security requirements (the
tests send the token themselves; schemathesis's negative mode would drop it from half the
requests), and operations whose project path parameter would otherwise be random get runs with
A's own project there, so that the fuzzing gets past the project check into the handlers.

Generation is derandomized (the same requests in every run: a failure reproduces), and every
test counts the requests it sent and asserts a floor, so that a schema change that silently
shrinks generation fails the test: the floors add up to at least 2,000 requests.
"""

from __future__ import annotations

import copy
import json
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import anyio.from_thread
import httpx
import pytest
import requests
import schemathesis
from argon2 import PasswordHasher
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from actors.identity import Directory, Role
from actors.volumes import CreateVolume
from daemon.config import parse
from daemon.service import Daemon
from runtime.secrets import SystemSecrets

PASSWORD = "correct horse battery"
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # fast tests; production uses the defaults
FLAVOR = "s3.small.1"
AZ = "eu-west-0a"
CONFIG = """
[daemon]
region = "eu-west-0"
listen = "127.0.0.1:{port}"
state = "sqlite://{state}"

[[hosts]]
name = "fuzz-h1"
az = "eu-west-0a"
uri = "test:///default"
vcpus = 64
ram_gb = 256
"""
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
# Path parameters that name a project (Cinder's and CTS's {project_id}, Nova's quota {project}, Cinder's
# quota {target}): fuzzed with A's own project too, and with B's.
PROJECT_PARAMETERS = frozenset({"project", "project_id", "tenant_id", "target"})

# Requests each test asks hypothesis for (spread evenly over the operations) and must have sent at least
# (counted: an operation without parameters has one request to give, so the count is below the budget).
# The floors add up to the 2,000; the budgets keep the run near a minute as the API grows.
BUDGET = {"member": 1400, "reader": 450, "anonymous": 350, "bad_token": 350, "b_ids": 450}
MIN_REQUESTS = {"member": 1000, "reader": 300, "anonymous": 250, "bad_token": 250, "b_ids": 300}
assert sum(MIN_REQUESTS.values()) >= 2000


class World:
    """The running daemon, its description, and the two projects: A fuzzes, B holds the secrets."""

    def __init__(self, daemon: Daemon, portal: anyio.from_thread.BlockingPortal, document: dict[str, Any]) -> None:
        self.daemon, self.portal, self.document = daemon, portal, document
        self.url = daemon.public_url
        # Generation from a copy without the security requirements: the tests send the token themselves
        # (schemathesis's negative mode would otherwise drop it from half the requests).
        unsecured = copy.deepcopy(document)
        unsecured.pop("security", None)
        unsecured.get("components", {}).pop("securitySchemes", None)
        for operations in unsecured["paths"].values():
            for operation in operations.values():
                if isinstance(operation, dict):
                    operation.pop("security", None)
        self.schema = schemathesis.openapi.from_dict(unsecured)
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy between the test and 127.0.0.1
        self.a = self.b = ""  # the two projects' names
        self.tokens: dict[str, str] = {}
        self.b_servers: dict[str, str] = {}  # id -> name
        self.b_volumes: list[str] = []
        self.b_secrets: dict[str, str] = {}  # the string -> what it is (for the failure message)

    def token(self, user: str, project: str) -> str:
        body: dict[str, Any] = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": PASSWORD}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
        response = self.session.post(f"{self.url}/identity/v3/auth/tokens", json=body, timeout=30)
        assert response.status_code == 201, response.text
        return response.headers["X-Subject-Token"]

    def compute(self, method: str, path: str, token: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.url}/compute/v2.1{path}", headers={"X-Auth-Token": token},
                                    timeout=60, **kwargs)

    def is_public(self, method: str, path: str) -> bool:
        """Whether the description lets `method path` answer without a token: `security` empty, or
        listing the empty requirement `{}` (auth optional, e.g. /metrics for a loopback client)."""
        operation = self.document["paths"][path][method.lower()]
        security = operation.get("security", self.document.get("security", []))
        return security == [] or {} in security

    def operations(self) -> list[Any]:
        found = []
        for result in self.schema.get_all_operations():
            if isinstance(result, Err):  # an operation schemathesis cannot read is a failure, not a skip
                raise result.err()
            found.append(result.ok())
        assert found, "the description lists no operation"
        return found

    def own_project_or_free(self, operation: Any) -> list[dict[str, str]]:
        """Path parameters to fix: A's project in the project ones (else nearly every request stops at
        the project check), and, where the operation has any, none (all generated)."""
        names = [p.name for p in operation.path_parameters]
        own = {name: self.a for name in names if name in PROJECT_PARAMETERS}
        return [own, {}] if own else [{}]

    def bs_ids(self, operation: Any) -> list[dict[str, str]]:
        """Each of B's ids and names in the other path parameters (A's project in the project ones),
        and B's project in the project parameters."""
        names = [p.name for p in operation.path_parameters]
        projects = [name for name in names if name in PROJECT_PARAMETERS]
        others = [name for name in names if name not in PROJECT_PARAMETERS]
        targets = [*self.b_servers, *self.b_servers.values(), *self.b_volumes]
        fixes = [{**{p: self.a for p in projects}, **{o: target for o in others}} for target in targets] \
            if others else []
        return fixes + ([{p: self.b for p in projects}] if projects else [])


def _distinct(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The daemon on a free port; project A (member `amy`, reader `rex`, one server of its own) and
    project B (member `bob`, servers with distinctive names; volumes when the daemon has storage)."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only then (else 40 ms per keep-alive request)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    config = parse(CONFIG.format(port=listener.getsockname()[1], state=tmp_path_factory.mktemp("fuzz") / "state.db"),
                   "fe.toml", {})
    directory = Directory(SystemSecrets(), hasher=CHEAP)
    daemon = Daemon(config, {"FE_ADMIN_PASSWORD": PASSWORD}, directory=directory, sock=listener,
                    handle_signals=False)
    a, b = _distinct("alpha"), _distinct("bravo")
    bob = _distinct("bob")
    with anyio.from_thread.start_blocking_portal() as portal:
        done = portal.start_task_soon(daemon.run)
        while not daemon.ready and not done.done():
            time.sleep(0.01)
        assert daemon.ready, done.exception()
        try:
            with httpx.Client(trust_env=False) as client:
                document = client.get(f"{daemon.public_url}/openapi.json").json()
            w = World(daemon, portal, document)
            w.a, w.b = a, b
            for project in (a, b):
                portal.call(daemon.create_project, project)
            portal.call(daemon.create_user, a, "amy", PASSWORD, frozenset({Role.MEMBER}))
            portal.call(daemon.create_user, a, "rex", PASSWORD, frozenset({Role.READER}))
            portal.call(daemon.create_user, b, bob, PASSWORD, frozenset({Role.MEMBER}))
            w.tokens = {"member": w.token("amy", a), "reader": w.token("rex", a), "b": w.token(bob, b)}
            w.b_secrets = {b: "B's project name", bob: "B's user name", f"{b}:{bob}": "B's user id",
                           w.tokens["b"]: "B's token"}
            mine = w.compute("POST", "/servers", w.tokens["member"], json={"server": {
                "name": "alpha-own", "flavorRef": FLAVOR, "availability_zone": AZ}})
            assert mine.status_code == 202, mine.text
            for i in range(2):
                name = _distinct(f"bravo-secret-{i}")
                created = w.compute("POST", "/servers", w.tokens["b"], json={"server": {
                    "name": name, "flavorRef": FLAVOR, "availability_zone": AZ}})
                assert created.status_code == 202, created.text
                sid = created.json()["server"]["id"]
                w.b_servers[sid] = name
                w.b_secrets.update({sid: f"B's server id ({name})", name: "B's server name"})
            if config.storage is not None:  # volumes only where the daemon has a block store
                assert daemon.control is not None
                for _ in range(2):
                    view = portal.call(daemon.control.ask, b, CreateVolume(b, AZ, 10))
                    w.b_volumes.append(view.id)
                    w.b_secrets[view.id] = "B's volume id"
            yield w
        finally:
            daemon.stop()
            done.result(timeout=60)
            listener.close()


def _request_text(response: requests.Response) -> str:
    """Everything the caller sent: URL, headers and body (what a response may echo)."""
    request = response.request
    body = request.body or b""
    sent = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    return f"{request.url} {json.dumps(dict(request.headers))} {sent}"


def assert_no_leak(world: World, response: requests.Response) -> None:
    """TEN-1: no secret of B in the response's body or headers that the caller did not send itself."""
    shown = response.content.decode("utf-8", "replace") + json.dumps(dict(response.headers))
    sent = _request_text(response)
    leaked = {what: secret for secret, what in world.b_secrets.items() if secret in shown and secret not in sent}
    assert not leaked, (f"cross-tenant leak: {response.request.method} {response.request.url} -> "
                        f"{response.status_code} shows {leaked}: {response.text[:500]}")


Extra = Callable[[Any, requests.Response], None]


def fuzz(world: World, headers: Mapping[str, str], budget: int, extra: Extra, modes: tuple[GenerationMode, ...] = MODES,
         fixed: Callable[[Any], list[dict[str, str]]] | None = None) -> int:
    """Generate about `budget` requests spread over every described operation (in `modes`; per operation
    one run per path-parameter assignment that `fixed` gives, default: A's own project in the project
    parameters and, where there are some, freely generated ones), send each with `headers`, run CHECKS
    and `extra` on its response; the number of requests sent."""
    operations = world.operations()
    fixes = fixed if fixed is not None else world.own_project_or_free
    runs = [(operation, mode, path) for operation in operations for path in fixes(operation) for mode in modes
            if mode is GenerationMode.POSITIVE or _negatable(operation)]
    examples = max(2, -(-budget // max(1, len(runs))))
    sent = 0
    for operation, mode, path in runs:
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=path or None)

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case: Any) -> None:
            nonlocal sent
            response = case.call(base_url=world.url, session=world.session, headers=dict(headers), timeout=60)
            sent += 1
            case.validate_response(response, checks=CHECKS, headers=dict(headers))
            extra(case, response)

        try:
            run()
        except Unsatisfiable:
            if mode is GenerationMode.POSITIVE:
                raise
            # nothing of this operation can be made invalid (no parameter, no body): positive covers it
    return sent


def _negatable(operation: Any) -> bool:
    """Whether negative generation can make this operation's request invalid. A path parameter, or an
    optional header or query parameter that is any string, is valid whatever is sent; only a body, a
    required parameter or a constrained one can be broken (else schemathesis filters thousands of
    candidates before it gives up)."""
    def constrained(parameter: Any) -> bool:
        schema = parameter.definition.get("schema", {})
        return bool(parameter.is_required or schema.get("type") != "string" or set(schema) - {"type"})
    return bool(len(operation.body)) or any(constrained(p) for p in [*operation.query, *operation.headers])


def _no_leak(world: World) -> Extra:
    return lambda case, response: assert_no_leak(world, response)


def test_ten1_fuzzing_as_a_member_of_a_gets_no_5xx_and_sees_nothing_of_b(world: World) -> None:
    sent = fuzz(world, {"X-Auth-Token": world.tokens["member"]}, BUDGET["member"], _no_leak(world))
    print(f"member of A: {sent} requests")
    assert sent >= MIN_REQUESTS["member"]


def test_ten1_fuzzing_as_a_reader_of_a_gets_no_5xx_and_sees_nothing_of_b(world: World) -> None:
    sent = fuzz(world, {"X-Auth-Token": world.tokens["reader"]}, BUDGET["reader"], _no_leak(world))
    print(f"reader of A: {sent} requests")
    assert sent >= MIN_REQUESTS["reader"]


def _unauthenticated(world: World) -> Extra:
    def check(case: Any, response: requests.Response) -> None:
        if not world.is_public(case.method, case.path):
            assert response.status_code == 401, (f"{case.method} {case.formatted_path} without a valid token: "
                                                  f"{response.status_code} {response.text[:300]}")
        assert_no_leak(world, response)
    return check


def test_sec1_without_a_token_every_protected_operation_is_401(world: World) -> None:
    sent = fuzz(world, {}, BUDGET["anonymous"], _unauthenticated(world))
    print(f"no token: {sent} requests")
    assert sent >= MIN_REQUESTS["anonymous"]


def test_sec1_with_a_bad_token_every_protected_operation_is_401(world: World) -> None:
    bad = {"X-Auth-Token": "gAAAAAB-not-a-token-" + secrets.token_hex(16)}
    sent = fuzz(world, bad, BUDGET["bad_token"], _unauthenticated(world))
    print(f"bad token: {sent} requests")
    assert sent >= MIN_REQUESTS["bad_token"]


def _decoy(target: str) -> str:
    """A string of the same shape as `target` that names nothing: a fresh UUID for an id, else a name."""
    try:
        uuid.UUID(target)
    except ValueError:
        return _distinct("nobody")
    return str(uuid.uuid4())


def test_ten1_bs_ids_in_every_path_parameter_are_refused_to_a_and_change_nothing(world: World) -> None:
    """A's member token; every path parameter that names a resource set to each of B's ids and names
    (project parameters: A's own project), and every project parameter set to B's project. Each is
    refused (400, 403 or 404: never 2xx), shows nothing of B, and is answered exactly as the same request
    with a decoy that names nothing (same status, same body but for the decoy): A cannot even tell that
    B's resource exists. B's servers are all still there and running afterwards."""
    compared = 0

    def refused(case: Any, response: requests.Response) -> None:
        nonlocal compared
        where = f"{case.method} {case.formatted_path} with A's token"
        assert response.status_code in {400, 403, 404}, f"{where}: {response.status_code} {response.text[:300]}"
        assert_no_leak(world, response)
        request = response.request
        assert request.url is not None
        for target in {v for v in case.path_parameters.values() if v in world.b_secrets}:
            decoy = _decoy(target)
            again = world.session.request(str(request.method), request.url.replace(quote(target, safe=""), decoy),
                                          headers=dict(request.headers), data=request.body, timeout=60)
            assert (again.status_code, again.text.replace(decoy, target)) == (response.status_code, response.text), \
                f"{where} answers otherwise than for a decoy {decoy}: {again.status_code} {again.text[:300]}"
            compared += 1

    sent = fuzz(world, {"X-Auth-Token": world.tokens["member"]}, BUDGET["b_ids"], refused,
                (GenerationMode.POSITIVE,), world.bs_ids)
    print(f"B's ids in path parameters: {sent} requests ({compared} compared with a decoy)")
    assert sent >= MIN_REQUESTS["b_ids"] and compared >= MIN_REQUESTS["b_ids"]
    listed = world.compute("GET", "/servers/detail", world.tokens["b"]).json()["servers"]
    assert {s["id"]: (s["name"], s["status"]) for s in listed} == \
        {sid: (name, "ACTIVE") for sid, name in world.b_servers.items()}


def test_the_leak_check_can_fail(world: World) -> None:
    """The detector itself: B's own listing, read with B's token, shows B's secrets."""
    response = world.compute("GET", "/servers/detail", world.tokens["b"])
    with pytest.raises(AssertionError, match="cross-tenant leak"):
        assert_no_leak(world, response)
