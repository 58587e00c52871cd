"""End to end: the `pixgrep` CLI as a subprocess on real memes from the corpus."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CORPUS, copy_corpus, corpus_files
from PIL import Image

# (query as a user would type it, the meme it must find at rank 1). Most memes are
# traditional Chinese; most queries are typed in simplified script.
CASES = [
    ("萨诺斯弹指之后", "dank_meme_therapy/2019-06-11_13-10-36_UTC_4.jpg"),
    ("他回家偷玩手机", "001/0031.jpg"),
    ("我们要谈谈饮酒", "tantanaweawe/2020-04-13_13-57-52_UTC.jpg"),
    ("为了防止眼部", "2/20_to_protect.jpg"),
    ("菜市場的魚", "dank_meme_therapy/2020-09-28_06-31-07_UTC.jpg"),
    ("Post Malone", "littlecitymeme/2021-06-11_04-29-55_UTC.jpg"),
    ("minecraft", "2/09_minecraft_dog.jpg"),
]

pytestmark = pytest.mark.slow


def _pixgrep(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "pixgrep_cli.main", *args], env=env, capture_output=True, text=True, timeout=600
    )
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("e2e")
    wanted = [CORPUS / f for _, f in CASES]
    others = [f for f in corpus_files(200, stride=37) if f not in wanted][: 30 - len(wanted)]
    pics = tmp / "memes"
    copy_corpus(pics, wanted[:4])
    copy_corpus(pics / "sub", wanted[4:] + others)
    mp4 = next(CORPUS.rglob("*.mp4"), None)
    if mp4 is not None:
        shutil.copyfile(mp4, pics / "actually-a-video.jpg")
    env = {
        **os.environ,
        "PIXGREP_HOME": str(tmp / "home"),
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "XDG_RUNTIME_DIR": str(tmp / "run"),
    }
    r = _pixgrep("index", str(pics), env=env)
    assert "30 indexed" in r.stdout, r.stdout + r.stderr
    return pics, env


def _name(corpus_rel: str) -> str:
    parent, name = corpus_rel.split("/")
    return f"{parent}__{name}"


@pytest.mark.parametrize("query, expected", CASES)
def test_phrase_finds_its_meme_at_rank_1(indexed: tuple[Path, dict[str, str]], query: str, expected: str) -> None:
    _, env = indexed
    r = _pixgrep("search", query, "--json", "-k", "5", env=env)
    hits = [json.loads(line) for line in r.stdout.splitlines()]
    assert hits, r.stderr
    assert Path(hits[0]["path"]).name == _name(expected), hits[:2]
    assert set(hits[0]) == {"path", "score", "source", "text"}
    assert hits[0]["source"] == "ocr"


def test_human_output_and_daemonless_notice(indexed: tuple[Path, dict[str, str]]) -> None:
    _, env = indexed
    r = _pixgrep("search", "萨诺斯弹指", "-k", "3", env=env)
    first = r.stdout.splitlines()[0].split("\t")
    assert first[0].endswith(_name(CASES[0][1]))
    assert float(first[1]) > 0 and first[2] == "ocr" and "薩諾斯彈指" in first[3]
    assert "no daemon running" in r.stderr


def test_in_dir_and_montage(indexed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    pics, env = indexed
    r = _pixgrep("search", "菜市場的魚", "--json", "--in", str(pics / "sub"), env=env)
    paths = [json.loads(line)["path"] for line in r.stdout.splitlines()]
    assert paths and all(p.startswith(str(pics / "sub") + "/") for p in paths)
    # The target is outside --in: what is left is at most near misses (exit 1 when the floor drops them all).
    r = _pixgrep("search", "他回家偷玩手机", "--json", "--in", str(pics / "sub"), "-k", "3", env=env, check=False)
    assert r.returncode in (0, 1) and all(
        not p.endswith(_name(CASES[1][1])) for p in (json.loads(x)["path"] for x in r.stdout.splitlines())
    )

    out = tmp_path / "grid.jpg"
    _pixgrep("search", "我", "-k", "6", "--all", "--montage", str(out), env=env)
    with Image.open(out) as im:
        assert im.format == "JPEG" and im.width >= 512 and im.height >= 256


def test_status_lists_the_failure(indexed: tuple[Path, dict[str, str]]) -> None:
    pics, env = indexed
    if not (pics / "actually-a-video.jpg").exists():
        pytest.skip("no mp4 in the corpus")
    r = _pixgrep("status", "--failed", env=env)
    assert "indexed:  30 images" in r.stdout
    assert "actually-a-video.jpg: not an image (looks like an MP4/MOV video)" in r.stdout
    st = json.loads(_pixgrep("status", "--json", env=env).stdout)
    assert st["counts"]["indexed"] == 30 and st["daemon"]["running"] is False


def test_second_run_is_incremental(indexed: tuple[Path, dict[str, str]]) -> None:
    pics, env = indexed
    r = _pixgrep("index", str(pics), env=env)
    # The video failed for good: it is not retried while its bytes stay the same.
    assert "0 indexed" in r.stdout and "31 unchanged" in r.stdout, r.stdout


def test_no_matches_exit_code(indexed: tuple[Path, dict[str, str]]) -> None:
    _, env = indexed
    r = _pixgrep("search", "zzqxv", "--mode", "keyword", env=env, check=False)
    assert r.returncode == 1 and "no good match" in r.stderr


def test_index_shows_a_progress_bar_on_a_terminal(tmp_path: Path, home: Path) -> None:
    """tqdm draws only on a TTY: run `pixgrep index` with stderr on a pseudo-terminal."""
    import pty

    from imgs import render

    pics = tmp_path / "pics"
    for i in range(3):
        render(pics / f"{i}.png", [f"進度條第{i}張"])
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixgrep_cli.main", "index", str(pics)],
        env={**os.environ, "PIXGREP_OCR__WORKERS": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out, _ = proc.communicate(timeout=300)
    os.close(master)
    bar = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, bar
    assert "3 indexed" in out.decode()
    assert "3/3" in bar and "img" in bar, bar


def test_result_actions_floor_and_similar(indexed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    pics, env = indexed
    junk = "钢筋混凝土梁的抗剪承载力"
    r = _pixgrep("search", junk, env=env, check=False)
    assert (r.returncode, r.stdout) == (1, "") and "no good match" in r.stderr
    assert len(_pixgrep("search", junk, "--all", "-f", "-k", "3", env=env).stdout.splitlines()) == 3
    query, expected = CASES[0]
    r = _pixgrep("search", query, "-0", env=env)
    assert r.stdout.endswith("\0") and r.stdout.split("\0")[0].endswith(_name(expected))
    r = _pixgrep("search", query, "--explain", "-k", "1", env=env)
    assert "keyword  bm25" in r.stdout and "dense    cosine" in r.stdout and "fused" in r.stdout
    assert _pixgrep("search", query, "--since", "2999-01-01", env=env, check=False).returncode == 1
    assert _pixgrep("search", query, "--type", "png", env=env, check=False).returncode == 1
    assert _pixgrep("search", query, "--type", "jpeg", "-f", env=env).stdout.startswith(str(pics))
    bad = _pixgrep("search", query, "--since", "someday", env=env, check=False)
    assert bad.returncode == 64 and len(bad.stderr.strip().splitlines()) == 1

    # similar: an indexed image answers from the index, without itself
    target = next(pics.rglob(_name(expected)))
    r = _pixgrep("similar", str(target), "-f", "-k", "3", env=env)
    assert len(r.stdout.splitlines()) == 3 and str(target) not in r.stdout
    # an image the index doesn't hold is OCR'd on the spot: its text finds the meme that holds it
    from imgs import render

    fresh = render(tmp_path / "fresh.png", [CASES[1][0]])
    r = _pixgrep("similar", str(fresh), "-f", "-k", "3", env=env)
    assert r.stdout.splitlines()[0].endswith(_name(CASES[1][1])), r.stdout + r.stderr
    assert _pixgrep("similar", str(tmp_path / "nope.png"), env=env, check=False).returncode == 64


def test_a_search_alone_reads_the_local_index_and_answers_like_the_store(
    indexed: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pixgrep import app
    from pixgrep.app import Index
    from pixgrep.settings import load_settings
    from pixgrep.store import LocalReader

    opened: list[object] = []
    real_open_reader = app.open_reader

    def spy(*args: object, **kwargs: object) -> object:
        opened.append(real_open_reader(*args, **kwargs))  # type: ignore[arg-type]
        return opened[-1]

    monkeypatch.setattr(app, "open_reader", spy)
    _, env = indexed
    for k in ("PIXGREP_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(k, env[k])
    queries = [q for q, _ in CASES] + ["a dog in a game", "喝酒"]
    with Index(load_settings(), ocr_workers=0, search_only=True) as ro:
        got = {(q, m): [r.to_json() for r in ro.search(q, mode=m)] for q in queries for m in ("hybrid", "keyword")}
        # It never opened Milvus Lite (whose lock a daemon may hold): the local index answered, read-only.
        assert not ro.pipeline.has_store() and len(opened) == 1 and isinstance(opened[0], LocalReader)
    with Index(load_settings(), ocr_workers=0) as rw:
        want = {(q, m): [r.to_json() for r in rw.search(q, mode=m)] for q in queries for m in ("hybrid", "keyword")}
        assert rw.pipeline.has_store()
    for key, results in want.items():
        assert [r["path"] for r in got[key]] == [r["path"] for r in results], key
        assert [r["score"] for r in got[key]] == pytest.approx([r["score"] for r in results], abs=2e-3), key
    assert any(want.values())


def test_a_search_without_the_daemon_loads_neither_milvus_nor_httpx(indexed: tuple[Path, dict[str, str]]) -> None:
    _, env = indexed
    code = (
        "import sys\n"
        "from pixgrep_cli.main import run\n"
        "sys.argv = ['pixgrep', 'search', '--json', 'minecraft']\n"
        "try:\n"
        "    run()\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code, sorted(m for m in ('pymilvus', 'milvus_lite', 'httpx') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.stdout.splitlines()[-1] == "exit 0 []", r.stdout + r.stderr
    assert "minecraft" in r.stdout


def _search_on_a_terminal(env: dict[str, str], rows: int, cols: int, *args: str) -> tuple[int, str, str]:
    """Run `pixgrep search ARGS` with stdout on a pseudo-terminal of rows x cols (0 x 0: no size)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, cols * 8, rows * 16))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixgrep_cli.main", "search", *args],
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    _, err = proc.communicate(timeout=300)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace"), err.decode()


def test_preview_draws_a_thumbnail_on_a_terminal_and_nothing_into_a_pipe(
    indexed: tuple[Path, dict[str, str]],
) -> None:
    _, env = indexed
    # Without chafa on PATH: textual-image, which falls back to half blocks when the terminal
    # answers no graphics query (as a bare pseudo-terminal does).
    env = {**env, "PATH": os.path.dirname(sys.executable)}
    query = CASES[5][0]  # Post Malone
    code, out, err = _search_on_a_terminal(env, 40, 120, query, "--preview", "-k", "1")
    assert code == 0, err
    assert _name(CASES[5][1]) in out and out.count("▀") > 100, out[:500]
    # A terminal that reports no size: text only, one line saying why, no traceback.
    code, out, err = _search_on_a_terminal(env, 0, 0, query, "--preview", "-k", "1")
    assert code == 0 and _name(CASES[5][1]) in out and "▀" not in out, err
    assert "Traceback" not in err and "--preview cannot draw on this terminal" in err
    piped = _pixgrep("search", query, "--preview", "-k", "1", env=env).stdout
    assert piped == _pixgrep("search", query, "-k", "1", env=env).stdout and "\x1b" not in piped
