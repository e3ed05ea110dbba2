"""The stores over TLS (``rediss://``), on a redis-server started here with a certificate made
by ``openssl`` for the occasion: the data commands, the async client, and the tiered store's
invalidation subscriber, which reads its TLS socket itself."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from penchant import StoreUnavailableError
from penchant.profile_store import RedisProfileStore, TieredProfileStore, open_store
from penchant.user_profile import InterestModel

from .store_support import assert_one_call_handles_a_burst, mixed_signals, new_tenant, server_env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A TLS-only redis-server on loopback: its ``rediss://`` URL (trusting its certificate)
    and the certificate's path."""
    server = server_env("PENCHANT_TEST_REDIS_SERVER")
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is needed to make the test certificate"
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    subprocess.run(
        [openssl, *request, "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    port = _free_port()
    options = f"--port 0 --tls-port {port} --bind 127.0.0.1 --appendonly no --tls-auth-clients no"
    files = ["--dir", where, "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert]
    log = where / "redis.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [server, *options.split(), "--save", "", *map(str, files)], stdout=output, stderr=subprocess.STDOUT
        )
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError as exc:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError(f"the TLS redis-server did not answer: {log.read_text()[-2000:]}") from exc
                time.sleep(0.05)
        client.close()
        yield url, cert
    finally:
        process.terminate()
        process.wait(10)


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
