"""The private Docker engine tests and dev runs start (sdv_events.servers.DockerEngine): it says
why it cannot start, and stopping it leaves no process behind, not even a container's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdv_events.servers import BaseImageError, DockerEngine, DockerUnavailable, ensure_python_image
from sdv_events.servers import docker_engine as engine_module


def test_missing_dockerd_is_reported_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "DOCKERD_CANDIDATES", ("no-such-dockerd",))
    engine = DockerEngine()
    with pytest.raises(DockerUnavailable) as caught:
        engine.start()
    assert "dockerd is not installed" in caught.value.reason
    assert "docker-engine-setup.sh" in caught.value.reason
    assert not engine.base_dir.exists()  # nothing left behind by a failed start


def test_a_dockerd_that_dies_at_start_up_is_reported_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "dockerd"
    fake.write_text("#!/bin/sh\necho 'failed to start daemon: pretend' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(engine_module, "DOCKERD_CANDIDATES", (str(fake),))
    engine = DockerEngine()
    with pytest.raises(DockerUnavailable) as caught:
        engine.start(timeout=10)
    assert not engine.base_dir.exists()  # its log is in the reason; nothing is left behind
    if os.geteuid() == 0:
        assert "exited with status 1" in caught.value.reason
        assert "failed to start daemon: pretend" in caught.value.reason
    else:
        assert "needs root" in caught.value.reason


def test_stop_leaves_no_process_even_with_a_container_running() -> None:
    try:
        engine = DockerEngine(shutdown_timeout_s=1).start()  # `sleep` as pid 1 ignores SIGTERM
    except DockerUnavailable as err:
        pytest.skip(f"no docker engine: {err.reason}")
    try:
        client = engine.client()
        try:
            base = ensure_python_image(client)
        except BaseImageError as err:
            pytest.skip(f"no python base image: {err.reason}")
        container = client.containers.run(base.tag, ["sleep", "600"], detach=True, network_mode="none")
        container.reload()
        pid = container.attrs["State"]["Pid"]
        assert pid in engine.leftover_processes()  # the container's process counts as the engine's
        client.close()
    finally:
        engine.stop()
    assert engine.leftover_processes() == []
    assert not Path(f"/proc/{pid}").exists()
    assert not engine.base_dir.exists()
    assert not [line for line in Path("/proc/self/mounts").read_text().splitlines()
                if str(engine.base_dir) in line]
