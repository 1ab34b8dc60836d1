"""Typed validation failure of an app: every problem with the file (and line) at fault."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    where: str  # "main.py:12", "sdv-app.toml: app.version", "vss.writes"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class AppInvalid(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems
