"""The Lua script registry: every ``lua/*.lua`` file loaded at start and called by EVALSHA.

A NOSCRIPT answer (Redis restarted, SCRIPT FLUSH, a new cluster node) is answered by running the same call as
EVAL, which sends the source, runs it and caches it on that node in one step, so callers never see it. (SCRIPT
LOAD then EVALSHA again would be two more round trips and lose to a second flush between them.) On a Redis Cluster, redis-py sends SCRIPT LOAD to every primary and EVALSHA to the
primary owning the keys' slot (all keys of one script share a hash tag), so the same code serves both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from peak.redis import RedisClient

__all__ = ["Script", "Scripts"]

EncodableT = str | int | float | bytes


class Script:
    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA1

    async def __call__(self, redis: RedisClient, keys: Sequence[str], args: Sequence[EncodableT] = ()) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await redis.eval(self.source, len(keys), *keys, *args)

    def __repr__(self) -> str:
        return f"Script({self.name!r}, sha={self.sha[:12]})"


class Scripts:
    """Scripts by file name without ``.lua``: ``scripts["seckill_reserve"]``."""

    def __init__(self, scripts: dict[str, Script]) -> None:
        self._scripts = scripts

    @classmethod
    def from_package(cls, package: str = "lua") -> Scripts:
        found: dict[str, Script] = {}
        for entry in resources.files(package).iterdir():
            if entry.name.endswith(".lua"):
                name = entry.name.removesuffix(".lua")
                found[name] = Script(name, entry.read_text(encoding="utf-8"))
        return cls(found)

    async def load(self, redis: RedisClient) -> None:
        for script in self._scripts.values():
            # On a cluster this goes to every primary; redis-py folds their (identical) answers into one.
            sha = await redis.script_load(script.source)
            if isinstance(sha, dict):
                assert set(sha.values()) == {script.sha}, sha
            else:
                assert sha == script.sha, (sha, script.sha)

    def __getitem__(self, name: str) -> Script:
        try:
            return self._scripts[name]
        except KeyError:
            raise KeyError(
                f"no Lua script lua/{name}.lua; known: {', '.join(sorted(self._scripts))}"
            ) from None

    def __iter__(self) -> Iterator[Script]:
        return iter(self._scripts.values())

    def __len__(self) -> int:
        return len(self._scripts)
