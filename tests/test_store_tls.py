"""The stores over TLS (``rediss://``, ``rediss+cluster://``), on redis-servers started here (one
alone, and three as a cluster) with a certificate made by ``openssl`` for the occasion: the data
commands, the async client, and the tiered store's invalidation subscriber, which reads its TLS
socket itself."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from penchant import StoreUnavailableError
from penchant.profile_store import RedisProfileStore, TieredProfileStore, open_store
from penchant.user_profile import InterestModel

from .store_support import assert_one_call_handles_a_burst, mixed_signals, new_tenant, server_env


def _free_port() -> int:
    """A free loopback port whose cluster bus port (10,000 above it) is free too."""
    while True:
        with socket.socket() as probe, socket.socket() as bus:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
            if port + 10_000 > 65_535:
                continue
            try:
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
            return port


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is needed to make the test certificate"
    where = tmp_path_factory.mktemp("certificate")
    cert, key = where / "cert.pem", where / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    subprocess.run(
        [openssl, *request, "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


class _Servers:
    """TLS-only redis-servers on loopback, stopped together."""

    def __init__(self, where: Path, certificate: tuple[Path, Path]) -> None:
        self.where, (self.cert, self.key) = where, certificate
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, *extra: str) -> int:
        port = _free_port()
        directory = self.where / str(port)
        directory.mkdir()
        options = f"--port 0 --tls-port {port} --bind 127.0.0.1 --appendonly no --tls-auth-clients no"
        files = [
            "--dir",
            directory,
            "--tls-cert-file",
            self.cert,
            "--tls-key-file",
            self.key,
            "--tls-ca-cert-file",
            self.cert,
        ]
        log = directory / "redis.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [server_env("PENCHANT_TEST_REDIS_SERVER"), *options.split(), "--save", "", *extra, *map(str, files)],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.processes.append((process, log))
        self.wait(lambda client: client.ping(), port)
        return port

    def wait(self, ready: Callable[[redis.Redis], object], port: int) -> None:
        client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(self.cert))
        deadline = time.monotonic() + 15
        try:
            while True:
                try:
                    if ready(client):
                        return
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline or any(p.poll() is not None for p, _ in self.processes):
                    logs = "\n".join(log.read_text()[-1000:] for _, log in self.processes)
                    raise AssertionError(f"the TLS redis-servers did not get ready: {logs}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        for process, _ in self.processes:
            process.terminate()
        for process, _ in self.processes:
            process.wait(10)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, certificate: tuple[Path, Path]) -> Iterator[tuple[str, Path]]:
    """A TLS-only redis-server on loopback: its ``rediss://`` URL (trusting its certificate)
    and the certificate's path."""
    servers = _Servers(tmp_path_factory.mktemp("tls"), certificate)
    try:
        port = servers.start()
        yield f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={servers.cert}", servers.cert
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory, certificate: tuple[Path, Path]) -> Iterator[str]:
    """A 3-master Redis Cluster over TLS on loopback: its ``rediss+cluster://`` URL, which
    names two of its nodes and trusts their certificate."""
    servers = _Servers(tmp_path_factory.mktemp("tls-cluster"), certificate)
    try:
        cluster = ["--cluster-enabled", "yes", "--tls-cluster", "yes", "--cluster-config-file", "nodes.conf"]
        ports = [servers.start(*cluster) for _ in range(3)]
        cli = Path(server_env("PENCHANT_TEST_REDIS_SERVER")).with_name("redis-cli")
        subprocess.run(
            [str(cli), "--tls", "--cacert", str(servers.cert), "--cluster", "create"]
            + [f"127.0.0.1:{port}" for port in ports]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
        )
        for port in ports:
            servers.wait(lambda client: client.execute_command("CLUSTER INFO").get("cluster_state") == "ok", port)
        yield f"rediss+cluster://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}?ssl_ca_certs={servers.cert}"
    finally:
        servers.stop()


def test_the_redis_store_works_over_tls(tls_redis: tuple[str, Path]) -> None:
    url, _ = tls_redis
    model = InterestModel(max_history=50)
    with RedisProfileStore(url, tenant=new_tenant(), model=model) as store:
        profile = store.apply_feedback("alice", mixed_signals("alice", 4))
        assert profile.version == 1
        assert store.get("alice") == profile
        assert store.get_many(["alice", "bob"]).keys() == {"alice"}

        async def run_async() -> None:
            changed = await store.aapply_feedback("alice", mixed_signals("alice", 2, start=4))
            assert changed.version == 2
            assert await store.aget("alice") == changed
            assert await store.adelete("alice")

        asyncio.run(run_async())
        assert store.get("alice") is None


def test_a_server_whose_certificate_is_not_trusted_is_unavailable_with_the_reason(
    tls_redis: tuple[str, Path],
) -> None:
    url, _ = tls_redis
    store = RedisProfileStore(url.partition("?")[0], tenant=new_tenant())
    with store, pytest.raises(StoreUnavailableError, match="certificate verify failed"):
        store.get("alice")


def test_tiered_caches_are_invalidated_over_tls(tls_redis: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = tls_redis
    tenant, database = new_tenant(), f"sqlite:///{tmp_path}/tls.db"
    with open_store(url, database, tenant) as reader, open_store(url, database, tenant) as writer:
        assert isinstance(reader, TieredProfileStore)
        assert reader.wait_until_listening()
        subscription = reader._listener._socket  # type: ignore[union-attr]
        writer.apply_feedback("alice", mixed_signals("alice", 3))
        cached = reader.get_shared("alice")
        assert cached is not None
        assert reader.get_shared("alice") is cached
        for n in range(2, 6):  # one message at a time, through the TLS socket
            writer.apply_feedback("alice", mixed_signals("alice", 1, start=n + 2))
            deadline = time.monotonic() + 10
            while (seen := reader.get_shared("alice")) is not None and seen.version < n:
                assert time.monotonic() < deadline, f"version {n} never reached the reader"
                time.sleep(0.01)
        assert reader._listener._socket is subscription  # type: ignore[union-attr]  # never lost
        assert reader.stats()["redis_failures"] == 0
        assert reader.stats()["invalidations"] >= 4


def test_one_call_handles_a_burst_of_invalidations_over_tls(
    tls_redis: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TLS socket gives one record per read: the call reads on until nothing is left."""
    from penchant.profile_store import _invalidation

    monkeypatch.setattr(_invalidation, "IDLE_READ_INTERVAL", 3600.0)
    url, _ = tls_redis
    with open_store(url, f"sqlite:///{tmp_path}/burst.db", new_tenant()) as store:
        assert isinstance(store, TieredProfileStore)
        assert_one_call_handles_a_burst(store, url)


def test_the_stores_work_over_tls_on_a_cluster_with_the_urls_options(tls_cluster: str, tmp_path: Path) -> None:
    """The cluster URL's options (here the certificate to trust) reach every node's
    connection, and the subscriber's."""
    tenant, model = new_tenant(), InterestModel(max_history=50)
    with RedisProfileStore(tls_cluster, tenant=tenant, model=model) as store:
        users = [f"user{n}" for n in range(20)]  # on every master
        store.apply_feedback_many([s for user in users for s in mixed_signals(user, 2)])
        assert store.get_many(users).keys() == set(users)

        async def run_async() -> None:
            changed = await store.aapply_feedback("user0", mixed_signals("user0", 2, start=2))
            assert changed.version == 2
            assert (await store.aget_many(users)).keys() == set(users)

        asyncio.run(run_async())
    database = f"sqlite:///{tmp_path}/tls-cluster.db"
    with open_store(tls_cluster, database, tenant) as reader, open_store(tls_cluster, database, tenant) as writer:
        assert isinstance(reader, TieredProfileStore)
        assert reader.wait_until_listening()
        writer.apply_feedback("alice", mixed_signals("alice", 2))
        cached = reader.get_shared("alice")
        assert cached is not None
        writer.apply_feedback("alice", mixed_signals("alice", 2, start=2))
        deadline = time.monotonic() + 10
        while (seen := reader.get_shared("alice")) is not None and seen.version < 2:
            assert time.monotonic() < deadline, "the invalidation never reached the reader"
            time.sleep(0.01)
        assert reader.stats()["redis_failures"] == 0
