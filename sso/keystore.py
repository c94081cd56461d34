"""Signing keys in PostgreSQL: the private key encrypted with PEAK_SECRET_KEY, the public key as a JWK.

Each algorithm in use has its own current key (the newest of that algorithm), made on first use: access
tokens are signed with PEAK_SSO_ALGORITHM's, ID and logout tokens with their client's
``id_token_signed_response_alg``'s. A rotation gives every algorithm a new key and keeps the previous public
keys published until the last token they signed has expired, so validators never meet a valid token whose
key has vanished.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.api_jws import PyJWS
from jwt.utils import der_to_raw_signature

from kit.db import Connection, Pool
from kit.settings import SettingsError

__all__ = ["ALGORITHMS", "DEFAULT_OIDC_ALGORITHM", "KeyRing", "KeyStore", "SigningKey"]

# Every algorithm a key can be made for (validators accept the same: sso.client.validator.ALGORITHMS).
ALGORITHMS = ("RS256", "ES256", "EdDSA")
# ID and logout tokens of a client that registered no algorithm (OpenID Connect Registration 1.0, section 2).
DEFAULT_OIDC_ALGORITHM = "RS256"

# Taken with the transaction so that several processes starting at once create only one first key.
_LOCK_ID = 0x73736F6B  # "ssok"
# Clock leeway on top of the token lifetime before a retired public key is withdrawn.
_PUBLISH_MARGIN_S = 60


class _DeterministicES256(ECAlgorithm):
    """ES256 with RFC 6979 nonces: like RS256 and EdDSA, the same claims give the same token, so a retried
    refresh gets the very same pair (sso.tokens) although ECDSA's signatures are otherwise random."""

    def __init__(self) -> None:
        super().__init__(ECAlgorithm.SHA256)

    def sign(self, msg: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
        der = key.sign(msg, ec.ECDSA(self.hash_alg(), deterministic_signing=True))
        return der_to_raw_signature(der, key.curve)


_JWS = PyJWS()
_JWS.unregister_algorithm("ES256")
_JWS.register_algorithm("ES256", _DeterministicES256())


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
    """``algorithm`` is the access tokens' (PEAK_SSO_ALGORITHM): the key ``signing_key()`` gives by default."""

    def __init__(self, db: Pool, *, algorithm: str, secret_key: str | None, access_token_ttl_s: int) -> None:
        self._db = db
        self.algorithm = algorithm
        self._secret = secret_key.encode() if secret_key else None
        self._ttl_s = access_token_ttl_s

    def _passphrase(self) -> bytes:
        if self._secret is None:
            raise SettingsError("PEAK_SECRET_KEY is not set: it encrypts the private signing keys")
        return self._secret

    async def _insert(self, conn: Connection, algorithm: str) -> str:
        kid = secrets.token_urlsafe(12)
        private_key = _generate(algorithm)
        encrypted = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase()),
        )
        await conn.execute(
            "INSERT INTO sso_signing_keys (kid, algorithm, public_jwk, private_key) VALUES ($1, $2, $3, $4)",
            kid,
            algorithm,
            _public_jwk(kid, algorithm, private_key),
            encrypted,
        )
        return kid

    async def signing_key(self, algorithm: str | None = None) -> SigningKey:
        """The current key of ``algorithm`` (default: the access tokens'), created on first use."""
        algorithm = algorithm or self.algorithm
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unsupported signing algorithm {algorithm!r}")
        async with self._db.acquire() as conn, conn.transaction():
            row = await self._current(conn, algorithm)
            if row is None:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
                row = await self._current(conn, algorithm)
                if row is None:
                    await self._insert(conn, algorithm)
                    row = await self._current(conn, algorithm)
        assert row is not None
        try:
            private_key = serialization.load_pem_private_key(bytes(row["private_key"]), self._passphrase())
        except ValueError:
            raise SettingsError(
                f"PEAK_SECRET_KEY does not decrypt signing key {row['kid']}: set the secret it was made with; "
                "if that is lost, run `peak sso rotate-keys` with the new secret to make new signing keys"
            ) from None
        return SigningKey(row["kid"], row["algorithm"], private_key)

    async def _current(self, conn: Connection, algorithm: str) -> Any:
        return await conn.fetchrow(
            "SELECT kid, algorithm, private_key FROM sso_signing_keys"
            " WHERE published_until IS NULL AND algorithm = $1 ORDER BY created_at DESC LIMIT 1",
            algorithm,
        )

    async def current_kids(self) -> dict[str, str]:
        """The current key id of every algorithm that has one."""
        rows = await self._db.fetch(
            "SELECT DISTINCT ON (algorithm) algorithm, kid FROM sso_signing_keys"
            " WHERE published_until IS NULL ORDER BY algorithm, created_at DESC"
        )
        return {r["algorithm"]: r["kid"] for r in rows}

    async def rotate(self, *, retire_now: bool = False) -> dict[str, str]:
        """Give every algorithm with a current key (and the access tokens') a new one, its kid by algorithm;
        the old ones stay published until their tokens expire, or, with ``retire_now``, leave the published
        set at once (validators then refuse what they signed)."""
        keep_s = 0.0 if retire_now else float(self._ttl_s + _PUBLISH_MARGIN_S)
        async with self._db.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
            in_use = {
                r["algorithm"]
                for r in await conn.fetch(
                    "SELECT DISTINCT algorithm FROM sso_signing_keys WHERE published_until IS NULL"
                )
            }
            await conn.execute(
                "UPDATE sso_signing_keys SET published_until = now() + make_interval(secs => $1)"
                " WHERE published_until IS NULL OR published_until > now() + make_interval(secs => $1)",
                keep_s,
            )
            return {
                algorithm: await self._insert(conn, algorithm)
                for algorithm in ALGORITHMS
                if algorithm in in_use or algorithm == self.algorithm
            }

    async def jwks(self) -> dict[str, Any]:
        """Every public key still needed, newest first, as a JWK set."""
        rows = await self._db.fetch(
            "SELECT public_jwk FROM sso_signing_keys WHERE published_until IS NULL OR published_until > now()"
            " ORDER BY created_at DESC"
        )
        return {"keys": [r["public_jwk"] for r in rows]}


class KeyRing:
    """The current key of each algorithm a process signs with, read from the store on the algorithm's first
    use; ``load`` reads them all again (a rotation)."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self._keys: dict[str, SigningKey] = {}
        self._reading = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        return bool(self._keys)

    @property
    def kids(self) -> dict[str, str]:
        return {algorithm: key.kid for algorithm, key in self._keys.items()}

    async def load(self, *algorithms: str) -> None:
        """Read the current key of ``algorithms`` and of every algorithm loaded before."""
        wanted = dict.fromkeys([*algorithms, *self._keys])
        self._keys = {algorithm: await self._store.signing_key(algorithm) for algorithm in wanted}

    async def key(self, algorithm: str) -> SigningKey:
        found = self._keys.get(algorithm)
        if found is None:
            async with self._reading:  # a crowd's first use of an algorithm reads its key once
                found = self._keys.get(algorithm)
                if found is None:
                    found = await self._store.signing_key(algorithm)
                    self._keys = {**self._keys, algorithm: found}
        return found

    async def stale(self) -> bool:
        """Whether another key than a loaded one is now current for its algorithm (a missed "k" message)."""
        current = await self._store.current_kids()
        return any(current.get(algorithm) != kid for algorithm, kid in self.kids.items())

    def sign(self, claims: dict[str, object], *, typ: str, algorithm: str) -> str:
        """``claims`` signed with the loaded key of ``algorithm`` (header ``kid`` and ``typ``)."""
        key = self._keys.get(algorithm)
        assert key is not None, f"load the {algorithm} key first"
        payload = json.dumps(claims, separators=(",", ":")).encode()  # as jwt.encode writes it
        return _JWS.encode(
            payload,
            key.private_key,  # type: ignore[arg-type]
            algorithm=key.algorithm,
            headers={"kid": key.kid, "typ": typ},
        )
