"""Names the HTTP API and the dashboard accept in paths and queries (anything else is a 422)."""

import re

NAME = r"^[A-Za-z0-9_.:-]{1,128}$"  # ids of rollouts and alerts, filters
APP_NAME = r"^[a-z][a-z0-9-]{0,62}[a-z0-9]$"  # as the packager allows them: one subject token


def is_app_name(name: str) -> bool:
    return re.fullmatch(APP_NAME, name) is not None
