"""The validator against hand-made tokens: every way a token can be wrong, with keys given directly."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from kit.errors import Unauthorized
from sso.client import TokenValidator

ISSUER, AUDIENCE = "https://sso.example", "peak"
PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = PRIVATE.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


def _jwk(kid: str = "k1") -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(PRIVATE.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


class Source:
    """Keys given directly, counting how often the validator asks for them."""

    def __init__(self, *jwks: dict[str, Any]) -> None:
        self.keys = list(jwks)
        self.calls = 0

    async def __call__(self) -> Mapping[str, Any]:
        self.calls += 1
        return {"keys": self.keys}


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "sub": "4b7c0f4e-3f1c-4d69-9f5e-7d1c2f2b8a11", "aud": AUDIENCE, "exp": now + 300,
            "iat": now, "nbf": now, "jti": "j1", "sid": "s1", "username": "alice", "roles": ["shopper"]}  # fmt: skip
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def sign(payload: dict[str, Any], **header: Any) -> str:
    return jwt.encode(payload, PRIVATE, algorithm="RS256", headers={"kid": "k1", "typ": "at+jwt", **header})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_public_key(payload: dict[str, Any]) -> str:
    """The classic confusion attack: HMAC keyed with the public key the server publishes."""
    header = _b64(b'{"alg":"HS256","typ":"at+jwt","kid":"k1"}')
    body = _b64(json.dumps(payload).encode())
    mac = hmac.HMAC(PUBLIC_PEM, hashes.SHA256())
    mac.update(f"{header}.{body}".encode())
    return f"{header}.{body}.{_b64(mac.finalize())}"


@pytest.fixture
async def validator() -> TokenValidator:
    v = TokenValidator(issuer=ISSUER, audience=AUDIENCE, keys=Source(_jwk()), leeway_s=5)
    await v.refresh_keys(force=True)
    return v


async def test_a_good_token(validator: TokenValidator) -> None:
    principal = await validator.validate(sign(claims(roles=["shopper", "admin"])))
    assert principal.user_id == claims()["sub"] and principal.username == "alice"
    assert principal.session_id == "s1" and principal.token_id == "j1"
    assert principal.has_role("admin") and principal.roles == frozenset({"shopper", "admin"})


def _none_token() -> str:
    header = _b64(b'{"alg":"none","typ":"at+jwt","kid":"k1"}')
    return f"{header}.{_b64(json.dumps(claims()).encode())}."


REJECTED: dict[str, Callable[[], str]] = {
    "alg none": lambda: _none_token(),
    "HS256 signed with the public key": lambda: hs256_with_public_key(claims()),
    "wrong issuer": lambda: sign(claims(iss="https://evil.example")),
    "wrong audience": lambda: sign(claims(aud="someone-else")),
    "expired": lambda: sign(claims(exp=int(time.time()) - 60)),
    "not yet valid": lambda: sign(claims(nbf=int(time.time()) + 120)),
    "unknown kid": lambda: sign(claims(), kid="k-unknown"),
    "no kid": lambda: jwt.encode(claims(), PRIVATE, algorithm="RS256", headers={"typ": "at+jwt"}),
    "missing sid": lambda: sign(claims(sid=None)),
    "missing exp": lambda: sign(claims(exp=None)),
    "missing aud": lambda: sign(claims(aud=None)),
    "not an access token (typ)": lambda: sign(claims(), typ="JWT"),
    "tampered payload": lambda: _tamper(sign(claims())),
    "other key": lambda: jwt.encode(
        claims(),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        algorithm="RS256",
        headers={"kid": "k1", "typ": "at+jwt"},
    ),
    "garbage": lambda: "not.a.jwt",
}


def _tamper(token: str) -> str:
    header, _, signature = token.split(".")
    evil = _b64(json.dumps(claims(roles=["shopper", "admin"])).encode())
    return f"{header}.{evil}.{signature}"


@pytest.mark.parametrize("case", sorted(REJECTED))
async def test_rejected(validator: TokenValidator, case: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        await validator.validate(REJECTED[case]())
    assert caught.value.status_code == 401 and caught.value.code == "unauthenticated"


async def test_leeway_is_at_most_thirty_seconds() -> None:
    with pytest.raises(ValueError, match="leeway"):
        TokenValidator(issuer=ISSUER, audience=AUDIENCE, keys=Source(), leeway_s=60)
    v = TokenValidator(issuer=ISSUER, audience=AUDIENCE, keys=Source(_jwk()), leeway_s=30)
    await v.refresh_keys(force=True)
    await v.validate(sign(claims(exp=int(time.time()) - 20)))
    with pytest.raises(Unauthorized):
        await v.validate(sign(claims(exp=int(time.time()) - 40, jti="j2")))


async def test_only_asymmetric_algorithms_can_be_allowed() -> None:
    with pytest.raises(ValueError):
        TokenValidator(issuer=ISSUER, audience=AUDIENCE, keys=Source(), algorithms=["HS256", "none"])


async def test_unknown_kid_refetches_keys_at_a_limited_rate() -> None:
    source = Source(_jwk("k1"))
    v = TokenValidator(issuer=ISSUER, audience=AUDIENCE, keys=source, refetch_interval_s=0.5)
    await v.refresh_keys(force=True)
    assert source.calls == 1
    # A flood of unknown kids costs at most one fetch per interval.
    for i in range(50):
        with pytest.raises(Unauthorized):
            await v.validate(sign(claims(jti=f"x{i}"), kid=f"random-{i}"))
    assert source.calls == 1
    # A key published later (a rotation) is found on the next fetch.
    source.keys.append(_jwk("k2"))
    await asyncio.sleep(0.6)
    principal = await v.validate(sign(claims(jti="new"), kid="k2"))
    assert principal.token_id == "new" and source.calls == 2


async def test_a_verified_token_is_not_verified_again() -> None:
    source = Source(_jwk())
    validator = TokenValidator(issuer=ISSUER, audience=AUDIENCE, keys=source)
    await validator.refresh_keys(force=True)
    token = sign(claims())
    await validator.validate(token)
    # The key id stays published but with another key behind it: a cached token is not checked against it
    # again, a new token signed by the old key fails. (A kid that leaves the set is another matter, below.)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    source.keys[:] = [{**RSAAlgorithm.to_jwk(other.public_key(), as_dict=True), "kid": "k1", "alg": "RS256"}]
    await validator.refresh_keys(force=True)
    assert (await validator.validate(token)).token_id == "j1"
    with pytest.raises(Unauthorized):
        await validator.validate(sign(claims(jti="j2")))


async def test_a_cached_token_is_dropped_when_its_key_leaves_the_set() -> None:
    source = Source(_jwk("k1"), _jwk("k2"))
    validator = TokenValidator(issuer=ISSUER, audience=AUDIENCE, keys=source)
    await validator.refresh_keys(force=True)
    by_k1, by_k2 = sign(claims(jti="a"), kid="k1"), sign(claims(jti="b"), kid="k2")
    assert (await validator.validate(by_k1)).key_id == "k1"
    assert (await validator.validate(by_k2)).key_id == "k2"
    source.keys[:] = [_jwk("k2")]
    await validator.refresh_keys(force=True)
    with pytest.raises(Unauthorized, match="unknown key"):
        await validator.validate(by_k1)
    assert (await validator.validate(by_k2)).token_id == "b"
    # A malformed entry is skipped; the others, and the tokens they signed, stay.
    source.keys[:] = [{"kid": "broken", "alg": "RS256", "kty": "RSA"}, _jwk("k2")]
    await validator.refresh_keys(force=True)
    assert (await validator.validate(by_k2)).token_id == "b"


async def test_a_running_validator_notices_a_withdrawn_key_unannounced() -> None:
    source = Source(_jwk("k1"))
    validator = TokenValidator(issuer=ISSUER, audience=AUDIENCE, keys=source, keys_check_s=0.2)
    async with validator.running():
        token = sign(claims())
        await validator.validate(token)
        source.keys.clear()
        await asyncio.sleep(0.5)
        with pytest.raises(Unauthorized):
            await validator.validate(token)


async def test_revocation_beats_the_cache(validator: TokenValidator) -> None:
    token = sign(claims())
    await validator.validate(token)
    validator.revocations.forget("s:s1")
    with pytest.raises(Unauthorized):
        await validator.validate(token)
    other = sign(claims(sid="s2", jti="j9"))
    await validator.validate(other)
    validator.revocations.forget("j:j9")
    with pytest.raises(Unauthorized):
        await validator.validate(other)


async def test_strict_mode_needs_redis(validator: TokenValidator) -> None:
    with pytest.raises(RuntimeError, match="Redis"):
        await validator.validate(sign(claims()), strict=True)


async def test_a_cached_token_is_refused_once_it_expires() -> None:
    v = TokenValidator(issuer=ISSUER, audience=AUDIENCE, keys=Source(_jwk()), leeway_s=0)
    await v.refresh_keys(force=True)
    token = sign(claims(exp=int(time.time()) + 2))
    await v.validate(token)
    await asyncio.sleep(2.1)
    with pytest.raises(Unauthorized, match="expired"):
        await v.validate(token)


async def test_a_key_source_that_is_down_refuses_unknown_kids_without_crashing() -> None:
    async def down() -> Mapping[str, Any]:
        raise ConnectionError("JWKS endpoint unreachable")

    v = TokenValidator(issuer=ISSUER, audience=AUDIENCE, keys=down)
    async with v.running():  # starting does not fail either: keys may come later
        with pytest.raises(Unauthorized):
            await v.validate(sign(claims()))
