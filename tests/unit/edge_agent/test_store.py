"""The agent's SQLite store: records round-trip, counters, the fact outbox, console logs + FTS5."""

from __future__ import annotations

from pathlib import Path

from sdv_edge_agent.adapters.store import AgentStore
from sdv_edge_agent.domain.lifecycle import AppState
from sdv_edge_agent.domain.records import AppRecord
from sdv_events.schemas.deployment import DesiredApp, DesiredState
from sdv_events.schemas.packages import PackageInfo

PKG = PackageInfo(name="a", version="1.0.0", digest="d" * 64, size=1, object_name="d" * 64,
                  manifest_digest="m", signature="s", key_id="k", channel="dev", runtime="native",
                  entry_point="main.py", python_version="3.11")


def test_records_and_desired_state_survive_a_reopen(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.db")
    record = AppRecord(name="a", state=AppState.PAUSED, package=PKG, previous=PKG, config={"K": "v"},
                       rollout_id="r1", revision=6, healthy=True, healthy_at=1_800_000_000.5, restarts=2,
                       crashes=(1.0, 2.0), runs=4, held="paused", pid=42, pid_started=123.5,
                       candidate=(43, 124.0))
    store.save_app(record)
    store.save_desired(DesiredState(device_id="car", revision=7, apps={"a": DesiredApp(package=PKG)}))
    store.close()
    again = AgentStore(tmp_path / "agent.db")
    assert again.load_apps() == [record]
    desired = again.load_desired()
    assert desired is not None
    assert desired.revision == 7
    again.delete_app("a")
    assert again.load_apps() == []


def test_counters_are_per_key_and_persistent(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.db")
    assert [store.next_counter("v") for _ in range(3)] == [1, 2, 3]
    assert store.next_counter("other") == 1
    store.close()
    assert AgentStore(tmp_path / "agent.db").next_counter("v") == 4


def test_outbox_keeps_order_ignores_a_repeated_fact_and_marks_sent(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.db")
    for i in range(3):
        store.add_fact(f"id-{i}", f"subj.{i}", {"Nats-Msg-Id": f"id-{i}"}, b"%d" % i)
    store.add_fact("id-1", "subj.again", {}, b"again")
    assert store.has_fact("id-1")
    rows = store.unsent_facts()
    assert [(r.msg_id, r.subject, r.payload) for r in rows] == [("id-0", "subj.0", b"0"), ("id-1", "subj.1", b"1"),
                                                                 ("id-2", "subj.2", b"2")]
    assert rows[0].headers == {"Nats-Msg-Id": "id-0"}
    store.mark_fact_sent(rows[0].seq)
    assert [r.msg_id for r in store.unsent_facts()] == ["id-1", "id-2"]
    store.prune_facts(older_than_s=-1)
    assert not store.has_fact("id-0")
    assert store.has_fact("id-1")


def test_logs_tail_search_offsets_and_pruning(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "agent.db")
    store.add_logs("a", [("stdout", 1.0, "speed 120 ok"), ("stderr", 1.1, "WARNING speed over limit")],
                   "a/1", {"stdout": 13, "stderr": 25})
    store.add_logs("b", [("stdout", 1.2, "other app speaking")], "b/1", {"stdout": 19})
    assert store.tail_offsets("a/1") == {"stdout": 13, "stderr": 25}
    assert [r.line for r in store.tail_logs("a")] == ["speed 120 ok", "WARNING speed over limit"]
    assert [r.line for r in store.tail_logs("a", stream="stderr")] == ["WARNING speed over limit"]
    # No app: the device's last lines, whichever app wrote them (`sdv app logs DEVICE`).
    assert [(r.app, r.line) for r in store.tail_logs(None, limit=2)] == [
        ("a", "WARNING speed over limit"), ("b", "other app speaking")]
    assert [r.line for r in store.search_logs("speed")] == ["speed 120 ok", "WARNING speed over limit"]
    assert [r.app for r in store.search_logs('"over limit"')] == ["a"]
    assert [r.line for r in store.search_logs("spea*", app="b")] == ["other app speaking"]
    unsent = store.unsent_logs()
    assert len(unsent) == 3
    store.mark_logs_sent([unsent[0].id, unsent[1].id])
    assert [r.id for r in store.unsent_logs()] == [unsent[2].id]
    store.prune_logs(keep=2)  # the newest two lines stay (unsent ones always do)
    assert [r.line for r in store.tail_logs("a")] == ["WARNING speed over limit"]
    assert store.search_logs("120") == []  # the FTS index follows deletions
    store.reset_tail("a/1")
    assert store.tail_offsets("a/1") == {}
