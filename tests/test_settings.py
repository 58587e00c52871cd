import subprocess
import sys
from pathlib import Path

import pytest
from pixgrep.settings import ConfigError, ExitCode, load_settings


def test_precedence_cli_env_toml_defaults(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[search]\nlimit = 7\nmode = "keyword"\n[ocr]\nengine = "tesseract"\nmin_confidence = 0.3\n')
    monkeypatch.setenv("PIXGREP_OCR__ENGINE", "rapidocr")
    monkeypatch.setenv("PIXGREP_SEARCH__LIMIT", "8")
    s = load_settings(cfg, search={"limit": 9, "mode": None})
    assert s.search.limit == 9  # CLI beats env
    assert s.ocr.engine == "rapidocr"  # env beats TOML
    assert s.search.mode == "keyword"  # TOML beats default; an unset flag (None) shadows nothing
    assert s.ocr.min_confidence == 0.3
    assert s.embed.backend == "use-multilingual"  # default
    assert s.home == home


def test_default_config_path_is_xdg(tmp_path: Path, home: Path) -> None:
    cfg = tmp_path / "config" / "pixgrep" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("[search]\nlimit = 3\n")
    assert load_settings().search.limit == 3


@pytest.mark.parametrize(
    "body, needle",
    [
        ("[milvus]\nurix = 1\n", "milvus.urix"),
        ("[search]\nlimit = -1\n", "search.limit"),
        ("[ocr\n", "cannot read config"),
        ('[pipeline]\npolicy = "sometimes"\n', "pipeline.policy"),
    ],
)
def test_bad_config_raises_one_line(tmp_path: Path, home: Path, body: str, needle: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_explicit_config(tmp_path: Path, home: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.slow
def test_cli_exits_with_config_code(tmp_path: Path, home: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[search]\nlimit = 'many'\n")
    r = subprocess.run(
        [sys.executable, "-m", "pixgrep_cli.main", "--config", str(cfg), "status"], capture_output=True, text=True
    )
    assert r.returncode == ExitCode.CONFIG == 78
    assert r.stderr.count("\n") == 1 and "search.limit" in r.stderr


def test_config_output_hides_secrets(tmp_path: Path) -> None:
    from pixgrep.settings import Settings

    s = Settings(
        home=tmp_path, db={"url": "postgresql+psycopg://pixgrep:s3cret@db/pixgrep"}, milvus={"token": "root:Milvus"}
    )
    data = s.public_dump()
    assert data["db"]["url"] == "postgresql+psycopg://pixgrep:***@db/pixgrep"
    assert data["milvus"]["token"] == "***"
    assert "s3cret" not in str(data) and "root:Milvus" not in str(data)
    assert s.db_url.endswith("s3cret@db/pixgrep")  # the real value is untouched
