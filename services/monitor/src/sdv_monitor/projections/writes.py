"""`Writes`: the statements one event means to every part of the read model, sent to
PostgreSQL as one statement — one round trip per event instead of one per statement.

Several statements become data-modifying CTEs of one `WITH … SELECT`. PostgreSQL runs them on
one snapshot, in no set order, so each must stand alone: no two may write the same table (each
part writes its own tables, and no event makes a part write one table twice) and none may read
what another writes for the same event (a statement reads only rows of earlier events, which
earlier statements of the transaction made visible). A failing statement fails them all, as
one event's writes failed together before (the runner undoes an event as a whole).

Catching up 34,000 events, the monitor spent its time on round trips to PostgreSQL (6 to 8 per
event, two of them the runner's savepoint); see bench/monitor.py.
"""

from __future__ import annotations

import functools
import re

import asyncpg

_PARAM = re.compile(r"\$(\d+)")


@functools.lru_cache(maxsize=1024)
def _shifted(sql: str, offset: int) -> str:
    """`sql` with its parameters $n renumbered $n+offset (the same few texts, again and again)."""
    return _PARAM.sub(lambda m: f"${int(m.group(1)) + offset}", sql)


class Writes:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self.args: list[object] = []
        self.tables: list[str] = []

    def add(self, table: str, sql: str, *args: object) -> None:
        """One statement writing `table` (qualified), its parameters numbered from $1. The SQL
        of the read models holds no `$` but parameters."""
        if table in self.tables:
            raise ValueError(f"{table} written twice for one event: the second would not see the first")
        if self.args:
            sql = _shifted(sql, len(self.args))
        self.tables.append(table)
        self.statements.append(sql)
        self.args.extend(args)

    async def run(self, conn: asyncpg.Connection) -> None:
        if len(self.statements) == 1:
            await conn.execute(self.statements[0], *self.args)
        elif self.statements:
            ctes = ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(self.statements))
            await conn.execute(f"WITH {ctes} SELECT", *self.args)
