#!/usr/bin/env bash
# Makes a local Docker engine possible for the edge agent's docker runtime and its tests:
# Debian's `docker.io` (dockerd + containerd + runc) and `debootstrap` (builds the Python 3.11
# base image from Debian packages: nothing can be pulled from a registry here). Idempotent: only
# what is missing is installed; nothing is started (tests start a private engine themselves,
# see sdv_events.servers.docker_engine).
set -euo pipefail

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
if [ "${#need[@]}" -eq 0 ]; then
  echo "docker-engine-setup: dockerd and debootstrap present" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "docker-engine-setup: missing ${need[*]}; run as root to install them" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "docker-engine-setup: missing ${need[*]} and no apt-get (not a Debian system)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "docker-engine-setup: installing ${need[*]}" >&2
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "docker-engine-setup: installed ${need[*]}" >&2
