"""Identity rules (SEC-1, TEN-1, TEN-2): authentication, tokens, roles, invitations, STS, TOTP, hashing."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import attrs
import pyotp
import pytest
from argon2 import PasswordHasher
from hypothesis import given
from hypothesis import strategies as st

from actors.identity import (
    PROVIDER_PROJECT,
    Action,
    AuthMethod,
    Directory,
    Forbidden,
    ProjectName,
    Role,
    Token,
    TokenId,
    Unauthenticated,
    UserName,
)
from runtime.errors import Conflict, InvalidRequest, NotFound
from runtime.secrets import SeededSecrets, SystemSecrets

T0 = datetime(2025, 3, 3, 9, 0, 0, tzinfo=UTC)  # a multiple of 30 s: a TOTP step starts here
PASSWORD = "correct horse battery"
# Cheap argon2id parameters so that tests stay fast; production uses the library defaults.
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def directory() -> Directory:
    d = Directory(SeededSecrets(1), hasher=CHEAP)
    for project in ("acme", "globex"):
        d.create_project(project)
        d.create_user(project, "alice", PASSWORD, frozenset({Role.ADMIN}))
        d.create_user(project, "bob", PASSWORD, frozenset({Role.MEMBER}))
        d.create_user(project, "carol", PASSWORD, frozenset({Role.READER}))
    d.create_user(PROVIDER_PROJECT, "root", PASSWORD, frozenset({Role.CLOUD_ADMIN}))
    return d


def login(d: Directory, user: str, project: str = "acme", now: datetime = T0) -> Token:
    return d.authenticate(user, project, PASSWORD, now=now)


# -- authentication (TEN-2, SEC-1) ------------------------------------------------------

def test_ten2_password_login_gives_a_token_for_the_users_project_and_roles() -> None:
    d = directory()
    token = login(d, "alice", now=T0)
    assert (token.user, token.project, token.roles) == ("alice", "acme", frozenset({Role.ADMIN}))
    assert (token.issued_at, token.expires_at) == (T0, T0 + timedelta(hours=24))
    assert (token.method, token.mfa) == (AuthMethod.PASSWORD, False)
    assert d.validate(token.id, T0) == token


def test_sec1_unknown_user_wrong_password_and_wrong_project_fail_alike() -> None:
    """No user enumeration: the three failures are indistinguishable."""
    d = directory()
    messages = set()
    for user, project, password in [("mallory", "acme", PASSWORD), ("alice", "acme", "wrong password"),
                                    ("alice", "nowhere", PASSWORD)]:
        with pytest.raises(Unauthenticated) as caught:
            d.authenticate(user, project, password, now=T0)
        messages.add(str(caught.value))
    assert len(messages) == 1
    assert d.tokens == {}


def test_sec1_a_disabled_user_cannot_log_in_and_loses_its_tokens() -> None:
    d = directory()
    admin, bob = login(d, "alice"), login(d, "bob")
    assert d.set_enabled(admin, "acme", "bob", False).enabled is False
    with pytest.raises(Unauthenticated):
        d.validate(bob.id, T0)
    with pytest.raises(Unauthenticated, match="wrong project, user name or password"):
        login(d, "bob")
    d.set_enabled(admin, "acme", "bob", True)
    assert login(d, "bob").user == "bob"


def test_ten2_token_expires_at_the_exact_instant() -> None:
    d = directory()
    token = login(d, "bob")
    last_valid = token.expires_at - timedelta(microseconds=1)
    assert d.validate(token.id, last_valid) == token
    with pytest.raises(Unauthenticated, match="expired"):
        d.validate(token.id, token.expires_at)


def test_ten2_a_revoked_token_is_refused_and_revoking_twice_is_refused() -> None:
    d = directory()
    token, other = login(d, "bob"), login(d, "bob")
    d.revoke(token.id)
    with pytest.raises(Unauthenticated):
        d.validate(token.id, T0)
    assert d.validate(other.id, T0) == other
    with pytest.raises(Unauthenticated):
        d.revoke(token.id)


def test_sec1_an_unknown_token_is_refused() -> None:
    with pytest.raises(Unauthenticated):
        directory().validate("made-up", T0)


def test_naive_datetimes_are_refused() -> None:
    d = directory()
    with pytest.raises(InvalidRequest, match="aware datetime"):
        d.authenticate("bob", "acme", PASSWORD, now=T0.replace(tzinfo=None))


def test_purge_forgets_only_what_expired() -> None:
    d = directory()
    early, late = login(d, "bob", now=T0), login(d, "bob", now=T0 + timedelta(hours=1))
    gone = d.issue_temporary(early.id, timedelta(hours=1), T0)
    kept = d.issue_temporary(late.id, timedelta(hours=1), early.expires_at - timedelta(minutes=30))
    assert d.purge(early.expires_at) == 2
    assert (list(d.tokens), list(d.temporary)) == ([late.id], [kept.access_key])
    assert gone.access_key != kept.access_key


# -- passwords (SEC-1) ------------------------------------------------------------------

def test_sec1_the_stored_hash_is_argon2id_and_does_not_contain_the_password() -> None:
    d = directory()
    stored = d.users[(ProjectName("acme"), UserName("bob"))].password_hash
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert base64.b64encode(PASSWORD.encode()).decode().rstrip("=") not in stored
    assert PASSWORD not in repr(d) and stored not in repr(d)
    assert stored not in repr(d.describe_user("acme", "bob"))


def test_sec1_a_hash_made_with_old_parameters_is_replaced_at_the_next_login() -> None:
    d = directory()
    key = (ProjectName("acme"), UserName("bob"))
    old = d.users[key].password_hash
    d.hasher = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1, salt_len=24)
    login(d, "bob")
    new = d.users[key].password_hash
    assert new != old and new.startswith("$argon2id$v=19$m=16,t=2,p=1$")
    login(d, "bob")
    assert d.users[key].password_hash == new  # current parameters: not rehashed again


def test_sec1_password_policy_refuses_short_passwords_naming_the_rule() -> None:
    d = directory()
    with pytest.raises(InvalidRequest, match="password policy: a password needs at least 8 characters, this one has 7"):
        d.create_user("acme", "dave", "1234567")
    assert (ProjectName("acme"), UserName("dave")) not in d.users
    assert d.create_user("acme", "dave", "12345678").name == "dave"


def test_user_and_project_names_are_checked() -> None:
    d = directory()
    with pytest.raises(InvalidRequest, match="user name ' bob' is invalid"):
        d.create_user("acme", " bob", PASSWORD)
    with pytest.raises(InvalidRequest, match="project name '' is invalid"):
        d.create_project("")
    with pytest.raises(Conflict, match="already exists"):
        d.create_user("acme", "bob", PASSWORD)
    with pytest.raises(Conflict, match="already exists"):
        d.create_project("acme")
    with pytest.raises(NotFound):
        d.create_user("nowhere", "bob", PASSWORD)


# -- roles and tenant isolation (TEN-1, SEC-1) -----------------------------------------

def test_sec1_reader_reads_but_cannot_write() -> None:
    d = directory()
    reader = login(d, "carol")
    d.authorize(reader, Action.READ, "acme")
    with pytest.raises(Forbidden, match="needs one of the roles admin, cloud_admin, member; the token has reader"):
        d.authorize(reader, Action.WRITE, "acme")


def test_sec1_member_writes_but_cannot_manage_users_or_quotas() -> None:
    d = directory()
    member = login(d, "bob")
    d.authorize(member, Action.WRITE, "acme")
    for action in (Action.MANAGE_USERS, Action.MANAGE_QUOTAS):
        with pytest.raises(Forbidden):
            d.authorize(member, action, "acme")
    with pytest.raises(Forbidden):
        d.invite(member, "acme", "dave", PASSWORD)


def test_sec1_admin_manages_users_and_quotas_but_does_not_operate_the_cloud() -> None:
    d = directory()
    admin = login(d, "alice")
    for action in (Action.READ, Action.WRITE, Action.MANAGE_USERS, Action.MANAGE_QUOTAS):
        d.authorize(admin, action, "acme")
    with pytest.raises(Forbidden, match="only the cloud_admin role"):
        d.authorize(admin, Action.OPERATE, "acme")


@pytest.mark.parametrize("action", list(Action))
def test_ten1_admin_of_one_project_is_refused_on_another(action: Action) -> None:
    d = directory()
    with pytest.raises(Forbidden):
        d.authorize(login(d, "alice", "acme"), action, "globex")


def test_ten1_provider_cloud_admin_acts_on_every_project_and_only_existing_ones() -> None:
    d = directory()
    root = login(d, "root", PROVIDER_PROJECT)
    for project in ("acme", "globex", PROVIDER_PROJECT):
        d.authorize(root, Action.OPERATE, project)
    with pytest.raises(NotFound):
        d.authorize(root, Action.READ, "nowhere")


def test_ten1_cloud_admin_exists_only_in_the_provider_project_and_only_cloud_admins_grant_it() -> None:
    d = directory()
    with pytest.raises(InvalidRequest, match="exists only in the 'provider' project"):
        d.create_user("acme", "eve", PASSWORD, frozenset({Role.CLOUD_ADMIN}))
    d.create_user(PROVIDER_PROJECT, "padmin", PASSWORD, frozenset({Role.ADMIN}))
    provider_admin = login(d, "padmin", PROVIDER_PROJECT)
    with pytest.raises(Forbidden, match="only a cloud_admin may grant"):
        d.set_roles(provider_admin, PROVIDER_PROJECT, "padmin", frozenset({Role.CLOUD_ADMIN}))
    root = login(d, "root", PROVIDER_PROJECT)
    assert d.set_roles(root, PROVIDER_PROJECT, "padmin", frozenset({Role.CLOUD_ADMIN})).roles == {Role.CLOUD_ADMIN}


def test_sec1_changing_roles_revokes_the_users_tokens() -> None:
    d = directory()
    admin, bob = login(d, "alice"), login(d, "bob")
    d.set_roles(admin, "acme", "bob", frozenset({Role.READER}))
    with pytest.raises(Unauthenticated):
        d.validate(bob.id, T0)
    with pytest.raises(Forbidden):
        d.authorize(login(d, "bob"), Action.WRITE, "acme")


def test_check_validates_then_authorizes() -> None:
    d = directory()
    bob = login(d, "bob")
    assert d.check(bob.id, Action.WRITE, "acme", T0) == bob
    with pytest.raises(Forbidden):
        d.check(bob.id, Action.READ, "globex", T0)
    with pytest.raises(Unauthenticated):
        d.check(bob.id, Action.READ, "acme", bob.expires_at)


_ROLE_SETS = st.frozensets(st.sampled_from(list(Role)), max_size=4)
_PROJECTS = st.sampled_from(["acme", "globex", "initech", PROVIDER_PROJECT])


@given(token_project=_PROJECTS, roles=_ROLE_SETS, action=st.sampled_from(list(Action)), target=_PROJECTS)
def test_ten1_authorize_never_allows_another_project_except_to_the_provider_cloud_admin(
        token_project: str, roles: frozenset[Role], action: Action, target: str) -> None:
    d = Directory(SeededSecrets(0), hasher=CHEAP)
    for project in ("acme", "globex", "initech"):
        d.create_project(project)
    token = Token(TokenId("t"), UserName("u"), ProjectName(token_project), roles, T0, T0 + timedelta(hours=1),
                  AuthMethod.PASSWORD, False)
    provider = token_project == PROVIDER_PROJECT and Role.CLOUD_ADMIN in roles
    try:
        d.authorize(token, action, target)
        allowed = True
    except Forbidden:
        allowed = False
    if target != token_project or action is Action.OPERATE:
        assert allowed == provider
    if provider:
        assert allowed


# -- invitations (TEN-2) ----------------------------------------------------------------

def test_ten2_an_admin_invites_users_into_its_own_project_only() -> None:
    d = directory()
    admin = login(d, "alice", "acme")
    invited = d.invite(admin, "acme", "dave", PASSWORD, frozenset({Role.READER}))
    assert (invited.project, invited.roles) == ("acme", frozenset({Role.READER}))
    assert login(d, "dave").roles == {Role.READER}
    with pytest.raises(Forbidden, match="may act on that project only"):
        d.invite(admin, "globex", "dave", PASSWORD)
    assert (ProjectName("globex"), UserName("dave")) not in d.users


def test_ten2_an_admin_cannot_invite_a_cloud_admin() -> None:
    d = directory()
    with pytest.raises(Forbidden):
        d.invite(login(d, "alice"), "acme", "eve", PASSWORD, frozenset({Role.CLOUD_ADMIN}))


# -- temporary credentials, STS (TEN-2) ------------------------------------------------

def test_ten2_sts_credentials_act_with_the_parents_project_and_roles() -> None:
    d = directory()
    bob = login(d, "bob")
    creds = d.issue_temporary(bob.id, timedelta(hours=1), T0)
    assert creds.expires_at == T0 + timedelta(hours=1)
    sts = d.validate_temporary(creds.access_key, creds.secret, creds.session_token, T0)
    assert (sts.user, sts.project, sts.roles, sts.method) == ("bob", "acme", bob.roles, AuthMethod.STS)
    d.authorize(sts, Action.WRITE, "acme")
    with pytest.raises(Forbidden):
        d.authorize(sts, Action.READ, "globex")
    assert creds.secret not in repr(creds) and creds.session_token not in repr(creds)


def test_ten2_sts_expiry_is_capped_by_the_parent_token() -> None:
    d = directory()
    bob = login(d, "bob")
    late = bob.expires_at - timedelta(hours=2)
    creds = d.issue_temporary(bob.id, timedelta(hours=12), late)
    assert creds.expires_at == bob.expires_at


def test_ten2_sts_refused_at_its_expiry() -> None:
    d = directory()
    creds = d.issue_temporary(login(d, "bob").id, timedelta(minutes=15), T0)
    d.validate_temporary(creds.access_key, creds.secret, creds.session_token, creds.expires_at - timedelta(seconds=1))
    with pytest.raises(Unauthenticated):
        d.validate_temporary(creds.access_key, creds.secret, creds.session_token, creds.expires_at)


def test_ten2_sts_refused_after_the_parent_is_revoked() -> None:
    d = directory()
    bob = login(d, "bob")
    creds = d.issue_temporary(bob.id, timedelta(hours=1), T0)
    d.revoke(bob.id)
    with pytest.raises(Unauthenticated):
        d.validate_temporary(creds.access_key, creds.secret, creds.session_token, T0)


def test_ten2_sts_refuses_wrong_secrets_and_out_of_range_durations() -> None:
    d = directory()
    bob = login(d, "bob")
    creds = d.issue_temporary(bob.id, timedelta(hours=1), T0)
    for secret, session in [("wrong", creds.session_token), (creds.secret, "wrong"), ("é", "é")]:
        with pytest.raises(Unauthenticated):
            d.validate_temporary(creds.access_key, secret, session, T0)
    for duration in (timedelta(minutes=14), timedelta(hours=24, seconds=1)):
        with pytest.raises(InvalidRequest, match="temporary credentials last 900 to 86400 seconds"):
            d.issue_temporary(bob.id, duration, T0)
    with pytest.raises(Unauthenticated):
        d.issue_temporary(creds.access_key, timedelta(hours=1), T0)  # no STS from STS


# -- TOTP second factor (TEN-2) ---------------------------------------------------------

def totp_user(d: Directory) -> pyotp.TOTP:
    return pyotp.TOTP(d.enable_totp(login(d, "bob")))


def test_ten2_totp_user_needs_the_current_code() -> None:
    d = directory()
    otp = totp_user(d)
    assert d.describe_user("acme", "bob").mfa
    with pytest.raises(Unauthenticated, match="send the current code"):
        login(d, "bob")
    token = d.authenticate("bob", "acme", PASSWORD, totp=otp.at(T0), now=T0)
    assert token.mfa


def test_ten2_totp_previous_and_next_step_accepted_two_steps_refused() -> None:
    d = directory()
    otp = totp_user(d)
    now = T0 + timedelta(minutes=10)
    for offset, accepted in [(-2, False), (-1, True), (0, True), (1, True), (2, False)]:
        fresh = attrs.evolve(d.users[(ProjectName("acme"), UserName("bob"))], totp_last_step=None)
        d.users[(fresh.project, fresh.name)] = fresh
        code = otp.at(now, counter_offset=offset)
        if accepted:
            assert d.authenticate("bob", "acme", PASSWORD, totp=code, now=now).mfa
        else:
            with pytest.raises(Unauthenticated, match="wrong or too old"):
                d.authenticate("bob", "acme", PASSWORD, totp=code, now=now)


def test_ten2_totp_code_reuse_within_its_step_is_refused() -> None:
    d = directory()
    otp = totp_user(d)
    code = otp.at(T0)
    d.authenticate("bob", "acme", PASSWORD, totp=code, now=T0)
    with pytest.raises(Unauthenticated, match="already used"):
        d.authenticate("bob", "acme", PASSWORD, totp=code, now=T0 + timedelta(seconds=10))
    d.authenticate("bob", "acme", PASSWORD, totp=otp.at(T0 + timedelta(seconds=30)), now=T0 + timedelta(seconds=30))


def test_ten2_totp_matches_the_rfc_6238_test_vector() -> None:
    """RFC 6238 appendix B, SHA-1, T = 59 s: 94287082; its last six digits are the 6-digit code."""
    d = directory()
    key = (ProjectName("acme"), UserName("bob"))
    d.users[key] = attrs.evolve(d.users[key], totp_secret=base64.b32encode(b"12345678901234567890").decode())
    at = datetime(1970, 1, 1, 0, 0, 59, tzinfo=UTC)
    assert d.authenticate("bob", "acme", PASSWORD, totp="287082", now=at).mfa


def test_ten2_a_user_enrols_totp_once() -> None:
    d = directory()
    bob = login(d, "bob")
    d.enable_totp(bob)
    with pytest.raises(Conflict, match="already has a TOTP second factor"):
        d.enable_totp(bob)


# -- the secrets port ---------------------------------------------------------------------

def test_seeded_secrets_repeat_and_system_secrets_do_not() -> None:
    assert SeededSecrets(3).token(32) == SeededSecrets(3).token(32)
    assert SeededSecrets(3).token(32) != SeededSecrets(4).token(32)
    assert len(SeededSecrets(3).token(32)) == len(SystemSecrets().token(32)) == 43
    assert SystemSecrets().token_bytes(16) != SystemSecrets().token_bytes(16)
