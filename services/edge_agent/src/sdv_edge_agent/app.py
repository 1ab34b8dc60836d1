"""Composition root of the edge agent: settings, routers, the shared service runtime."""

import asyncio

from sdv_edge_agent.adapters import routers
from sdv_edge_agent.settings import SERVICE, load_settings
from sdv_events.service import run_service


async def serve() -> None:
    await run_service(SERVICE, load_settings(), routers=routers())


def main() -> None:
    asyncio.run(serve())
