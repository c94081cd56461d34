"""A TokenValidator in its own process, for the propagation tests.

Reads access tokens from stdin, one per line (``strict <token>`` for a strict check, else a non-strict one),
and answers ``ok <username> <roles, comma-separated>`` or ``no`` per line. Keys come from SSO_TEST_JWKS (a JWK
set as JSON), Redis from PEAK_REDIS_URL; issuer and audience from the usual settings.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from typing import Any

import orjson

from kit.errors import Unauthorized
from kit.redis import create_redis
from kit.settings import Settings
from sso.client import TokenValidator
from sso.settings import SsoSettings


async def main() -> None:
    settings = Settings.from_env()
    jwks: Mapping[str, Any] = orjson.loads(os.environ["SSO_TEST_JWKS"])

    async def keys() -> Mapping[str, Any]:
        return jwks

    sso_settings = settings.of(SsoSettings)
    redis_url = settings.require("redis_url")
    redis = create_redis(redis_url)
    validator = TokenValidator(
        issuer=sso_settings.issuer_for(settings),
        audience=sso_settings.audience,
        keys=keys,
        redis=redis,
        redis_url=redis_url,
    )
    loop = asyncio.get_running_loop()
    async with validator.running():
        print("ready", flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            mode, _, token = line.strip().rpartition(" ")
            try:
                principal = await validator.validate(token, strict=mode == "strict")
                print(f"ok {principal.username} {','.join(sorted(principal.roles))}", flush=True)
            except Unauthorized:
                print("no", flush=True)
    await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
