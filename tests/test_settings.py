from __future__ import annotations

from liveness.settings import Settings


def test_defaults_are_documented_values(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.detector == "retinaface" and s.threshold == 0.5
    assert s.max_image_bytes == 10 * 1024 * 1024 and s.max_image_pixels == 40_000_000
    assert s.auth_enabled is True


def test_env_overrides_file(monkeypatch, tmp_path):
    cfg = tmp_path / "conf.toml"
    cfg.write_text('threshold = 0.7\ndetector = "yunet"\nmulti_face_policy = "reject"\n')
    monkeypatch.setenv("LIVENESS_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("LIVENESS_THRESHOLD", "0.8")
    s = Settings()
    assert s.threshold == 0.8  # env wins
    assert s.detector == "yunet" and s.multi_face_policy == "reject"  # from the file
