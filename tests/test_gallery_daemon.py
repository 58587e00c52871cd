"""The gallery served by a real daemon on corpus memes: `pixgrep ui`, access, traversal, and a real Chromium."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import CORPUS, copy_corpus, corpus_files, wait_for
from pixgrep import images
from pixgrep.service.supervisor import Supervisor
from pixgrep.settings import Settings, load_settings

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# (query, the meme it must show first)
TARGET = ("他回家偷玩手机", "001/0031.jpg")
OTHERS = ["tantanaweawe/2020-04-13_13-57-52_UTC.jpg", "2/09_minecraft_dog.jpg"]


@dataclass
class Gallery:
    daemon: Supervisor
    settings: Settings
    env: dict[str, str]
    url: str  # with the token
    base: str  # without
    target_hash: str
    pics: Path


def _pixgrep(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixgrep_cli.main", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gallery]:
    tmp = tmp_path_factory.mktemp("gallery")
    pics = tmp / "pics"
    wanted = [CORPUS / TARGET[1], *(CORPUS / f for f in OTHERS)]
    copied = copy_corpus(pics, [*wanted, *corpus_files(3, stride=211)])
    config = tmp / "config.toml"
    config.write_text(f'[watch]\nstable_seconds = 0.2\nfolders = [{{path = "{pics}"}}]\n')
    overrides: dict[str, Any] = {
        "home": tmp / "home",
        "daemon": {"socket": tmp / "run" / "api.sock"},
        "ui": {"port": 0, "thumbs": tmp / "cache" / "thumbs"},
        "ocr": {"workers": 0},
    }
    settings = load_settings(config, **overrides)
    daemon = Supervisor(settings, ocr_workers=0)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(daemon.run()), name="pixgrep-test-daemon")
    thread.start()
    try:
        wait_for(lambda: daemon.ready.is_set() or not thread.is_alive(), 120, "the daemon to start")
        assert daemon.index is not None and daemon.gallery is not None, result
        db = daemon.index.db
        wait_for(lambda: db.counts()["indexed"] == len(copied), 300, "the memes to be indexed")
        env = {
            **os.environ,
            "PIXGREP_HOME": str(settings.home),
            "PIXGREP_DAEMON__SOCKET": str(settings.socket_path),
            "XDG_CONFIG_HOME": str(tmp / "config"),
        }
        url = daemon.gallery.url
        # The gallery's pool threads belong to this fixture, not to the first test that makes them.
        barrier = threading.Barrier(5)
        for _ in range(4):
            daemon.gallery.executor.submit(barrier.wait)
        barrier.wait()
        target_hash = images.content_hash((CORPUS / TARGET[1]).read_bytes())
        yield Gallery(daemon, settings, env, url, url.split("/?")[0], target_hash, pics)
    finally:
        daemon.request_stop()
        thread.join(120)
    assert result == [0]


def _raw_get(base: str, path: str, headers: dict[str, str] | None = None) -> int:
    """GET exactly this path (http.client sends it as is: no normalising of .. or %2e)."""
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        return conn.getresponse().status
    finally:
        conn.close()


def test_pixgrep_ui_prints_the_url_first(gallery: Gallery, tmp_path: Path) -> None:
    r = _pixgrep("ui", "--no-browser", env=gallery.env)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first == gallery.url
    assert first.startswith("http://127.0.0.1:") and "token=" in first
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(first).query)["token"][0]
    assert (gallery.settings.home / "ui-token").read_text().strip() == token
    assert oct((gallery.settings.home / "ui-token").stat().st_mode & 0o777) == "0o600"

    gone = _pixgrep("ui", "--no-browser", env={**gallery.env, "PIXGREP_DAEMON__SOCKET": str(tmp_path / "no.sock")})
    assert gone.returncode == 69
    assert gone.stdout == ""
    assert len(gone.stderr.strip().splitlines()) == 1 and "not running" in gone.stderr


def test_access_and_traversal_leave_the_daemon_up(gallery: Gallery) -> None:
    base, token = gallery.base, gallery.daemon.gallery.token  # type: ignore[union-attr]
    auth = {"Authorization": f"Bearer {token}"}
    assert _raw_get(base, "/") == 401
    assert _raw_get(base, f"/image/{gallery.target_hash}") == 401
    assert _raw_get(base, "/?token=" + "x" * 43) == 403
    assert _raw_get(base, f"/?token={token}", {"Host": "attacker.example"}) == 403
    assert _raw_get(base, f"/image/{gallery.target_hash}", auth) == 200
    passwd = images.content_hash(Path("/etc/passwd").read_bytes())
    (gallery.pics / "link.jpg").symlink_to("/etc/passwd")  # the scan does not follow links: never indexed
    attempts = [
        "/image/../../../../etc/passwd",
        "/image/..%2f..%2f..%2fetc%2fpasswd",
        "/image/%2e%2e/%2e%2e/etc/passwd",
        "/thumb/%252e%252e%252fetc%252fpasswd",
        f"/image/{passwd}",
        f"/thumb/{passwd}",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e%2f%2e%2e%2fsettings.py",
        "/image/" + "f" * 32,
        f"/image/{gallery.pics / 'link.jpg'!s}",
    ]
    for path in attempts:
        assert _raw_get(base, path, auth) in (403, 404), path
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(gallery.settings.socket_path)), base_url="http://d", timeout=30
    ) as api:
        assert api.get("/v1/health").json()["state"] == "running"
    r = httpx.get(f"{base}/api/search", params={"q": TARGET[0]}, headers=auth, timeout=60)
    assert r.status_code == 200 and r.json()["results"][0]["content_hash"] == gallery.target_hash
    status = httpx.get(f"{base}/api/status", headers=auth, timeout=30).json()
    assert status["watched"] == [str(gallery.pics)]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("chromium and chromium-driver are not installed (scripts/install.sh --dev)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_in_chromium(gallery: Gallery, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser
    wait = WebDriverWait(d, 60)
    d.get(gallery.url + "&q=" + urllib.parse.quote(TARGET[0]))
    cards = wait.until(lambda drv: drv.find_elements(By.CSS_SELECTOR, "#grid .card"))
    assert cards[0].get_attribute("data-hash") == gallery.target_hash
    assert d.find_element(By.ID, "q").get_attribute("value") == TARGET[0]
    assert "token=" not in d.current_url  # the cookie holds it now
    marks = [m.text for m in cards[0].find_elements(By.CSS_SELECTOR, ".snippet mark")]
    assert marks, "the matched text is highlighted"
    wait.until(lambda drv: drv.execute_script("return document.querySelector('.card img').naturalWidth") > 0)
    d.save_screenshot(str(tmp_path / "gallery-grid.png"))
    d.find_element(By.ID, "f-why").click()  # the --explain data under each card
    why = cards[0].find_element(By.CSS_SELECTOR, ".why")
    assert why.is_displayed() and "fused" in why.text and "keyword: bm25" in why.text

    cards[0].find_element(By.CSS_SELECTOR, ".thumb").click()
    rects = wait.until(lambda drv: drv.find_elements(By.CSS_SELECTOR, "#boxes rect"))
    assert rects and rects[0].is_displayed()
    wait.until(lambda drv: drv.execute_script("return document.getElementById('full').naturalWidth") > 0)
    d.save_screenshot(str(tmp_path / "gallery-viewer.png"))
    d.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait.until(lambda drv: drv.find_element(By.ID, "viewer").get_attribute("hidden") is not None)

    # More like this: the grid shows other memes, not the one asked about.
    d.find_element(By.CSS_SELECTOR, "#grid .card .like").click()
    wait.until(lambda drv: "text like" in drv.find_element(By.ID, "summary").text)
    hashes = [c.get_attribute("data-hash") for c in d.find_elements(By.CSS_SELECTOR, "#grid .card")]
    assert hashes and gallery.target_hash not in hashes

    # The status panel: watched folders and failures.
    d.find_element(By.ID, "status-btn").click()
    wait.until(lambda drv: str(gallery.pics) in drv.find_element(By.ID, "status-body").text)
    d.find_element(By.ID, "status-close").click()

    # Type a new query: the grid follows (debounced), and Enter opens the selected card.
    box = d.find_element(By.ID, "q")
    box.clear()
    box.send_keys("minecraft")
    dog = images.content_hash((CORPUS / OTHERS[1]).read_bytes())
    wait.until(lambda drv: "q=minecraft" in drv.current_url and drv.find_elements(By.CSS_SELECTOR, "#grid .card"))
    wait.until(lambda drv: drv.find_element(By.CSS_SELECTOR, "#grid .card").get_attribute("data-hash") == dog)
    d.find_element(By.TAG_NAME, "body").click()
    d.find_element(By.TAG_NAME, "body").send_keys(Keys.ENTER)
    wait.until(lambda drv: drv.find_element(By.ID, "viewer").get_attribute("hidden") is None)
    d.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)

    # A query that matches nothing says so.
    box.clear()
    box.send_keys("钢筋混凝土梁的抗剪承载力")
    wait.until(lambda drv: "no good match" in drv.find_element(By.ID, "summary").text)
    assert not d.find_elements(By.CSS_SELECTOR, "#grid .card")

    # Without the token (a fresh cookie jar) the page is refused.
    d.delete_all_cookies()
    d.get(gallery.base + "/")
    assert "token required" in d.find_element(By.TAG_NAME, "body").text
    assert (tmp_path / "gallery-grid.png").stat().st_size > 10_000
