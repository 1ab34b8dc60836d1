"""`Writes`: the statements one event means to every part of the read model, sent to
PostgreSQL as one statement — one round trip per event instead of one per statement.

Several statements become data-modifying CTEs of one `WITH … SELECT`. PostgreSQL runs them on
one snapshot, in no set order, so each must stand alone: no two may write the same table (each
part writes its own tables, and no event makes a part write one table twice) and none may read
what another writes for the same event (a statement reads only rows of earlier events, which
earlier statements of the transaction made visible). A failing statement fails them all, as
one event's writes failed together before (the runner undoes an event as a whole).

`Batch`: a fetched batch's statements in order, a run of the same statement text as one
`executemany` (one round trip). Catching up 34,000 events, the monitor spent its time on round
trips to PostgreSQL (6 to 8 per event, two of them the runner's savepoint before the runner
handed it batches); see bench/README.md.
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

    def statement(self) -> tuple[str, list[object]] | None:
        """The one statement and its parameters (None: nothing to write)."""
        if len(self.statements) == 1:
            return self.statements[0], self.args
        if self.statements:
            ctes = ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(self.statements))
            return f"WITH {ctes} SELECT", self.args
        return None

    async def run(self, conn: asyncpg.Connection) -> None:
        if (statement := self.statement()) is not None:
            await conn.execute(statement[0], *statement[1])


def columns(rows: list[tuple[object, ...]]) -> list[list[object]]:
    """Rows as one array per column: the parameters of an `unnest($1::…[], $2::…[], …)`."""
    return [list(column) for column in zip(*rows, strict=True)]


class Batch:
    """The statements of a batch of events, in order: a run of events whose statement is the
    same text (as a catch-up brings them: a wave's DeviceTargeted, then its DeviceSucceeded, …)
    goes as one `executemany` — one round trip, each event still its own statement, so each
    sees what the events before it wrote."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, list[list[object]]]] = []

    def add(self, writes: Writes) -> None:
        if (statement := writes.statement()) is None:
            return
        sql, args = statement
        if self.runs and self.runs[-1][0] == sql:
            self.runs[-1][1].append(args)
        else:
            self.runs.append((sql, [args]))

    async def run(self, conn: asyncpg.Connection) -> None:
        for sql, rows in self.runs:
            if len(rows) == 1:
                await conn.execute(sql, *rows[0])
            else:
                await conn.executemany(sql, rows)
