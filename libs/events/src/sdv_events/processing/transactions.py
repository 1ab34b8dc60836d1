"""The runner's transactions, and what a connection lost in one means.

asyncpg answers a connection lost in a transaction with its complaint that a closed connection
cannot roll back (an `InterfaceError`, which says nothing of the cause), and an event being
applied then fails with it as if it were the event's fault. Here it is a `PostgresConnectionLost`
(a ConnectionError: transient, waited out, the work retried) — unless it was lost while
committing: then the transaction may or may not be in, and the runner must not retry the same
steps in place but ask the ledger again (`CommitOutcomeUnknown`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from sdv_events.processing.failures import cause


class PostgresConnectionLost(ConnectionError):
    """The connection to PostgreSQL was lost in the middle of a transaction."""


class CommitOutcomeUnknown(PostgresConnectionLost):
    """The connection was lost while committing: the transaction may or may not be in."""


def lost(conn: asyncpg.Connection) -> bool:
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # the pool took it back when it closed
        return True


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection in a transaction, committed when the block ends."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            yield conn
        except BaseException as exc:
            if lost(conn):
                raise PostgresConnectionLost(
                    f"the connection to PostgreSQL was lost in a transaction: {cause(exc)}") from exc
            await tx.rollback()
            raise
        try:
            await tx.commit()
        except Exception as exc:
            if lost(conn):
                raise CommitOutcomeUnknown(
                    f"the connection to PostgreSQL was lost while committing: {cause(exc)}") from exc
            raise
