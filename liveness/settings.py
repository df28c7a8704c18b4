"""One typed settings object.  Precedence: environment (``LIVENESS_*``) > TOML file > defaults.

The TOML file is optional and named by ``LIVENESS_CONFIG_FILE`` (default ``liveness.toml`` in
the working directory if it exists).  README "Configuration" documents every field.
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = Path(os.environ.get("LIVENESS_CONFIG_FILE", "liveness.toml"))
        self._data: dict[str, Any] = tomllib.loads(path.read_text()) if path.is_file() else {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIVENESS_", extra="ignore")

    # Models
    model_repository: Path = Path("model_repository")
    # The detector model (a folder of model_repository); its config.pbtxt role must be detector and
    # its architecture says which module runs it (retinaface, yunet: liveness/model_roles.py).
    detector: str = "retinaface"
    detector_confidence: float = Field(0.6, ge=0.0, le=1.0)
    # Face acquisition (liveness/detection/acquire.py): only when the reference pass finds no
    # face, RetinaFace at these areas (px, square side), then YuNet at these longest sides.
    detector_fallback: bool = True
    detector_fallback_areas: tuple[int, ...] = (128,)
    detector_fallback_sides: tuple[int, ...] = (640, 960)
    detector_fallback_model: str = "yunet"  # the YuNet passes' model (role detector, with keypoints)
    # Anti-spoof models (folders of model_repository, each described by its config.pbtxt
    # parameters: liveness/antispoof/spec.py) and how their p(live) are fused (liveness/decision.py).
    antispoof_models: tuple[str, ...] = ("minifasnet_v2", "minifasnet_v1se")
    fusion: Literal["mean", "min", "weighted"] = "mean"
    fusion_weights: dict[str, float] = Field(default_factory=dict)  # model -> weight > 0 (``weighted``)

    # Decision
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    multi_face_policy: Literal["reject", "biggest"] = "biggest"
    # A second face whose area is below this fraction of the biggest one is background noise,
    # not a second person at the camera; it does not trigger the ``reject`` policy.
    multi_face_min_area_ratio: float = Field(0.25, ge=0.0, le=1.0)
    min_face_size: int = Field(64, ge=1)  # px, shorter side of the face box; below -> quality flag

    # Input limits, checked before any pixel is decoded
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=1024)
    # A JPEG is decoded at 1/2, 1/4 or 1/8 in the DCT domain (several times cheaper) when its
    # longer side stays at least this; a face too small at that scale (under 2 x min_face_size,
    # or a classifier crop under its input size) is searched again in a finer decode, and an image
    # without a face in full.  0: always decode in full (the exact reference pipeline).
    decode_min_side: int = Field(640, ge=0)
    # Decode memory (liveness/imaging/memory.py), from the header: width x height x channels x bytes
    # per sample, twice (OpenCV's buffer and result).  One image may take max_decode_mb (40 Mpx
    # of 16-bit RGBA fit); all decodes of a worker together decode_memory_mb, a decode waits at
    # most decode_wait_s for its share (then 503 busy).
    max_decode_mb: int = Field(640, ge=16)
    decode_memory_mb: int = Field(1024, ge=16)
    decode_wait_s: float = Field(10.0, ge=0)

    # Video (POST video): limits come from the container metadata and are checked before any
    # frame is decoded; see liveness/video/__init__.py for the decision rules.
    video_max_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    video_max_seconds: float = Field(60.0, gt=0)
    video_max_fps: float = Field(30.0, gt=0)
    # Orientation-free: a portrait 1080x1920 clip fits a 1920x1080 limit.
    video_max_width: int = Field(1920, ge=16)
    video_max_height: int = Field(1080, ge=16)
    video_max_decoded_frames: int = Field(30, ge=1)  # frames selected (equidistant) for analysis
    video_min_selected_frames: int = Field(10, ge=1)  # usable frames needed when no early stop fired
    video_live_frames_to_stop: int = Field(7, ge=1)
    video_spoof_frames_to_stop: int = Field(7, ge=1)
    video_max_failures: int = Field(5, ge=1)  # frames without a usable face before giving up
    video_decode_timeout_s: float = Field(20.0, gt=0)
    # Frames run concurrently through the pipeline (so the batcher batches them) per step;
    # the early-stopping rule is applied between steps, in time order.
    video_chunk_frames: int = Field(8, ge=1, le=64)
    video_decode_threads: int = Field(2, ge=1)  # concurrent video decodes per process

    # Inference
    backend: Literal["embedded", "triton"] = "embedded"
    triton_url: str = "127.0.0.1:8001"  # gRPC by default; host:port
    triton_protocol: Literal["grpc", "http"] = "grpc"
    triton_timeout_s: float = Field(5.0, gt=0)  # per inference call; then 503 + Retry-After
    model_policy_file: Path = Path("model_policy.toml")  # per-model version policy (optional file)
    ort_intra_op_threads: int = Field(1, ge=1)
    inference_concurrency: int = Field(2, ge=1)  # batches in flight per model
    cpu_threads: int = Field(2, ge=1)  # decode / crop worker threads
    http_requests_per_connection: int = Field(100, ge=0)  # then Connection: close, to spread clients over workers (0: never)
    # Slow clients (edge/timeouts.py): the request line and headers must arrive within header_timeout_s
    # of the connection (or of the previous response), the body within body_timeout_s of its
    # headers; else 408 and the connection is closed (0: off).  Keep body_timeout_s below the 30 s
    # request timeout, which would answer first.
    header_timeout_s: float = Field(10.0, ge=0)
    body_timeout_s: float = Field(20.0, ge=0)
    # BentoML's OpenTelemetry middleware on HTTP requests (configure its exporter and sample rate
    # in BentoML's own configuration).  Off: it is bypassed, which saves its per-request work.
    http_tracing: bool = False

    # Keys and quotas
    auth_enabled: bool = True
    # sha256 (hex) of the admin key for /v1/admin/*; unset = admin API off.  `liveness admin-key`.
    admin_key_sha256: str | None = None
    db_path: Path = Path("data/liveness.sqlite3")
    # Routes a caller may use without any credential, each charged to the key it names (a key_id
    # or a key's name): for clients that cannot send a key (FindFace's curl, Liveness_service's
    # browser pages), on trusted networks only.  A path, or a prefix ending in "*"
    # ("/status/*"); JSON object in the environment.  A request that does send a credential is
    # judged by it; revoking the named key closes its routes.  Off (empty) by default.
    anonymous_routes: dict[Annotated[str, Field(pattern=r"^/")], Annotated[str, Field(min_length=1)]] = {}
    mongodb_uri: str | None = None
    # A reserved unit not committed or refunded within this (its process died mid-request) is given
    # back by the sweep (liveness.admission).  Keep it well above the 30 s request timeout.
    reservation_lease_s: float = Field(120.0, ge=10.0)

    # gRPC (BioID-style, docs/GRPC.md): a grpc.aio server beside the HTTP one, one per worker,
    # sharing the port (SO_REUSEPORT).  Bearer JWTs (HS256) from `liveness tokens create`.
    grpc_enabled: bool = True
    grpc_host: str = "0.0.0.0"
    grpc_port: int = Field(50051, ge=1, le=65535)
    # Token secrets (liveness.tokens: gRPC bearer, session and challenge result tokens share one
    # ring).  token_secrets, newest first: the first signs, all verify (rotation); JSON list in the
    # environment.  When set it is the whole ring and the two older settings below are ignored.
    token_secrets: tuple[Annotated[str, Field(min_length=32)], ...] = ()
    # Older settings, still honoured without token_secrets: jwt_secret signs (first), then
    # session_token_secrets verify.  Neither set: the key store's generated secret signs (shared by
    # every worker and the CLI).  Setting jwt_secret invalidates bearer tokens signed with the stored one.
    jwt_secret: str | None = Field(None, min_length=32)

    # Active challenges (liveness.challenges; README "Active challenges")
    challenges_enabled: bool = True  # loads landmark_models at start (challenge steps need them)
    landmark_models: tuple[str, ...] = ("facemesh", "iris")  # face mesh first, then iris (liveness.landmarks.measure)
    challenge_pool: tuple[str, ...] = (
        "blink", "turn_left", "turn_right", "look_center", "smile", "open_mouth", "raise_brows", "wink",
    )
    challenge_steps: int = Field(3, ge=1, le=8)  # challenges drawn per session
    challenge_step_timeout_s: float = Field(20.0, gt=0)  # a step not done in time fails the session
    challenge_session_ttl_s: float = Field(600.0, gt=0)  # session expiry (10 min)
    challenge_max_sessions: int = Field(1000, ge=1)  # active sessions in the store (all workers, all keys)
    # Per API key, so no key can fill the server's pool (README "Active challenges").
    challenge_max_sessions_per_key: int = Field(20, ge=1)  # active at once
    challenge_sessions_per_key_per_minute: int = Field(60, ge=1)  # started in any 60 s
    challenge_max_frames: int = Field(600, ge=1)  # frames one session may score (its unit buys at most these)
    challenge_max_fps: float = Field(15.0, gt=0)  # faster frames -> 429 frame_too_fast
    challenge_face_missing_s: float = Field(2.0, gt=0)  # face absent longer than this fails the session
    challenge_min_passive_frames: int = Field(3, ge=1)  # frames with a passive score needed to pass
    # Identity continuity between consecutive frames (see liveness/challenges/identity.py)
    challenge_max_center_jump: float = Field(0.5, gt=0)  # centre move / previous box size, per frame
    challenge_min_area_ratio: float = Field(0.5, gt=0, le=1)  # smaller/larger box area per frame
    challenge_min_appearance: float = Field(0.6, ge=0, le=1)  # colour-histogram intersection per frame
    challenge_return_frame: bool = False  # keep the best frame (JPEG, in the session row) and return it
    # Origins whose browser pages may open the Socket.IO endpoint /socket.io/ (Liveness_service's
    # real-time clients); empty: same origin only; ["*"]: any (python-socketio's cors_allowed_origins).
    socketio_cors_origins: tuple[str, ...] = ()
    challenge_token_ttl_s: int = Field(600, ge=1)  # result_token lifetime
    challenge_purge_interval_s: float = Field(60.0, gt=0)  # periodic purge of expired sessions
    challenge_purge_grace_s: float = Field(3600.0, ge=0)  # expired rows kept this long (answer 410, not 404)

    # App-server sessions and face verification (liveness.sessions, liveness.recognition;
    # README "Sessions", docs/PRIVACY.md)
    sessions_enabled: bool = True
    # Older setting (see token_secrets): secrets newest first, JSON list in the environment; the
    # first signs every kind when jwt_secret is unset.  Empty: the session store's generated
    # secret still verifies session tokens issued before the upgrade.
    session_token_secrets: tuple[str, ...] = ()
    session_retention_s: float = Field(86400.0, ge=0)  # results kept after expiry unless deleted
    session_image_retention_s: float = Field(86400.0, gt=0)  # images of enable_session_image sessions
    session_throttle_failures: int = Field(5, ge=1)  # failed attempts per device within the window ...
    session_throttle_window_s: float = Field(180.0, gt=0)  # ... (3 min) ...
    session_throttle_cooldown_s: float = Field(300.0, gt=0)  # ... block new attempts for this long
    session_purge_interval_s: float = Field(60.0, gt=0)
    session_list_max: int = Field(200, ge=1)  # GET /v1/sessions page size cap
    verification_enabled: bool = True  # loads verification_models at start (*-verify modes, /v1/verify)
    verification_models: tuple[str, ...] = ("yunet", "mobilefacenet")  # keypoint detector, embedder
    verify_threshold: float = Field(0.42, ge=-1.0, le=1.0)  # cosine; docs/VERIFICATION.md
    # Stored detections (liveness.detections; FindFace's return_detection / detection_id): the best
    # face's embedding only, bound to its key, for /v1/verify (docs/COMPATIBILITY.md "FindFace").
    detection_ttl_s: float = Field(600.0, gt=0)  # a detection_id works this long
    detection_max_per_key: int = Field(100, ge=1)  # unexpired detections per key (429 detection_limit)
    detection_max_total: int = Field(10000, ge=1)  # unexpired detections of all keys together

    @model_validator(mode="after")
    def _check_model_names(self) -> "Settings":
        # Names only (folders of model_repository); their roles are checked against the repository
        # at start-up (liveness.model_roles.check_model_roles).
        fields = {"detector": (self.detector,), "detector_fallback_model": (self.detector_fallback_model,),
                  "antispoof_models": self.antispoof_models,
                  "landmark_models": self.landmark_models, "verification_models": self.verification_models}
        for field_name, names in fields.items():
            bad = [n for n in names if not n or n != n.strip() or "/" in n or "\\" in n or n.startswith(".")]
            if bad:
                raise ValueError(f"{field_name}: {bad} are not model names (folders of model_repository)")
        return self

    @model_validator(mode="after")
    def _check_antispoof(self) -> "Settings":
        models = self.antispoof_models
        if not models:
            raise ValueError("antispoof_models is empty: name at least one anti-spoof model")
        if len(set(models)) != len(models):
            raise ValueError(f"antispoof_models lists a model twice: {list(models)}")
        unknown = [m for m in self.fusion_weights if m not in models]
        if unknown:
            raise ValueError(f"fusion_weights names {', '.join(unknown)}, not in antispoof_models {list(models)}")
        bad = {m: w for m, w in self.fusion_weights.items() if not (w > 0 and w != float("inf"))}
        if bad:
            raise ValueError(f"fusion_weights must be positive and finite: {bad}")
        if self.fusion == "weighted":
            missing = [m for m in models if m not in self.fusion_weights]
            if missing:
                raise ValueError(f"fusion = 'weighted' needs a weight for every anti-spoof model; missing: {', '.join(missing)}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _TomlSource(settings_cls)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
