"""Speed monitor: subscribes to Vehicle.Speed and prints a warning line over the limit.

Config: SPEED_LIMIT_KMH (default 130). Output is line-oriented so the agent can stream it.
"""

from __future__ import annotations

import asyncio
import os
import signal

from speed_rules import SpeedRule
from vehicle_signals import connect


async def watch(limit: float) -> None:
    rule = SpeedRule(limit_kmh=limit)
    async with connect() as vehicle:
        print(f"speed-monitor: watching Vehicle.Speed, limit {limit:.0f} km/h", flush=True)
        async for speed in vehicle.speed.subscribe():
            message = rule.check(speed)
            if message:
                print(message, flush=True)


def main() -> None:
    limit = float(os.environ.get("SPEED_LIMIT_KMH", "130"))
    loop = asyncio.new_event_loop()
    task = loop.create_task(watch(limit))
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        print("speed-monitor: stopped", flush=True)
    finally:
        loop.close()


if __name__ == "__main__":
    main()
