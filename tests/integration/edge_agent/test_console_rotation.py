"""Console files of a long-running app give their read blocks back to the filesystem: disk use
stays bounded while every line still arrives once, in order (native runtime, real process)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from sdv_edge_agent.adapters.console import KEEP_BYTES, console_path
from sdv_edge_agent.adapters.native import NativeRuntime
from sdv_edge_agent.ports import RunSpec

LINES = 60_000
# ~100 bytes a line: ~6 MB of output, then it stays alive like any long-running app.
CHATTY = f"""\
import sys, time
pad = "x" * 80
for i in range({LINES}):
    sys.stdout.write(f"line {{i:06d}} {{pad}}\\n")
sys.stdout.flush()
print("done", flush=True)
time.sleep(60)
"""


async def test_a_chatty_app_keeps_disk_use_bounded_and_loses_no_line(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "main.py").write_text(CHATTY)
    spec = RunSpec(app="chatty", version="1", argv=[sys.executable, "-u", "main.py"], cwd=app_dir,
                   env={"PATH": os.environ["PATH"]}, run_dir=tmp_path / "run", memory_mb=256, cpu=0.5)
    runtime = NativeRuntime()
    received: list[str] = []
    saved: dict[str, int] = {}

    def sink(rows: list[tuple[str, float, str]], offsets: dict[str, int]) -> None:
        received.extend(line for stream, _, line in rows if stream == "stdout")
        saved.update(offsets)

    proc = await runtime.start(spec)
    follower = runtime.follow_output(spec, proc, {}, sink)
    task = asyncio.create_task(follower.run())
    try:
        deadline = time.monotonic() + 60
        while "done" not in received:
            assert time.monotonic() < deadline, f"only {len(received)} lines arrived"
            await asyncio.sleep(0.05)
        stat = console_path(spec.run_dir, "stdout").stat()
        assert stat.st_size > 5_000_000  # the app's offsets (and our saved ones) are untouched ...
        assert saved["stdout"] == stat.st_size
        assert stat.st_blocks * 512 <= 2 * KEEP_BYTES + 256 * 1024  # ... but its blocks went back
        assert received[:-1] == [f"line {i:06d} {'x' * 80}" for i in range(LINES)]
        assert proc.alive()
    finally:
        await runtime.stop(proc, 2.0)
        await follower.finish()
        await task


async def test_lines_that_could_not_be_stored_are_delivered_on_the_next_try_exactly_once(tmp_path: Path) -> None:
    from sdv_edge_agent.adapters.console import FileFollower, console_path

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = console_path(run_dir, "stdout")
    out.write_text("one\ntwo\n")
    stored: list[str] = []
    failures = [OSError("database or disk is full")]

    def sink(rows: list[tuple[str, float, str]], offsets: dict[str, int]) -> None:
        if failures:
            raise failures.pop()
        stored.extend(line for _, _, line in rows)

    follower = FileFollower(run_dir, {}, sink)
    task = asyncio.create_task(follower.run())
    with out.open("a") as f:
        f.write("three\n")
    deadline = time.monotonic() + 10
    while len(stored) < 3:
        assert time.monotonic() < deadline, stored
        await asyncio.sleep(0.05)
    await follower.finish()
    await task
    assert stored == ["one", "two", "three"]
