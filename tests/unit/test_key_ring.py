"""The key ring: first key encrypts, every key decrypts; old single-key ciphertexts still open.
And credentials are hashed and compared as the bytes they arrived as."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.crypto import SecretBox, constant_time_equals, hash_token, new_secret_key
from shared.settings import ApiSettings


def _v1_blob(key: str, plaintext: str, context: str) -> bytes:
    """A ciphertext as the single-key release wrote it: 0x01 | nonce | sealed."""
    nonce = os.urandom(12)
    return (
        b"\x01" + nonce + AESGCM(base64.b64decode(key)).encrypt(nonce, plaintext.encode(), context.encode())
    )


def test_first_key_encrypts_and_every_key_decrypts() -> None:
    old, new = new_secret_key(), new_secret_key()
    sealed_old = SecretBox(old).encrypt("s1", "ctx")
    ring = SecretBox(f"{new},{old}")
    assert ring.decrypt(sealed_old, "ctx") == "s1"
    assert not ring.is_current(sealed_old)
    sealed_new = ring.encrypt("s2", "ctx")
    assert ring.is_current(sealed_new)
    assert SecretBox(new).decrypt(sealed_new, "ctx") == "s2"
    with pytest.raises(ValueError, match="not in the key ring"):
        SecretBox(old).decrypt(sealed_new, "ctx")


def test_ciphertexts_of_the_single_key_format_still_decrypt() -> None:
    old, new = new_secret_key(), new_secret_key()
    blob = _v1_blob(old, "legacy", "trigger-1")
    ring = SecretBox([new, old])
    assert ring.decrypt(blob, "trigger-1") == "legacy"
    assert not ring.is_current(blob)
    with pytest.raises(ValueError, match="any key"):
        SecretBox(new).decrypt(blob, "trigger-1")
    with pytest.raises(ValueError, match="any key"):
        ring.decrypt(blob, "trigger-2")  # bound to its trigger


def test_secret_key_setting_takes_one_key_or_a_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = new_secret_key(), new_secret_key()
    monkeypatch.setenv("ROUTINES_DATABASE_URL", "postgresql://x@h/db")
    monkeypatch.setenv("ROUTINES_SECRET_KEY", old)
    assert ApiSettings().secret_key == old
    monkeypatch.setenv("ROUTINES_SECRET_KEY", f" {new} , {old} ")
    assert ApiSettings().secret_key == f"{new},{old}"
    monkeypatch.setenv("ROUTINES_SECRET_KEY", f"{new},not-a-key")
    with pytest.raises(ValueError, match="base64"):
        ApiSettings()


def test_settings_from_mounted_secret_files(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from pathlib import Path

    from shared.errors import ConfigurationError
    from shared.settings import load_settings

    folder = Path(str(tmp_path))
    key = new_secret_key()
    (folder / "routines_database_url").write_text("postgresql://file@h/db")
    (folder / "ROUTINES_SECRET_KEY").write_text(key)
    monkeypatch.delenv("ROUTINES_DATABASE_URL", raising=False)
    monkeypatch.delenv("ROUTINES_SECRET_KEY", raising=False)
    monkeypatch.setenv("ROUTINES_SECRETS_DIR", str(folder))
    settings = load_settings(ApiSettings)
    assert settings.database_url == "postgresql://file@h/db"
    assert settings.secret_key == key
    monkeypatch.setenv("ROUTINES_DATABASE_URL", "postgresql://env@h/db")  # the environment wins
    assert load_settings(ApiSettings).database_url == "postgresql://env@h/db"
    monkeypatch.setenv("ROUTINES_SECRETS_DIR", str(folder / "missing"))
    with pytest.raises(ConfigurationError, match="not a directory"):
        load_settings(ApiSettings)


def test_credentials_that_arrived_as_non_utf8_bytes_hash_and_compare_as_those_bytes() -> None:
    """aiohttp hands header bytes that are not UTF-8 over as lone surrogates; hashing or comparing
    such a value raised UnicodeEncodeError (a 500 for a wrong cookie or CSRF token)."""
    arrived = b"rtb_\xff\xfe".decode("utf-8", "surrogateescape")
    assert hash_token(arrived) == hashlib.sha256(b"rtb_\xff\xfe").digest()
    assert constant_time_equals(arrived, b"rtb_\xff\xfe")
    assert not constant_time_equals(arrived, "rtb_ok")
    posted = b"+3AE-".decode("utf-7")  # a form field posted in UTF-7: a lone U+DC01
    assert not constant_time_equals(posted, "rtb_ok")
    assert hash_token(posted) != hash_token("rtb_ok")
