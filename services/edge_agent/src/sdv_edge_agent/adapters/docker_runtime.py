"""The docker runtime: each app version runs as a container of an image built on the device.

- image: built at install time (`prepare`) from the installed package's Dockerfile on the
  configured base image, with no network; see docker_images.py.
- container: `sdv-<device>-<app>-<version>`, labelled with agent, app, version and digest (how the
  agent finds its own after a restart). Limits and hardening: `mem_limit` with no extra swap,
  `nano_cpus`, a pids limit, read-only root with a 64 MB tmpfs /tmp, `no-new-privileges`, every
  capability dropped; the image's non-root user. `init` (the engine's tini) is pid 1, so the app
  gets the SIGTERM of a stop (a bare pid 1 ignores it) and its exit status is passed on.
- network: `none` for `security.network = "none"`, else `host`. An engine run with `--bridge=none`
  (as on these devices) has no other network, and the KUKSA databroker listens on the vehicle
  host, so "kuksa-only" is not narrowed to the databroker: the app can reach what the host can.
- pause/resume: the engine's freezer (`docker pause`); stop: SIGTERM, then SIGKILL after the
  timeout (a paused container is thawed first so it can handle the SIGTERM).
- console: the engine's log, followed per stream; see docker_console.py. stdin: attach.
- the container is not auto-removed: its exit status and OOM flag are read when it ends, its
  last console lines when it is finished with; then it is removed.

Calls that wait (build, start, stop, the container's end) run off the event loop. The port's
synchronous methods (pause, resume, kill, adopt, kill_orphan, release, prune) make short calls to
the local engine over its unix socket (2-15 ms each here; an image removal ~0.3 s).
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from sdv_edge_agent.adapters.docker_console import ContainerFollower
from sdv_edge_agent.adapters.docker_images import (
    AGENT_LABEL,
    APP_LABEL,
    DIGEST_LABEL,
    VERSION_LABEL,
    AppImages,
    labels,
    safe,
)
from sdv_edge_agent.adapters.docker_process import DockerProcess, exit_status, started_at
from sdv_edge_agent.adapters.packages import InstallError
from sdv_edge_agent.ports import LinesSink, Process, RunSpec, Usage
from sdv_events.schemas.packages import PackageInfo

if TYPE_CHECKING:
    import docker

log = structlog.get_logger("sdv.agent.docker")
HOST_ONLY_ENV = frozenset({"PATH", "VIRTUAL_ENV", "HOME", "PYTHONHOME", "PYTHONPATH"})
PIDS_LIMIT = 256
LOG_OPTIONS = {"max-size": "10m", "max-file": "3"}


CONNECT_TIMEOUT_S = 10.0


class ContainerError(OSError):
    """The engine could not create or start the app's container. An OSError, like a failed exec
    of a native app, so the supervisor reports it the same way ("cannot start: …")."""


def container_env(env: dict[str, str]) -> dict[str, str]:
    """The app's environment without what only makes sense on the host (its venv's PATH, a HOME
    the read-only container does not have); the image sets PATH, /tmp is writable."""
    return {**{k: v for k, v in env.items() if k not in HOST_ONLY_ENV}, "HOME": "/tmp"}


def _docker(process: Process) -> DockerProcess:
    if not isinstance(process, DockerProcess):
        raise TypeError(f"the docker runtime cannot handle {type(process).__name__}")
    return process


class DockerRuntime:
    name = "docker"
    limits = (f"docker: mem_limit (no swap), nano_cpus, pids {PIDS_LIMIT}, read-only root, "
              "no-new-privileges, cap_drop ALL")
    outlives_agent = True

    def __init__(self, client: docker.DockerClient, *, owner: str, base_image: str) -> None:
        self.client = client
        self.owner = owner  # the device id: label of everything this agent creates in the engine
        self.images = AppImages(client, owner, base_image)
        # Image builds take minutes: a thread of their own, not the loop's default pool (which
        # container stops, console reads and DNS lookups share).
        self._builds = ThreadPoolExecutor(max_workers=1, thread_name_prefix="docker-build")
        self.log = log.bind(owner=owner)

    @classmethod
    async def connect(cls, host: str | None, *, owner: str, base_image: str) -> DockerRuntime | None:
        """The runtime if a Docker engine answers at `host`; None (and a log line saying why)
        otherwise: the device then runs native apps only and refuses docker packages."""
        import docker

        if not host:
            log.info("docker_runtime_unavailable", reason="no docker host configured (--docker-host)")
            return None
        def probe() -> tuple[docker.DockerClient, dict[str, str], bool]:
            # The client's constructor already asks the engine for its API version: all of it
            # runs in a thread, under one deadline, so a hung engine cannot hold up the agent.
            client = docker.DockerClient(base_url=host, timeout=60, max_pool_size=64)
            client.ping()
            try:
                client.images.get(base_image)
                has_base = True
            except docker.errors.ImageNotFound:
                has_base = False
            return client, client.version(), has_base

        try:
            client, version, has_base = await asyncio.wait_for(asyncio.to_thread(probe), CONNECT_TIMEOUT_S)
        except (docker.errors.DockerException, TimeoutError, OSError) as exc:
            log.warning("docker_runtime_unavailable", host=host, reason=str(exc) or type(exc).__name__)
            return None
        runtime = cls(client, owner=owner, base_image=base_image)
        log.info("docker_runtime_ready", host=host, engine=version.get("Version"), base_image=base_image,
                 base_image_present=has_base)
        if not has_base:
            log.warning("docker_base_image_missing", base_image=base_image,
                        hint="docker packages fail to install until the base image is loaded")
        return runtime

    # --- install / start -----------------------------------------------------------------------

    async def prepare(self, package: PackageInfo, app_dir: Path) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._builds, self.images.ensure, package.name, package.version, package.digest, app_dir)
        except OSError as exc:  # requests' connection errors and timeouts: the engine went away
            raise InstallError("install", f"docker engine: {type(exc).__name__}: {exc}",
                               transient=True) from None

    def container_name(self, app: str, version: str) -> str:
        return f"sdv-{safe(self.owner)}-{app}-{safe(version)}"

    async def start(self, spec: RunSpec) -> DockerProcess:
        try:
            image = await asyncio.get_running_loop().run_in_executor(
                self._builds, self.images.ensure, spec.app, spec.version, spec.digest, spec.cwd)
        except InstallError as err:
            raise ContainerError(f"no image: {err.message}") from None
        except OSError as exc:
            raise ContainerError(f"docker engine: {type(exc).__name__}: {exc}") from None
        return await asyncio.to_thread(self._run, spec, image)

    def _run(self, spec: RunSpec, image: str) -> DockerProcess:
        import docker
        from docker.types import LogConfig

        name = self.container_name(spec.app, spec.version)
        network = "none" if spec.network == "none" else "host"  # see the module docstring
        self._clear_name(name)
        try:
            container = self.client.containers.create(
                image, name=name, labels=labels(self.owner, spec.app, spec.version, spec.digest),
                environment=container_env(spec.env), network_mode=network,
                mem_limit=f"{spec.memory_mb}m", memswap_limit=f"{spec.memory_mb}m",
                nano_cpus=int(spec.cpu * 1e9), pids_limit=PIDS_LIMIT, read_only=True,
                tmpfs={"/tmp": "size=64m"}, security_opt=["no-new-privileges"], cap_drop=["ALL"],
                stdin_open=True, init=True, log_config=LogConfig(type="json-file", config=LOG_OPTIONS),
            )
            container.start()
            state = self.client.api.inspect_container(container.id)["State"]
        except docker.errors.DockerException as exc:
            raise ContainerError(f"docker: {exc}") from None
        self.log.info("container_started", container=name, image=image, pid=state.get("Pid"))
        return DockerProcess(self.client, container.id, name, int(state.get("Pid") or 0), started_at(state))

    def _clear_name(self, name: str) -> None:
        """A container of ours by that name is left over (it ended, or an earlier agent run
        started it but died before recording it): it goes, so the name is free."""
        import docker

        try:
            old = self.client.api.inspect_container(name)
        except docker.errors.NotFound:
            return
        if old["Config"].get("Labels", {}).get(AGENT_LABEL) != self.owner:
            raise ContainerError(f"a container named {name} exists and is not this agent's")
        if old["State"].get("Running"):
            self.log.warning("replacing_unrecorded_container", container=name, pid=old["State"].get("Pid"))
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(old["Id"], force=True)

    # --- finding our containers again ------------------------------------------------------------

    def _ours(self, *, app: str | None = None, version: str | None = None,
              running: bool = True) -> list[dict[str, Any]]:
        """Inspect data of this agent's containers (of one app/version)."""
        import docker

        wanted = [f"{AGENT_LABEL}={self.owner}"]
        wanted += [f"{APP_LABEL}={app}"] if app else []
        wanted += [f"{VERSION_LABEL}={version}"] if version else []
        found = []
        for summary in self.client.api.containers(all=not running, filters={"label": wanted}):
            with contextlib.suppress(docker.errors.NotFound):
                found.append(self.client.api.inspect_container(summary["Id"]))
        return found

    def adopt(self, spec: RunSpec, pid: int, started: float) -> DockerProcess | None:
        import docker

        try:
            for info in self._ours(app=spec.app, version=spec.version):
                state = info["State"]
                if state.get("Pid") == pid and started_at(state) == started and (
                        not spec.digest or info["Config"]["Labels"].get(DIGEST_LABEL) == spec.digest):
                    return DockerProcess(self.client, info["Id"], info["Name"].lstrip("/"), pid, started)
        except docker.errors.DockerException as exc:
            self.log.warning("adopt_failed", app=spec.app, error=str(exc))
        return None

    def kill_orphan(self, pid: int, started: float) -> bool:
        import docker

        try:
            for info in self._ours():
                state = info["State"]
                if state.get("Pid") == pid and started_at(state) == started:
                    self.client.api.remove_container(info["Id"], force=True)
                    self.log.info("orphan_removed", container=info["Name"].lstrip("/"), pid=pid)
                    return True
        except docker.errors.DockerException as exc:
            self.log.warning("kill_orphan_failed", pid=pid, error=str(exc))
        return False

    def last_exit(self, spec: RunSpec) -> int | None:
        """The engine keeps an ended container (and its exit status) until the agent removes it."""
        import docker

        container = self._ended_container(spec)
        if container is None:
            return None
        try:
            state = self.client.api.inspect_container(container)["State"]
        except docker.errors.DockerException as exc:
            self.log.warning("container_lookup_failed", app=spec.app, error=str(exc))
            return None
        return exit_status(state.get("ExitCode"))

    # --- control ---------------------------------------------------------------------------------

    def _call(self, what: str, process: DockerProcess, *args: Any, **kwargs: Any) -> None:
        """An engine call on a container that may have ended meanwhile (which is not an error
        here: its end is reported by `wait`)."""
        import docker

        try:
            getattr(self.client.api, what)(process.container_id, *args, **kwargs)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: not running / not paused
                raise
            process.log.debug("container_call_refused", call=what, error=str(exc))

    def pause(self, process: Process) -> None:
        self._call("pause", _docker(process))

    def resume(self, process: Process) -> None:
        self._call("unpause", _docker(process))

    def _signal(self, process: DockerProcess, sig: str) -> None:
        if process.paused():
            self._call("unpause", process)
        self._call("kill", process, signal=sig)

    async def stop(self, process: Process, timeout_s: float) -> int | None:
        process = _docker(process)
        await asyncio.to_thread(self._signal, process, "SIGTERM")
        try:
            async with asyncio.timeout(timeout_s):
                code = await process.wait()
        except TimeoutError:
            process.log.warning("stop_timeout_kill", timeout_s=timeout_s)
            await asyncio.to_thread(self._signal, process, "SIGKILL")
            code = await process.wait()
        process.close()
        if not process.followed:  # else the follower removes it once it has read its last lines
            await asyncio.to_thread(self._remove, process.container_id)
        return code

    def kill(self, process: Process) -> None:
        self._signal(_docker(process), "SIGKILL")

    def _remove(self, container_id: str) -> None:
        import docker

        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(container_id, force=True)

    def usage(self, process: Process) -> Usage | None:
        return _docker(process).usage()

    # --- console -----------------------------------------------------------------------------------

    def follow_output(
        self, spec: RunSpec, process: Process | None, offsets: dict[str, int], sink: LinesSink
    ) -> ContainerFollower:
        if process is not None:
            container = _docker(process)
            container.followed = True
            return ContainerFollower(self.client, container.container_id, offsets, sink)
        return ContainerFollower(self.client, self._ended_container(spec), offsets, sink)

    def _ended_container(self, spec: RunSpec) -> str | None:
        """The container an earlier agent run left when the app ended while no agent watched."""
        import docker

        try:
            ended = [info for info in self._ours(app=spec.app, version=spec.version, running=False)
                     if not info["State"].get("Running")
                     and (not spec.digest or info["Config"]["Labels"].get(DIGEST_LABEL) == spec.digest)]
        except docker.errors.DockerException as exc:
            self.log.warning("container_lookup_failed", app=spec.app, error=str(exc))
            return None
        ended.sort(key=lambda info: info["State"].get("FinishedAt") or "")
        return str(ended[-1]["Id"]) if ended else None

    # --- clean-up ----------------------------------------------------------------------------------

    def release(self, app: str) -> None:
        import docker

        try:
            for info in self._ours(app=app, running=False):
                self._remove(info["Id"])
        except docker.errors.DockerException as exc:
            self.log.warning("release_failed", app=app, error=str(exc))
        self.images.remove(app)

    def prune(self, app: str, keep: list[PackageInfo]) -> None:
        self.images.remove(app, keep_digests=frozenset(p.digest for p in keep))
