"""Admin CLI: ``python -m liveness keys create|list|revoke|usage``, ``tokens create``, ...

The store comes from the environment: ``LIVENESS_MONGODB_URI`` (if set) or the SQLite file at
``LIVENESS_DB_PATH`` (default ``data/liveness.sqlite3``, relative to the current directory).
Add a command group by writing an ``_add_<group>(groups)`` function and calling it in ``build_parser``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import os
import sys
from dataclasses import asdict
from typing import Any, Sequence

from liveness.errors import LivenessError
from liveness.keys import DEFAULT_PERIOD, PERIODS, KeyLookupError, KeyStore, open_key_store
from liveness.pipeline import make_acquirer
from liveness.rollout.manager import PolicyBook, RolloutError
from liveness.rollout.policy import load_policy_file
from liveness.rollout.store import open_policy_store
from liveness.settings import Settings
from liveness.tokens import MAX_TTL_S, token_service

DEFAULT_DB_PATH = "data/liveness.sqlite3"


def store_from_env() -> KeyStore:
    return open_key_store(
        os.environ.get("LIVENESS_DB_PATH") or DEFAULT_DB_PATH,
        os.environ.get("LIVENESS_MONGODB_URI") or None,
    )


def book_from_env() -> PolicyBook:
    """The same policy book the service workers read (settings from env / liveness.toml)."""
    settings = Settings()
    models = [*make_acquirer(settings).models, *settings.antispoof_models]
    return PolicyBook(
        settings.model_repository,
        models,
        load_policy_file(settings.model_policy_file),
        open_policy_store(str(settings.db_path), settings.mongodb_uri),
    )


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


# ----------------------------------------------------------------------------- keys


def _keys_create(store: KeyStore, args: argparse.Namespace) -> int:
    issued = store.create(args.name, args.limit, args.period)
    info = issued.info
    print(f"Created key {info.key_id} ({info.name!r}, {info.limit} requests per {info.period}, "
          f"prefix {info.prefix}). Store the key now; it cannot be shown again:")
    print(issued.raw_key)  # must stay the last stdout line
    return 0


def _keys_list(store: KeyStore, args: argparse.Namespace) -> int:
    rows = []
    for info in store.list_keys():
        rows.append({
            "key_id": info.key_id, "name": info.name, "prefix": info.prefix,
            "period": info.period, "limit": info.limit, "used": store.usage(info.key_id).used,
            "revoked": info.revoked_at.isoformat() if info.revoked_at else None,
        })
    if args.json:
        _print_json(rows)
        return 0
    headers = ["key_id", "name", "prefix", "period", "limit", "used", "revoked"]
    table = [[str(r[h]) if h != "revoked" else (r[h] or "no") for h in headers] for r in rows]
    widths = [max([len(h), *(len(row[i]) for row in table)]) for i, h in enumerate(headers)]
    for row in [headers, *table]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def _keys_revoke(store: KeyStore, args: argparse.Namespace) -> int:
    info = store.revoke(args.key)
    print(f"Revoked key {info.key_id} ({info.name!r}) at {info.revoked_at.isoformat()}")
    return 0


def _keys_usage(store: KeyStore, args: argparse.Namespace) -> int:
    usage = store.usage(args.key)
    if args.json:
        _print_json(asdict(usage))
    else:
        for field_name, value in asdict(usage).items():
            print(f"{field_name}: {value}")
    return 0


def _keys_bws_client(store: KeyStore, args: argparse.Namespace) -> int:
    issued = store.create_bws_client(args.key)
    c = issued.client
    print(f"BWS 3 client for key {c.key_id}. A BWS client signs its own JWT (HS256 with the base64-decoded "
          "key; sub = iss = client id, aud = \"BWS\"). Client id, then the key (shown once):")
    print(c.client_id)
    print(issued.key_b64)  # must stay the last stdout line
    return 0


def _keys_bws_revoke(store: KeyStore, args: argparse.Namespace) -> int:
    c = store.revoke_bws_client(args.client_id)
    print(f"Revoked BWS client {c.client_id} (key {c.key_id}) at {c.revoked_at.isoformat() if c.revoked_at else '-'}")
    return 0


def _add_keys(groups: argparse._SubParsersAction) -> None:
    keys = groups.add_parser("keys", help="manage API keys and quotas")
    cmds = keys.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = cmds.add_parser("create", help="issue a new key (printed once, on the last line)")
    p.add_argument("--name", required=True)
    p.add_argument("--limit", required=True, type=int, help="requests allowed per period")
    p.add_argument("--period", choices=PERIODS, default=DEFAULT_PERIOD)
    p.set_defaults(handler=_keys_create)

    p = cmds.add_parser("list", help="list keys (never shows raw keys or hashes)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_keys_list)

    p = cmds.add_parser("revoke", help="revoke a key")
    p.add_argument("key", metavar="KEY_ID_OR_NAME")
    p.set_defaults(handler=_keys_revoke)

    p = cmds.add_parser("usage", help="usage in the current period")
    p.add_argument("key", metavar="KEY_ID_OR_NAME")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_keys_usage)

    p = cmds.add_parser("bws-client", help="issue a BWS 3 client id and key for a key (BioID-compatible gRPC/REST)")
    p.add_argument("key", metavar="KEY_ID_OR_NAME")
    p.set_defaults(handler=_keys_bws_client)

    p = cmds.add_parser("bws-revoke", help="revoke a BWS 3 client (its JWTs stop at once)")
    p.add_argument("client_id", metavar="CLIENT_ID")
    p.set_defaults(handler=_keys_bws_revoke)


# ----------------------------------------------------------------------------- tokens


def _tokens_create(store: KeyStore, args: argparse.Namespace) -> int:
    info = store.get(args.key)
    if info.revoked:
        raise ValueError(f"key {info.key_id} ({info.name!r}) is revoked")
    # Signed with the ring's first secret (liveness.tokens.token_ring), the one every worker signs with.
    token = token_service(Settings(), keys=store).bearer.issue(info.key_id, args.ttl)
    print(f"Bearer token for key {info.key_id} ({info.name!r}), valid for {args.ttl} s. gRPC clients send "
          "it as metadata 'authorization: Bearer <token>':")
    print(token)  # must stay the last stdout line
    return 0


def _add_tokens(groups: argparse._SubParsersAction) -> None:
    tokens = groups.add_parser("tokens", help="bearer tokens (JWT) for the gRPC API")
    cmds = tokens.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = cmds.add_parser("create", help="make a token for a key (printed alone on the last line)")
    p.add_argument("--key", required=True, metavar="KEY_ID_OR_NAME")
    p.add_argument("--ttl", required=True, type=int, metavar="SECONDS", help=f"lifetime, 1..{MAX_TTL_S}")
    p.set_defaults(handler=_tokens_create)


# ----------------------------------------------------------------------------- models


def _models_list(book: PolicyBook, args: argparse.Namespace) -> int:
    rows = [
        {
            "model": st.model, "versions": st.on_disk, "mode": st.resolved.mode, "serving": st.resolved.stable,
            "candidate": st.resolved.candidate, "percent": st.resolved.percent, "previous": st.previous,
        }
        for st in book.states().values()
    ]
    if args.json:
        _print_json(rows)
        return 0
    for r in rows:
        extra = f", {r['mode']} v{r['candidate']} at {r['percent']:g}%" if r["candidate"] is not None else ""
        prev = f", rollback -> v{r['previous']}" if r["previous"] is not None else ""
        print(f"{r['model']}: versions {r['versions']}; serving v{r['serving']} ({r['mode']}{extra}{prev})")
    return 0


def _models_load(book: PolicyBook, args: argparse.Namespace) -> int:
    v = book.validate(args.model, args.version)
    print(f"{v.model} v{v.version} loads and runs; parity {v.max_diff:.2e} <= {v.tolerance:.2g} ({v.metric}) on "
          f"{v.inputs} real inputs. Workers load and warm it before routing any request to it.")
    return 0


def _models_promote(book: PolicyBook, args: argparse.Namespace) -> int:
    book.promote(args.model, args.version)
    print(f"{args.model}: v{args.version} promoted; workers switch within ~1 s after warming it.")
    return 0


def _models_rollback(book: PolicyBook, args: argparse.Namespace) -> int:
    policy = book.rollback(args.model)
    print(f"{args.model}: rolled back to v{policy.version}.")
    return 0


def _models_experiment(book: PolicyBook, args: argparse.Namespace) -> int:
    book.experiment(args.model, args.command, args.version, args.percent)
    what = "of API keys (sticky)" if args.command == "canary" else "of requests sampled, never returned"
    print(f"{args.model}: {args.command} v{args.version} at {args.percent:g}% {what}.")
    return 0


def _models_shadow_report(book: PolicyBook, args: argparse.Namespace) -> int:
    stats = book.store.shadow_stats() if book.store else []
    if args.json:
        _print_json([{**asdict(s), "agreement": s.agreement} for s in stats])
        return 0
    if not stats:
        print("no shadow samples recorded")
    for s in stats:
        print(f"{s.model}: v{s.candidate} vs v{s.stable}: {s.samples} samples, verdict agreement "
              f"{s.agreement:.1%}, |p_live diff| mean {s.mean_abs_diff:.4f} max {s.max_abs_diff:.4f}")
    return 0


def _add_models(groups: argparse._SubParsersAction) -> None:
    models = groups.add_parser("models", help="model versions and rollouts")
    models.set_defaults(opener=book_from_env)
    cmds = models.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = cmds.add_parser("list", help="versions on disk and the serving policy of every model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_models_list)
    p = cmds.add_parser("load", help="check that a version loads and passes its parity check")
    p.add_argument("model")
    p.add_argument("version", type=int)
    p.set_defaults(handler=_models_load)
    p = cmds.add_parser("promote", help="serve a version to all traffic (validated first)")
    p.add_argument("model")
    p.add_argument("version", type=int)
    p.set_defaults(handler=_models_promote)
    p = cmds.add_parser("rollback", help="stop a canary/shadow, or return to the version before the last promote")
    p.add_argument("model")
    p.set_defaults(handler=_models_rollback)
    for mode, help_text in (("canary", "serve a version to a percentage of API keys"),
                            ("shadow", "run a version beside the serving one on a sample of requests")):
        p = cmds.add_parser(mode, help=help_text)
        p.add_argument("model")
        p.add_argument("version", type=int)
        p.add_argument("--percent", type=float, required=True)
        p.set_defaults(handler=_models_experiment)
    p = cmds.add_parser("shadow-report", help="agreement between serving and shadow versions")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_models_shadow_report)


# ----------------------------------------------------------------------------- sessions


def _sessions_store() -> Any:
    from liveness.sessions import open_session_store

    settings = Settings()
    return open_session_store(str(settings.db_path), settings.mongodb_uri)


def _sessions_purge(store: Any, args: argparse.Namespace) -> int:
    """The retention policy (docs/PRIVACY.md), run now: the service also runs it every
    ``session_purge_interval_s``; cron this when the service may be down for long."""
    import time

    settings = Settings()
    now = time.time()
    counts = store.purge(now, settings.session_retention_s,
                         settings.session_throttle_window_s + settings.session_throttle_cooldown_s)
    _print_json({**counts.as_dict(), "detections_deleted": _purge_detections(settings, now)})
    return 0


def _purge_detections(settings: Settings, now: float) -> int:
    """Expired stored detections (liveness.detections: return_detection's embeddings)."""
    from liveness.detections import open_detection_store

    detections = open_detection_store(settings)
    try:
        return detections.purge(now)
    finally:
        detections.close()


def _add_sessions(groups: argparse._SubParsersAction) -> None:
    sessions = groups.add_parser("sessions", help="app-server liveness sessions")
    cmds = sessions.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = cmds.add_parser("purge", help="apply the retention policy now (embeddings, images, old sessions, detections)")
    p.set_defaults(opener=_sessions_store, handler=_sessions_purge)


# ----------------------------------------------------------------------------- admin key


def _admin_key(_: object, args: argparse.Namespace) -> int:
    key = "lka_" + secrets.token_urlsafe(32)
    print("Admin key for /v1/admin/* (X-Admin-Key header). Configure the service with:")
    print(f"  LIVENESS_ADMIN_KEY_SHA256={hashlib.sha256(key.encode()).hexdigest()}")
    print("and keep the key itself (shown once):")
    print(key)
    return 0


def _add_admin_key(groups: argparse._SubParsersAction) -> None:
    p = groups.add_parser("admin-key", help="make an admin key and the hash to configure")
    p.set_defaults(opener=lambda: _NoStore(), handler=_admin_key)


class _NoStore:
    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- evaluate


def _evaluate(_: object, args: argparse.Namespace) -> int:
    from liveness.evaluation.command import evaluate  # models and matplotlib only for this command

    return evaluate(args.labels, out=args.out, threshold=args.threshold, target_bpcer=args.target_bpcer,
                    target_apcer=args.target_apcer, jobs=args.jobs)


def _add_evaluate(groups: argparse._SubParsersAction) -> None:
    p = groups.add_parser(
        "evaluate", help="APCER/BPCER/ACER/FTA of the serving pipeline on a labelled set (docs/ACCURACY.md)",
        description="Run a labelled set (CSV: file,label[,attack][,subject]) through the service's pipeline, "
                    "settings and model versions, in-process; write per-item results, ISO/IEC 30107-3 figures, "
                    "a DET curve and histograms. The service decides live when score >= threshold.",
    )
    p.add_argument("labels", metavar="LABELS.csv")
    p.add_argument("--out", metavar="DIR", help="output folder (default evaluation/<timestamp>)")
    p.add_argument("--threshold", type=float, help="operating threshold (default: the configured one)")
    p.add_argument("--target-bpcer", type=float, metavar="X",
                   help="recommend the threshold with the lowest APCER_max at BPCER <= X (e.g. 0.05)")
    p.add_argument("--target-apcer", type=float, metavar="X",
                   help="recommend the threshold with the lowest BPCER at APCER_max <= X (default 0.05 "
                        "when no --target-bpcer is given)")
    p.add_argument("--jobs", type=int, default=4, help="items in flight at once (default 4)")
    p.set_defaults(opener=lambda: _NoStore(), handler=_evaluate)


# ----------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m liveness", description="Liveness service admin")
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    _add_keys(groups)
    _add_tokens(groups)
    _add_models(groups)
    _add_admin_key(groups)
    _add_sessions(groups)
    _add_evaluate(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        store = getattr(args, "opener", store_from_env)()
    except Exception as exc:  # unreachable/corrupt store: one clear line, no traceback
        print(f"error: cannot open the store: {exc}", file=sys.stderr)
        return 1
    try:
        return args.handler(store, args)
    except (KeyLookupError, LivenessError, ValueError, RolloutError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyLookupError) else exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
