"""Calibrate the face-verification threshold on the dev verification set, through the real
pipeline (EmbeddedBackend on model_repository/, FaceVerifier: YuNet -> align -> MobileFaceNet).

    .venv/bin/python tools/calibrate_verification.py [--repository model_repository]
        [--media ../shared/media/dev/verification] [--threshold 0.42] [--repeats 5]

Prints the cosine of every pair (all 55 image pairs of identities.csv, and the 17 of pairs.csv),
the same/different ranges, FMR/FNMR over a threshold sweep, genuine cosines when one photo is
degraded, the RetinaFace/YuNet box overlap probe() relies on, and the time per face.
docs/VERIFICATION.md is written from this output.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import math
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from liveness.detection.retinaface import RetinaFace  # noqa: E402
from liveness.inference.embedded import EmbeddedBackend  # noqa: E402
from liveness.recognition import DEFAULT_THRESHOLD, FaceVerifier, cosine, iou  # noqa: E402

SWEEP = [round(0.20 + 0.05 * i, 2) for i in range(12)]  # 0.20 .. 0.75


def load_identities(media: Path) -> dict[str, str]:
    with open(media / "identities.csv", newline="") as f:
        return {r["file"]: r["identity_group"] for r in csv.DictReader(f)}


def load_pairs(media: Path) -> list[tuple[str, str, bool]]:
    with open(media / "pairs.csv", newline="") as f:
        return [(r["file_a"], r["file_b"], r["same_person"] == "yes") for r in csv.DictReader(f)]


def degrade(bgr: np.ndarray, kind: str, eye_dist: float) -> np.ndarray:
    """Synthetic, medium-quality versions of a photo (what a worse camera or light gives)."""
    if kind == "mild blur":
        return cv2.GaussianBlur(bgr, (0, 0), 0.004 * max(bgr.shape[:2]))
    if kind == "small (30 px eyes)":
        s = 30.0 / eye_dist
        return cv2.resize(bgr, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    if kind == "dim (x0.35)":
        return (bgr.astype(np.float32) * 0.35).astype(np.uint8)
    if kind == "jpeg q20":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 20])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)
    raise ValueError(kind)


def rates(genuine: list[float], impostor: list[float], t: float) -> tuple[float, float, int, int]:
    fnm = sum(c < t for c in genuine)
    fm = sum(c >= t for c in impostor)
    return fm / len(impostor), fnm / len(genuine), fm, fnm


async def run(args: argparse.Namespace) -> int:
    media: Path = args.media
    identities = load_identities(media)
    files = sorted(identities, key=lambda f: int("".join(ch for ch in f if ch.isdigit())))
    backend = EmbeddedBackend(args.repository)
    executor = ThreadPoolExecutor(max_workers=2)
    try:
        versions = {m: backend.config(m).latest for m in ("yunet", "mobilefacenet", "retinaface")}
        for m, v in versions.items():
            backend.load_sync(m, v)
        backend.mark_ready()
        verifier = FaceVerifier(backend, executor, threshold=args.threshold)
        print("models: " + ", ".join(f"{m} v{v} ({backend.version_info(m, v).sha256[:12]})" for m, v in versions.items()))

        images = {f: cv2.imread(str(media / f)) for f in files}
        templates = {f: await verifier.reference(img, versions) for f, img in images.items()}

        print("\n## Faces")
        print("| file | identity | size | YuNet score | inter-eye px | quality | reasons |")
        print("|---|---|---|---|---|---|---|")
        for f in files:
            t, img = templates[f], images[f]
            eye = t.quality.metrics["inter_eye_px"]
            print(f"| {f} | {identities[f]} | {img.shape[1]}x{img.shape[0]} | {t.face.score:.3f} | {eye:.0f} | "
                  f"{t.quality.level} | {', '.join(t.quality.reasons) or '-'} |")

        all_pairs = [(a, b, identities[a] == identities[b]) for a, b in itertools.combinations(files, 2)]
        cos = {(a, b): cosine(templates[a].embedding, templates[b].embedding) for a, b, _ in all_pairs}
        cos.update({(b, a): c for (a, b), c in list(cos.items())})

        print("\n## pairs.csv")
        print("| pair | same | cosine | decision at %.2f |" % args.threshold)
        print("|---|---|---|---|")
        listed = load_pairs(media)
        for a, b, same in listed:
            r = verifier.match(templates[a].embedding, templates[b].embedding)
            ok = "correct" if r.is_identical == same else "WRONG"
            print(f"| {a.removeprefix('deepface_')} / {b.removeprefix('deepface_')} | {'yes' if same else 'no'} | {r.cosine:.3f} | {ok} |")

        print("\n## All image pairs (identities.csv)")
        print("| pair | same | cosine |")
        print("|---|---|---|")
        for a, b, same in sorted(all_pairs, key=lambda p: -cos[p[0], p[1]]):
            print(f"| {a.removeprefix('deepface_')} / {b.removeprefix('deepface_')} | {'yes' if same else 'no'} | {cos[a, b]:.3f} |")

        for name, pairs in (("pairs.csv", listed), ("all pairs", all_pairs)):
            gen = [cos[a, b] for a, b, s in pairs if s]
            imp = [cos[a, b] for a, b, s in pairs if not s]
            print(f"\n## {name}: {len(gen)} genuine, {len(imp)} impostor pairs")
            print(f"genuine  cosine {min(gen):.3f} .. {max(gen):.3f} (mean {statistics.mean(gen):.3f})")
            print(f"impostor cosine {min(imp):.3f} .. {max(imp):.3f} (mean {statistics.mean(imp):.3f}, sd {statistics.stdev(imp):.3f})")
            print(f"margin (min genuine - max impostor) {min(gen) - max(imp):.3f}; every threshold in "
                  f"({max(imp):.3f}, {min(gen):.3f}] separates them")
            print("| threshold | FMR | FNMR |")
            print("|---|---|---|")
            for t in sorted(set(SWEEP + [args.threshold])):
                fmr, fnmr, fm, fnm = rates(gen, imp, t)
                mark = " **(default)**" if t == args.threshold else ""
                print(f"| {t:.2f}{mark} | {fmr:.3f} ({fm}/{len(imp)}) | {fnmr:.3f} ({fnm}/{len(gen)}) |")
            if name == "all pairs":
                mu, sd = statistics.mean(imp), statistics.stdev(imp)
                print("Gaussian fit of the impostor cosines (an extrapolation, not a measurement):")
                for t in (0.30, 0.336, 0.363, 0.40, args.threshold, 0.45, 0.50):
                    z = (t - mu) / sd
                    print(f"  t={t:.3f}: z={z:.1f}, one-sided tail {0.5 * math.erfc(z / math.sqrt(2)):.1e}")

        print("\n## Genuine pairs with one photo degraded (the second photo of each pair, all 7 genuine pairs of pairs.csv)")
        kinds = ["mild blur", "small (30 px eyes)", "dim (x0.35)", "jpeg q20"]
        print("| degradation | genuine cosine min .. max | quality levels | below threshold |")
        print("|---|---|---|---|")
        for kind in kinds:
            vals, levels = [], []
            for a, b, same in listed:
                if not same:
                    continue
                bad = degrade(images[b], kind, templates[b].quality.metrics["inter_eye_px"])
                t = await verifier.probe(bad, versions, None)
                if t is None:
                    levels.append("no face")
                    continue
                vals.append(cosine(templates[a].embedding, t.embedding))
                levels.append(t.quality.level)
            below = sum(v < args.threshold for v in vals)
            lv = ", ".join(f"{lvl} {levels.count(lvl)}" for lvl in ("high", "medium", "low", "no face") if levels.count(lvl))
            print(f"| {kind} | {min(vals):.3f} .. {max(vals):.3f} | {lv} | {below}/{len(vals)} |")

        print("\n## RetinaFace vs YuNet box of the same face (probe() matches them by IoU)")
        retina = RetinaFace(confidence=0.6)
        ious, missed = [], []
        for f in files:
            x, meta = retina.preprocess(images[f])
            outs = await backend.infer("retinaface", x, versions["retinaface"])
            found = retina.postprocess(outs, meta)
            if not found:
                missed.append(f)
                continue
            rf = max(found, key=lambda a: a.area)
            ious.append(iou(rf, templates[f].face))
            probe = await verifier.probe(images[f], versions, rf)
            assert probe is not None and iou(probe.face, templates[f].face) > 0.99, f
        print(f"IoU over {len(ious)} photos: {min(ious):.2f} .. {max(ious):.2f} (mean {statistics.mean(ious):.2f}); "
              f"probe(target=RetinaFace box) picked the reference face in all of them")
        if missed:
            print(f"RetinaFace (confidence 0.6) found no face in: {', '.join(missed)}")

        print("\n## Speed (sequential, one face per request, batch 1; this machine)")
        det_ms, emb_ms, tot_ms = [], [], []
        for _ in range(args.repeats):
            for f in files:
                t0 = time.perf_counter()
                t = await verifier.reference(images[f], versions)
                tot_ms.append((time.perf_counter() - t0) * 1000)
                det_ms.append(t.timings_ms["detect"])
                emb_ms.append(t.timings_ms["embed"])
        med = statistics.median
        print(f"detect (YuNet, resize to <= 640 px + decode): median {med(det_ms):.1f} ms")
        print(f"align + quality + embed (MobileFaceNet): median {med(emb_ms):.1f} ms")
        print(f"total per face: median {med(tot_ms):.1f} ms, p90 {np.percentile(tot_ms, 90):.1f} ms over {len(tot_ms)} runs")
        aligned = [cv2.resize(images[f], (112, 112)) for f in files] * 3
        for n in (1, 8, 16):
            t0 = time.perf_counter()
            reps = 10
            for _ in range(reps):
                await verifier.embed_aligned(aligned[:n], versions)
            print(f"embed only, batch {n}: {(time.perf_counter() - t0) * 1000 / reps / n:.2f} ms per face")
        fails = sum(verifier.match(templates[a].embedding, templates[b].embedding).is_identical != s for a, b, s in all_pairs)
        print(f"\nerrors at threshold {args.threshold}: {fails} of {len(all_pairs)} pairs")
        return 1 if fails else 0
    finally:
        backend.close()
        executor.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repository", type=Path, default=REPO / "model_repository")
    ap.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media" / "dev" / "verification")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--repeats", type=int, default=5, help="timing runs over the 11 photos")
    return asyncio.run(run(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
