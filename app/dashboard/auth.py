"""Password logins for ``qcf-studio serve --auth basic --credentials FILE``.

The credentials file holds one user per line, ``name:scrypt$<n>$<r>$<p>$<salt>$<hash>`` (salt and hash
base64), never a password: ``qcf-studio credentials FILE --user NAME`` adds or replaces a user. Logins
go through Panel's login page; a wrong password costs the caller a growing delay (per client address),
and every check takes the same time whether or not the user exists. Panel's own ``basic_auth`` keeps
passwords in clear text, hence this provider.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from pathlib import Path

from panel.auth import BasicAuthProvider, BasicLoginHandler, _validate_next_url
from panel.io.state import state

__all__ = [
    "CredentialsError",
    "hash_password",
    "verify_password",
    "read_credentials",
    "set_user",
    "HashedPasswordProvider",
]

_N, _R, _P = 2**14, 8, 1  # scrypt cost: about 16 MiB and tens of milliseconds per check
_USER = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
_LINE = re.compile(r"^(?P<user>[^:]+):(?P<hash>scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+)$")
_FAILURE_DELAY = (1.0, 30.0)  # seconds after a failed login, doubling per failure from one address, capped


class CredentialsError(ValueError):
    """A credentials file or user name that cannot be used; the message names the file and line."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` of ``password`` with a random (or the given) salt."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (from :func:`hash_password`), in constant time."""
    try:
        _, n, r, p, salt, digest = encoded.split("$")
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=2**26,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


_DUMMY = hash_password("no such user", salt=b"\0" * 16)  # checked for unknown users: the same time as a real one


def read_credentials(path: str | Path) -> dict[str, str]:
    """``{user: hash}`` from the credentials file; :class:`CredentialsError` for a line that is not a hashed
    entry (a clear-text password, say), naming the line, never echoing it."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CredentialsError(f"--credentials {path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    users: dict[str, str] = {}
    for i, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None or not _USER.fullmatch(m["user"]):
            raise CredentialsError(
                f"--credentials {path}: line {i} is not 'user:scrypt$...'; make entries with "
                f"`qcf-studio credentials {path} --user NAME`"
            )
        users[m["user"]] = m["hash"]
    if not users:
        raise CredentialsError(
            f"--credentials {path}: no users; add one with `qcf-studio credentials {path} --user NAME`"
        )
    return users


def set_user(path: str | Path, user: str, password: str) -> None:
    """Add ``user`` with ``password`` to the credentials file (created, readable by its owner only), or
    replace their password; the file is rewritten atomically."""
    if not _USER.fullmatch(user):
        raise CredentialsError("--user: use 1-64 letters, digits, '.', '_', '@', '+' or '-'")
    if len(password) < 8:
        raise CredentialsError("the password needs at least 8 characters")
    path = Path(path)
    users = read_credentials(path) if path.exists() and path.stat().st_size else {}
    users[user] = hash_password(password)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("# qcf-studio serve --auth basic: user:scrypt hash; edit with `qcf-studio credentials`\n")
        f.writelines(f"{u}:{h}\n" for u, h in sorted(users.items()))
    os.replace(tmp, path)


class HashedPasswordProvider(BasicAuthProvider):
    """Panel's login and logout pages, checking passwords against a credentials file of scrypt hashes."""

    def __init__(self, credentials: dict[str, str], **kwargs) -> None:
        self._credentials = dict(credentials)
        self._failures: dict[str, tuple[int, float]] = {}  # client address -> (failures, time of the last)
        self._handler: type | None = None
        super().__init__(**kwargs)

    def _login_handler_class(self) -> type:
        provider = self

        class LoginHandler(BasicLoginHandler):
            _login_endpoint = provider._login_endpoint
            _login_template = provider._login_template

            async def post(self) -> None:  # type: ignore[override]
                username = self.get_argument("username", "")[:64]
                password = self.get_argument("password", "")[:1024]
                address = self.request.remote_ip or "?"
                wait = provider._delay(address)
                if wait:
                    await asyncio.sleep(wait)
                loop = asyncio.get_running_loop()
                ok = await loop.run_in_executor(None, provider.check, username, password)
                if ok:
                    provider._failures.pop(address, None)
                    self.set_current_user(username)
                    self.redirect(_validate_next_url(self.get_cookie("next_url", state.base_url)) or state.base_url)
                    return
                provider._failed(address)
                self.redirect(f"{self._login_endpoint}?error=Invalid+username+or+password")

        return LoginHandler

    def check(self, user: str, password: str) -> bool:
        """Whether ``password`` is ``user``'s (the same work for an unknown user)."""
        encoded = self._credentials.get(user)
        ok = verify_password(password, encoded or _DUMMY)
        return ok and encoded is not None

    def _delay(self, address: str) -> float:
        failures, last = self._failures.get(address, (0, 0.0))
        if not failures:
            return 0.0
        return max(0.0, min(_FAILURE_DELAY[0] * 2 ** (failures - 1), _FAILURE_DELAY[1]) - (time.monotonic() - last))

    def _failed(self, address: str) -> None:
        failures, _ = self._failures.get(address, (0, 0.0))
        self._failures[address] = (failures + 1, time.monotonic())
        if len(self._failures) > 10_000:  # bounded: forget the oldest
            self._failures.pop(next(iter(self._failures)))

    @property
    def login_handler(self):  # type: ignore[override]
        if self._handler is None:
            self._handler = self._login_handler_class()
        return self._handler
