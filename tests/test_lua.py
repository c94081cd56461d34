from __future__ import annotations

import re
from importlib import resources

from kit.lua import Script, Scripts
from kit.redis import create_redis
from kit.settings import Settings


async def test_noscript_after_script_flush_is_recovered(settings: Settings) -> None:
    redis = create_redis(settings.require("redis_url"))
    try:
        script = Script("echo_incr", "return redis.call('INCRBY', KEYS[1], ARGV[1])")
        scripts = Scripts({"echo_incr": script})
        await scripts.load(redis)
        assert await scripts["echo_incr"](redis, ["{t}n"], [2]) == 2
        await redis.script_flush()
        assert await redis.script_exists(script.sha) == [False]
        assert await scripts["echo_incr"](redis, ["{t}n"], [3]) == 5
        # The node that answered has the script again: a plain EVALSHA works.
        assert await redis.evalsha(script.sha, 1, "{t}n", 1) == 6
    finally:
        await redis.aclose()


async def test_every_packaged_script_loads(settings: Settings) -> None:
    redis = create_redis(settings.require("redis_url"))
    try:
        scripts = Scripts.from_package()
        await scripts.load(redis)
        for script in scripts:
            assert await redis.script_exists(script.sha) == [True], script.name
    finally:
        await redis.aclose()


def test_every_script_states_its_contract() -> None:
    for entry in resources.files("lua").iterdir():
        if not entry.name.endswith(".lua"):
            continue
        head = entry.read_text().split("\n\n")[0]
        assert re.search(r"^-- KEYS", head, re.M), f"{entry.name}: no KEYS contract at the top"
        assert re.search(r"^-- ARGV", head, re.M), f"{entry.name}: no ARGV contract at the top"
        assert re.search(r"^-- [Rr]eturns", head, re.M), f"{entry.name}: no return contract at the top"
