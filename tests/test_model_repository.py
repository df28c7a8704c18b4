"""The converters' outputs and inputs: Triton layout, configs, pinned sources."""

from __future__ import annotations

import shutil

import onnxruntime as ort
import pytest

from converters import build
from converters.models import CATALOGUE
from liveness.inference import pbtxt
from liveness.inference.repository import load_repository
from tests.conftest import SOURCES


def test_every_model_has_a_triton_config_with_dynamic_batching(model_repository):
    repo = load_repository(model_repository)
    assert set(repo) >= {"retinaface", "yunet", "minifasnet_v2", "minifasnet_v1se"}
    for name, cfg in repo.items():
        raw = pbtxt.loads((model_repository / name / "config.pbtxt").read_text())
        assert pbtxt.first(raw, "platform") == "onnxruntime_onnx"
        assert cfg.max_batch_size > 0
        assert "max_queue_delay_microseconds" in pbtxt.first(raw, "dynamic_batching") and cfg.max_queue_delay_us >= 0
        assert "version_policy" in raw
        assert cfg.inputs and cfg.outputs
        assert cfg.model_file(cfg.latest).is_file()


@pytest.mark.parametrize("name", ["retinaface", "minifasnet_v2", "minifasnet_v1se", "suriai_minifasnetv2se", "yunet"])
def test_exported_graphs_have_a_dynamic_batch_dim(model_repository, name):
    sess = ort.InferenceSession(str(model_repository / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    for t in list(sess.get_inputs()) + list(sess.get_outputs()):
        assert isinstance(t.shape[0], str), f"{name}:{t.name} batch dim is fixed: {t.shape}"


def test_minifasnet_crop_scales_come_from_the_upstream_file_names(model_repository):
    repo = load_repository(model_repository)
    assert repo["minifasnet_v2"].param("crop_scale") == "2.7"
    assert repo["minifasnet_v1se"].param("crop_scale") == "4.0"


def test_pbtxt_round_trip():
    text = 'name: "m"\nmax_batch_size: 8\ninput { name: "x" data_type: TYPE_FP32 dims: [ 3, -1 ] }\n' \
           'dynamic_batching { max_queue_delay_microseconds: 100 }\nparameters { key: "a" value { string_value: "b" } }'
    cfg = pbtxt.loads(text)
    assert pbtxt.first(cfg, "max_batch_size") == 8
    assert pbtxt.first(cfg, "input")["dims"] == [3, -1]
    assert pbtxt.first(pbtxt.first(cfg, "input"), "data_type") == "TYPE_FP32"
    assert pbtxt.loads(pbtxt.dumps(cfg)) == cfg


def test_source_verification_names_a_changed_file(tmp_path):
    spec = next(s for s in CATALOGUE if s.name == "minifasnet_v2")
    src = tmp_path / spec.sources[0]
    src.parent.mkdir(parents=True)
    data = bytearray((SOURCES / spec.sources[0]).read_bytes())
    data[-1] ^= 0xFF
    src.write_bytes(bytes(data))
    with pytest.raises(build.SourceError, match="MiniFASNetV2.onnx.*changed file"):
        build.verify_sources([spec], tmp_path)


def test_source_verification_names_a_missing_file(tmp_path):
    spec = next(s for s in CATALOGUE if s.name == "retinaface")
    shutil.copy(SOURCES / spec.sources[0], tmp_path / "deploy.prototxt")
    with pytest.raises(build.SourceError, match="Widerface-RetinaFace.caffemodel: missing"):
        build.verify_sources([spec], tmp_path)


def test_build_cli_refuses_bad_sources_with_exit_2(tmp_path, capsys):
    assert build.main(["--sources", str(tmp_path), "--out", str(tmp_path / "out"), "--only", "yunet"]) == 2
    assert "yunet_s_dynamic.onnx: missing" in capsys.readouterr().err
