"""App images: built on the device from the installed package (its generated Dockerfile, its
bundled wheels), on a base image already in the engine. Nothing is pulled: the build runs with no
network and the base image must be present (an engine with no registry access could not pull
it anyway; saying so up front beats the engine's DNS error).

One image per version and digest, tagged `sdv-app/<app>:<version>-<digest prefix>` and labelled
with the agent that built it, so an agent removes only its own images. (Where several agents
share an engine, as in dev runs, one may run an image another built; if that one removes it
while no container uses it, the next start builds it again.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from sdv_edge_agent.adapters.packages import InstallError

if TYPE_CHECKING:
    import docker

log = structlog.get_logger("sdv.agent.docker")
AGENT_LABEL = "org.sdv.agent"
APP_LABEL = "org.sdv.app"
VERSION_LABEL = "org.sdv.version"
DIGEST_LABEL = "org.sdv.digest"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe(text: str) -> str:
    """A version or device id as Docker allows it in names and tags."""
    return _UNSAFE.sub("_", text)


def image_tag(app: str, version: str, digest: str) -> str:
    return f"sdv-app/{app}:" + f"{safe(version)}-{digest[:12]}"[-128:]


def labels(owner: str, app: str, version: str, digest: str) -> dict[str, str]:
    return {AGENT_LABEL: owner, APP_LABEL: app, VERSION_LABEL: version, DIGEST_LABEL: digest}


def _build_log_tail(build_log: Any, lines: int = 4) -> str:
    said = [str(entry.get("stream") or entry.get("error") or "").strip()
            for entry in (build_log or []) if isinstance(entry, dict)]
    return " | ".join([line for line in said if line][-lines:])


class AppImages:
    def __init__(self, client: docker.DockerClient, owner: str, base_image: str,
                 build_timeout_s: int = 900) -> None:
        self.client = client
        self.owner = owner
        self.base_image = base_image
        self.build_timeout_s = build_timeout_s

    def ensure(self, app: str, version: str, digest: str, context: Path) -> str:
        """The image's tag, built first if the engine does not have it. Blocking: call it in a
        thread. Raises InstallError (stage `install`)."""
        import docker

        if not digest:
            raise InstallError("install", f"{app} {version}: no package digest to name its image by")
        tag = image_tag(app, version, digest)
        try:
            self.client.images.get(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.DockerException as exc:
            raise InstallError("install", f"docker engine: {exc}", transient=True) from None
        if not (context / "Dockerfile").is_file():
            raise InstallError("install", f"{app} {version} has no Dockerfile: it is not a docker package")
        try:
            self.client.images.get(self.base_image)
        except docker.errors.ImageNotFound:
            raise InstallError("install", f"base image {self.base_image} is not in the docker engine "
                                          "(nothing is pulled on a device: load or build it first)") from None
        except docker.errors.DockerException as exc:
            raise InstallError("install", f"docker engine: {exc}", transient=True) from None
        log.info("image_build", app=app, version=version, tag=tag, base=self.base_image)
        try:
            self.client.images.build(
                path=str(context), tag=tag, buildargs={"BASE_IMAGE": self.base_image},
                network_mode="none", pull=False, rm=True, forcerm=True,
                labels=labels(self.owner, app, version, digest), timeout=self.build_timeout_s,
            )
        except docker.errors.BuildError as exc:
            raise InstallError("install", f"docker build of {tag} failed: {exc.msg}; "
                                          f"{_build_log_tail(exc.build_log)}") from None
        except docker.errors.APIError as exc:
            raise InstallError("install", f"docker build of {tag} failed: {exc}") from None
        except docker.errors.DockerException as exc:
            raise InstallError("install", f"docker engine: {exc}", transient=True) from None
        return tag

    def remove(self, app: str, keep_digests: frozenset[str] = frozenset()) -> None:
        """Remove this agent's images of `app`, but those of the digests to keep. An image a
        container still uses stays (the engine refuses); the next release tries again."""
        import docker

        try:
            images = self.client.images.list(filters={"label": [f"{AGENT_LABEL}={self.owner}",
                                                                 f"{APP_LABEL}={app}"]})
        except docker.errors.DockerException as exc:
            log.warning("image_list_failed", app=app, error=str(exc))
            return
        for image in images:
            if image.labels.get(DIGEST_LABEL) in keep_digests:
                continue
            for name in image.tags or [image.id]:  # by tag: an id with several tags needs force
                try:
                    self.client.images.remove(name, force=False, noprune=False)
                    log.info("image_removed", app=app, image=name)
                except docker.errors.ImageNotFound:
                    pass
                except docker.errors.APIError as exc:
                    log.warning("image_remove_failed", app=app, image=name, error=str(exc))
