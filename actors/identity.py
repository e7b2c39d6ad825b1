"""Identity (SEC-1, TEN-1, TEN-2): projects, users, roles, tokens, temporary credentials, TOTP.

`Directory` is the state the Identity actor owns; its methods are pure rules over that state,
with time passed in as aware datetimes and unguessable values drawn from a `SecretSource`.

Invariants:
- Passwords are stored only as argon2id hashes; hashes and TOTP secrets never appear in a
  token, a view (`UserInfo`), an error or a repr.
- Authentication fails with the same `Unauthenticated` message whether the project or user is
  unknown, the user disabled or the password wrong (no user enumeration; an unknown user
  costs one hash verification too, so timing does not tell either).
- `Directory.authorize` is the ONE place where tenant isolation and roles are decided (TEN-1):
  a token acts only on its own project, with the actions of its roles (`PERMISSIONS`).
  The single exception is the provider: a user with the `cloud_admin` role on the
  `provider` project operates the cloud (creates projects, accepts quota changes, TEN-3/4)
  and may act on every project. `cloud_admin` can be held only in that project and granted
  only by a cloud admin.
- A token's roles are fixed when it is issued: changing a user's roles or disabling the
  user revokes the user's tokens, and revoking a token revokes the temporary credentials
  derived from it, which never outlive it.

Methods that take `by: Token` (invite, set_roles, set_enabled, enable_totp) check the
caller's rights themselves. The others (create_project, create_user) are for bootstrap and
the provider: the REST layer calls `authorize` before them.
"""

from __future__ import annotations

import base64
import enum
import hmac
import re
from datetime import datetime, timedelta
from typing import NewType

import attrs
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from runtime.errors import CloudError, ConfigError, Conflict, InvalidRequest, NotFound
from runtime.secrets import SecretSource

ProjectName = NewType("ProjectName", str)
UserName = NewType("UserName", str)
TokenId = NewType("TokenId", str)
AccessKey = NewType("AccessKey", str)

PROVIDER_PROJECT = ProjectName("provider")

# Defaults as Flexible Engine's IAM API (Huawei Cloud IAM) documents them: a token is valid
# 24 hours; temporary access keys (STS) live 15 minutes to 24 hours.
TOKEN_LIFETIME = timedelta(hours=24)
STS_MIN_DURATION = timedelta(minutes=15)
STS_MAX_DURATION = timedelta(hours=24)
# NIST SP 800-63B 5.1.1.2: memorized secrets are at least 8 characters long.
MIN_PASSWORD_LENGTH = 8
# RFC 6238: 30 s steps, 6 digits; one step of clock drift accepted either way (section 5.2).
TOTP_DRIFT_STEPS = 1
TOTP_SECRET_BYTES = 20  # 160 bits, the HMAC-SHA1 output size RFC 4226 section 4 recommends

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_BAD_CREDENTIALS = "authentication failed: wrong project, user name or password"
_BAD_TOKEN = "the token is unknown, expired or revoked; authenticate again"
_BAD_TEMPORARY = "the temporary credentials are unknown, wrong, expired or revoked; ask for new ones"


class Unauthenticated(CloudError):
    """401: the caller did not prove who it is (bad credentials, token expired or revoked, MFA missing)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Forbidden(CloudError):
    """403: the caller is known but may not do `action` on `project`."""

    def __init__(self, action: Action, project: str, reason: str) -> None:
        self.action, self.project, self.reason = action, project, reason
        super().__init__(f"{action.value} on project {project!r} refused: {reason}")


class Role(enum.Enum):
    READER = "reader"
    MEMBER = "member"
    ADMIN = "admin"
    CLOUD_ADMIN = "cloud_admin"


class Action(enum.Enum):
    READ = "read"
    WRITE = "write"
    MANAGE_USERS = "manage_users"
    MANAGE_QUOTAS = "manage_quotas"
    OPERATE = "operate"  # provider operations: create projects, accept quota changes


PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.READER: frozenset({Action.READ}),
    Role.MEMBER: frozenset({Action.READ, Action.WRITE}),
    Role.ADMIN: frozenset({Action.READ, Action.WRITE, Action.MANAGE_USERS, Action.MANAGE_QUOTAS}),
    Role.CLOUD_ADMIN: frozenset(Action),
}


class AuthMethod(enum.Enum):
    PASSWORD = "password"
    STS = "sts"


@attrs.frozen
class Project:
    """A tenant (TEN-1): an isolated pool of resources. Its name is its id."""

    name: ProjectName


@attrs.frozen
class User:
    """Stored state of a user; only the Directory sees it (`UserInfo` is the public view)."""

    name: UserName
    project: ProjectName
    roles: frozenset[Role]
    password_hash: str = attrs.field(repr=False)
    totp_secret: str | None = attrs.field(default=None, repr=False)
    totp_last_step: int | None = attrs.field(default=None, repr=False)  # replay guard
    enabled: bool = True


@attrs.frozen
class UserInfo:
    name: UserName
    project: ProjectName
    roles: frozenset[Role]
    enabled: bool
    mfa: bool

    @classmethod
    def of(cls, user: User) -> UserInfo:
        return cls(user.name, user.project, user.roles, user.enabled, user.totp_secret is not None)


@attrs.frozen
class Token:
    """Proof of authentication: who, for which project, with which roles, until when.

    Valid from `issued_at` while `now < expires_at`. Tokens from temporary credentials have
    `method` STS and the access key as `id`.
    """

    id: TokenId = attrs.field(repr=False)
    user: UserName
    project: ProjectName
    roles: frozenset[Role]
    issued_at: datetime
    expires_at: datetime
    method: AuthMethod
    mfa: bool


@attrs.frozen
class TemporaryCredentials:
    """STS credentials derived from a password token; they expire no later than it."""

    access_key: AccessKey
    secret: str = attrs.field(repr=False)
    session_token: str = attrs.field(repr=False)
    issued_at: datetime
    expires_at: datetime
    parent: TokenId = attrs.field(repr=False)


def _aware(now: datetime) -> None:
    if now.utcoffset() is None:
        raise InvalidRequest(f"time must be an aware datetime (with a time zone), got {now!r}")


def _check_name(kind: str, name: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidRequest(f"{kind} name {name!r} is invalid: use 1 to 64 letters, digits, '.', '_', '-' "
                             f"or '@', starting with a letter or a digit")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


@attrs.define
class Directory:
    """Projects, users, tokens and temporary credentials of one cloud (see the module docstring)."""

    secrets: SecretSource = attrs.field(repr=False)
    hasher: PasswordHasher = attrs.field(factory=PasswordHasher, repr=False)
    min_password_length: int = MIN_PASSWORD_LENGTH
    token_lifetime: timedelta = TOKEN_LIFETIME
    projects: dict[ProjectName, Project] = attrs.field(factory=dict)
    users: dict[tuple[ProjectName, UserName], User] = attrs.field(factory=dict)
    tokens: dict[TokenId, Token] = attrs.field(factory=dict, repr=False)
    temporary: dict[AccessKey, TemporaryCredentials] = attrs.field(factory=dict, repr=False)
    _dummy_hash: str | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.min_password_length < 1:
            raise ConfigError("identity.min_password_length", f"must be at least 1, got {self.min_password_length}")
        if self.token_lifetime <= timedelta(0):
            raise ConfigError("identity.token_lifetime", f"must be positive, got {self.token_lifetime}")
        self.projects.setdefault(PROVIDER_PROJECT, Project(PROVIDER_PROJECT))

    # -- projects and users -------------------------------------------------------------

    def create_project(self, name: str) -> Project:
        _check_name("project", name)
        if name in self.projects:
            raise Conflict(f"project {name!r} already exists; pick another name")
        project = self.projects[ProjectName(name)] = Project(ProjectName(name))
        return project

    def create_user(self, project: str, name: str, password: str,
                    roles: frozenset[Role] = frozenset({Role.MEMBER})) -> UserInfo:
        """Create a user (password policy: at least `min_password_length` characters)."""
        _check_name("user", name)
        if project not in self.projects:
            raise NotFound("project", project)
        key = (ProjectName(project), UserName(name))
        if key in self.users:
            raise Conflict(f"user {name!r} already exists in project {project!r}; pick another name")
        self._check_roles(project, roles)
        if len(password) < self.min_password_length:
            raise InvalidRequest(f"password policy: a password needs at least {self.min_password_length} "
                                 f"characters, this one has {len(password)}")
        user = User(key[1], key[0], frozenset(roles), self._hash(password))
        self.users[key] = user
        return UserInfo.of(user)

    def invite(self, by: Token, project: str, name: str, password: str,
               roles: frozenset[Role] = frozenset({Role.MEMBER})) -> UserInfo:
        """TEN-2: a user with the right (admin of `project`, or cloud admin) creates a user there."""
        self.authorize(by, Action.MANAGE_USERS, project)
        self._check_grant(by, roles)
        return self.create_user(project, name, password, roles)

    def set_roles(self, by: Token, project: str, name: str, roles: frozenset[Role]) -> UserInfo:
        """Replace a user's roles; the user's tokens are revoked (they carry the old roles)."""
        self.authorize(by, Action.MANAGE_USERS, project)
        self._check_grant(by, roles)
        self._check_roles(project, roles)
        user = self._user(project, name)
        self.users[(user.project, user.name)] = attrs.evolve(user, roles=frozenset(roles))
        self._revoke_user(user)
        return UserInfo.of(self.users[(user.project, user.name)])

    def set_enabled(self, by: Token, project: str, name: str, enabled: bool) -> UserInfo:
        """Enable or disable a user; disabling revokes the user's tokens."""
        self.authorize(by, Action.MANAGE_USERS, project)
        user = self._user(project, name)
        self.users[(user.project, user.name)] = attrs.evolve(user, enabled=enabled)
        if not enabled:
            self._revoke_user(user)
        return UserInfo.of(self.users[(user.project, user.name)])

    def enable_totp(self, by: Token) -> str:
        """Enrol the token's own user in TOTP (MFA, TEN-2); return the base32 secret for the user's app."""
        user = self._user(by.project, by.user)
        if user.totp_secret is not None:
            raise Conflict(f"user {user.name!r} already has a TOTP second factor")
        secret = base64.b32encode(self.secrets.token_bytes(TOTP_SECRET_BYTES)).decode("ascii")
        self.users[(user.project, user.name)] = attrs.evolve(user, totp_secret=secret)
        return secret

    def describe_user(self, project: str, name: str) -> UserInfo:
        return UserInfo.of(self._user(project, name))

    # -- authentication -----------------------------------------------------------------

    def authenticate(self, user: str, project: str, password: str, *, now: datetime,
                     totp: str | None = None) -> Token:
        """TEN-2: password login (plus a TOTP code for enrolled users) -> a token of `token_lifetime`."""
        _aware(now)
        found = self.users.get((ProjectName(project), UserName(user)))
        if found is None or not found.enabled:
            self._verify_dummy(password)
            raise Unauthenticated(_BAD_CREDENTIALS)
        try:
            self.hasher.verify(found.password_hash, password)
        except VerificationError:
            raise Unauthenticated(_BAD_CREDENTIALS) from None
        updated = found
        if found.totp_secret is not None:
            updated = attrs.evolve(updated, totp_last_step=self._totp_step(found, totp, now))
        if self.hasher.check_needs_rehash(found.password_hash):
            updated = attrs.evolve(updated, password_hash=self._hash(password))
        self.users[(found.project, found.name)] = updated
        token = Token(TokenId(self.secrets.token(32)), found.name, found.project, found.roles, now,
                      now + self.token_lifetime, AuthMethod.PASSWORD, found.totp_secret is not None)
        self.tokens[token.id] = token
        return token

    def validate(self, token_id: str, now: datetime) -> Token:
        """The token, if it exists, is not revoked and `now` is before its expiry."""
        _aware(now)
        token = self.tokens.get(TokenId(token_id))
        if token is None or now >= token.expires_at:
            raise Unauthenticated(_BAD_TOKEN)
        return token

    def revoke(self, token_id: str) -> None:
        """Revoke a token and the temporary credentials derived from it."""
        token = self.tokens.pop(TokenId(token_id), None)
        if token is None:
            raise Unauthenticated(_BAD_TOKEN)
        for key in [k for k, c in self.temporary.items() if c.parent == token.id]:
            del self.temporary[key]

    def issue_temporary(self, token_id: str, duration: timedelta, now: datetime) -> TemporaryCredentials:
        """STS (TEN-2): credentials for `duration`, capped at the parent token's expiry."""
        parent = self.validate(token_id, now)
        if not STS_MIN_DURATION <= duration <= STS_MAX_DURATION:
            raise InvalidRequest(f"temporary credentials last {STS_MIN_DURATION.total_seconds():.0f} to "
                                 f"{STS_MAX_DURATION.total_seconds():.0f} seconds, asked for "
                                 f"{duration.total_seconds():g}")
        credentials = TemporaryCredentials(
            AccessKey(self.secrets.token(15)), self.secrets.token(30), self.secrets.token(32), now,
            min(now + duration, parent.expires_at), parent.id)
        self.temporary[credentials.access_key] = credentials
        return credentials

    def validate_temporary(self, access_key: str, secret: str, session_token: str, now: datetime) -> Token:
        """An STS token for valid temporary credentials: the parent's user, project and roles."""
        _aware(now)
        found = self.temporary.get(AccessKey(access_key))
        if (found is None or not _same(secret, found.secret) or not _same(session_token, found.session_token)
                or now >= found.expires_at):
            raise Unauthenticated(_BAD_TEMPORARY)
        parent = self.tokens[found.parent]  # present: `revoke` and `purge` drop credentials with their parent
        return Token(TokenId(found.access_key), parent.user, parent.project, parent.roles, found.issued_at,
                     found.expires_at, AuthMethod.STS, parent.mfa)

    def purge(self, now: datetime) -> int:
        """Forget expired tokens and temporary credentials; return how many went."""
        _aware(now)
        tokens = [k for k, t in self.tokens.items() if now >= t.expires_at]
        temporary = [k for k, c in self.temporary.items() if now >= c.expires_at]
        for token_id in tokens:
            del self.tokens[token_id]
        for key in temporary:
            del self.temporary[key]
        return len(tokens) + len(temporary)

    # -- authorization ------------------------------------------------------------------

    def authorize(self, token: Token, action: Action, project: str) -> None:
        """TEN-1, SEC-1: allow `action` on `project` for `token`, or raise Forbidden.

        The caller has validated the token (`validate` or `validate_temporary`) first.
        """
        if token.project == PROVIDER_PROJECT and Role.CLOUD_ADMIN in token.roles:
            if project not in self.projects:
                raise NotFound("project", project)
            return
        if action is Action.OPERATE:
            raise Forbidden(action, project, f"only the {Role.CLOUD_ADMIN.value} role of the "
                                             f"{PROVIDER_PROJECT!r} project may operate the cloud")
        if project != token.project:
            raise Forbidden(action, project, f"the token belongs to project {token.project!r} and may act "
                                             f"on that project only")
        if not any(action in PERMISSIONS[role] for role in token.roles):
            needed = sorted(r.value for r, allowed in PERMISSIONS.items() if action in allowed)
            raise Forbidden(action, project, f"needs one of the roles {', '.join(needed)}; the token has "
                                             f"{', '.join(sorted(r.value for r in token.roles)) or 'none'}")

    def check(self, token_id: str, action: Action, project: str, now: datetime) -> Token:
        """`validate` then `authorize`: what every password-token API request goes through."""
        token = self.validate(token_id, now)
        self.authorize(token, action, project)
        return token

    # -- internals ----------------------------------------------------------------------

    def _hash(self, password: str) -> str:
        return self.hasher.hash(password, salt=self.secrets.token_bytes(self.hasher.salt_len))

    def _verify_dummy(self, password: str) -> None:
        """Spend one verification on a throwaway hash so that an unknown user costs what a known one does."""
        if self._dummy_hash is None:
            self._dummy_hash = self._hash(self.secrets.token(16))
        try:
            self.hasher.verify(self._dummy_hash, password)
        except VerificationError:
            pass

    def _totp_step(self, user: User, code: str | None, now: datetime) -> int:
        """The RFC 6238 step `code` belongs to (current one, drift allowed); refuse replays."""
        assert user.totp_secret is not None
        if code is None:
            raise Unauthenticated("this user has a TOTP second factor: send the current code too")
        otp = pyotp.TOTP(user.totp_secret)
        current = otp.timecode(now)
        for step in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
            if _same(code, otp.generate_otp(step)):
                if user.totp_last_step is not None and step <= user.totp_last_step:
                    raise Unauthenticated("this TOTP code was already used: wait for the next one")
                return step
        raise Unauthenticated("the TOTP code is wrong or too old: send the current one")

    def _user(self, project: str, name: str) -> User:
        user = self.users.get((ProjectName(project), UserName(name)))
        if user is None:
            raise NotFound("user", f"{project}/{name}")
        return user

    def _check_roles(self, project: str, roles: frozenset[Role]) -> None:
        if Role.CLOUD_ADMIN in roles and project != PROVIDER_PROJECT:
            raise InvalidRequest(f"the {Role.CLOUD_ADMIN.value} role exists only in the {PROVIDER_PROJECT!r} "
                                 f"project, not in {project!r}")

    def _check_grant(self, by: Token, roles: frozenset[Role]) -> None:
        if Role.CLOUD_ADMIN in roles and not (by.project == PROVIDER_PROJECT and Role.CLOUD_ADMIN in by.roles):
            raise Forbidden(Action.MANAGE_USERS, by.project,
                            f"only a {Role.CLOUD_ADMIN.value} may grant the {Role.CLOUD_ADMIN.value} role")

    def _revoke_user(self, user: User) -> None:
        for token_id in [k for k, t in self.tokens.items() if t.project == user.project and t.user == user.name]:
            self.revoke(token_id)
