"""Artifacts in the JetStream object store `sdv_packages`, keyed by their sha256 digest."""

from __future__ import annotations

import contextlib

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from sdv_events.provisioning import PACKAGES_BUCKET

UPLOAD_PREFIX = "uploads/"


def is_upload(name: str) -> bool:
    """A raw upload (consumed by publish), never a release artifact (named by its digest)."""
    return name.startswith(UPLOAD_PREFIX) and ".." not in name.split("/")


class ArtifactStore:
    def __init__(self, bucket: ObjectStore) -> None:
        self.bucket = bucket

    @classmethod
    async def open(cls, js: JetStreamContext) -> ArtifactStore:
        return cls(await js.object_store(PACKAGES_BUCKET))

    async def put(self, name: str, data: bytes) -> None:
        """Idempotent for content-addressed names: an existing object with this name is kept."""
        with contextlib.suppress(NotFoundError):
            info = await self.bucket.get_info(name)
            if info.size == len(data) and not info.deleted:
                return
        await self.bucket.put(name, data)

    async def get(self, name: str) -> bytes | None:
        try:
            result = await self.bucket.get(name)
        except NotFoundError:
            return None
        return result.data

    async def delete(self, name: str) -> None:
        with contextlib.suppress(NotFoundError):
            await self.bucket.delete(name)
