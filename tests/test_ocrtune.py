"""The OCR runtime for ``pixgrep index`` measured on the machine (``ocrtune``): the decision, the cache, the pool."""

from __future__ import annotations

import json
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest
from pixgrep import ocr, ocrtune
from pixgrep.ocrpool import OcrPool
from pixgrep.settings import Settings, load_settings


class Counting:
    """A stand-in for the measurement: fixed seconds per image, and how often it was asked."""

    def __init__(self, seconds: dict[str, float] | Exception) -> None:
        self.seconds = seconds
        self.calls: list[list[str]] = []

    def __call__(self, runtimes: Sequence[str]) -> dict[str, float]:
        self.calls.append(list(runtimes))
        if isinstance(self.seconds, Exception):
            raise self.seconds
        return {rt: s for rt, s in self.seconds.items() if rt in runtimes}


@pytest.fixture
def both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ocrtune, "installed", lambda: ["onnxruntime", "openvino"])


def test_openvino_must_be_clearly_faster_to_be_chosen() -> None:
    assert ocrtune.decide({"onnxruntime": 0.46, "openvino": 0.30}) == "openvino"
    assert ocrtune.decide({"onnxruntime": 0.30, "openvino": 0.46}) == "onnxruntime"
    # Within the margin: onnxruntime, whose processes hold less memory.
    assert ocrtune.decide({"onnxruntime": 0.30, "openvino": 0.29}) == "onnxruntime"
    assert ocrtune.decide({"openvino": 0.5}) == "openvino"  # onnxruntime failed to run
    assert ocrtune.decide({}) is None


def test_measured_once_then_read_from_a_private_cache(tmp_path: Path, both: None) -> None:
    m = Counting({"onnxruntime": 2.0, "openvino": 0.6})
    assert ocrtune.throughput_runtime(cache_dir=tmp_path / "c", measure=m) == "openvino"
    assert ocrtune.throughput_runtime(cache_dir=tmp_path / "c", measure=m) == "openvino"
    assert m.calls == [["onnxruntime", "openvino"]]
    path = tmp_path / "c" / ocrtune.CACHE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    entry = json.loads(path.read_text())[ocrtune.machine_key()]
    assert entry["runtime"] == "openvino" and entry["seconds_per_image"] == {"onnxruntime": 2.0, "openvino": 0.6}


def test_another_cpu_or_package_version_measures_again(
    tmp_path: Path, both: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    ocrtune.throughput_runtime(cache_dir=tmp_path, measure=Counting({"onnxruntime": 2.0, "openvino": 0.6}))
    monkeypatch.setattr(ocrtune, "machine_key", lambda: "Other CPU | 64 cores | onnxruntime 9")
    other = Counting({"onnxruntime": 0.2, "openvino": 0.6})
    assert ocrtune.throughput_runtime(cache_dir=tmp_path, measure=other) == "onnxruntime"
    assert len(other.calls) == 1
    # Both machines' choices are kept.
    assert len(json.loads((tmp_path / ocrtune.CACHE_NAME).read_text())) == 2


def test_no_measurement_without_calibrate_nor_with_one_runtime(
    tmp_path: Path, both: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = Counting({"onnxruntime": 2.0, "openvino": 0.6})
    assert ocrtune.throughput_runtime(cache_dir=tmp_path, measure=m, calibrate=False) is None
    monkeypatch.setattr(ocrtune, "installed", lambda: ["onnxruntime"])
    assert ocrtune.throughput_runtime(cache_dir=tmp_path, measure=m) is None
    assert m.calls == []


def test_a_failed_measurement_is_not_kept(tmp_path: Path, both: None) -> None:
    for bad in (Counting(OSError("no interpreter")), Counting({})):
        assert ocrtune.throughput_runtime(cache_dir=tmp_path, measure=bad) is None
        assert bad.calls
    assert not (tmp_path / ocrtune.CACHE_NAME).exists()
    (tmp_path / ocrtune.CACHE_NAME).write_text("{not json")  # a damaged cache is measured over
    assert ocrtune.throughput_runtime(cache_dir=tmp_path, measure=Counting({"onnxruntime": 1.0})) == "onnxruntime"


def test_the_pool_gives_its_processes_the_measured_runtime(
    home: Path, tmp_path: Path, both: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    m = Counting({"onnxruntime": 0.3, "openvino": 0.9})
    monkeypatch.setattr(ocrtune, "measure_in_subprocess", m)
    settings = load_settings(ocr={"engine": "rapidocr"})
    cores = 4
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    index_pool = OcrPool(settings, workers=cores)  # pixgrep index: a process per core
    assert index_pool.throughput
    assert Settings.model_validate_json(index_pool._worker_settings()).ocr.runtime == "onnxruntime"
    monkeypatch.setattr(ocr, "_openvino_available", lambda: True)
    assert ocr.resolve_runtime("auto", throughput=True) == "onnxruntime"  # an engine built alone reads the cache
    daemon_pool = OcrPool(settings, workers=1)  # the daemon: one process, for memory
    assert Settings.model_validate_json(daemon_pool._worker_settings()).ocr.runtime == "auto"
    assert ocr.resolve_runtime("auto", throughput=False) == "onnxruntime"
    forced = OcrPool(load_settings(ocr={"runtime": "openvino"}), workers=cores)
    assert Settings.model_validate_json(forced._worker_settings()).ocr.runtime == "openvino"
    assert len(m.calls) == 1


@pytest.mark.slow
def test_the_measurement_runs_every_installed_runtime_for_real(tmp_path: Path) -> None:
    usable = ocrtune.installed()
    seconds = ocrtune.measure_in_subprocess(usable)
    assert set(seconds) == set(usable) and all(s > 0 for s in seconds.values()), seconds
    choice = ocrtune.throughput_runtime(cache_dir=tmp_path)  # measures again, in a subprocess, and keeps it
    if len(usable) > 1:
        assert choice in usable
        entry = json.loads((tmp_path / ocrtune.CACHE_NAME).read_text())[ocrtune.machine_key()]
        assert entry["runtime"] == choice == ocrtune.decide(entry["seconds_per_image"])
