"""Lua scripts called by EVALSHA: each package binds its own once (``seckill/scripts.py``: ``Script.of``),
its component lists them, and ``load_scripts`` puts them in every Redis primary at start.

A NOSCRIPT answer (Redis restarted, SCRIPT FLUSH, a new cluster node) is answered by running the same call as
EVAL, which sends the source, runs it and caches it on that node in one step, so callers never see it. (SCRIPT
LOAD then EVALSHA again would be two more round trips and lose to a second flush between them.)

Calls go through the client's lanes (``kit/lane.py``): packed by hiredis, a third of redis-py's CPU per call.
A call made with ``Wait`` is followed on the same connection, in the same write, by ``WAIT replicas timeout``:
its answer only counts once that many replicas have everything the connection wrote (``ReplicaWaitError``
otherwise), at no extra round trip. A script whose answer must be durable writes something even when it only
replays an earlier answer: WAIT covers the connection's own writes, and a fresh connection has none.
On a Redis Cluster, SCRIPT LOAD goes to every primary and a call to the lane of the primary owning its keys'
slot (all keys of one script share a hash tag); redirections are followed by redis-py's cluster client.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import hiredis
from redis.exceptions import ConnectionError, NoScriptError, RedisError, ResponseError, TimeoutError

from kit.lane import RESEND_WINDOW_S, Lane, TooLateToResend
from kit.redis import LaneCluster, RedisClient

__all__ = ["REDIRECTIONS", "Call", "ReplicaWaitError", "Script", "ScriptLoadError", "Wait", "load_scripts"]

EncodableT = str | int | float | bytes


Call = tuple[Sequence[str], Sequence[EncodableT]]


@dataclass(frozen=True, slots=True)
class Wait:
    """Answers count only once ``replicas`` replicas have the call's writes, waiting at most ``timeout_ms``."""

    replicas: int
    timeout_ms: int

    def packed(self) -> bytes:
        command: bytes = hiredis.pack_command(("WAIT", self.replicas, self.timeout_ms))  # type: ignore[arg-type]
        return command


class ReplicaWaitError(RedisError):
    """The script ran, but fewer replicas than asked confirmed its writes in time: its answer (``answer``) is not
    durable (it may still be there, or be lost with its primary). Not a ConnectionError: nothing is sent again."""

    def __init__(self, message: str, answer: Any = None, acked: int = 0) -> None:
        super().__init__(message)
        self.answer = answer
        self.acked = acked


class ScriptLoadError(RuntimeError):
    """Redis named a loaded script by another SHA than ours: the server changed the source or hashes it
    differently, and calls by our SHA would all fall back to EVAL."""


class Script:
    @classmethod
    def of(cls, package: str, name: str) -> Script:
        """The script ``<package>/lua/<name>.lua``, named ``<package>_<name>``."""
        source = resources.files(package).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
        return cls(f"{package}_{name}", source)

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA1

    async def __call__(
        self,
        redis: RedisClient,
        keys: Sequence[str],
        args: Sequence[EncodableT] = (),
        *,
        wait: Wait | None = None,
    ) -> Any:
        [result] = await self.run_many(redis, [(keys, args)], wait=wait)
        if isinstance(result, Exception):
            raise result
        return result

    async def run_many(
        self, redis: RedisClient, calls: Sequence[Call], *, wait: Wait | None = None
    ) -> list[Any]:
        """Several calls sent together: one write per server for all of them. Each call's answer in order; a
        call that Redis refused gets its error (``ResponseError``) in its place, one whose writes did not reach
        the replicas ``wait`` asks for a ``ReplicaWaitError``. Raises when Redis cannot be reached."""
        if not isinstance(redis, LaneCluster):
            return await self._run_on(redis.lane, calls, wait)
        started = time.monotonic()
        by_lane: dict[Lane, list[int]] = {}
        results: list[Any] = [None] * len(calls)
        # A call without keys has no slot: redis-py picks a node (below).
        keyed = [at for at, (keys, _) in enumerate(calls) if keys]
        for at, lane in zip(keyed, await redis.lanes_for([calls[at][0][0] for at in keyed]), strict=True):
            by_lane.setdefault(lane, []).append(at)

        async def run(lane: Lane, ats: list[int]) -> None:
            try:
                answers: list[Any] = await self._run_on(lane, [calls[at] for at in ats], wait)
            except (ConnectionError, TimeoutError) as exc:
                answers = [exc] * len(ats)
            for at, answer in zip(ats, answers, strict=True):
                results[at] = answer

        await asyncio.gather(*(run(lane, ats) for lane, ats in by_lane.items()))
        for at, result in enumerate(results):
            if not calls[at][0] or _elsewhere(result):
                # The slot moved or its node is unreachable: redis-py's cluster client follows the redirection
                # (or the failover) and refreshes its slot map, which the lanes then follow.
                # Like the lanes, nothing is sent later than RESEND_WINDOW_S after the first send, so a script's
                # replay answers (kept longer) still stand when a call that already ran arrives again.
                keys, args = calls[at]
                left = RESEND_WINDOW_S - (time.monotonic() - started)
                try:
                    if left <= 0:
                        raise TooLateToResend(
                            f"not sent again: more than {RESEND_WINDOW_S:g} s since it was first sent"
                        )
                    async with asyncio.timeout(left):
                        if wait is None or not keys:
                            results[at] = await self._redis_py(redis, keys, args)
                        else:
                            results[at] = await self._again_waiting(redis, keys, args, wait)
                except builtins.TimeoutError:  # asyncio's: the window closed during redis-py's own retries
                    results[at] = TooLateToResend(f"no answer within {RESEND_WINDOW_S:g} s of the first send")
                except Exception as exc:
                    results[at] = exc
        return results

    async def _run_on(self, lane: Lane, calls: Sequence[Call], wait: Wait | None = None) -> list[Any]:
        packed = b"".join(self._pack("EVALSHA", self.sha, keys, args) for keys, args in calls)
        results = await lane.execute(packed + wait.packed() if wait else packed, len(calls) + bool(wait))
        acked = results.pop() if wait else 0
        missing = [at for at, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            packed = b"".join(self._pack("EVAL", self.source, *calls[at]) for at in missing)
            again = await lane.execute(packed + wait.packed() if wait else packed, len(missing) + bool(wait))
            if wait:
                # Perhaps another connection: its own WAIT covers these, the first one the rest.
                second = again.pop()
                if not isinstance(acked, int) or not isinstance(second, int):
                    acked = second if isinstance(acked, int) else acked
                else:
                    acked = min(acked, second)
            for at, result in zip(missing, again, strict=True):
                results[at] = result
        if wait and not (isinstance(acked, int) and acked >= wait.replicas):
            said = (
                f"{acked} of {wait.replicas} replica(s) confirmed within {wait.timeout_ms} ms"
                if isinstance(acked, int) else f"WAIT failed: {acked}"
            )  # fmt: skip
            count = acked if isinstance(acked, int) else 0
            return [r if isinstance(r, Exception) else ReplicaWaitError(said, r, count) for r in results]
        return results

    async def _again_waiting(
        self, redis: LaneCluster, keys: Sequence[str], args: Sequence[EncodableT], wait: Wait
    ) -> Any:
        """A call whose node moved or failed, when its answer must wait for replicas: the WAIT has to reach the
        node that ran the script on the same connection, which redis-py's retry cannot promise. A read of the
        key through redis-py follows the redirection or failover and refreshes the slot map; then the call goes
        once more through the lane of the primary it names."""
        await redis.exists(keys[0])
        [lane] = await redis.lanes_for([keys[0]])
        [result] = await self._run_on(lane, [(keys, args)], wait)
        return result

    async def _redis_py(self, redis: LaneCluster, keys: Sequence[str], args: Sequence[EncodableT]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await redis.eval(self.source, len(keys), *keys, *args)

    @staticmethod
    def _pack(command: str, script: str, keys: Sequence[str], args: Sequence[EncodableT]) -> bytes:
        # hiredis' stub types the argument as a 1-tuple; it takes any tuple of arguments.
        packed: bytes = hiredis.pack_command((command, script, len(keys), *keys, *args))  # type: ignore[arg-type]
        return packed

    def __repr__(self) -> str:
        return f"Script({self.name!r}, sha={self.sha[:12]})"


# Error replies of a cluster node that does not serve the slot (now, or yet).
REDIRECTIONS = ("MOVED ", "ASK ", "TRYAGAIN ", "CLUSTERDOWN ", "READONLY ")


def _elsewhere(result: Any) -> bool:
    if isinstance(result, TooLateToResend):
        # Its first send may have run: past the lane's window a script's replay answers may be gone, and a
        # second run could do the work twice (reserve.lua keeps them seckill.keys.REPLAY_MS).
        return False
    if isinstance(result, (ConnectionError, TimeoutError)):
        return True
    return isinstance(result, ResponseError) and str(result).startswith(REDIRECTIONS)


async def load_scripts(redis: RedisClient, scripts: Iterable[Script]) -> None:
    """SCRIPT LOAD each script (on a cluster, into every primary) and check the SHA Redis answers."""
    for script in scripts:
        # On a cluster this goes to every primary; redis-py folds their (identical) answers into one.
        sha = await redis.script_load(script.source)
        shas = set(sha.values()) if isinstance(sha, dict) else {sha}
        if shas != {script.sha}:
            raise ScriptLoadError(f"Redis loaded {script.name} as {sorted(shas)}, expected {script.sha}")
