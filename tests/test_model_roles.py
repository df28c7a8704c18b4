"""Model roles and preprocessing come from the repository (config.pbtxt ``role``, ``architecture``
and the numbers each module uses), not from model names: liveness.model_roles and the modules'
``from_config``."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from liveness.app import LivenessApp
from liveness.detection.modules import detector_from_config
from liveness.detection.retinaface import RetinaFace
from liveness.detection.yunet import YuNet
from liveness.inference.repository import ROLES, LocalRepository, ModelRoleError, load_repository
from liveness.landmarks.facemesh import FaceMeshModule
from liveness.landmarks.iris import IrisModule
from liveness.landmarks.measure import LandmarkModels, measure_face
from liveness.model_roles import check_model_roles
from liveness.pipeline import make_acquirer, make_detector
from liveness.recognition import ARCFACE_TEMPLATE, FaceVerifier, MobileFaceNet
from liveness.recognition.verify import embedder_from_config
from liveness.settings import Settings

ARCHITECTURES = {"retinaface": "detector", "yunet": "detector", "facemesh": "landmarks", "iris": "landmarks",
                 "mobilefacenet": "embedder"}
# Parameters added with the architecture parameter: an older repository has none of them.
NEW_PARAMETERS = ("architecture", "conf_threshold", "top_k", "keep_top_k", "input_divisor", "input_mean")


def copy_repository(src: Path, dst: Path, models: dict[str, str] | None = None) -> Path:
    """``dst`` with ``models`` (new folder name -> source model; default all, same names): each a
    copied config.pbtxt (unedited, ``name:`` included) and its version folders symlinked."""
    dst.mkdir(parents=True, exist_ok=True)
    for new, old in (models or {d.name: d.name for d in src.iterdir() if (d / "config.pbtxt").is_file()}).items():
        (dst / new).mkdir()
        shutil.copy(src / old / "config.pbtxt", dst / new / "config.pbtxt")
        for v in (src / old).iterdir():
            if v.name.isdigit():
                (dst / new / v.name).symlink_to(v.resolve(), target_is_directory=True)
    return dst


def edit_parameter(config: Path, key: str, value: str | None) -> None:
    """Set (or with None, delete) one string parameter of a config.pbtxt."""
    text = config.read_text()
    block = re.compile(r'parameters \{\n  key: "%s"\n  value \{\n    string_value: "[^"]*"\n  \}\n\}\n' % re.escape(key))
    if value is None:
        text = block.sub("", text)
    elif block.search(text):
        text = block.sub(f'parameters {{\n  key: "{key}"\n  value {{\n    string_value: "{value}"\n  }}\n}}\n', text)
    else:
        text += f'parameters {{\n  key: "{key}"\n  value {{\n    string_value: "{value}"\n  }}\n}}\n'
    config.write_text(text)


# -- the repository says what each model is ----------------------------------------------------


def test_every_config_names_its_role_and_every_non_antispoof_model_its_architecture(model_repository):
    for name, cfg in load_repository(model_repository).items():
        assert cfg.role in ROLES, name
        if cfg.role != "antispoof":
            assert ARCHITECTURES[cfg.architecture] == cfg.role and cfg.architecture == name


def test_modules_built_from_the_configs_have_the_values_they_had_as_constants(model_repository):
    repo = LocalRepository(model_repository)
    retina = detector_from_config(repo.config("retinaface"), 0.6)
    ref = RetinaFace()
    assert isinstance(retina, RetinaFace) and retina.model == "retinaface"
    assert [getattr(retina, k) for k in ("reference_side", "color", "variances", "conf_threshold", "nms_threshold",
                                         "top_k", "keep_top_k")] == \
           [getattr(ref, k) for k in ("reference_side", "color", "variances", "conf_threshold", "nms_threshold",
                                      "top_k", "keep_top_k")]
    np.testing.assert_array_equal(retina.mean, ref.mean)
    yunet = detector_from_config(repo.config("yunet"), 0.6)
    assert isinstance(yunet, YuNet) and (yunet.max_side, yunet.pad_multiple, yunet.nms_threshold, yunet.color) == \
           (640, 32, 0.3, "BGR")
    assert FaceMeshModule.from_config(repo.config("facemesh")) == FaceMeshModule()
    assert IrisModule.from_config(repo.config("iris")) == IrisModule()
    emb = embedder_from_config(repo.config("mobilefacenet"))
    assert isinstance(emb, MobileFaceNet) and emb.size == 112 and emb.color == "RGB"
    np.testing.assert_array_equal(emb.template, ARCFACE_TEMPLATE)


def test_a_changed_parameter_changes_the_module(model_repository, tmp_path):
    repo_dir = copy_repository(model_repository, tmp_path / "repo",
                               {m: m for m in ("retinaface", "yunet", "facemesh", "mobilefacenet")})
    edit_parameter(repo_dir / "retinaface" / "config.pbtxt", "mean", "1,2,3")
    edit_parameter(repo_dir / "yunet" / "config.pbtxt", "max_side", "320")
    edit_parameter(repo_dir / "facemesh" / "config.pbtxt", "crop_scale", "2.0")
    shifted = ARCFACE_TEMPLATE + [1.0, -2.0]
    edit_parameter(repo_dir / "mobilefacenet" / "config.pbtxt", "template", ",".join(map(str, shifted.reshape(-1))))
    repo = LocalRepository(repo_dir)
    assert detector_from_config(repo.config("retinaface")).mean.tolist() == [1.0, 2.0, 3.0]
    assert detector_from_config(repo.config("yunet")).max_side == 320
    assert FaceMeshModule.from_config(repo.config("facemesh")).input.crop_scale == 2.0
    emb = embedder_from_config(repo.config("mobilefacenet"))
    np.testing.assert_allclose(emb.template, shifted)
    # the aligned face follows the template: the keypoints land on it
    bgr = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    kp = ARCFACE_TEMPLATE + 40
    # template point t + (1, -2) <- image point t + 40: aligned[y, x] = bgr[y + 42, x + 39]
    np.testing.assert_array_equal(emb.align(bgr, kp), bgr[42:154, 39:151])
    edit_parameter(repo_dir / "yunet" / "config.pbtxt", "max_side", "big")
    with pytest.raises(ValueError, match=r"model 'yunet' .*parameter 'max_side' is 'big', not an integer"):
        detector_from_config(LocalRepository(repo_dir).config("yunet"))


def test_an_older_repository_without_the_new_parameters_still_works(model_repository, tmp_path):
    repo_dir = copy_repository(model_repository, tmp_path / "repo")
    for d in repo_dir.iterdir():
        for key in NEW_PARAMETERS + ("template", "mean", "std", "nms_threshold"):
            if (d / "config.pbtxt").is_file() and not d.name.startswith("minifasnet") and "suriai" not in d.name:
                edit_parameter(d / "config.pbtxt", key, None)
    assert "architecture" not in (repo_dir / "retinaface" / "config.pbtxt").read_text()
    repo = LocalRepository(repo_dir)
    settings = Settings(model_repository=repo_dir)
    check_model_roles(settings, repo.config)  # folder names stand for the architectures
    assert isinstance(make_detector(settings, repo.config), RetinaFace)
    assert LandmarkModels.from_configs([repo.config("facemesh"), repo.config("iris")]) == \
           LandmarkModels(FaceMeshModule(), IrisModule())
    np.testing.assert_array_equal(embedder_from_config(repo.config("mobilefacenet")).template, ARCFACE_TEMPLATE)
    # ... but a renamed copy of such a config must say what it is
    copy_repository(repo_dir, tmp_path / "more", {"detector_x": "retinaface"})
    with pytest.raises(ModelRoleError, match="detector names model 'detector_x'.*no 'architecture' parameter"):
        make_detector(Settings(model_repository=tmp_path / "more", detector="detector_x"))


# -- wrong roles refuse the start --------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(antispoof_models=("minifasnet_v2", "retinaface")),
         "antispoof_models names model 'retinaface', a model with role 'detector'.*needs a model with role 'antispoof'"),
        (dict(detector="minifasnet_v2"),
         "detector names model 'minifasnet_v2', a model with role 'antispoof'.*needs a model with role 'detector'"),
        (dict(detector="mobilefacenet"), "detector names model 'mobilefacenet', a model with role 'embedder'"),
        (dict(detector="no_such_model"), "detector names model 'no_such_model', which is not in the model repository"),
        (dict(detector_fallback_model="retinaface"),
         "detector_fallback_model names detector 'retinaface' .*gives no facial keypoints"),
        (dict(detector_fallback_model="iris"), "detector_fallback_model names model 'iris', a model with role 'landmarks'"),
        (dict(landmark_models=("facemesh", "yunet")), "landmark_models names model 'yunet', a model with role 'detector'"),
        (dict(landmark_models=("facemesh",)), "landmark_models .* exactly one model of architecture 'iris'"),
        (dict(verification_models=("retinaface", "mobilefacenet")),
         "verification_models names detector 'retinaface' .*gives no facial keypoints"),
        (dict(verification_models=("yunet", "iris")), "verification_models names model 'iris', a model with role 'landmarks'"),
        (dict(verification_models=("yunet", "retinaface")), r"must name exactly one model with role 'detector' \(found 2\)"),
        (dict(verification_models=("yunet",)), r"must name exactly one model with role 'embedder' \(found 0\)"),
    ],
)
def test_a_model_with_the_wrong_role_refuses_the_start(model_repository, tmp_path, overrides, message):
    settings = Settings(model_repository=model_repository, auth_enabled=False, db_path=tmp_path / "db.sqlite3",
                        **overrides)
    with pytest.raises(ModelRoleError, match=message):
        LivenessApp(settings)


def test_every_problem_is_listed_and_disabled_features_are_not_checked(model_repository):
    repo = LocalRepository(model_repository)
    bad = dict(antispoof_models=("iris",), landmark_models=("yunet",), verification_models=("iris",))
    with pytest.raises(ModelRoleError) as e:
        check_model_roles(Settings(model_repository=model_repository, **bad), repo.config)
    assert all(s in str(e.value) for s in ("antispoof_models", "landmark_models", "verification_models"))
    with pytest.raises(ModelRoleError, match="antispoof_models") as e:
        check_model_roles(Settings(model_repository=model_repository, challenges_enabled=False,
                                   verification_enabled=False, **bad), repo.config)
    assert "landmark_models" not in str(e.value) and "verification_models" not in str(e.value)


@pytest.mark.parametrize("name", ["", "../retinaface", "a/b", ".hidden", " retinaface"])
def test_model_names_are_folder_names(name):
    with pytest.raises(ValueError, match="not model names"):
        Settings(detector=name)
    with pytest.raises(ValueError, match="not model names"):
        Settings(verification_models=("yunet", name))
    with pytest.raises(ValueError, match="not model names"):
        Settings(detector_fallback_model=name)


def test_the_detector_setting_keeps_its_values(model_repository, tmp_path):
    for name, cls in (("retinaface", RetinaFace), ("yunet", YuNet)):
        s = Settings(model_repository=model_repository, detector=name)
        assert s.detector == name and isinstance(make_detector(s), cls)
    acq = make_acquirer(Settings(model_repository=model_repository, detector="yunet"))
    assert acq.models == ["yunet"]  # a YuNet detector is its own fallback
    # a YuNet detector needs no fallback model, so a wrong one is not even looked at
    acq = make_acquirer(Settings(model_repository=model_repository, detector="yunet", detector_fallback_model="nope"))
    assert acq.models == ["yunet"]
    check_model_roles(Settings(model_repository=model_repository, detector="yunet", detector_fallback_model="nope"),
                      LocalRepository(model_repository).config)
    # the fallback passes run the model the setting names: a renamed copy of YuNet, under its own name
    repo = copy_repository(model_repository, tmp_path / "repo", {"retinaface": "retinaface", "yunet_x": "yunet"})
    acq = make_acquirer(Settings(model_repository=repo, detector_fallback_model="yunet_x"))
    assert acq.models == ["retinaface", "yunet_x"]
    assert make_acquirer(Settings(model_repository=model_repository)).models == ["retinaface", "yunet"]


# -- a renamed copy works under its new name ---------------------------------------------------

RENAMED = {"retinaface_v2": "retinaface", "yunet": "yunet", "minifasnet_v2": "minifasnet_v2",
           "minifasnet_v1se": "minifasnet_v1se", "facemesh_v2": "facemesh", "iris_v2": "iris",
           "yunet_v2": "yunet", "mobilefacenet_v2": "mobilefacenet"}


@pytest.fixture(scope="module")
def renamed_app(model_repository, tmp_path_factory):
    """The service on a repository where the detector, the landmark models and the verification
    models are copies under other names (config.pbtxt copied unedited, weights symlinked)."""
    tmp = tmp_path_factory.mktemp("renamed")
    repo = copy_repository(model_repository, tmp / "repo", RENAMED)
    a = LivenessApp(Settings(
        model_repository=repo, auth_enabled=False, db_path=tmp / "db.sqlite3",
        model_policy_file=model_repository.parent / "model_policy.toml",
        detector="retinaface_v2", landmark_models=("facemesh_v2", "iris_v2"),
        # the service's own verifier is built by liveness/app.py; this one by from_settings below
        verification_enabled=False, verification_models=("yunet_v2", "mobilefacenet_v2"),
    ))
    for m in ("yunet_v2", "mobilefacenet_v2"):
        a.backend.load_sync(m, 1)
    yield a
    a.close()


def test_a_renamed_copy_configured_by_name_gives_the_same_answers(app, renamed_app, media):
    assert {"retinaface_v2", "facemesh_v2", "iris_v2"} <= set(renamed_app.models)
    assert not {"retinaface", "facemesh", "iris"} & set(renamed_app.models)
    data = (media / "images" / "silentface_image_T1.jpg").read_bytes()
    want = asyncio.run(app.check_image(None, data))
    got = asyncio.run(renamed_app.check_image(None, data))
    assert (got.score, got.face, got.model_scores) == (want.score, want.face, want.model_scores)
    assert [m.name for m in got.models] == ["retinaface_v2", "minifasnet_v2", "minifasnet_v1se"]
    assert [m.sha256 for m in got.models] == [m.sha256 for m in want.models]

    # the landmark models by their new names (challenge steps)
    bgr = cv2.imread(str(media / "images" / "silentface_image_T1.jpg"))

    async def signals(a):
        versions = a.routing.router.route(None).primary
        return await measure_face(a, bgr, want.face, versions)

    assert asyncio.run(signals(renamed_app)) == asyncio.run(signals(app))

    # face verification by role from verification_models
    verifier = FaceVerifier.from_settings(renamed_app.backend, renamed_app.executor, renamed_app.settings)
    assert verifier.model_names == ["yunet_v2", "mobilefacenet_v2"]
    img = cv2.imread(str(media / "verification" / "deepface_img5.jpg"))
    t_new = asyncio.run(verifier.reference(img, {"yunet_v2": 1, "mobilefacenet_v2": 1}))
    t_old = asyncio.run(app.verifier.reference(img, app.routing.router.route(None).primary))
    np.testing.assert_array_equal(t_new.embedding, t_old.embedding)
    assert t_new.model.name == "mobilefacenet_v2" and t_new.model.sha256 == t_old.model.sha256


# -- one alignment: the video's normalized face is the verifier's ------------------------------


def test_the_video_normalized_face_is_the_verifier_alignment_on_the_embedders_template(app):
    from liveness.detection.base import Face
    from liveness.video.check import _normalized_template, normalized_face

    template = _normalized_template(app)
    np.testing.assert_array_equal(template, app.verifier.embedder.template)  # the config's template
    bgr = np.random.default_rng(1).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    kp = ARCFACE_TEMPLATE * 1.5 + [30.0, 20.0]
    face = Face(30, 20, 170, 170, 0.9, kp)
    np.testing.assert_array_equal(normalized_face(bgr, face, template), app.verifier.embedder.align(bgr, kp))
    np.testing.assert_array_equal(normalized_face(bgr, face), app.verifier.embedder.align(bgr, kp))  # default
    # no keypoints (RetinaFace) or degenerate ones: the box crop
    for f in (Face(30, 20, 170, 170, 0.9), Face(30, 20, 170, 170, 0.9, np.zeros((5, 2)))):
        assert normalized_face(bgr, f, template).shape == (112, 112, 3)
