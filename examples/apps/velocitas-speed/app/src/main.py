"""Speed reporter: an Eclipse Velocitas vehicle app, laid out as the Velocitas Python template lays
one out (app/AppManifest.json, app/requirements.txt, app/src/main.py, the `vehicle` model the
Velocitas tool chain generates into gen/vehicle_model). SDV Fleet publishes this folder unchanged.

It follows Vehicle.Speed through the KUKSA databroker (sdv.databroker.v1) and publishes every
value on the vehicle's MQTT broker; a request on speedreporter/getSpeed is answered with the
current speed.
"""

import asyncio
import json
import logging
import signal

from vehicle import Vehicle, vehicle  # type: ignore
from velocitas_sdk.util.log import (  # type: ignore
    get_opentelemetry_log_factory,
    get_opentelemetry_log_format,
)
from velocitas_sdk.vdb.reply import DataPointReply
from velocitas_sdk.vehicle_app import VehicleApp, subscribe_topic

logging.setLogRecordFactory(get_opentelemetry_log_factory())
logging.basicConfig(format=get_opentelemetry_log_format())
logging.getLogger().setLevel("INFO")
logger = logging.getLogger("speedreporter")

CURRENT_SPEED_TOPIC = "speedreporter/currentSpeed"
SPEED_REQUEST_TOPIC = "speedreporter/getSpeed"
SPEED_RESPONSE_TOPIC = "speedreporter/getSpeed/response"


class SpeedReporterApp(VehicleApp):
    """Publishes Vehicle.Speed on MQTT as it changes, and on request."""

    def __init__(self, vehicle_client: Vehicle):
        super().__init__()
        self.Vehicle = vehicle_client

    async def on_start(self):
        # Called by the SDK once its middleware (MQTT) is up: now follow the signal.
        await self.Vehicle.Speed.subscribe(self.on_speed_change)
        logger.info("SpeedReporter follows Vehicle.Speed")

    async def on_speed_change(self, data: DataPointReply):
        speed = data.get(self.Vehicle.Speed).value
        logger.info("Vehicle.Speed %s km/h", speed)
        await self.publish_event(CURRENT_SPEED_TOPIC, json.dumps({"speed": speed}))

    @subscribe_topic(SPEED_REQUEST_TOPIC)
    async def on_speed_request(self, data: str) -> None:
        speed = (await self.Vehicle.Speed.get()).value
        await self.publish_event(
            SPEED_RESPONSE_TOPIC,
            json.dumps({"result": {"status": 0, "message": f"Current Speed = {speed}"}}),
        )


async def main():
    logger.info("Starting SpeedReporter")
    await SpeedReporterApp(vehicle).run()


LOOP = asyncio.get_event_loop()
LOOP.add_signal_handler(signal.SIGTERM, LOOP.stop)
LOOP.run_until_complete(main())
LOOP.close()
