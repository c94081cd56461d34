"""Signing keys in PostgreSQL: the private key encrypted with PEAK_SECRET_KEY, the public key as a JWK.

The newest key signs. A rotation keeps the previous public key published until the last token it signed
has expired, so validators never meet a valid token whose key has vanished.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from kit.db import Connection, Pool
from kit.settings import SettingsError

__all__ = ["KeyStore", "SigningKey"]

# Taken with the transaction so that several processes starting at once create only one first key.
_LOCK_ID = 0x73736F6B  # "ssok"
# Clock leeway on top of the token lifetime before a retired public key is withdrawn.
_PUBLISH_MARGIN_S = 60


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private_key: PrivateKeyTypes

    def __repr__(self) -> str:  # never print key material
        return f"SigningKey(kid={self.kid!r}, algorithm={self.algorithm!r})"


def _generate(algorithm: str) -> PrivateKeyTypes:
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported signing algorithm {algorithm!r}")


def _public_jwk(kid: str, algorithm: str, private_key: Any) -> dict[str, Any]:
    public = private_key.public_key()
    jwk: dict[str, Any]
    if algorithm == "RS256":
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif algorithm == "ES256":
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
    return jwk


class KeyStore:
    def __init__(self, db: Pool, *, algorithm: str, secret_key: str | None, access_token_ttl_s: int) -> None:
        self._db = db
        self._algorithm = algorithm
        self._secret = secret_key.encode() if secret_key else None
        self._ttl_s = access_token_ttl_s

    def _passphrase(self) -> bytes:
        if self._secret is None:
            raise SettingsError("PEAK_SECRET_KEY is not set: it encrypts the private signing keys")
        return self._secret

    async def _insert(self, conn: Connection) -> str:
        kid = secrets.token_urlsafe(12)
        private_key = _generate(self._algorithm)
        encrypted = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase()),
        )
        await conn.execute(
            "INSERT INTO sso_signing_keys (kid, algorithm, public_jwk, private_key) VALUES ($1, $2, $3, $4)",
            kid,
            self._algorithm,
            _public_jwk(kid, self._algorithm, private_key),
            encrypted,
        )
        return kid

    async def signing_key(self) -> SigningKey:
        """The current signing key, created on first use."""
        async with self._db.acquire() as conn, conn.transaction():
            row = await self._current(conn)
            if row is None:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
                row = await self._current(conn)
                if row is None:
                    await self._insert(conn)
                    row = await self._current(conn)
        assert row is not None
        try:
            private_key = serialization.load_pem_private_key(bytes(row["private_key"]), self._passphrase())
        except ValueError:
            raise SettingsError(
                f"PEAK_SECRET_KEY does not decrypt signing key {row['kid']}: set the secret it was made with; "
                "if that is lost, run `peak sso rotate-keys` with the new secret to make a new signing key"
            ) from None
        return SigningKey(row["kid"], row["algorithm"], private_key)

    async def _current(self, conn: Connection) -> Any:
        return await conn.fetchrow(
            "SELECT kid, algorithm, private_key FROM sso_signing_keys"
            " WHERE published_until IS NULL ORDER BY created_at DESC LIMIT 1"
        )

    async def current_kid(self) -> str | None:
        kid: str | None = await self._db.fetchval(
            "SELECT kid FROM sso_signing_keys WHERE published_until IS NULL ORDER BY created_at DESC LIMIT 1"
        )
        return kid

    async def rotate(self, *, retire_now: bool = False) -> str:
        """Make a new key the signing key; the old ones stay published until their tokens expire, or, with
        ``retire_now``, leave the published set at once (validators then refuse what they signed)."""
        keep_s = 0.0 if retire_now else float(self._ttl_s + _PUBLISH_MARGIN_S)
        async with self._db.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
            await conn.execute(
                "UPDATE sso_signing_keys SET published_until = now() + make_interval(secs => $1)"
                " WHERE published_until IS NULL OR published_until > now() + make_interval(secs => $1)",
                keep_s,
            )
            return await self._insert(conn)

    async def jwks(self) -> dict[str, Any]:
        """Every public key still needed, newest first, as a JWK set."""
        rows = await self._db.fetch(
            "SELECT public_jwk FROM sso_signing_keys WHERE published_until IS NULL OR published_until > now()"
            " ORDER BY created_at DESC"
        )
        return {"keys": [r["public_jwk"] for r in rows]}
