"""Helpers for the daemon benchmarks: start ``pixgrep daemon`` in a sandbox, talk to it, measure it."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus" / "memes"


def machine() -> str:
    mem = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024)
    cpu = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, {mem} GiB RAM, no GPU, Python {platform.python_version()}"


def pct(xs: list[float], q: float) -> float:
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(sorted(xs), n=100, method="inclusive")[int(q) - 1]


class Sandbox:
    """A PIXGREP_HOME, a runtime dir and a config file under a short temp path."""

    def __init__(self, prefix: str = "pgb-") -> None:
        self.base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.home = self.base / "home"
        self.run = self.base / "run"
        self.run.mkdir(mode=0o700)
        self.config = self.base / "config.toml"
        self.config.write_text("")
        self.socket = self.run / "pixgrep" / "api.sock"

    def env(self, **extra: str) -> dict[str, str]:
        e = {k: v for k, v in os.environ.items() if not k.startswith("PIXGREP_")}
        e.update(
            PIXGREP_HOME=str(self.home),
            XDG_RUNTIME_DIR=str(self.run),
            PIXGREP_CONFIG_FILE=str(self.config),
            PYTHONPATH=f"{REPO / 'daemon'}:{REPO / 'cli'}",
        )
        e.update(extra)
        return e

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


class Daemon:
    def __init__(self, sandbox: Sandbox, **env: str) -> None:
        self.sb = sandbox
        self.env = sandbox.env(**env)
        self.log = sandbox.base / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: httpx.Client | None = None

    def start(self, timeout: float = 180) -> float:
        t0 = time.monotonic()
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pixgrep_cli.main", "daemon"], env=self.env, stdout=fh, stderr=fh
            )
        self.client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.sb.socket)), base_url="http://d", timeout=120
        )
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if self.client.get("/v1/health").json().get("state") == "running":
                    return time.monotonic() - t0
            except (httpx.HTTPError, OSError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError("daemon did not start")

    def api(self, method: str, url: str, **kw: Any) -> Any:
        assert self.client is not None
        r = self.client.request(method, url, **kw)
        r.raise_for_status()
        return r.json()

    def search(self, query: str, **kw: Any) -> list[dict[str, Any]]:
        return list(self.api("POST", "/v1/search", json={"query": query, **kw})["results"])

    def wait_idle(self, timeout: float = 3600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            d = self.api("GET", "/v1/status")["daemon"]
            q = d["queue"]
            if q["pending"] + q["processing"] == 0 and d["waiting_to_settle"] == 0:
                return
            time.sleep(0.2)
        raise TimeoutError("daemon did not go idle")

    def rss(self) -> dict[str, float]:
        """MiB: the daemon's RSS and peak RSS, and the RSS of its child processes (OCR workers)."""
        assert self.proc is not None
        pid = self.proc.pid

        def status(p: int) -> dict[str, int]:
            out = {}
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    k, _, v = line.partition(":")
                    if k in ("VmRSS", "VmHWM"):
                        out[k] = int(v.split()[0])
            return out

        main = status(pid)
        kids = 0
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                if ppid == pid:
                    kids += status(int(d)).get("VmRSS", 0)
            except (OSError, ValueError):
                continue
        return {"daemon": main["VmRSS"] / 1024, "daemon_peak": main["VmHWM"] / 1024, "children": kids / 1024}

    def stop(self) -> int:
        if self.client is not None:
            self.client.close()
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def cli(env: dict[str, str], *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    pixgrep = shutil.which("pixgrep", path=os.path.dirname(sys.executable)) or "pixgrep"
    t0 = time.perf_counter()
    r = subprocess.run([pixgrep, *args], env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, r
