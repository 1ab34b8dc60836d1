"""`sdv deploy init [DIR]`: the keys, certificates, credentials and NATS config docker-compose.yml
mounts (sdv_client.deploy). Run it from the repository root (`./dev sdv deploy init`)."""

from __future__ import annotations

from pathlib import Path

import typer

from sdv_client.cli_support import Failure, JsonOption, emit_json, err, fail, out
from sdv_client.deploy import init_deployment
from sdv_events.auth.certificates import CertificateError

app = typer.Typer(help="Prepare the compose deployment.", no_args_is_help=True)


@app.command("init")
def init(
    directory: Path = typer.Argument(Path("deploy/generated"), help="Where to write (compose reads "
                                     "deploy/generated)."),
    base_config: Path = typer.Option(Path("deploy/nats/nats.conf"), "--base-config",
                                     help="The NATS server settings the generated config starts from."),
    hosts: list[str] = typer.Option([], "--host", help="Another name or address clients reach NATS "
                                    "by (its certificate always names nats, localhost, 127.0.0.1)."),
    as_json: bool = JsonOption,
) -> None:
    """Write the NATS chain of trust, credentials, CA and server certificate, and the
    operator-mode + TLS NATS config into DIR. Again: keys and CA are kept, the rest refreshed."""
    try:
        done = init_deployment(directory, base_config, hosts)
    except (OSError, ValueError, CertificateError) as exc:
        fail(Failure(f"cannot prepare {directory}: {exc}", code="deploy_init_failed", exit_code=1), as_json)
    if as_json:
        emit_json({"ok": True, "directory": str(done.directory), "nats_ca": str(done.tls.ca_file),
                   "shared_files": [str(p) for p in done.shared_files]})
        return
    out.print(f"wrote {done.directory}: docker compose up --build -d, then from this machine\n"
              f"  SDV_NATS_URL=tls://127.0.0.1:4222 SDV_NATS_CREDS={done.directory / 'operator.creds'} "
              f"SDV_NATS_CA={done.tls.ca_file} sdv ping", soft_wrap=True)
    if done.shared_files:
        err.print(f"[yellow]not run as root: {', '.join(p.name for p in done.shared_files)} are readable "
                  f"by all (the containers' uid must read them); only the owner-only {done.directory} "
                  "protects them[/]")
