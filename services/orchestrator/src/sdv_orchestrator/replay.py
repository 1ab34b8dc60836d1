"""`python -m sdv_orchestrator.replay ROLLOUT_ID`: an audit's second opinion on a rollout. In a
fresh process, read the rollout's stream from the orchestrator's store (its history over NATS),
fold it with the same decider the service uses, build the view, and compare it with what the
live service answers. Prints JSON; exit code 0 when they agree, 1 when they differ, 3 when the
service or NATS cannot be reached. (`sdv audit replay --rollout ID` runs this.)"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NatsClient

from sdv_events.auth.client_tls import ca_from_env, tls_options
from sdv_events.bus import CommandClient, CommandError
from sdv_events.history import MAX_LIMIT, HistoryQuery, read_history
from sdv_events.ids import stream_id
from sdv_events.schemas.rollouts import MAX_PAGE, GetRollout, RolloutView
from sdv_orchestrator.domain.rollout import rollout_decider
from sdv_orchestrator.domain.rollout_view import view_of

PAGED = ("waves", "devices")


async def live_view(client: CommandClient, rollout_id: str) -> dict[str, Any]:
    """Every page of the live `get`, as one view (offset/limit dropped)."""
    whole: dict[str, Any] = {}
    offset = 0
    while True:
        page = await client.call("orchestrator", "get", GetRollout(rollout_id=rollout_id, offset=offset,
                                                                    limit=MAX_PAGE), RolloutView)
        doc = msgspec.to_builtins(page)
        if not whole:
            whole = doc
        else:
            for key in PAGED:
                whole[key] += doc[key]
            whole["excluded"].update(doc["excluded"])
        offset += MAX_PAGE
        if offset >= max(page.waves_total, page.devices_total, page.excluded_total):
            break
    for key in ("offset", "limit"):
        whole.pop(key, None)
    return whole


async def replayed_view(nc: NatsClient, rollout_id: str) -> tuple[dict[str, Any], int]:
    state = rollout_decider.empty()
    count = 0
    query = HistoryQuery(stream_id=stream_id("rollout", rollout_id), limit=MAX_LIMIT)
    async for event in read_history(nc, "orchestrator", query):
        state = rollout_decider.evolve(state, event.data)
        count += 1
    if state.created is None:
        return {}, count
    doc = msgspec.to_builtins(view_of(rollout_id, state, 0, 10**9))
    for key in ("offset", "limit"):
        doc.pop(key, None)
    return doc, count


def differences(live: dict[str, Any], replayed: dict[str, Any]) -> list[str]:
    found = []
    for key in sorted(live.keys() | replayed.keys()):
        if live.get(key) != replayed.get(key):
            found.append(f"{key}: live {json.dumps(live.get(key))[:200]} != replayed "
                         f"{json.dumps(replayed.get(key))[:200]}")
    return found


async def replay(rollout_id: str) -> tuple[int, dict[str, Any]]:
    url = os.environ.get("SDV_NATS_URL") or "nats://127.0.0.1:4222"
    creds = os.environ.get("SDV_NATS_CREDS") or None
    try:
        auth = {"user_credentials": creds} if creds else {}
        nc = await nats.connect(url, connect_timeout=3, allow_reconnect=False, max_reconnect_attempts=1,
                                **auth, **tls_options(url, ca_from_env()))
    except Exception as exc:
        return 3, {"ok": False, "error": f"cannot reach NATS at {url}: {exc!r}"}
    try:
        client = CommandClient(nc, actor="audit-replay", timeout=30.0)
        replayed, events = await replayed_view(nc, rollout_id)
        if not replayed:
            return 1, {"ok": False,
                       "error": f"no events of rollout {rollout_id!r} in the orchestrator's store"}
        live = await live_view(client, rollout_id)
    except CommandError as exc:
        return 3, {"ok": False, "error": f"{exc.code}: {exc.message}"}
    finally:
        await nc.close()
    diff = differences(live, replayed)
    return (0 if not diff else 1), {"ok": not diff, "rollout_id": rollout_id, "events": events,
                                    "equal": not diff, "status": replayed.get("status"),
                                    "differences": diff}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sdv_orchestrator.replay", description=__doc__)
    parser.add_argument("rollout_id")
    args = parser.parse_args(argv)
    code, doc = asyncio.run(replay(args.rollout_id))
    sys.stdout.write(json.dumps(doc) + "\n")
    raise SystemExit(code)


if __name__ == "__main__":
    main()
