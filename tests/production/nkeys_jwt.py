"""NATS decentralized auth material for tests, made with `cryptography` (not the `nkeys` package,
so a test can show what happens when the services lack it): nkeys (ed25519 keys in NATS' base32
encoding), operator/account/user JWTs, and a user `.creds` file."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PREFIX_SEED = 18 << 3
PREFIX = {"operator": 14 << 3, "account": 0, "user": 20 << 3}


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _encode(raw: bytes) -> str:
    raw += _crc16(raw).to_bytes(2, "little")
    return base64.b32encode(raw).decode().rstrip("=")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class NKey:
    kind: str
    key: Ed25519PrivateKey

    @classmethod
    def new(cls, kind: str) -> NKey:
        return cls(kind, Ed25519PrivateKey.generate())

    @property
    def public(self) -> str:
        raw = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return _encode(bytes([PREFIX[self.kind]]) + raw)

    @property
    def seed(self) -> str:
        prefix = PREFIX[self.kind]
        raw = self.key.private_bytes_raw()
        return _encode(bytes([PREFIX_SEED | (prefix >> 5), (prefix & 31) << 3]) + raw)

    def jwt(self, subject: NKey, name: str, nats: dict[str, Any]) -> str:
        """A JWT about `subject`, issued (signed) by this key."""
        claims: dict[str, Any] = {
            "iat": int(time.time()),
            "iss": self.public,
            "name": name,
            "sub": subject.public,
            "nats": {**nats, "type": subject.kind, "version": 2},
        }
        claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims).encode()).digest()).decode()
        header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
        body = _b64(json.dumps(claims).encode())
        signature = self.key.sign(f"{header}.{body}".encode())
        return f"{header}.{body}.{_b64(signature)}"


UNLIMITED = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
    "mem_storage": -1,
    "disk_storage": -1,
    "streams": -1,
    "consumer": -1,
}


def operator_setup() -> tuple[str, str]:
    """(server config lines for operator mode with one JetStream-enabled account and a memory
    resolver, the contents of a `.creds` file of a user of that account)."""
    operator, account, user = NKey.new("operator"), NKey.new("account"), NKey.new("user")
    system = NKey.new("account")
    operator_jwt = operator.jwt(operator, "test-operator", {})
    account_jwt = operator.jwt(account, "routines", {"limits": UNLIMITED})
    system_jwt = operator.jwt(system, "SYS", {"limits": {**UNLIMITED, "mem_storage": 0, "disk_storage": 0}})
    user_jwt = account.jwt(
        user, "routines-service", {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
    )
    config = (
        f"operator: {operator_jwt}\n"
        f"system_account: {system.public}\n"
        "resolver: MEMORY\n"
        f"resolver_preload: {{\n  {account.public}: {account_jwt}\n  {system.public}: {system_jwt}\n}}\n"
    )
    creds = (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed}\n"
        "------END USER NKEY SEED------\n"
    )
    return config, creds
