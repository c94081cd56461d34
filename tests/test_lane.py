"""The script lane (``kit/lane.py``) against its own redis-server: it connects as redis-py would, never mixes
up answers, and survives lost connections, a stopped server and a restart."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import hiredis
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from redis.exceptions import AuthenticationError, ResponseError, TimeoutError

from devstack.processes import free_port
from devstack.redis import RedisServer
from kit.lane import Lane
from kit.lua import Script
from kit.redis import LaneRedis, create_redis

ECHO = Script("echo", "return {KEYS[1], ARGV[1]}")
INCR = Script("incr", "return redis.call('INCRBY', KEYS[1], ARGV[1])")
SET = Script("set", "return redis.call('SET', KEYS[1], ARGV[1])")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    # A user with a password beside the default user (which keeps the server's readiness PING working).
    private = RedisServer(
        tmp_path / "redis", extra_args=["--user", "shop", "on", ">s3cret", "~*", "&*", "+@all"]
    )
    private.start()
    try:
        yield private
    finally:
        private.stop()


def _client(server: RedisServer, *, pool_size: int = 64, timeout_s: float = 5.0) -> LaneRedis:
    client = create_redis(
        f"redis://shop:s3cret@127.0.0.1:{server.port}/3", pool_size=pool_size, timeout_s=timeout_s
    )
    assert isinstance(client, LaneRedis)
    return client


async def test_script_calls_log_in_and_use_the_database_of_the_url(server: RedisServer) -> None:
    client = _client(server)
    try:
        assert await SET(client, ["k"], ["in db 3"]) == "OK"
    finally:
        await client.aclose()
    for db, value in ((3, "in db 3"), (0, None)):
        plain = redis.Redis(
            port=server.port, username="shop", password="s3cret", db=db, decode_responses=True
        )
        assert plain.get("k") == value
        plain.close()

    wrong = create_redis(f"redis://shop:nope@127.0.0.1:{server.port}/3")
    try:
        with pytest.raises(AuthenticationError):
            await SET(wrong, ["k"], ["x"])
    finally:
        await wrong.aclose()


async def test_hundreds_of_concurrent_calls_each_get_their_own_answer(server: RedisServer) -> None:
    client = _client(server, pool_size=4)
    try:
        singles = [ECHO(client, [f"k{i}"], [i]) for i in range(600)]
        batches = [ECHO.run_many(client, [([f"b{b}"], [i]) for i in range(b % 7 + 1)]) for b in range(100)]
        answers = await asyncio.gather(*singles, *batches)
        assert answers[:600] == [[f"k{i}", str(i)] for i in range(600)]
        assert answers[600:] == [[[f"b{b}", str(i)] for i in range(b % 7 + 1)] for b in range(100)]
    finally:
        await client.aclose()


async def test_an_error_reply_takes_its_call_place_and_the_others_run(server: RedisServer) -> None:
    client = _client(server)
    try:
        await SET(client, ["text"], ["not a number"])
        first, refused, last = await INCR.run_many(client, [(["n"], [1]), (["text"], [1]), (["n"], [2])])
        assert (first, last) == (1, 3)
        assert isinstance(refused, ResponseError) and "not an integer" in str(refused)
        with pytest.raises(ResponseError):
            await INCR(client, ["text"], [1])
        assert await INCR(client, ["n"], [1]) == 4  # the connection is still in step
    finally:
        await client.aclose()


async def test_killed_connections_are_replaced_without_the_caller_noticing(server: RedisServer) -> None:
    client = _client(server, pool_size=8)
    admin = redis.Redis(port=server.port)
    try:
        await asyncio.gather(*(INCR(client, ["n"], [1]) for _ in range(50)))
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        counts = await asyncio.gather(*(INCR(client, ["n"], [1]) for _ in range(50)))
        # Each ran exactly once (a killed connection's call is sent again on a new one, after the kill).
        assert sorted(counts) == list(range(51, 101))
    finally:
        admin.close()
        await client.aclose()


async def test_a_stopped_server_times_out_and_the_lane_recovers(server: RedisServer) -> None:
    client = _client(server, timeout_s=0.3)
    assert server.proc is not None
    try:
        assert await INCR(client, ["n"], [1]) == 1
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(TimeoutError):
                await INCR(client, ["n"], [1])
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        # The timed-out call may or may not have run (as with redis-py): the count goes on from there.
        assert await INCR(client, ["n"], [10]) in (11, 12, 13, 14, 15)
    finally:
        await client.aclose()


async def test_a_restarted_server_is_found_again_and_gets_the_scripts_back(server: RedisServer) -> None:
    client = _client(server)
    assert server.proc is not None
    try:
        assert await INCR(client, ["n"], [5]) == 5
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        with pytest.raises(redis.exceptions.ConnectionError):
            await INCR(client, ["n"], [1])
        server.start()
        # The new server has no scripts: NOSCRIPT is answered with EVAL, invisibly.
        assert await INCR(client, ["other"], [1]) == 1
        assert await ECHO.run_many(client, [(["a"], [1]), (["b"], [2])]) == [["a", "1"], ["b", "2"]]
    finally:
        await client.aclose()


async def test_a_connection_idle_too_long_is_replaced_before_use(server: RedisServer) -> None:
    client = _client(server)
    pool = client.connection_pool
    lane = Lane(
        lambda: pool.connection_class(**pool.connection_kwargs), size=4, timeout_s=5.0, max_idle_s=0.3
    )
    client_id = hiredis.pack_command(("CLIENT", "ID"))  # type: ignore[arg-type]  # stub: a 1-tuple
    try:
        [first] = await lane.execute(client_id, 1)
        [again] = await lane.execute(client_id, 1)
        assert again == first  # reused while fresh
        await asyncio.sleep(0.5)
        [later] = await lane.execute(client_id, 1)
        assert later != first  # a silently dropped connection would have cost the whole timeout here
        ids = [str(c["id"]) for c in await client.client_list()]
        assert str(first) not in ids  # and the stale one is closed, not leaked
    finally:
        await lane.aclose()
        await client.aclose()


def _self_signed(folder: Path) -> Path:
    """A certificate for 127.0.0.1 and its key, in one PEM file (the server's and the client's CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    pem = folder / "redis.pem"
    pem.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return pem


async def test_script_calls_over_tls(tmp_path: Path) -> None:
    """``rediss://``: redis-py makes the TLS connection, the lane speaks on its encrypted stream."""
    pem = _self_signed(tmp_path)
    tls_port = free_port()
    private = RedisServer(
        tmp_path / "redis",
        extra_args=[
            "--tls-port", str(tls_port), "--tls-cert-file", str(pem), "--tls-key-file", str(pem),
            "--tls-ca-cert-file", str(pem), "--tls-auth-clients", "no",
        ],
    )  # fmt: skip
    private.start()
    client = create_redis(f"rediss://127.0.0.1:{tls_port}/1?ssl_ca_certs={pem}")
    try:
        assert isinstance(client, LaneRedis)
        counts = await asyncio.gather(*(INCR(client, ["n"], [1]) for _ in range(100)))
        assert sorted(counts) == list(range(1, 101))
        # A reply larger than one TLS record arrives whole.
        assert await ECHO.run_many(client, [(["a"], ["x" * 100_000])]) == [["a", "x" * 100_000]]
        plain = redis.Redis(port=private.port, db=1, decode_responses=True)
        assert plain.get("n") == "100"  # the same server and database, through its plain port
        plain.close()
    finally:
        await client.aclose()
        private.stop()
