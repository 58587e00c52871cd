"""docker-compose.yml and the Dockerfile: no Docker engine runs here, so their structure is checked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SERVICES = {"postgres", "etcd", "minio", "standalone", "pixgrep"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in {"", "latest", "stable", "main", "master"}


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES


def test_images_pinned(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if name == "pixgrep":
            assert svc["build"]["dockerfile"] == "Dockerfile"
            assert (REPO / svc["build"].get("context", ".") / "Dockerfile").is_file()
            continue
        assert _pinned(svc["image"]), f"{name}: image {svc['image']} is not pinned"
    assert re.fullmatch(r"milvusdb/milvus:v2\.6\.\d+", compose["services"]["standalone"]["image"])


def test_healthchecks(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        check = svc.get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}


def test_depends_on_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {"standalone": {"etcd", "minio"}, "pixgrep": {"postgres", "standalone"}}
    for name, deps in expected.items():
        depends = services[name]["depends_on"]
        assert isinstance(depends, dict), f"{name}: depends_on must name conditions"
        assert set(depends) == deps
        for dep, cond in depends.items():
            assert cond == {"condition": "service_healthy"}, f"{name} -> {dep}"
            assert "healthcheck" in services[dep]


def test_volumes(compose: dict[str, Any]) -> None:
    named = set(compose["volumes"])
    for name, svc in compose["services"].items():
        if name == "pixgrep":
            continue
        mounts = svc["volumes"]
        assert mounts, f"{name} keeps no data"
        for m in mounts:
            assert m.split(":")[0] in named, f"{name}: {m} is not a named volume"
    mounts = {m["target"]: m for m in compose["services"]["pixgrep"]["volumes"]}
    # The watched folder is bound read-only; the state (a token, logs) is a named volume.
    pictures = mounts["/pictures"]
    assert pictures["type"] == "bind" and pictures["read_only"] is True
    assert pictures["source"].startswith("${PIXGREP_PICTURES")
    assert any(m["type"] == "volume" and m["source"] in named for m in mounts.values())


def test_ports_loopback_only(compose: dict[str, Any]) -> None:
    published = 0
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert isinstance(port, str), f"{name}: write ports as 'HOST_IP:HOST:CONTAINER'"
            ip, host, container = port.split(":")
            assert ip == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            published += 1
    assert published
    assert any(p.startswith("127.0.0.1:") for p in compose["services"]["pixgrep"]["ports"])


def test_pixgrep_points_at_the_services(compose: dict[str, Any]) -> None:
    env = compose["services"]["pixgrep"]["environment"]
    assert env["PIXGREP_DB__URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env["PIXGREP_DB__URL"]
    assert env["PIXGREP_MILVUS__URI"] == "http://standalone:19530"
    # The password comes from the environment, never from this file.
    assert "${PIXGREP_DB_PASSWORD" in env["PIXGREP_DB__URL"]
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${")


def test_dockerfile() -> None:
    lines = [ln.strip() for ln in (REPO / "Dockerfile").read_text().splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    base = next(ln for ln in instructions if ln.startswith("FROM "))
    assert re.fullmatch(r"FROM python:3\.\d+(\.\d+)?-slim(-\w+)?", base), base
    users = [ln.split()[1] for ln in instructions if ln.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}, "the daemon must not run as root"
    installs = " ".join(ln for ln in instructions if "pip install" in ln)
    assert "systemd" not in installs
    assert instructions[-1].startswith(("CMD", "ENTRYPOINT"))


def test_pixgrep_environment_is_valid_settings(compose: dict[str, Any], tmp_path: Path) -> None:
    """Every PIXGREP_ variable the compose file sets is a setting pixgrep accepts (with the ${...} filled in)."""
    from pixgrep.settings import load_settings

    env = compose["services"]["pixgrep"]["environment"]
    filled = {k: re.sub(r"\$\{[^}]*\}", "x", str(v)) for k, v in env.items() if k.startswith("PIXGREP_")}
    mp = pytest.MonkeyPatch()
    try:
        for k, v in filled.items():
            mp.setenv(k, v)
        mp.setenv("PIXGREP_HOME", str(tmp_path))
        (tmp_path / "config.toml").write_text("")
        s = load_settings(tmp_path / "config.toml")
    finally:
        mp.undo()
    assert s.db_url.startswith("postgresql+psycopg://") and not s.db_is_sqlite
    assert s.milvus.uri == "http://standalone:19530" and not s.milvus_is_lite
    assert [str(f.path) for f in s.watch.folders] == ["/pictures"]
    assert s.ui.port == 8399
