import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def test_repo_layout() -> None:
    for name in ("daemon", "cli", "tests", "systemd", "docker-compose.yml", "pyproject.toml", "README.md", ".ci/run"):
        assert (REPO / name).exists(), name


def test_no_clashing_top_level_modules() -> None:
    # The folders map to pixgrep and pixgrep_cli; nothing may install as `daemon` or `cli`.
    # (The checkout itself is on sys.path under `python -m pytest`, so look past it.)
    installed = [p for p in sys.path if Path(p or ".").resolve() != REPO]
    assert importlib.machinery.PathFinder.find_spec("daemon", installed) is None
    assert importlib.machinery.PathFinder.find_spec("cli", installed) is None
    assert importlib.util.find_spec("pixgrep.service.supervisor") is not None
    assert importlib.util.find_spec("pixgrep_cli.main") is not None


def test_compose_serves_milvus_on_loopback() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    milvus = compose["services"]["standalone"]
    assert "127.0.0.1:19530:19530" in milvus["ports"]
    assert set(milvus["depends_on"]) == {"etcd", "minio"}
