"""Session links: a Live sideband (or fork) is linked to its primary by the API session id, whichever is
recorded first, and Store.linked_sessions reads the link both ways."""

from __future__ import annotations

from pathlib import Path

from rtproxy.store import Store, connect, insert_session, link_session


def add(conn, sid: str, variant: str, started: str) -> None:  # type: ignore[no-untyped-def]
    insert_session(conn, {"id": sid, "started_at": started, "status": "closed", "api": "live", "variant": variant})


def test_a_sideband_recorded_after_its_primary_links_to_the_latest_primary(tmp_path: Path) -> None:
    """The sideband takes the newest primary with its API id; an unrelated primary stays unlinked."""
    db = tmp_path / "l.db"
    conn = connect(str(db))
    add(conn, "p-old", "primary", "2026-12-01T10:00:00Z")
    add(conn, "p-new", "primary", "2026-12-01T11:00:00Z")
    add(conn, "p-other", "primary", "2026-12-01T11:30:00Z")
    link_session(conn, "p-old", "sess_1", "primary")
    link_session(conn, "p-new", "sess_1", "primary")
    link_session(conn, "p-other", "sess_2", "primary")
    add(conn, "side", "sideband", "2026-12-01T12:00:00Z")
    link_session(conn, "side", "sess_1", "sideband")
    conn.commit()
    conn.close()
    with Store(db) as store:
        assert store.session("side")["linked_to"] == "p-new"
        assert [(r["id"], r["relation"]) for r in store.linked_sessions("p-new")] == [("side", "sideband")]
        assert [(r["id"], r["relation"]) for r in store.linked_sessions("side")] == [("p-new", "primary")]
        assert store.linked_sessions("p-other") == [] and store.linked_sessions("p-old") == []


def test_a_primary_that_learns_its_id_after_the_sideband_takes_it(tmp_path: Path) -> None:
    """A sideband recorded before its primary's session.started reached the writer is linked once it does."""
    db = tmp_path / "l.db"
    conn = connect(str(db))
    add(conn, "side", "sideband", "2026-12-01T10:00:01Z")
    link_session(conn, "side", "sess_9", "sideband")
    add(conn, "prim", "primary", "2026-12-01T10:00:00Z")
    link_session(conn, "prim", "sess_9", "primary")
    conn.commit()
    conn.close()
    with Store(db) as store:
        assert store.session("side")["linked_to"] == "prim" and store.session("prim")["linked_to"] is None
        assert [r["id"] for r in store.linked_sessions("prim")] == ["side"]


def test_imported_recordings_of_a_primary_and_its_sideband_link_again(tmp_path: Path) -> None:
    """Exported (the API session id is in the header, the database-local link is not) and imported into another
    database in either order, a sideband links to its primary again."""
    from rtproxy.protocols.wire import Direction, Frame
    from rtproxy.recording import read_recording, write_recording

    db = tmp_path / "a.db"
    conn = connect(str(db))
    add(conn, "prim", "primary", "2026-12-01T10:00:00Z")
    link_session(conn, "prim", "sess_7", "primary")
    add(conn, "side", "sideband", "2026-12-01T10:00:01Z")
    link_session(conn, "side", "sess_7", "sideband")
    conn.commit()
    conn.close()
    frame = [Frame(0, 0.0, Direction.SERVER, '{"type":"info","event_id":"e","code":"x","message":"m"}')]
    with Store(db) as store:
        for sid in ("prim", "side"):
            write_recording(tmp_path / f"{sid}.jsonl", store.session(sid), frame)
    assert "linked_to" not in read_recording(tmp_path / "side.jsonl").session
    for order in (("prim", "side"), ("side", "prim")):
        with Store(tmp_path / f"{order[0]}-first.db", create=True) as store:
            ids = {n: store.import_session(read_recording(tmp_path / f"{n}.jsonl").session, frame) for n in order}
            assert store.session(ids["side"])["linked_to"] == ids["prim"]
            assert [r["id"] for r in store.linked_sessions(ids["prim"])] == [ids["side"]]


async def test_a_realtime_session_keeps_the_api_session_id_of_session_created(tmp_path: Path) -> None:
    """Realtime too: the writer stores session.created's session.id as the session's api_session_id."""
    from openai import AsyncOpenAI

    from tests.conftest import make_key, start_proxy
    from tests.upstream import ScriptedUpstream

    async with ScriptedUpstream() as up:
        running, runner = await start_proxy(tmp_path / "rt.db", up.url)
        try:
            client = AsyncOpenAI(api_key=make_key(), websocket_base_url=running.ws_base)
            async with client.realtime.connect(model="gpt-realtime") as conn:
                created = await conn.recv()
            (sid,) = await running.settle()
        finally:
            await running.proxy.shutdown()
            await runner.cleanup()
            running.recorder.close()
    assert created.type == "session.created"
    with Store(tmp_path / "rt.db") as store:
        assert store.session(sid)["api_session_id"] == created.session.id
        assert store.linked_sessions(sid) == []
