"""`python -m sdv_events.relay_main --database-url … --schema … --nats-url …`: run one relay.

Services run their relay in-process; this entry point is for operations (a relay of its own
per schema) and for the crash tests, which kill it with SIGKILL mid-batch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import nats

from sdv_events.auth.client_tls import ca_from_env, tls_options
from sdv_events.logs import configure_logging
from sdv_events.provisioning import provision
from sdv_events.relay import Relay
from sdv_events.store import EventStore


async def run(database_url: str, schema: str, nats_url: str, batch_size: int) -> None:
    store = await EventStore.open(database_url, schema)
    # The suite's credentials and CA, as the services get them (SDV_NATS_CREDS, SDV_NATS_CA).
    nc = await nats.connect(nats_url, name=f"sdv-relay-{schema}", max_reconnect_attempts=-1,
                            user_credentials=os.environ.get("SDV_NATS_CREDS") or None,
                            **tls_options(nats_url, ca_from_env()))
    js = nc.jetstream()
    await provision(js)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await Relay(store, js, batch_size=batch_size).run(stop)
    finally:
        await nc.drain()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Relay one event store schema to JetStream")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    configure_logging("relay")
    asyncio.run(run(args.database_url, args.schema, args.nats_url, args.batch_size))


if __name__ == "__main__":
    main()
