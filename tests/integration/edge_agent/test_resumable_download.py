"""Artifact downloads resume chunk by chunk after a broken link or an agent restart, and only the
exact bytes of the object ever reach the installer (real NATS, real object store)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from sdv_edge_agent.adapters.downloads import Downloader
from sdv_edge_agent.adapters.link import NatsLink
from sdv_edge_agent.adapters.packages import InstallError
from sdv_events.provisioning import PACKAGES_BUCKET, provision
from sdv_events.schemas.packages import PackageInfo
from sdv_events.servers import NatsServer

CHUNK = 128 * 1024  # the object store's chunk size


def package_for(data: bytes) -> PackageInfo:
    digest = hashlib.sha256(data).hexdigest()
    return PackageInfo(
        name="big", version="1.0.0", digest=digest, size=len(data), object_name=f"big/{digest}",
        manifest_digest="0" * 64, signature="", key_id="", channel="dev", runtime="native",
        entry_point="main.py", python_version="3.11",
    )


@pytest.fixture
async def published(fresh_nats_url: str) -> tuple[PackageInfo, bytes]:
    data = os.urandom(40 * CHUNK + 1234)
    package = package_for(data)
    nc = await nats.connect(fresh_nats_url)
    await provision(nc.jetstream())
    store = await nc.jetstream().object_store(PACKAGES_BUCKET)
    await store.put(package.object_name, data)
    await nc.close()
    return package, data


@pytest.fixture
async def link(fresh_nats_url: str) -> AsyncIterator[NatsLink]:
    link = NatsLink(fresh_nats_url, "car-dl")
    task = asyncio.create_task(link.run())
    await asyncio.wait_for(link.connected.wait(), 10)
    yield link
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await link.close()


class Counting:
    """Progress callback: how many bytes arrived in this attempt; cancels the attempt at a mark."""

    def __init__(self, cancel_at: int | None = None) -> None:
        self.calls = 0
        self.first: int | None = None
        self.cancel_at = cancel_at
        self.task: asyncio.Task[bytes] | None = None

    def __call__(self, have: int, total: int) -> None:
        self.calls += 1
        self.first = have if self.first is None else self.first
        if self.cancel_at is not None and have >= self.cancel_at and self.task is not None:
            self.task.cancel()
            self.cancel_at = None


async def test_agent_stopped_mid_download_resumes_where_it_stopped(
    published: tuple[PackageInfo, bytes], link: NatsLink, tmp_path: Path
) -> None:
    package, data = published
    first = Counting(cancel_at=15 * CHUNK)
    attempt = asyncio.create_task(Downloader(link, tmp_path / "dl", progress=first).fetch(package))
    first.task = attempt
    with pytest.raises(asyncio.CancelledError):
        await attempt  # the agent stopped mid-download (a cancelled task, as on SIGTERM)
    kept = sum(p.stat().st_size for p in (tmp_path / "dl").glob("*.part"))
    assert 15 * CHUNK <= kept < len(data)

    second = Counting()
    got = await Downloader(link, tmp_path / "dl", progress=second).fetch(package)  # the next agent run
    assert got == data
    assert second.first == kept + CHUNK  # its first chunk is the one after those it already had
    assert second.calls == 41 - kept // CHUNK  # 41 chunks in all; none fetched twice
    assert not list((tmp_path / "dl").iterdir())  # nothing partial left once complete


async def test_broken_link_keeps_the_chunks_and_the_next_attempt_fetches_only_the_rest(
    published: tuple[PackageInfo, bytes], fresh_nats_server: NatsServer, link: NatsLink, tmp_path: Path
) -> None:
    package, data = published
    stopped = asyncio.Event()

    def cut_at_ten_chunks(have: int, total: int) -> None:
        if have >= 10 * CHUNK and not stopped.is_set():
            stopped.set()
            fresh_nats_server.stop(keep_data=True)  # the vehicle drives into a tunnel

    downloader = Downloader(link, tmp_path / "dl", idle_timeout_s=1.0, progress=cut_at_ten_chunks)
    with pytest.raises(InstallError) as refused:
        await downloader.fetch(package)
    assert refused.value.transient  # retried later, not a refused version
    assert "resumes" in refused.value.message or "not connected" in refused.value.message
    kept = sum(p.stat().st_size for p in (tmp_path / "dl").glob("*.part"))
    assert kept >= 10 * CHUNK

    fresh_nats_server.start()
    await asyncio.wait_for(link.connected.wait(), 15)
    after = Counting()
    got = await Downloader(link, tmp_path / "dl", progress=after).fetch(package)
    assert got == data
    assert after.first == kept + CHUNK
    assert after.calls == 41 - kept // CHUNK


async def test_corrupted_partial_is_caught_discarded_and_the_retry_is_exact(
    published: tuple[PackageInfo, bytes], link: NatsLink, tmp_path: Path
) -> None:
    package, data = published
    first = Counting(cancel_at=5 * CHUNK)
    attempt = asyncio.create_task(Downloader(link, tmp_path / "dl", progress=first).fetch(package))
    first.task = attempt
    with pytest.raises(asyncio.CancelledError):
        await attempt
    part = next((tmp_path / "dl").glob("*.part"))
    raw = bytearray(part.read_bytes())
    raw[100] ^= 0xFF  # a flipped bit on the device's flash
    part.write_bytes(bytes(raw))

    with pytest.raises(InstallError) as refused:
        await Downloader(link, tmp_path / "dl").fetch(package)
    assert "SHA-256" in refused.value.message
    assert refused.value.transient
    assert not list((tmp_path / "dl").iterdir())  # the bad partial is gone: the retry starts clean
    assert await Downloader(link, tmp_path / "dl").fetch(package) == data


async def test_bytes_beyond_the_last_recorded_chunk_are_dropped_on_resume(
    published: tuple[PackageInfo, bytes], link: NatsLink, tmp_path: Path
) -> None:
    """A crash between writing a chunk and recording it: the unrecorded tail is not trusted."""
    package, data = published
    first = Counting(cancel_at=8 * CHUNK)
    attempt = asyncio.create_task(Downloader(link, tmp_path / "dl", progress=first).fetch(package))
    first.task = attempt
    with pytest.raises(asyncio.CancelledError):
        await attempt
    part = next((tmp_path / "dl").glob("*.part"))
    with part.open("ab") as f:
        f.write(b"half a chunk that was never recorded")
    assert await Downloader(link, tmp_path / "dl").fetch(package) == data


async def test_missing_object_is_a_permanent_refusal(link: NatsLink, tmp_path: Path,
                                                     published: tuple[PackageInfo, bytes]) -> None:
    package = package_for(b"never published")
    with pytest.raises(InstallError) as refused:
        await Downloader(link, tmp_path / "dl").fetch(package)
    assert not refused.value.transient
    assert "not in sdv_packages" in refused.value.message
