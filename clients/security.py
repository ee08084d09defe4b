"""The client's side of the gateway's transport security: a TLS (or mTLS) channel when the
config names a CA or a client certificate, and a bearer token read from a file (re-read within
a second of a change, so a rotated token needs no restart). Plain grpcio, no other dependency.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import grpc

from clients.config import ClientConfig

TOKEN_RECHECK_S = 1.0


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def make_channel(config: ClientConfig, options: list[tuple[str, Any]]) -> grpc.Channel:
    """A channel to ``config.target``: TLS when configured, else insecure (the loopback default)."""
    if not config.tls:
        return grpc.insecure_channel(config.target, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(config.tls_ca_file) if config.tls_ca_file else None,
        private_key=_read(config.tls_key_file) if config.tls_key_file else None,
        certificate_chain=_read(config.tls_cert_file) if config.tls_cert_file else None,
    )
    if config.tls_server_name:
        options = [*options, ("grpc.ssl_target_name_override", config.tls_server_name)]
    return grpc.secure_channel(config.target, credentials, options=options)


class TokenMetadata:
    """``metadata()`` → the ``authorization`` metadata of every RPC (empty without a token file).
    A file that cannot be read after a change keeps the previous token."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._checked = float("-inf")
        self._metadata: tuple[tuple[str, str], ...] = ()
        if path:
            self._load()

    def _load(self) -> None:
        st = os.stat(self._path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        with open(self._path, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        if not lines:
            raise ValueError(f"{self._path} holds no token")
        token = lines[0].rpartition(" ")[2]  # a `name token` line sends the token
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._stamp = stamp

    def call_kwargs(self) -> dict[str, Any]:
        """``{"metadata": ...}`` for an RPC when there is a token, else nothing to pass."""
        metadata = self.metadata()
        return {"metadata": metadata} if metadata else {}

    def metadata(self) -> tuple[tuple[str, str], ...]:
        if self._path:
            now = time.monotonic()
            if now - self._checked >= TOKEN_RECHECK_S:
                self._checked = now
                # A file that cannot be read keeps the token we have; the gateway's UNAUTHENTICATED
                # says if it is stale.
                with contextlib.suppress(OSError, ValueError):
                    self._load()
        return self._metadata
