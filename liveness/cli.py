"""Admin CLI: ``python -m liveness keys create|list|revoke|usage``.

The store comes from the environment: ``LIVENESS_MONGODB_URI`` (if set) or the SQLite file at
``LIVENESS_DB_PATH`` (default ``data/liveness.sqlite3``, relative to the current directory).
Add a command group by writing an ``_add_<group>(groups)`` function and calling it in ``build_parser``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from typing import Any, Sequence

from liveness.errors import LivenessError
from liveness.keys import DEFAULT_PERIOD, PERIODS, KeyLookupError, KeyStore, open_key_store

DEFAULT_DB_PATH = "data/liveness.sqlite3"


def store_from_env() -> KeyStore:
    return open_key_store(
        os.environ.get("LIVENESS_DB_PATH") or DEFAULT_DB_PATH,
        os.environ.get("LIVENESS_MONGODB_URI") or None,
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
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
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


# ----------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m liveness", description="Liveness service admin")
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    _add_keys(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        store = store_from_env()
    except Exception as exc:  # unreachable/corrupt store: one clear line, no traceback
        print(f"error: cannot open key store: {exc}", file=sys.stderr)
        return 1
    try:
        return args.handler(store, args)
    except (KeyLookupError, LivenessError, ValueError) as exc:
        print(f"error: {exc.args[0] if isinstance(exc, KeyLookupError) else exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
