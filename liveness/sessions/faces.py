"""Face verification of ``*-verify`` sessions on the use cases (``liveness.operations``): the
reference image's embedding at creation, then the live face of each attempt against it.

Nothing about the reference image is kept but its embedding (and the embedder version that made
it: embeddings of different versions are not comparable, so probes use the same version even
after a promote).  docs/VERIFICATION.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from liveness.detection.base import Face
from liveness.errors import LivenessError
from liveness.sessions.attempts import Grant

if TYPE_CHECKING:
    from liveness.operations import Operations


class SessionFaces:
    def __init__(self, ops: "Operations") -> None:
        self.ops = ops
        self.admission = ops.admission

    async def _versions(self, key_id: str) -> dict[str, int]:
        return dict((await self.admission.route(key_id)).primary)

    async def reference(self, image: bytes, key_id: str) -> tuple[bytes, dict[str, Any], int]:
        """A reference image -> (embedding bytes, verify_image info, embedder version).  NO_FACE /
        MULTIPLE_FACES name the field."""
        verifier = self.ops.require_verifier()
        try:
            template = await verifier.reference(await self.ops.decode_bgr(image), await self._versions(key_id))
        except LivenessError as e:
            e.details.setdefault("field", "verify_image")
            raise
        return np.asarray(template.embedding, np.float32).tobytes(), template.describe(), int(template.model.version)

    async def probe(self, grant: Grant, bgr: np.ndarray, target: Face | None) -> dict[str, Any] | None:
        """The live face against the session's reference: {is_identical, match_confidence} (with
        ``reason`` when the verifier finds no face where the liveness check found one); None
        without a reference."""
        if grant.reference is None:
            return None
        verifier = self.ops.require_verifier()
        versions = await self._versions(grant.key_id)
        if grant.reference_version is not None:
            versions[verifier.model_names[-1]] = grant.reference_version
        probe = await verifier.probe(bgr, versions, target)
        if probe is None:
            return {"is_identical": False, "match_confidence": 0.0, "reason": "no_face_for_recognition"}
        ref = np.frombuffer(grant.reference, np.float32)
        r = verifier.match(ref, probe.embedding)
        return {"is_identical": bool(r.is_identical), "match_confidence": round(float(r.match_confidence), 4)}

    def models(self, key_id: str) -> list[dict[str, Any]]:
        """The recognition models' versions this key's attempts are verified with."""
        return self.ops.recognition_versions(self.admission.route_now(key_id).primary)
