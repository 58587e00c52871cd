import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# A subprocess CLI.
pytestmark = pytest.mark.slow


def _models(env: dict[str, str]) -> tuple[int, list[dict[str, object]]]:
    r = subprocess.run(
        [sys.executable, "-m", "pixgrep_cli.main", "models", "--json"], env=env, capture_output=True, text=True
    )
    return r.returncode, json.loads(r.stdout)


def test_models_lists_sources_sizes_and_offline_state(home: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    code, infos = _models(env)
    assert code == 0
    by_stage = {i["stage"]: i for i in infos}
    assert by_stage["ocr"]["backend"] == "rapidocr" and by_stage["ocr"]["offline"] is True
    assert by_stage["ocr"]["size_bytes"] > 1_000_000 and Path(str(by_stage["ocr"]["location"])).is_dir()
    assert by_stage["embed"]["backend"] == "use-multilingual" and by_stage["embed"]["offline"] is True

    # A hub id that isn't cached: not available offline, and the note names the setting to change.
    code, infos = _models({**env, "PIXGREP_CAPTION__MODEL": "nlpconnect/vit-gpt2-image-captioning"})
    cap = next(i for i in infos if i["stage"] == "caption")
    assert code == 1 and cap["offline"] is False and "caption.model" in str(cap["note"])

    # A local folder is available offline, with its size.
    local = tmp_path / "my-captioner"
    local.mkdir()
    (local / "config.json").write_text("{}")
    code, infos = _models({**env, "PIXGREP_CAPTION__MODEL": str(local)})
    cap = next(i for i in infos if i["stage"] == "caption")
    assert code == 0 and cap["offline"] is True and cap["size_bytes"] == 2
