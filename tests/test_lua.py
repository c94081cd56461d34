from __future__ import annotations

import re
from pathlib import Path

import pytest

from kit.lua import Script, ScriptLoadError, load_scripts
from kit.redis import create_redis
from kit.settings import Settings
from peak.app import components
from tests.support import REPO


async def test_noscript_after_script_flush_is_recovered(settings: Settings) -> None:
    redis = create_redis(settings.require("redis_url"))
    try:
        script = Script("echo_incr", "return redis.call('INCRBY', KEYS[1], ARGV[1])")
        await load_scripts(redis, [script])
        assert await script(redis, ["{t}n"], [2]) == 2
        await redis.script_flush()
        assert await redis.script_exists(script.sha) == [False]
        assert await script(redis, ["{t}n"], [3]) == 5
        # The node that answered has the script again: a plain EVALSHA works.
        assert await redis.evalsha(script.sha, 1, "{t}n", 1) == 6
    finally:
        await redis.aclose()


async def test_every_packaged_script_loads(settings: Settings) -> None:
    redis = create_redis(settings.require("redis_url"))
    try:
        scripts = [script for part in components() for script in part.scripts]
        assert len(scripts) == len(_scripts())
        await load_scripts(redis, scripts)
        for script in scripts:
            assert await redis.script_exists(script.sha) == [True], script.name
    finally:
        await redis.aclose()


async def test_a_script_redis_names_otherwise_is_refused_by_name(settings: Settings) -> None:
    redis = create_redis(settings.require("redis_url"))
    try:
        script = Script("tampered", "return 1")
        script.sha = "0" * 40  # what a server hashing the source differently would make us expect
        with pytest.raises(ScriptLoadError, match="tampered"):
            await load_scripts(redis, [script])
    finally:
        await redis.aclose()


def test_every_script_states_its_contract() -> None:
    entries = _scripts()
    assert entries, "no Lua scripts found"
    for entry in entries:
        head = entry.read_text().split("\n\n")[0]
        assert re.search(r"^-- KEYS", head, re.M), f"{entry.name}: no KEYS contract at the top"
        assert re.search(r"^-- ARGV", head, re.M), f"{entry.name}: no ARGV contract at the top"
        assert re.search(r"^-- [Rr]eturns", head, re.M), f"{entry.name}: no return contract at the top"
        # Whether a call the Redis client sends again (its answer was lost) is safe, and if not, what it does:
        # tests/test_retried_scripts.py runs every script twice and checks what this line says.
        assert re.search(r"^-- Retry: \S", head, re.M), f"{entry.name}: no '-- Retry: ...' line at the top"


def test_every_fragment_says_it_is_one() -> None:
    for entry in sorted(REPO.glob("*/lua/_*.lua")):
        head = entry.read_text().split("\n\n")[0]
        assert "Not a script of its own" in head, f"{entry.name}: a fragment must say what includes it"


def _scripts() -> list[Path]:
    """Every script file; a name starting with ``_`` is a fragment that scripts.py puts in front of others."""
    return sorted(p for p in REPO.glob("*/lua/*.lua") if not p.name.startswith("_"))
