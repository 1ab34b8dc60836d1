"""Seat adjuster: when the driver door opens while the vehicle stands still, move the driver
seat to the preset position (SEAT_PRESET_MM, default 350) so getting in is easy."""

from __future__ import annotations

import asyncio
import os

from vehicle_signals import connect


async def run(preset_mm: int) -> None:
    async with connect() as vehicle:
        print(f"seat-adjuster: preset {preset_mm} mm", flush=True)
        async for is_open in vehicle.cabin_door_row1_driver_side_is_open.subscribe():
            speed = await vehicle.speed.get() or 0.0
            if is_open and speed < 1.0:
                await vehicle.cabin_seat_row1_driver_side_position.set(preset_mm)
                print(f"seat-adjuster: door open at {speed:.1f} km/h, seat -> {preset_mm} mm",
                      flush=True)


if __name__ == "__main__":
    asyncio.run(run(int(os.environ.get("SEAT_PRESET_MM", "350"))))
