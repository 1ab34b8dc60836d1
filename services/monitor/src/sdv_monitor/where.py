"""A WHERE clause built from optional filters, with numbered parameters (never values in SQL)."""

from __future__ import annotations

from typing import Any


class Where:
    def __init__(self) -> None:
        self.terms: list[str] = ["true"]
        self.params: list[Any] = []

    def add(self, sql: str, value: Any) -> Where:
        """`sql` with `$?` where the value goes (every `$?` is the same value); skipped when
        `value` is None."""
        if value is not None:
            self.params.append(value)
            self.terms.append(sql.replace("$?", f"${len(self.params)}"))
        return self

    def equal(self, column: str, value: Any) -> Where:
        return self.add(f"{column} = $?", value)

    def term(self, sql: str) -> Where:
        self.terms.append(sql)
        return self

    @property
    def clause(self) -> str:
        return " AND ".join(self.terms)

    def page(self) -> str:
        """`LIMIT … OFFSET …`, their values passed after the filters' (`*params, limit, offset`)."""
        n = len(self.params)
        return f"LIMIT ${n + 1} OFFSET ${n + 2}"
