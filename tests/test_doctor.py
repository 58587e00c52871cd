"""``pixgrep doctor``: the consistency oracle finds each kind of damage, and ``--repair`` mends it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_corpus, corpus_files
from pixgrep.errors import AlreadyRunning
from pixgrep.service.instance import InstanceLock
from pixgrep.settings import load_settings


def test_doctor_refuses_while_a_daemon_holds_the_index(home: Path) -> None:
    from pixgrep.doctor import diagnose

    settings = load_settings()
    with InstanceLock(settings.home), pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
        diagnose(settings)


def test_doctor_checks_permissions_without_an_index(home: Path) -> None:
    from pixgrep.doctor import diagnose

    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    (home / "notes.txt").write_text("x")
    os.chmod(home / "notes.txt", 0o644)
    settings = load_settings()
    report = diagnose(settings)
    assert {(p.kind, p.subject) for p in report.found} == {
        ("permissions", str(home)),
        ("permissions", str(home / "notes.txt")),
    }
    fixed = diagnose(settings, repair=True)
    assert fixed.remaining == [] and fixed.clean
    assert os.stat(home).st_mode & 0o777 == 0o700 and os.stat(home / "notes.txt").st_mode & 0o777 == 0o600


def _state(home: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry under the state folder: (mode, mtime in ns, sha256 of a file's bytes)."""
    out = {}
    for p in sorted([home, *home.rglob("*")]):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
        out[str(p.relative_to(home))] = (st.st_mode, st.st_mtime_ns, digest)
    return out


def test_a_check_without_repair_changes_nothing(home: Path) -> None:
    from pixgrep.doctor import diagnose

    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    (home / "notes.txt").write_text("x")
    os.chmod(home / "notes.txt", 0o644)
    before = _state(home)
    assert len(diagnose(load_settings()).found) == 2
    assert _state(home) == before


def _doctor_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixgrep_cli.main", "doctor", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_doctor_finds_each_kind_of_damage_changes_nothing_and_repair_mends_it(home: Path, tmp_path: Path) -> None:
    """A check (the API and `pixgrep doctor`) reports loose permissions and a stale local index and leaves every
    file of the state as it was (mode, mtime, bytes); only --repair fixes them."""
    from pixgrep.app import Index, index_paths
    from pixgrep.doctor import diagnose
    from pixgrep.store import Segment

    settings = load_settings(ocr={"workers": 1})
    files = copy_corpus(tmp_path / "pics", corpus_files(3, stride=113))
    with Index(settings, ocr_workers=1) as index:
        report = index_paths(index, [str(tmp_path / "pics")])
        assert report.indexed == 3
    assert diagnose(settings).found == []
    r = _doctor_cli()
    assert r.returncode == 0 and r.stdout.strip().startswith("no problems"), r.stdout + r.stderr

    # Damage: a file gone from disk, a content's rows gone from Milvus, rows of no content,
    # a local index row Milvus doesn't have, and the books open to other users.
    files[0].unlink()
    with Index(settings, ocr_workers=0) as index:
        store = index.pipeline.store
        paths = index.db.paths()
        victim = paths[str(files[1])]
        assert victim is not None
        store.purge([victim])
        vec = np.zeros((1, store.dim), dtype=np.float32)
        vec[0, 0] = 1
        store.upsert("f" * 64, [Segment("full", "ocr", "ghost", "ghost")], vec)
        assert store.local is not None
        store.local.replace([("e" * 64, [Segment("line", "ocr", "only here", "")], vec)])
        store.flush()
    os.chmod(settings.db_path, 0o644)
    os.chmod(settings.home, 0o755)
    before = _state(settings.home)

    found = diagnose(settings).found
    assert sorted({p.kind for p in found}) == [
        "local index",
        "missing rows",
        "orphan rows",
        "permissions",
        "stale path",
    ], found
    assert {p.subject for p in found if p.kind in ("stale path", "missing rows", "orphan rows")} == {
        str(files[0]),
        victim,
        "f" * 64,
    }
    assert {p.subject for p in found if p.kind == "permissions"} == {str(settings.home), str(settings.db_path)}
    assert any("--repair rebuilds it" in p.detail for p in found if p.kind == "local index"), found
    # The check changed nothing: the next one (the CLI's) finds the same, and every file is as it was.
    assert _state(settings.home) == before
    r = _doctor_cli("--json")
    assert r.returncode == 1, r.stderr
    assert sorted(x.split(":")[0] for x in json.loads(r.stdout)["found"]) == sorted(p.kind for p in found)
    assert _state(settings.home) == before

    r = _doctor_cli("--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "repaired: re-embedded 1 contents" in r.stdout and "left:" not in r.stdout
    assert "repaired: closed permissions" in r.stdout and "repaired: rebuilt the local dense index" in r.stdout
    assert diagnose(settings).found == []
    assert os.stat(settings.home).st_mode & 0o777 == 0o700 and os.stat(settings.db_path).st_mode & 0o777 == 0o600
