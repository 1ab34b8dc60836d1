#!/usr/bin/env bash
# Makes the Eclipse Velocitas app tests possible: Debian's `mosquitto` MQTT broker (each test
# starts its own on a free port; a Velocitas VehicleApp connects to MQTT before anything else).
# Idempotent: installs only when missing; without it those tests skip and say why.
set -euo pipefail

if { command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } && command -v mosquitto_sub >/dev/null 2>&1; then
  echo "mqtt-setup: mosquitto present" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "mqtt-setup: missing mosquitto; run as root to install it" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "mqtt-setup: missing mosquitto and no apt-get (not a Debian system)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "mqtt-setup: installing mosquitto and mosquitto-clients" >&2
apt-get update -qq
apt-get install -y -qq --no-install-recommends mosquitto mosquitto-clients >/dev/null
# Debian starts the packaged service on 1883; the tests run brokers of their own.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now mosquitto >/dev/null 2>&1 || true; fi
echo "mqtt-setup: installed mosquitto" >&2
