"""Named roots (issue 12): this host's paths <-> the books' keys (pixgrep.roots), and the catalog at that edge.

Two hosts are two Catalogs on one SQLite file with different mounts for the same name: what one books,
the other reads back under its own mount point.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from pixgrep import migrate
from pixgrep.catalog import Catalog, Job, Link, Queue, QueueOp
from pixgrep.roots import RootMap, check_name, is_key, looks_like_key, make_key, split_key
from pixgrep.settings import ConfigError, load_settings

NAS_A = RootMap.of({"nas": "/mnt/nas"})
NAS_B = RootMap.of({"nas": "/Volumes/nas/"})


# --------------------------------------------------------------------------
# The mapping (pure functions)


def test_a_path_under_a_named_root_is_booked_by_name_and_relative_path() -> None:
    assert NAS_A.to_key("/mnt/nas/memes/x.png") == "nas:/memes/x.png"
    assert NAS_A.to_key("/mnt/nas") == "nas:"
    assert NAS_A.to_key("/mnt/nas/") == "nas:"
    assert split_key("nas:/memes/x.png") == ("nas", "memes/x.png")
    assert split_key("nas:") == ("nas", "")


def test_the_same_key_is_each_hosts_own_path() -> None:
    key = NAS_A.to_key("/mnt/nas/memes/x.png")
    assert NAS_B.to_key("/Volumes/nas/memes/x.png") == key
    assert NAS_A.to_disk(key) == "/mnt/nas/memes/x.png"
    assert NAS_B.to_disk(key) == "/Volumes/nas/memes/x.png"
    assert NAS_B.to_disk("nas:") == "/Volumes/nas"


def test_a_root_not_mounted_here_stays_a_key() -> None:
    other = RootMap.of({"photos": "/srv/photos"})
    assert other.to_disk("nas:/x.png") == "nas:/x.png"
    assert RootMap().to_disk("nas:/x.png") == "nas:/x.png"
    assert is_key("nas:/x.png") and not is_key("/mnt/nas/x.png")


def test_paths_outside_every_named_root_are_booked_as_they_are() -> None:
    assert NAS_A.to_key("/home/me/pics/x.png") == "/home/me/pics/x.png"
    assert NAS_A.to_disk("/home/me/pics/x.png") == "/home/me/pics/x.png"
    # A sibling whose name starts like the mount point is not under it.
    assert NAS_A.to_key("/mnt/nasty/x.png") == "/mnt/nasty/x.png"
    assert NAS_A.to_key("/mnt") == "/mnt"


def test_nested_named_roots_the_innermost_wins() -> None:
    m = RootMap.of({"nas": "/mnt/nas", "photos": "/mnt/nas/photos"})
    assert m.to_key("/mnt/nas/photos/2024/a.jpg") == "photos:/2024/a.jpg"
    assert m.to_key("/mnt/nas/photosx/a.jpg") == "nas:/photosx/a.jpg"
    assert m.to_key("/mnt/nas/a.jpg") == "nas:/a.jpg"
    assert m.to_disk("photos:/2024/a.jpg") == "/mnt/nas/photos/2024/a.jpg"


def test_unicode_and_undecodable_names_round_trip() -> None:
    m = RootMap.of({"nas": "/mnt/фото архив"})
    for path in ("/mnt/фото архив/日本語/ミーム.png", "/mnt/фото архив/" + os.fsdecode(b"bad\xff.png")):
        key = m.to_key(path)
        assert key.startswith("nas:/") and m.to_disk(key) == path
        assert RootMap.of({"nas": "/Volumes/x"}).to_disk(key) == "/Volumes/x" + path[len("/mnt/фото архив") :]


def test_a_root_mounted_at_slash() -> None:
    m = RootMap.of({"all": "/"})
    assert m.to_key("/a/b.png") == "all:/a/b.png"
    assert m.to_disk("all:/a/b.png") == "/a/b.png"
    assert m.to_disk("all:") == "/"


def test_trailing_slashes_and_keys_given_as_input() -> None:
    assert NAS_A.to_key("/mnt/nas/sub/") == "nas:/sub"
    assert NAS_A.to_disk("nas:/sub/") == "/mnt/nas/sub/"
    assert NAS_A.to_key("nas:/sub") == "nas:/sub"  # already a key
    assert make_key("nas", "/sub/") == "nas:/sub"
    assert looks_like_key("nas:/sub") and looks_like_key("nas:") and not looks_like_key("sub/dir")
    assert not looks_like_key("/mnt/nas")


def test_names_are_checked_and_folded_to_lower_case() -> None:
    assert check_name("NAS") == "nas"
    for bad in ("", "a b", "a/b", "a:b", "-x", "x" * 65):
        with pytest.raises(ValueError):
            check_name(bad)
    with pytest.raises(ValueError, match="named twice"):
        RootMap.of({"a": "/mnt/x", "b": "/mnt/x/"})
    with pytest.raises(ValueError, match="two mount points"):
        RootMap.of([("nas", "/a"), ("NAS", "/b")])


def test_settings_take_roots_from_toml_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[roots]\nNAS = "/mnt/nas/"\n')
    assert load_settings(cfg).root_map == NAS_A
    monkeypatch.setenv("PIXGREP_ROOTS__PHOTOS", "/srv/photos")
    assert load_settings(cfg).roots == {"nas": "/mnt/nas", "photos": "/srv/photos"}
    cfg.write_text('[roots]\n"my nas" = "/mnt/nas"\n')
    with pytest.raises(ConfigError, match="root name"):
        load_settings(cfg)


# --------------------------------------------------------------------------
# The catalog at the edge: two hosts, one set of books


@pytest.fixture
def hosts(tmp_path: Path) -> tuple[Catalog, Catalog]:
    a, b = Catalog(tmp_path / "books.sqlite"), Catalog(tmp_path / "books.sqlite")
    a.use_mounts(NAS_A)
    b.use_mounts(NAS_B)
    yield a, b
    a.close()
    b.close()


def _link(path: str, digest: str = "h1", root: str | None = None) -> Link:
    return Link(path, root, digest, 10, 20, 30)


def _contents(db: Catalog, *hashes: str, status: str = "pending") -> None:
    db.seed([{"hash": h, "status": status} for h in hashes], [])


def test_one_row_per_file_whichever_host_books_it(hosts: tuple[Catalog, Catalog]) -> None:
    a, b = hosts
    _contents(a, "h1")
    a.link([_link("/mnt/nas/x.png", root="/mnt/nas")])
    b.link([_link("/Volumes/nas/x.png", root="/Volumes/nas")])
    with a.session() as s:
        assert s.execute(sa.text("SELECT path, root FROM paths")).all() == [(b"nas:/x.png", b"nas:")]
    assert a.paths() == {"/mnt/nas/x.png": "h1"}
    assert b.paths() == {"/Volumes/nas/x.png": "h1"}
    assert b.paths_under("/Volumes/nas") == ["/Volumes/nas/x.png"]
    assert b.knows("/Volumes/nas/x.png") and b.knows("/Volumes/nas") and not b.knows("/mnt/nas")
    entry = b.path_entry("/Volumes/nas/x.png")
    assert entry is not None and (entry.path, entry.root) == ("/Volumes/nas/x.png", "/Volumes/nas")
    assert set(b.known_under("/Volumes/nas")) == {b"/Volumes/nas/x.png"}
    assert b.settled_stats(["/Volumes/nas/x.png"]) == {}  # no content row: not settled


def test_search_paths_and_in_dir_map_to_this_host(hosts: tuple[Catalog, Catalog], tmp_path: Path) -> None:
    a, b = hosts
    _contents(a, "h1", status="done")
    a.link([_link("/mnt/nas/sub/x.png"), _link("/home/a/y.png")])
    assert b.paths_for(["h1"]) == {"h1": ["/Volumes/nas/sub/x.png", "/home/a/y.png"]}
    assert b.paths_for(["h1"], in_dir="/Volumes/nas/sub/") == {"h1": ["/Volumes/nas/sub/x.png"]}
    assert b.paths_for(["h1"], in_dir="nas:/sub") == {"h1": ["/Volumes/nas/sub/x.png"]}
    assert a.paths_for(["h1"], in_dir="/Volumes/nas") == {}
    # A host that does not mount nas shows the key.
    c = Catalog(tmp_path / "books.sqlite")
    try:
        assert c.paths_for(["h1"]) == {"h1": ["/home/a/y.png", "nas:/sub/x.png"]}
        assert c.indexed_paths("h1")[1][0] == "nas:/sub/x.png"
    finally:
        c.close()
    assert b.remove_paths(["/Volumes/nas/sub/x.png"])[0] == 1
    assert a.paths() == {"/home/a/y.png": "h1"}


def test_a_folder_holding_a_named_root_finds_its_files_too(hosts: tuple[Catalog, Catalog]) -> None:
    a, _ = hosts
    _contents(a, "h1", status="done")
    a.link([_link("/mnt/nas/sub/x.png"), _link("/mnt/y.png"), _link("/mnt/nasty/z.png")])
    assert NAS_A.folders_under("/mnt") == [("/mnt", "/mnt"), ("nas:", "/mnt/nas")]
    assert NAS_A.folders_under("/mnt/nas/sub") == [("nas:/sub", "/mnt/nas/sub")]
    assert set(a.known_under("/mnt")) == {b"/mnt/nas/sub/x.png", b"/mnt/y.png", b"/mnt/nasty/z.png"}
    assert set(a.known_under("/mnt/nas/sub/")) == {b"/mnt/nas/sub/x.png"}
    assert sorted(a.paths_under("/mnt")) == ["/mnt/nas/sub/x.png", "/mnt/nasty/z.png", "/mnt/y.png"]
    assert a.paths_for(["h1"], in_dir="/mnt") == {"h1": ["/mnt/nas/sub/x.png", "/mnt/nasty/z.png", "/mnt/y.png"]}
    assert a.knows("/mnt/nas/sub") and not a.knows("/mnt/nas/other")


def test_moves_and_roots_are_booked_by_key(hosts: tuple[Catalog, Catalog]) -> None:
    a, b = hosts
    _contents(a, "h1")
    a.link([_link("/mnt/nas/old.png", root="/mnt/nas")])
    assert b.move("/Volumes/nas/old.png", "/Volumes/nas/new.png", size=10, mtime_ns=20, inode=31, root=None) == []
    assert a.paths() == {"/mnt/nas/new.png": "h1"}
    assert a.path_entry("/mnt/nas/new.png").root == "/mnt/nas"  # type: ignore[union-attr]
    a.add_roots(["/mnt/nas", "/home/a"])
    assert sorted(b.roots()) == ["/Volumes/nas", "/home/a"]
    b.remove_root("/Volumes/nas")
    assert a.roots() == ["/home/a"]


def test_the_queue_carries_keys_and_a_host_claims_only_what_it_can_open(
    hosts: tuple[Catalog, Catalog], tmp_path: Path
) -> None:
    a, b = hosts
    qa, qb = Queue(a, host="a"), Queue(b, host="b")
    qa.put([Job("/mnt/nas/new.png", QueueOp.MOVE, "/mnt/nas/old.png")])
    assert qb.in_flight("/Volumes/nas/new.png") and qb.in_flight("/Volumes/nas/old.png", moving_from=True)
    assert qb.live_moves() == {"/Volumes/nas/new.png": "/Volumes/nas/old.png"}
    # A third host without the nas mount neither claims the row nor wakes up for it.
    c = Catalog(tmp_path / "books.sqlite")
    try:
        qc = Queue(c, host="c")
        assert qc.claim(10) == [] and qc.next_due() is None
        assert qc.pending() == [("nas:/new.png", "move", "nas:/old.png")]
    finally:
        c.close()
    [item] = qb.claim(10)
    assert (item.path, item.src) == ("/Volumes/nas/new.png", "/Volumes/nas/old.png")
    # The same file seen by host a's watcher while b holds it: one row, marked for another pass.
    qa.put([Job("/mnt/nas/new.png")])
    assert [r[0] for r in qa.rows()] == ["/mnt/nas/new.png"]


def test_naming_an_indexed_root_rebooks_its_rows_under_the_name(tmp_path: Path) -> None:
    db = Catalog(tmp_path / "books.sqlite")
    try:
        _contents(db, "h1", "h2")
        db.link([_link("/mnt/nas/x.png", root="/mnt/nas"), _link("/mnt/nas/photos/y.png", "h2"), _link("/z.png")])
        db.add_roots(["/mnt/nas"])
        Queue(db).put([Job("/mnt/nas/q.png")])
        n = db.use_mounts(RootMap.of({"nas": "/mnt/nas", "photos": "/mnt/nas/photos"}))
        assert n == 4  # two paths, the root, the queued file
        with db.session() as s:
            keys = set(s.execute(sa.text("SELECT path FROM paths")).scalars())
            assert keys == {b"nas:/x.png", b"photos:/y.png", b"/z.png"}
            assert s.execute(sa.text("SELECT path FROM roots")).scalars().all() == [b"nas:"]
            assert s.execute(sa.text("SELECT path FROM queue")).scalars().all() == [b"nas:/q.png"]
        assert db.paths()["/mnt/nas/photos/y.png"] == "h2"
        assert db.use_mounts(db.mounts) == 0  # nothing left to adopt
    finally:
        db.close()


def test_mounts_of_every_host_are_booked_for_status(hosts: tuple[Catalog, Catalog]) -> None:
    a, b = hosts
    a.record_mounts("host-a", NAS_A)
    b.record_mounts("host-b", NAS_B)
    b.record_mounts("host-b", NAS_B)
    assert a.root_mounts() == [("nas", "host-a", "/mnt/nas"), ("nas", "host-b", "/Volumes/nas")]


# --------------------------------------------------------------------------
# The migration


def test_books_from_before_named_roots_upgrade_and_keep_their_absolute_paths(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = Catalog(path)
    _contents(db, "h1")
    db.link([_link("/mnt/nas/x.png", root="/mnt/nas")])
    db.close()
    with sqlite3.connect(path) as conn:  # back to revision 0002: no root_mounts
        conn.execute("DROP TABLE root_mounts")
        conn.execute("UPDATE alembic_version SET version_num = '0002'")
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert migrate.current(conn) == "0002"
    finally:
        engine.dispose()
    db = Catalog(path)  # upgrades
    try:
        with db.session() as s:
            assert s.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == migrate.HEAD == "0003"
        assert sa.inspect(db.engine).has_table("root_mounts")
        assert db.paths() == {"/mnt/nas/x.png": "h1"}  # no name given: booked as before
        db.use_mounts(NAS_A)
        assert db.paths() == {"/mnt/nas/x.png": "h1"}
        with db.session() as s:
            assert s.execute(sa.text("SELECT path FROM paths")).scalars().all() == [b"nas:/x.png"]
    finally:
        db.close()


# --------------------------------------------------------------------------
# pixgrep watch --name (no daemon: the config is what lasts)


def test_watch_name_writes_the_root_into_this_hosts_config(home: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from pixgrep_cli.main import main

    nas = tmp_path / "nas"
    (nas / "sub").mkdir(parents=True)
    res = CliRunner().invoke(main, ["watch", str(nas), "--name", "NAS"])
    assert res.exit_code == 0, res.output
    s = load_settings()
    assert s.roots == {"nas": str(nas)} and [str(f.path) for f in s.watch.folders] == [str(nas)]
    again = CliRunner().invoke(main, ["watch", str(nas), "--name", "nas"])
    assert again.exit_code == 0 and "named" not in again.output
    # Another name for the same folder, or the name for another folder: refused in one line, config unchanged.
    for args in ([str(nas), "--name", "other"], [str(nas / "sub"), "--name", "nas"], [str(nas), "--name", "a b"]):
        bad = CliRunner().invoke(main, ["watch", *args])
        assert bad.exit_code == 64 and "Traceback" not in bad.output, bad.output
    assert load_settings().roots == {"nas": str(nas)}


def test_status_names_each_root_and_where_hosts_mount_it(home: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from pixgrep_cli.main import main

    config = tmp_path / "config" / "pixgrep" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[roots]\nnas = "/mnt/nas"\n')
    db = Catalog(load_settings().db_path)
    db.record_mounts("host-b", NAS_B)
    db.record_mounts("host-c", RootMap.of({"pics": "/srv/pics"}))
    db.close()
    res = CliRunner().invoke(main, ["status"])
    assert res.exit_code == 0, res.output
    assert [ln for ln in res.output.splitlines() if ln.startswith("named:")] == [
        "named:    nas = /mnt/nas (elsewhere: host-b /Volumes/nas)",
        "named:    pics = not mounted here: its files show as pics:/… (elsewhere: host-c /srv/pics)",
    ]


def test_in_takes_a_named_roots_key_as_it_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pixgrep.filters import filters_from
    from pixgrep.request import SearchRequest
    from pixgrep_cli import fast

    monkeypatch.chdir(tmp_path)
    assert SearchRequest("q", in_dir="nas:/sub").in_dir == "nas:/sub"
    assert SearchRequest("q", in_dir="nas:").in_dir == "nas:"
    assert SearchRequest("q", in_dir="sub").in_dir == str(tmp_path / "sub")
    assert filters_from(in_dir="nas:/sub").search_kwargs()["in_dir"] == "nas:/sub"
    # The standard-library fast path leaves such a folder to the full CLI, which knows the keys.
    assert fast.parse_search(["search", "--in", "nas:/sub", "cat"]) is None
    assert fast.parse_search(["search", "--in", "sub", "cat"]) is not None


def test_a_name_dropped_from_the_config_is_named_in_a_warning(
    hosts: tuple[Catalog, Catalog], caplog: pytest.LogCaptureFixture
) -> None:
    from pixgrep.service.supervisor import book_mounts

    a, _ = hosts
    book_mounts(a, "host-a", RootMap.of({"nas": "/mnt/nas", "pics": "/srv/pics"}))
    assert not caplog.records
    book_mounts(a, "host-a", RootMap.of({"nas": "/mnt/nas"}))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["named roots pics are no longer in [roots]"]
    assert a.root_mounts() == [("nas", "host-a", "/mnt/nas")]
