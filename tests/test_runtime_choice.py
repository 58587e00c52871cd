"""Choices made in one place each: the OCR runtime for ``ocr.runtime = auto``, and Milvus Lite or a server."""

from __future__ import annotations

import sys
import types

import pytest
from pixgrep import ocr
from pixgrep.settings import is_lite_uri, load_settings
from pixgrep.stages import BackendUnavailable


def test_the_auto_runtime_is_openvino_only_for_throughput(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whether openvino imports, decided where Python decides it: a module in sys.modules, or None (ImportError).
    monkeypatch.setitem(sys.modules, "openvino", types.ModuleType("openvino"))
    assert ocr.resolve_runtime("auto", throughput=True) == "openvino"
    assert ocr.resolve_runtime("auto", throughput=False) == "onnxruntime"
    assert ocr.resolve_runtime("openvino", throughput=False) == "openvino"
    assert ocr.resolve_runtime("onnxruntime", throughput=True) == "onnxruntime"
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert ocr.resolve_runtime("auto", throughput=True) == "onnxruntime"
    with pytest.raises(BackendUnavailable, match="pip install openvino"):
        ocr.resolve_runtime("openvino", throughput=True)


def test_lite_or_server_is_decided_by_the_uri_alone(home: object) -> None:
    assert is_lite_uri("/home/me/.local/state/pixgrep/milvus.db")
    assert is_lite_uri("relative/milvus.db")
    for uri in ("http://milvus:19530", "https://m.example:443", "tcp://10.0.0.2:19530", "grpc://m:19530"):
        assert not is_lite_uri(uri), uri
    assert load_settings(None).milvus_is_lite  # the default: Lite under the state folder
    assert not load_settings(None, milvus={"uri": "http://milvus:19530"}).milvus_is_lite
