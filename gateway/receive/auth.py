"""Who is calling, and what they may do (DESIGN §13).

A caller authenticates with a bearer token (``authorization: Bearer <token>`` metadata, what
OpenTelemetry SDKs send from ``OTEL_EXPORTER_OTLP_HEADERS``) or, under mTLS, with its client
certificate. Two rights:

- **ingest** (spans and feedback): a token from ``TRACEGW_AUTH_TOKEN_FILE``, or any client
  certificate the configured CA signed;
- **bundle events** (the release history): a token from ``TRACEGW_BUNDLE_TOKEN_FILE``, or a
  client certificate whose identity is in ``TRACEGW_BUNDLE_CLIENT_IDENTITIES``. A chatbot pod's
  credentials therefore cannot write release history.

With no token file and no client CA (the loopback default) nobody is asked, and every caller
has both rights: the sidecar and its pod are one trust domain. Tokens are compared in constant
time; the files are re-read within a second of a change, so a token is rotated by writing the
new one beside the old, rolling the clients, then removing the old one — no restart.

The caller's identity (``token:<name>``, ``x509:<identity>`` or ``anonymous``) is recorded
beside what a bundle event claims (``actor_id``); it never contains the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.config import AuthConfig

log = logging.getLogger(__name__)

RELOAD_CHECK_S = 1.0
MIN_TOKEN_CHARS = 16


class TokenFileError(ValueError):
    """A token file that cannot be used (unreadable, empty, a token too short)."""


@dataclass(frozen=True)
class Principal:
    identity: str
    may_ingest: bool
    may_record_bundles: bool


ANONYMOUS = Principal("anonymous", may_ingest=True, may_record_bundles=True)


def parse_tokens(text: str, where: str) -> list[tuple[str, bytes]]:
    """(name, secret) per line: ``<token>`` or ``<name> <token>``; ``#`` starts a comment."""
    tokens = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, secret = line.rpartition(" ")
        secret = secret.strip()
        if len(secret) < MIN_TOKEN_CHARS:
            raise TokenFileError(f"{where} line {number}: a token must be at least {MIN_TOKEN_CHARS} characters")
        label = name.strip() or "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:8]
        tokens.append((label, secret.encode()))
    if not tokens:
        raise TokenFileError(f"{where} holds no token")
    return tokens


class TokenFile:
    """The tokens of one file, re-read (at most once a second) when the file changes. A change
    that makes the file unusable keeps the previous tokens and is logged."""

    def __init__(self, path: str, clock: Any = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._stamp = self._stat()
        self._tokens = self._read()
        self._checked = clock()

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _read(self) -> list[tuple[str, bytes]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenFileError(f"{self.path}: cannot read it ({exc.__class__.__name__})") from exc
        return parse_tokens(text, self.path)

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked < RELOAD_CHECK_S:
            return
        self._checked = now
        try:
            stamp = self._stat()
            if stamp == self._stamp:
                return
            tokens = self._read()
        except (OSError, TokenFileError) as exc:
            log.warning("token file %s changed but cannot be used (%s); keeping its previous tokens", self.path, exc)
            return
        self._stamp, self._tokens = stamp, tokens
        log.info("token file %s re-read: %d tokens", self.path, len(tokens))

    def match(self, presented: bytes) -> str | None:
        """The name of the token ``presented`` equals, compared in constant time against all."""
        self._refresh()
        found: str | None = None
        for name, secret in self._tokens:
            if hmac.compare_digest(presented, secret) and found is None:
                found = name
        return found


def _bearer(metadata: Sequence[tuple[str, Any]] | None) -> bytes | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip().encode()
            return b""  # present but not a bearer token: fails like a wrong one
    return None


class Authenticator:
    """``authenticate(context)`` → the caller's ``Principal``, or None (UNAUTHENTICATED)."""

    def __init__(self, config: AuthConfig) -> None:
        self.required = config.required
        self._ingest = TokenFile(config.token_file) if config.token_file else None
        self._bundle = TokenFile(config.bundle_token_file) if config.bundle_token_file else None
        self._mtls = bool(config.tls_client_ca_file)
        self._bundle_identities = frozenset(config.bundle_identities)

    def authenticate(self, context: Any) -> Principal | None:
        if not self.required:
            return ANONYMOUS
        token = _bearer(context.invocation_metadata())
        if token is not None:
            if self._bundle is not None and (name := self._bundle.match(token)) is not None:
                return Principal(f"token:{name}", may_ingest=False, may_record_bundles=True)
            if self._ingest is not None and (name := self._ingest.match(token)) is not None:
                return Principal(f"token:{name}", may_ingest=True, may_record_bundles=False)
            return None  # a token was sent and is wrong: never fall back to the certificate
        if self._mtls:
            identities = [i.decode("utf-8", "replace") for i in (context.peer_identities() or ())]
            if identities:  # the TLS handshake verified the certificate against the CA
                bundles = any(i in self._bundle_identities for i in identities)
                return Principal(f"x509:{identities[0][:128]}", may_ingest=True, may_record_bundles=bundles)
        return None


def file_problems(config: AuthConfig) -> list[str]:
    """What is wrong with the configured token and certificate files (``tracegw check``)."""
    problems = []
    for env, path in (
        ("TRACEGW_AUTH_TOKEN_FILE", config.token_file),
        ("TRACEGW_BUNDLE_TOKEN_FILE", config.bundle_token_file),
    ):
        if path:
            try:
                TokenFile(path)
            except (OSError, TokenFileError) as exc:
                problems.append(f"{env}: {exc}")
    pem = (
        ("TRACEGW_TLS_CERT_FILE", config.tls_cert_file, b"-----BEGIN CERTIFICATE-----"),
        ("TRACEGW_TLS_KEY_FILE", config.tls_key_file, b"PRIVATE KEY-----"),
        ("TRACEGW_TLS_CLIENT_CA_FILE", config.tls_client_ca_file, b"-----BEGIN CERTIFICATE-----"),
    )
    for env, path, marker in pem:
        if path:
            try:
                with open(path, "rb") as f:
                    if marker not in f.read():
                        problems.append(f"{env}={path}: not a PEM file of the expected kind")
            except OSError as exc:
                problems.append(f"{env}={path}: cannot read it ({exc.strerror})")
    return problems
