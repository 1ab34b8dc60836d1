"""Composition root of the registry: settings, routers, the shared service runtime."""

import asyncio

from sdv_events.service import run_service
from sdv_registry.adapters import routers
from sdv_registry.settings import SERVICE, load_settings


async def serve() -> None:
    await run_service(SERVICE, load_settings(), routers=routers())


def main() -> None:
    asyncio.run(serve())
