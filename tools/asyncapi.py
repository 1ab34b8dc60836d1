"""Writes the AsyncAPI document of the bus (`docs/asyncapi.json` and the copy the monitor serves,
`libs/events/src/sdv_events/asyncapi/asyncapi.json`), or with `--check` says whether they are
stale. Run it as `./dev asyncapi [--check]`.

It lives outside every package because it must see every service's commands, and a service
may not import another (nor may `sdv_events` or `sdv_client` import a service: pyproject.toml,
`[tool.importlinter]`). It builds each service's command routers — building one only records
its commands (`register_command`); no handler runs, so the objects they close over are not
needed — and the health commands every service serves.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, cast

from sdv_events.asyncapi import DOCUMENT_FILE, REGENERATE, render
from sdv_events.asyncapi.document import build_document
from sdv_events.bus.routes import CommandSpec, registered_commands
from sdv_events.service import health_router
from sdv_monitor.adapters.commands import command_router as monitor_commands
from sdv_orchestrator.adapters.commands import command_router as orchestrator_commands
from sdv_orchestrator.adapters.commands import public_key_router
from sdv_orchestrator.adapters.policy_commands import policy_router
from sdv_packager.adapters.commands import command_router as packager_commands
from sdv_registry.adapters.commands import command_router as registry_commands
from sdv_registry.adapters.operator_commands import operator_router

ROOT = Path(__file__).resolve().parents[1]
TARGETS = (ROOT / "docs" / DOCUMENT_FILE,
           ROOT / "libs" / "events" / "src" / "sdv_events" / "asyncapi" / DOCUMENT_FILE)
# The services that run `run_service` (and so serve ping, history, verify and rebuild).
SERVICES = ("packager", "registry", "orchestrator", "monitor")


def served_commands() -> Mapping[str, CommandSpec]:
    unused = cast(Any, None)
    packager_commands(unused)
    registry_commands(unused)
    operator_router(unused)
    orchestrator_commands(unused)
    public_key_router(unused)
    policy_router(unused)
    monitor_commands(unused, unused)
    for service in SERVICES:
        health_router(service, unused, unused, {}, unused)
    return dict(registered_commands())


def document() -> str:
    return render(build_document(served_commands(), version=metadata.version("sdv-events")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a written copy is stale")
    parser.add_argument("--target", type=Path, action="append",
                        help="file to write or check (default: both committed copies)")
    args = parser.parse_args(argv)
    text = document()
    targets = args.target or list(TARGETS)
    if args.check:
        stale = [t for t in targets if not t.exists() or t.read_text() != text]
        for target in stale:
            print(f"{target} is out of date with the code: run `{REGENERATE}` and commit it",
                  file=sys.stderr)
        return 1 if stale else 0
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
