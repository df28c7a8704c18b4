"""BioID BWS 3 on our gRPC port: ``bioid.services.v1.BioIDWebService`` (proto/bioid/services/v1/
bws.proto, BWS 3's layout) over the same use cases as our own ``liveness.bws.v1`` servicer.

A client generated from BioID's published bws.proto works unchanged: same method paths, field
numbers and types.  Auth is BWS's: the client signs its own JWT with its client key
(``liveness.keys.bws``); the key store then checks the bound API key and its quota on every
call, and charging is the admission context's (``liveness.admission``) like everywhere else.
The call frame (metadata, deadline, status codes, no-face answers, metrics) is
``edge.grpc_server.CallFrame``'s; this module adds BWS's metadata (``bws-version``, ``date``) and
renders BWS's messages.  The renderers are also the REST adapter's (``edge.bws_rest``).

Meaning, where ours differs from BioID's (docs/GRPC.md "BioID BWS 3"): 2 live images are judged
passively each (no motion model: ``motion_liveness_score`` and ``movement_direction`` are 0),
``tags`` (challenge-response) are ignored, and ``verification_level`` is our verifier's cosine
against BWS's FAR levels, never below our own operating threshold (``accuracy_level``).
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from email.utils import formatdate
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Callable, Sequence

import grpc

from edge.grpc_server import CallFrame, Observe
from edge.protogen import load
from liveness.errors import INVALID_REQUEST, MISSING_IMAGE, MISSING_VIDEO, NO_FACE, LivenessError
from liveness.keys import Principal
from liveness.keys.bws import BwsTokenVerifier
from liveness.pipeline import FACE_CUT_OFF, FACE_TOO_SMALL, MULTIPLE_FACES_FLAG

if TYPE_CHECKING:
    from liveness.app import LivenessApp
    from liveness.operations import PhotoVerification
    from liveness.pipeline import LivenessResult

pb2, pb2_grpc = load("bws")

try:
    _OURS = version("liveness")
except PackageNotFoundError:  # a checkout without `pip install -e .`
    _OURS = "0"
# BWS sends its version; ours says what we are: the BWS 3 contract served by this service.
BWS_VERSION = f"3.0.0-liveness.{_OURS}"
MAX_LIVE_IMAGES = 2

# BWS 3's JobError codes.
REJECTED = "RejectedByPassiveLiveDetection"
FACE_NOT_FOUND = "FaceNotFound"
MULTIPLE_FACES_FOUND = "MultipleFacesFound"
FAILURE_TO_ACQUIRE = "FailureToAcquire"
NOT_RECOGNIZED_CODE = "NotRecognized"
QUALITY_CHECKS = (  # (our flag, BWS-style check, message when the check failed)
    (FACE_TOO_SMALL, "FaceTooSmall", "The face is smaller than the configured minimum size."),
    (FACE_CUT_OFF, "FaceCutOff", "The face reaches the image border."),
    (MULTIPLE_FACES_FLAG, "MultipleFaces", "More than one face is in the image."),
)

# BWS's AccuracyLevel -> its false-acceptance rate.  Our cosine for each rate is extrapolated
# from a Gaussian fit of the 48 dev impostor pairs (mean 0.024, sd 0.079: docs/VERIFICATION.md);
# 48 pairs can only show FMR < 6 % (rule of three), so no level is granted below the operating
# threshold (``verify_threshold``, 0.42 = z 5.0): with the default every match is LEVEL_5.
IMPOSTOR_MEAN, IMPOSTOR_SD = 0.024, 0.079
LEVEL_Z = ((5, 4.265), (4, 3.719), (3, 3.090), (2, 2.807), (1, 2.576))  # level, z of its FAR (one-sided)


def accuracy_level(cosine: float, threshold: float) -> int:
    """The highest BWS level whose (extrapolated) cosine cut ``cosine`` reaches; 0 below ``threshold``."""
    if cosine < threshold:
        return 0
    for level, z in LEVEL_Z:
        if cosine >= max(threshold, IMPOSTOR_MEAN + z * IMPOSTOR_SD):
            return level
    return 0


# -- messages ------------------------------------------------------------------------------------


def _quality(flags: Sequence[str]) -> list[Any]:
    """score: 1.0 the check passed, 0.0 it found the problem (BWS: higher = better)."""
    return [pb2.QualityAssessment(check=name, score=0.0 if flag in flags else 1.0,
                                  message=text if flag in flags else "")
            for flag, name, text in QUALITY_CHECKS]


def _face(texture: float, keypoints: Any = None) -> Any:
    face = pb2.Face(texture_liveness_score=float(texture))
    if keypoints is not None and len(keypoints) >= 2:
        # Detector keypoints are image-left eye first; BWS names eyes by the person's side, so
        # its left_eye is the image-right one.
        (rx, ry), (lx, ly) = (tuple(map(float, keypoints[0])), tuple(map(float, keypoints[1])))
        face.right_eye.x, face.right_eye.y = rx, ry
        face.left_eye.x, face.left_eye.y = lx, ly
    return face


def _image_properties(result: "LivenessResult", keypoints: Any = None) -> Any:
    kp = keypoints if keypoints is not None else result.face.keypoints
    return pb2.ImageProperties(faces=[_face(result.score, kp)], quality_assessments=_quality(result.quality_flags))


def _rejections(results: Sequence["LivenessResult"]) -> list[Any]:
    many = len(results) > 1
    return [pb2.JobError(error_code=REJECTED, message=(f"image {i + 1}: " if many else "")
                         + f"liveness score {r.score:.4f} is below the threshold {r.threshold:g}.")
            for i, r in enumerate(results) if not r.is_live]


def liveness_response(results: Sequence["LivenessResult"]) -> Any:
    """1 image: passive.  2 images: passive on each, both must be live; the score is the lower."""
    return pb2.LivenessDetectionResponse(
        status=pb2.SUCCEEDED, errors=_rejections(results), image_properties=[_image_properties(r) for r in results],
        live=all(r.is_live for r in results), liveness_score=min(r.score for r in results))


def video_response(result: Any) -> Any:
    props = []
    for fr in result.frames:
        p = pb2.ImageProperties(frame_number=int(fr.frame_no), quality_score=float(fr.quality or 0.0))
        if fr.liveness is not None:
            p.faces.append(_face(fr.liveness))
            p.quality_assessments.extend(_quality(fr.quality_flags))
        props.append(p)
    codes = {issue.code for issue in result.errors}
    return pb2.LivenessDetectionResponse(
        status=pb2.FAULTED if FAILURE_TO_ACQUIRE in codes else pb2.SUCCEEDED,
        errors=[pb2.JobError(error_code=issue.code, message=issue.message) for issue in result.errors],
        image_properties=props, live=bool(result.alive), liveness_score=float(result.average_liveness or 0.0))


def photo_verify_response(pv: "PhotoVerification") -> Any:
    """Both live images must match (the lower cosine decides the level); a live image judged a
    spoof makes the call NOT_RECOGNIZED whatever the faces' similarity (BWS continues to the
    comparison only for live data); with liveness disabled, ``live`` is false and its score 0."""
    cos = min(m.cosine for m in pv.matches)
    level = accuracy_level(cos, pv.threshold)
    errors: list[Any] = []
    live = False
    score = 0.0
    props = [pb2.ImageProperties(faces=[_face(0.0, t.face.keypoints)]) for t in pv.live_faces]
    if pv.liveness is not None:
        errors += _rejections(pv.liveness)
        live = all(r.is_live for r in pv.liveness)
        score = min(r.score for r in pv.liveness)
        props = [_image_properties(r, t.face.keypoints) for r, t in zip(pv.liveness, pv.live_faces)]
        if not live:
            level = 0
    if level == 0 and cos < pv.threshold:
        errors.append(pb2.JobError(error_code=NOT_RECOGNIZED_CODE,
                                   message=f"similarity {max(0.0, cos):.4f} is below the threshold {pv.threshold:g}."))
    return pb2.PhotoVerifyResponse(
        status=pb2.SUCCEEDED, errors=errors, image_properties=props,
        photo_properties=pb2.ImageProperties(faces=[_face(0.0, pv.photo_face.face.keypoints)]),
        verification_level=level, verification_score=max(0.0, float(cos)), live=live, liveness_score=score)


def faulted_response(err: LivenessError, response_type: Any) -> Any:
    """No usable face (FaceNotFound / MultipleFacesFound): the job ran but could not judge."""
    code = FACE_NOT_FOUND if err.kind is NO_FACE else MULTIPLE_FACES_FOUND
    where = err.details.get("field") or (f"image {err.details['image'] + 1}" if "image" in err.details else "")
    return response_type(status=pb2.FAULTED, errors=[pb2.JobError(error_code=code,
                                                                  message=(f"{where}: " if where else "") + err.message)])


# -- the requests (shared with REST) ----------------------------------------------------------------


def check_image_count(n: int) -> None:
    if n == 0:
        raise LivenessError(MISSING_IMAGE, "live_images is empty: send 1 or 2 images.", {"field": "live_images"})
    if n > MAX_LIVE_IMAGES:
        raise LivenessError(INVALID_REQUEST, f"{n} live_images: send 1 or 2 images.", {"field": "live_images"})


def live_images(request: Any) -> list[bytes]:
    images = [item.image for item in request.live_images]
    check_image_count(len(images))
    return images


async def run_liveness(core: "LivenessApp", credential: Principal | None, request: Any) -> Any:
    return liveness_response(await core.check_images(credential, live_images(request)))


async def run_video(core: "LivenessApp", credential: Principal | None, request: Any) -> Any:
    if not request.video:
        raise LivenessError(MISSING_VIDEO, "video is empty.", {"field": "video"})
    return video_response(await core.check_video(credential, request.video, ""))


async def run_photo_verify(core: "LivenessApp", credential: Principal | None, request: Any) -> Any:
    images = live_images(request)
    if not request.photo:
        raise LivenessError(MISSING_IMAGE, "photo is empty.", {"field": "photo"})
    pv = await core.verify_photo(credential, images, request.photo, liveness=not request.disable_liveness_detection)
    return photo_verify_response(pv)


# -- the servicer --------------------------------------------------------------------------------

# The response message of the RPC being served (a faulted answer must be of its type).
_RESPONSE: ContextVar[Any] = ContextVar("bws_response", default=pb2.LivenessDetectionResponse)


class BwsServicer(CallFrame, pb2_grpc.BioIDWebServiceServicer):
    def __init__(self, core: "LivenessApp", tokens: BwsTokenVerifier | None, observe: Observe | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(core, tokens, observe)
        self.clock = clock

    def initial_metadata(self, metadata: dict[str, str]) -> list[tuple[str, str]]:
        return [*super().initial_metadata(metadata), ("bws-version", BWS_VERSION),
                ("date", formatdate(self.clock(), usegmt=True))]

    def faulted(self, err: LivenessError) -> Any:
        return faulted_response(err, _RESPONSE.get())

    async def _serve(self, request: Any, context: grpc.aio.ServicerContext, run: Any, response: Any,
                     endpoint: str) -> Any:
        _RESPONSE.set(response)  # this call's task only
        return await self._call(request, context, lambda credential: run(self.core, credential, request), endpoint)

    async def LivenessDetection(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve(request, context, run_liveness, pb2.LivenessDetectionResponse, "bws_image")

    async def VideoLivenessDetection(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve(request, context, run_video, pb2.LivenessDetectionResponse, "bws_video")

    async def PhotoVerify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._serve(request, context, run_photo_verify, pb2.PhotoVerifyResponse, "bws_photoverify")


def verifier_for(core: "LivenessApp") -> BwsTokenVerifier | None:
    """The BWS JWT verifier on the worker's key store; None when authentication is disabled."""
    return BwsTokenVerifier(core.keys) if core.keys is not None else None


def add_bws_servicer(server: grpc.aio.Server, core: "LivenessApp", observe: Observe | None = None) -> None:
    pb2_grpc.add_BioIDWebServiceServicer_to_server(BwsServicer(core, verifier_for(core), observe), server)
