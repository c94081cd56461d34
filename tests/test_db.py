"""The PostgreSQL pool (kit.db) with its link cut at the worst moment: after a COMMIT, as the connection goes back
to the pool. A real PostgreSQL behind a proxy that resets the connection on the next request it reads."""

from __future__ import annotations

import asyncpg
import pytest

from kit.db import create_pool
from kit.errors import POSTGRES_OUTAGES
from loadtest.faultproxy import FaultProxy
from tests.conftest import Servers


async def test_a_link_cut_as_a_committed_connection_goes_back_fails_nothing(servers: Servers) -> None:
    pg = servers.postgres
    direct = await asyncpg.connect(pg.url)
    await direct.execute("CREATE TABLE IF NOT EXISTS db_release_probe (n int)")
    await direct.execute("TRUNCATE db_release_probe")
    try:
        async with FaultProxy("127.0.0.1", pg.port) as proxy:
            pool = await create_pool(pg.url.replace(f":{pg.port}/", f":{proxy.port}/"), acquire_timeout_s=5)
            try:
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute("INSERT INTO db_release_probe VALUES (1)")
                # Committed; the next request on this link is the pool's reset of the connection (asyncpg's
                # release), and it meets an RST. The work is done: the caller must not hear of a failure.
                async with pool.acquire() as conn:
                    async with conn.transaction():
                        await conn.execute("INSERT INTO db_release_probe VALUES (2)")
                    proxy.reset_first = 1
                assert proxy.counts["resets_before"] == 1
                # The pool connects anew, and both rows are there.
                assert await pool.fetchval("SELECT sum(n) FROM db_release_probe") == 3
                # A failure of the caller's own statement still reaches the caller (here the statement ran and
                # its reply was lost: the proxy's second reset lets the request through).
                with pytest.raises(POSTGRES_OUTAGES):
                    async with pool.acquire() as conn:
                        proxy.reset_first = 1
                        await conn.execute("INSERT INTO db_release_probe VALUES (4)")
                assert proxy.counts["resets_after"] == 1
                assert await pool.fetchval("SELECT sum(n) FROM db_release_probe") == 7
            finally:
                await pool.close()
    finally:
        await direct.execute("DROP TABLE db_release_probe")
        await direct.close()
