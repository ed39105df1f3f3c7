"""`routines reencrypt`: seal every webhook secret under the key ring's first key, online.

Batches of rows are locked (`FOR UPDATE SKIP LOCKED` is not used: every row must be visited),
decrypted with whichever ring key sealed them and sealed again with the first key, one short
transaction per batch. Services keep running: readers decrypt old and new ciphertexts alike
as long as their ring holds both keys (the rotation order is in docs/operations.md)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from shared.crypto import SecretBox
from shared.logging import get_logger

log = get_logger(__name__)

_BATCH = """
SELECT id, trigger_id, ciphertext FROM webhook_secrets
WHERE id > $1 ORDER BY id LIMIT $2 FOR NO KEY UPDATE
"""
_UPDATE = """
UPDATE webhook_secrets AS w SET ciphertext = n.ciphertext
FROM unnest($1::uuid[], $2::bytea[]) AS n (id, ciphertext)
WHERE w.id = n.id
"""


@dataclass(frozen=True)
class ReencryptResult:
    examined: int
    reencrypted: int


async def reencrypt_secrets(dsn: str, box: SecretBox, batch_size: int = 500) -> ReencryptResult:
    """Re-seal every webhook secret not yet under the first key; return what was done."""
    conn = await asyncpg.connect(dsn, statement_cache_size=0)  # one transaction per batch: pooler-safe
    examined = reencrypted = 0
    last = uuid.UUID(int=0)
    try:
        while True:
            async with conn.transaction():
                rows = await conn.fetch(_BATCH, last, batch_size)
                if not rows:
                    break
                last = rows[-1]["id"]
                examined += len(rows)
                stale = [r for r in rows if not box.is_current(r["ciphertext"])]
                if stale:
                    await conn.execute(
                        _UPDATE,
                        [r["id"] for r in stale],
                        [
                            box.encrypt(
                                box.decrypt(r["ciphertext"], str(r["trigger_id"])), str(r["trigger_id"])
                            )
                            for r in stale
                        ],
                    )
                    reencrypted += len(stale)
            log.info("reencrypt batch", examined=examined, reencrypted=reencrypted)
    finally:
        await conn.close()
    return ReencryptResult(examined, reencrypted)
