"""The admin CLI, run the way operators run it: ``python -m liveness keys ...`` in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from liveness.cli import main
from liveness.errors import INVALID_API_KEY, LivenessError
from liveness.keys import SqliteKeyStore, hash_key

REPO = Path(__file__).resolve().parents[1]
RAW_KEY = re.compile(r"^lk_[A-Za-z0-9_-]{43}$")


def run_cli(*args: str, cwd: Path, db_path: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVENESS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if db_path is not None:
        env["LIVENESS_DB_PATH"] = str(db_path)
    return subprocess.run(
        [sys.executable, "-m", "liveness", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )


def test_keys_lifecycle(tmp_path):
    db = tmp_path / "state" / "keys.sqlite3"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=tmp_path, db_path=db)

    created = cli("keys", "create", "--name", "acme", "--limit", "3", "--period", "day")
    assert created.returncode == 0, created.stderr
    lines = created.stdout.strip().splitlines()
    raw = lines[-1]
    assert RAW_KEY.match(raw)
    assert len(lines) >= 2 and "acme" in lines[0] and raw not in lines[0]

    other = cli("keys", "create", "--name", "other", "--limit", "7")  # default period
    assert other.returncode == 0, other.stderr

    # The key works against the same file, and only its hash is stored there.
    store = SqliteKeyStore(db)
    info = store.authenticate(raw)
    assert (info.name, info.limit, info.period) == ("acme", 3, "day")
    store.commit(store.reserve(raw))
    store.refund(store.reserve(raw))
    store.reserve(raw)

    listed = cli("keys", "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.strip().splitlines()
    assert header.split() == ["key_id", "name", "prefix", "period", "limit", "used", "revoked"]
    acme_row = next(r.split() for r in rows if " acme " in f" {r} ")
    assert acme_row == [info.key_id, "acme", raw[:8], "day", "3", "2", "no"]
    for output in (listed.stdout, created.stdout.replace(raw, "")):
        assert raw not in output and hash_key(raw) not in output

    listed_json = json.loads(cli("keys", "list", "--json").stdout)
    by_name = {row["name"]: row for row in listed_json}
    assert by_name["acme"]["used"] == 2 and by_name["other"]["period"] == "month"
    assert all(set(row) == {"key_id", "name", "prefix", "period", "limit", "used", "revoked"}
               for row in listed_json)

    usage_json = json.loads(cli("keys", "usage", "acme", "--json").stdout)
    assert usage_json["used"] == 2 and usage_json["remaining"] == 1
    assert usage_json["succeeded"] == 1 and usage_json["refunded"] == 1
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", usage_json["bucket"])
    usage_text = cli("keys", "usage", info.key_id).stdout
    assert "used: 2" in usage_text and "limit: 3" in usage_text and "remaining: 1" in usage_text

    revoked = cli("keys", "revoke", "acme")
    assert revoked.returncode == 0, revoked.stderr
    assert info.key_id in revoked.stdout
    with pytest.raises(LivenessError) as exc:
        store.authenticate(raw)
    assert exc.value.kind is INVALID_API_KEY
    by_name = {row["name"]: row for row in json.loads(cli("keys", "list", "--json").stdout)}
    assert by_name["acme"]["revoked"] and by_name["other"]["revoked"] is None
    store.close()

    missing = cli("keys", "usage", "nope")
    assert missing.returncode == 1 and "nope" in missing.stderr and missing.stdout == ""


def test_default_db_path_is_relative_to_cwd(tmp_path):
    result = run_cli("keys", "create", "--name", "x", "--limit", "1", cwd=tmp_path, db_path=None)
    assert result.returncode == 0, result.stderr
    db = tmp_path / "data" / "liveness.sqlite3"
    assert db.exists()
    store = SqliteKeyStore(db)
    assert store.authenticate(result.stdout.strip().splitlines()[-1]).name == "x"
    store.close()


def test_argument_errors(tmp_path):
    db = tmp_path / "k.sqlite3"
    bad_period = run_cli("keys", "create", "--name", "x", "--limit", "1", "--period", "week",
                         cwd=tmp_path, db_path=db)
    assert bad_period.returncode == 2 and "week" in bad_period.stderr
    assert run_cli(cwd=tmp_path, db_path=db).returncode == 2


def test_main_in_process(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIVENESS_DB_PATH", str(tmp_path / "k.sqlite3"))
    monkeypatch.delenv("LIVENESS_MONGODB_URI", raising=False)
    assert main(["keys", "create", "--name", "n", "--limit", "-1"]) == 1
    assert "limit" in capsys.readouterr().err
    assert main(["keys", "create", "--name", "n", "--limit", "2", "--period", "total"]) == 0
    raw = capsys.readouterr().out.strip().splitlines()[-1]
    assert RAW_KEY.match(raw)
    assert main(["keys", "usage", "n", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bucket"] == "total"


def test_list_on_an_empty_store(tmp_path):
    out = run_cli("keys", "list", cwd=tmp_path, db_path=tmp_path / "empty.sqlite3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["key_id", "name", "prefix", "period", "limit", "used", "revoked"]
