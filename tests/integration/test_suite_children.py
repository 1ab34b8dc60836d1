"""`sdv up`'s supervision of a real child process (sdv_client.children): one that dies is
restarted; one that keeps dying without staying up makes the suite stop, loudly, with the
child's own last words — never a suite limping on without it."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from sdv_client.children import ChildProcess, GaveUp, RestartPolicy

pytestmark = pytest.mark.timeout(60)

QUICK = RestartPolicy(base_s=0.05, max_s=0.1, stable_s=60.0, give_up_after=3)


def child(tmp_path: Path, code: str) -> ChildProcess:
    return ChildProcess("flaky", lambda: [sys.executable, "-c", code], lambda: dict(os.environ),
                        tmp_path / "flaky.log", QUICK)


async def test_a_child_that_keeps_dying_stops_the_suite_loudly_with_its_last_words(tmp_path: Path) -> None:
    flaky = child(tmp_path, "print('cannot open the database: disk full', flush=True); raise SystemExit(3)")
    flaky.start()
    notes: list[str] = []

    async def supervise_until_it_gives_up() -> None:
        for _ in range(400):
            if (note := await flaky.supervise(time.monotonic())) is not None:
                notes.append(note)
            await asyncio.sleep(0.01)

    with pytest.raises(GaveUp) as stopped:
        await supervise_until_it_gives_up()
    message = str(stopped.value)
    assert message.startswith("flaky exited with code 3, 4 times in a row without staying up 60s")
    assert "cannot open the database: disk full" in message  # the log's last lines
    assert flaky.restarts == 4
    assert [n.split("; ")[1].split(" (")[0] for n in notes] == [
        "restarted", "restarting in 0.05s", "restarted", "restarting in 0.1s", "restarted"]


async def test_a_child_that_died_once_is_restarted_at_once(tmp_path: Path) -> None:
    sleeper = child(tmp_path, "import time; time.sleep(60)")
    sleeper.start()
    first = sleeper.pid
    assert first is not None
    os.kill(first, 9)
    sleeper.process.wait(5)  # type: ignore[union-attr]
    note = await sleeper.supervise(time.monotonic())
    assert note is not None
    assert note.startswith("flaky exited with code -9; restarted")
    assert sleeper.running()
    assert sleeper.pid != first
    sleeper.stop()
    assert not sleeper.running()


async def test_a_child_that_cannot_be_started_again_stops_the_suite_with_the_reason(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "raise SystemExit(1)"]
    gone = ChildProcess("server", lambda: list(argv), lambda: dict(os.environ), tmp_path / "server.log", QUICK)
    gone.start()
    argv[0] = str(tmp_path / "uninstalled-binary")  # e.g. a server binary removed while it ran

    async def supervise_until_it_gives_up() -> None:
        for _ in range(400):
            await gone.supervise(time.monotonic())
            await asyncio.sleep(0.01)

    with pytest.raises(GaveUp, match=r"server could not be started \(\[Errno 2\] No such file"):
        await supervise_until_it_gives_up()
