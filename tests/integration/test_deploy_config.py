"""`sdv deploy init` writes what docker-compose.yml mounts, and the generated nats.conf runs a real
nats-server in operator mode with TLS (no Docker engine here: the container's paths and ports are
mapped to the generated files and free ports). The service credentials connect with the CA — also
under `nats`, the name the containers use — and nothing connects without the CA or credentials."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest

from sdv_client.deploy import SECRETS, SECRETS_DIR
from sdv_events.auth import DeviceAuthority, Role, format_creds, new_keypair, public_key, raw_creds, seed_of
from sdv_events.auth.client_tls import tls_options
from sdv_events.servers import free_port, nats_server_binary
from sdv_events.servers.ports import wait_for_port

pytestmark = pytest.mark.timeout(60)
SDV = Path(sys.executable).parent / "sdv"
REPO = Path(__file__).resolve().parents[2]


def _init(directory: Path, *args: str) -> dict[str, object]:
    result = subprocess.run([str(SDV), "deploy", "init", str(directory), "--json", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _as_on_this_machine(conf: str, directory: Path, store: Path, http_port: int) -> str:
    """The container's view (secrets in /run/secrets, JetStream in /data, monitoring on 8222)
    mapped onto this machine; nothing else of the generated config changes."""
    for name, relative in SECRETS.items():
        conf = conf.replace(f"{SECRETS_DIR}/{name}", str(directory / relative))
    conf, stores = re.subn(r"store_dir: /data\b", f"store_dir: {store}", conf)
    conf, https = re.subn(r"http: 0\.0\.0\.0:8222", f"http: 127.0.0.1:{http_port}", conf)
    assert (stores, https) == (1, 1)
    return conf


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """`sdv deploy init`, then nats-server started from the nats.conf it wrote."""
    generated = tmp_path / "generated"
    _init(generated, "--host", "fleet.example.com")
    conf = tmp_path / "nats.conf"
    conf.write_text(_as_on_this_machine((generated / "nats.conf").read_text(), generated,
                                        tmp_path / "js", free_port()))
    port = free_port()
    with (tmp_path / "nats.log").open("wb") as log:
        server = subprocess.Popen([nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-c", str(conf)],
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, 10, lambda: server.poll() is None)
        yield generated, f"tls://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)
        print((tmp_path / "nats.log").read_text()[-3000:])


async def test_deploy_config_runs_in_operator_mode_with_tls(deployed: tuple[Path, str]) -> None:
    generated, url = deployed
    ca = generated / "tls" / "ca.pem"
    service = str(generated / "services" / "registry.creds")

    # What the containers do: the service's own user, the pinned CA, the compose name `nats`.
    nc = await nats.connect(url, user_credentials=service, tls_hostname="nats", allow_reconnect=False,
                            **tls_options(url, ca))
    try:
        info = await nc.jetstream().account_info()  # JetStream, enabled by the account JWT
        assert info.limits.max_streams == -1
        await nc.publish("sdv.evt.device.car-1.DeviceAccepted", b"{}")  # the registry's own events
        await nc.flush()
    finally:
        await nc.close()
    # The certificate also names the hosts given to init (how vehicles reach NATS).
    await (await nats.connect(url, user_credentials=service, tls_hostname="fleet.example.com",
                              allow_reconnect=False, **tls_options(url, ca))).close()

    async def ignore(_: Exception) -> None:
        return None

    # The bootstrap admin, and an operator the registry would sign with its trust file
    # (`sdv operators add` under a compose deployment), are users of the operators account.
    key = new_keypair(Role.USER)
    authority = DeviceAuthority.load(generated / "registry-trust.json")
    viewer = format_creds(authority.operator_jwt(public_key(key), "ann", "viewer"), seed_of(key))
    for creds in (str(generated / "operator.creds"), raw_creds(viewer)):
        nc = await nats.connect(url, user_credentials=creds, allow_reconnect=False, **tls_options(url, ca))
        try:  # a command crosses into the app account (nobody serves it here)
            with pytest.raises(nats.errors.NoRespondersError):
                await nc.request("sdv.cmd.registry.ping", b"{}", timeout=10)
        finally:
            await nc.close()

    refused = dict(allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=1, error_cb=ignore)
    with pytest.raises(Exception, match="certificate verify failed"):  # no CA pinned
        await nats.connect(url, user_credentials=service, **tls_options(url, None), **refused)
    with pytest.raises(Exception, match="Authorization Violation"):  # no credentials
        await nats.connect(url, **tls_options(url, ca), **refused)


def test_deploy_init_keeps_secrets_from_other_users_and_keys_across_runs(tmp_path: Path) -> None:
    generated = tmp_path / "generated"
    first = _init(generated)
    kept = {name: (generated / name).read_bytes() for name in ("trust.json", "tls/ca.pem", "tls/ca-key.pem")}

    again = _init(generated, "--host", "fleet.example.com")

    assert first["nats_ca"] == again["nats_ca"] == str(generated / "tls" / "ca.pem")
    # Issued device credentials and pinned CAs stay valid: keys and CA are reused.
    assert {name: (generated / name).read_bytes() for name in kept} == kept
    assert stat.S_IMODE(generated.stat().st_mode) == 0o700
    private = ["tls/ca-key.pem", "tls/server-key.pem", "nats.conf"]
    for name in private:
        assert stat.S_IMODE((generated / name).stat().st_mode) == 0o600, name
    # Read by the services' uid (10001): given to it when run as root, else readable by all
    # inside the owner-only directory (and said so).
    expected = (10001, 0o600) if os.geteuid() == 0 else (os.geteuid(), 0o644)
    shared = [*(f"services/{s}.creds" for s in ("packager", "registry", "orchestrator", "monitor")),
              "enrol.creds", "registry-trust.json"]
    for name in shared:
        path = generated / name
        assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == expected, name
    # The whole chain of trust and the operator's credentials stay with whoever ran init.
    for name in ("trust.json", "operator.creds"):
        path = generated / name
        assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == (os.geteuid(), 0o600), name
    assert "trust.json" not in SECRETS.values()
    assert "operator.creds" not in SECRETS.values()
    assert len(again["shared_files"]) == (0 if os.geteuid() == 0 else len(shared))  # type: ignore[arg-type]
    # Everything compose mounts is there; the CA key is not among it.
    assert all((generated / relative).is_file() for relative in SECRETS.values())
    assert "tls/ca-key.pem" not in SECRETS.values()
    compose = (REPO / "docker-compose.yml").read_text()
    for name, relative in SECRETS.items():
        assert f"{name}: {{file: ./deploy/generated/{relative}}}" in compose


def test_deploy_init_refuses_a_host_that_cannot_go_into_a_certificate(tmp_path: Path) -> None:
    result = subprocess.run([str(SDV), "deploy", "init", str(tmp_path / "g"), "--json", "--host", "not a host"],
                            cwd=REPO, capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 1
    assert "'not a host' is neither an IP address nor a DNS name" in json.loads(result.stdout)["error"]
