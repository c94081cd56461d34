"""`peak up --redis-cluster 3` and `peak up --instances 2` as a user runs them; SIGTERM leaves nothing behind."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import redis

from devstack.errors import StackError
from devstack.nginx import NginxBalancer
from devstack.processes import free_port
from tests.conftest import Servers
from tests.support import alive_in, run_peak, sessions_started_by, start_peak, up_env, wait_http


def _env_file(data_dir: Path) -> dict[str, str]:
    lines = (data_dir / "env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def _stop(proc: object, log: Path) -> str:
    assert isinstance(proc, subprocess.Popen)
    os.kill(proc.pid, signal.SIGTERM)
    try:
        code = proc.wait(40)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"peak up still running 40 s after SIGTERM:\n{log.read_text()[-4000:]}"
        ) from None
    output = log.read_text()
    assert code == 0, output
    assert "peak: stopped" in output
    return output


@pytest.mark.slow
def test_up_with_a_private_redis_cluster_restarts_with_its_data(tmp_path: Path, stack_dir: Path) -> None:
    data_dir = stack_dir
    port = free_port()
    env = up_env(data_dir, port, workers=1)
    for round_ in (1, 2):
        log = tmp_path / f"up{round_}.log"
        proc = start_peak("up", "--redis-cluster", "3", "--replicas", "1", env=env, log=log)
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", timeout_s=120)
            url = _env_file(data_dir)["PEAK_REDIS_URL"]
            assert url.startswith("redis+cluster://127.0.0.1:"), url
            cluster = redis.RedisCluster.from_url(
                url.replace("redis+cluster://", "redis://"), decode_responses=True
            )
            info = cluster.cluster_info()
            assert (int(info["cluster_size"]), int(info["cluster_known_nodes"])) == (3, 6)  # a replica each
            if round_ == 1:
                for i in range(30):  # spread over every node
                    cluster.set(f"up:probe:{i}", str(i))
            else:
                assert [cluster.get(f"up:probe:{i}") for i in range(30)] == [str(i) for i in range(30)]
            cluster.close()
            sessions = sessions_started_by(proc.pid)
            assert len(sessions) >= 9, sessions  # 6 redis nodes, postgres, granian, one worker
        finally:
            output = _stop(proc, log)
        assert alive_in(sessions | {proc.pid}) == [], output
        assert "3-master Redis Cluster with 1 replica(s) each" in output


@pytest.mark.slow
def test_up_with_two_instances_behind_nginx(servers: Servers, tmp_path: Path) -> None:
    data_dir = tmp_path / "stack"
    port = free_port()
    env = {**servers.env(), "PEAK_DATA_DIR": str(data_dir), "PEAK_PORT": str(port), "PEAK_WORKERS": "1"}
    log = tmp_path / "up.log"
    proc = start_peak("up", "--instances", "2", env=env, log=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout_s=90)
        instances = (data_dir / "instances").read_text().split()
        for url in instances:  # the balancer answers as soon as one instance does
            wait_http(f"{url}/readyz", timeout_s=90)
        assert len(instances) == 2 and len({*instances, f"http://127.0.0.1:{port}"}) == 3
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            seen = collections.Counter(client.get("/healthz").headers["x-peak-instance"] for _ in range(20))
        # Round-robin: both instances answer, each about half of the requests.
        ports = {name.rsplit(":", 1)[1] for name in seen}
        assert ports == {url.rsplit(":", 1)[1] for url in instances}, seen
        assert min(seen.values()) >= 8, seen
        sessions = sessions_started_by(proc.pid)
        assert len(sessions) >= 4, sessions  # nginx, two granian, one worker
        assert "nginx" in " ".join(alive_in(sessions))
    finally:
        output = _stop(proc, log)
    assert alive_in(sessions | {proc.pid}) == [], output
    assert not (data_dir / "instances").exists()


def test_a_missing_nginx_is_named_with_its_package(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"apt-get install nginx-light"):
        NginxBalancer.binary(search_path=str(tmp_path))


def test_up_rejects_a_cluster_of_fewer_than_three_masters(tmp_path: Path) -> None:
    done = run_peak("up", "--redis-cluster", "2", env={"PEAK_DATA_DIR": str(tmp_path), "PEAK_REDIS_URL": ""})
    assert done.returncode == 1
    assert "at least 3 masters" in done.stderr
