"""Signing Binance requests: HMAC-SHA256 and Ed25519 over the sorted ``name=value`` payload.

The payload rule is the same for every key type (``web-socket-api.md``,
"SIGNED request example"): every parameter except ``signature``, sorted by
name, joined as ``name=value`` with ``&``, UTF-8, no percent-encoding. HMAC
signs it into lowercase hex, Ed25519 into base64.

A signer holds its key and never shows it: not in ``repr``, ``str``, pickles
or the messages of the errors it raises.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import hmac
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, NoReturn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from .._errors import ConfigError

KeyType = Literal["hmac", "ed25519"]


def param_text(value: object) -> str:
    """A parameter value as the venue reads it: booleans lower-case, everything else ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def payload(params: Mapping[str, object]) -> str:
    """The text a signature covers: ``params`` minus ``signature``, sorted by name, ``k=v`` joined by ``&``."""
    return "&".join(f"{k}={param_text(params[k])}" for k in sorted(params) if k != "signature")


class Signer(abc.ABC):
    """Signs payloads with one secret key; the key never leaves the object."""

    __slots__ = ()

    #: "hmac" or "ed25519".
    key_type: KeyType

    @abc.abstractmethod
    def sign(self, text: str) -> str:
        """The signature of ``text`` (a ``payload``), as the venue expects it in ``params.signature``."""

    def sign_params(self, params: Mapping[str, object]) -> str:
        return self.sign(payload(params))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} (key hidden)>"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds a secret key and cannot be pickled")


class HmacSigner(Signer):
    """HMAC-SHA256 with the API secret; lowercase hex."""

    __slots__ = ("_secret",)
    key_type: KeyType = "hmac"

    def __init__(self, secret: str | bytes) -> None:
        if not secret:
            raise ConfigError("the API secret is empty")
        self._secret = secret.encode() if isinstance(secret, str) else bytes(secret)

    def sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode("utf-8"), hashlib.sha256).hexdigest()


class Ed25519Signer(Signer):
    """Ed25519 with a private key; base64."""

    __slots__ = ("_key",)
    key_type: KeyType = "ed25519"

    def __init__(self, key: Ed25519PrivateKey) -> None:
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("an Ed25519Signer needs an Ed25519 private key")
        self._key = key

    @classmethod
    def from_pem(cls, data: bytes, password: bytes | None = None, *, source: str = "the PEM data") -> Ed25519Signer:
        try:
            key = load_pem_private_key(data, password=password)
        except (ValueError, TypeError):
            # Never chain the parser's error: it may quote the key material.
            raise ConfigError(f"{source} is not a readable PEM private key (wrong format or password)") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{source} holds a {type(key).__name__.removeprefix('_')}, not an Ed25519 private key; "
                              "Binance Ed25519 API keys are made with `openssl genpkey -algorithm ed25519`")
        return cls(key)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], password: bytes | None = None, *,
                  check_mode: bool = True) -> Ed25519Signer:
        """Load a PEM key file; refused if group or others may read it (``chmod 600``)."""
        p = Path(path)
        try:
            st = p.stat()
        except OSError as exc:
            raise ConfigError(f"cannot read the private key file {str(p)!r}: {exc.strerror}") from None
        if check_mode and os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"the private key file {str(p)!r} is readable by others "
                              f"(mode {stat.S_IMODE(st.st_mode):o}); `chmod 600 {p}`")
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the private key file {str(p)!r}: {exc.strerror}") from None
        return cls.from_pem(data, password, source=f"the private key file {str(p)!r}")

    def sign(self, text: str) -> str:
        return base64.b64encode(self._key.sign(text.encode("utf-8"))).decode("ascii")

    def public_pem(self) -> bytes:
        """The public half, PEM (what one registers with the venue, or gives the simulator)."""
        return self._key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


# --- Bybit v5 ------------------------------------------------------------------------------------------
# Bybit signs with the same HMAC-SHA256 (lowercase hex) over different text: ``HmacSigner.sign`` of these.


def bybit_auth_text(expires_ms: int) -> str:
    """What a WebSocket ``op: auth`` signature covers: ``"GET/realtime" + expires`` (wss-authentication.mdx)."""
    return f"GET/realtime{expires_ms}"


def bybit_rest_text(timestamp_ms: int | str, api_key: str, recv_window_ms: int | str, query_or_body: str) -> str:
    """What an ``X-BAPI-SIGN`` covers: timestamp + API key + recv window + the query string (GET) or body (POST)."""
    return f"{timestamp_ms}{api_key}{recv_window_ms}{query_or_body}"
