"""Artifacts in the JetStream object store `sdv_packages`, keyed by their sha256 digest; raw
uploads (`uploads/...`) in `sdv_uploads`, which devices cannot read (an upload may hold files the
package leaves out, such as `.env`)."""

from __future__ import annotations

import contextlib

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from sdv_events.provisioning import PACKAGES_BUCKET, UPLOADS_BUCKET

UPLOAD_PREFIX = "uploads/"


def is_upload(name: str) -> bool:
    """A raw upload (consumed by publish), never a release artifact (named by its digest)."""
    return name.startswith(UPLOAD_PREFIX) and ".." not in name.split("/")


class ArtifactStore:
    def __init__(self, bucket: ObjectStore, uploads: ObjectStore) -> None:
        self.bucket = bucket
        self.uploads = uploads

    @classmethod
    async def open(cls, js: JetStreamContext) -> ArtifactStore:
        return cls(await js.object_store(PACKAGES_BUCKET), await js.object_store(UPLOADS_BUCKET))

    def _bucket_for(self, name: str) -> ObjectStore:
        return self.uploads if is_upload(name) else self.bucket

    async def put(self, name: str, data: bytes) -> None:
        """Idempotent for content-addressed names: an existing object with this name is kept."""
        bucket = self._bucket_for(name)
        with contextlib.suppress(NotFoundError):
            info = await bucket.get_info(name)
            if info.size == len(data) and not info.deleted:
                return
        await bucket.put(name, data)

    async def get(self, name: str) -> bytes | None:
        try:
            result = await self._bucket_for(name).get(name)
        except NotFoundError:
            return None
        return result.data

    async def delete(self, name: str) -> None:
        with contextlib.suppress(NotFoundError):
            await self._bucket_for(name).delete(name)
