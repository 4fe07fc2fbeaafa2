"""The service over a damaged job database: it starts on a new one, keeps and reports the old one,
answers training routes (never 500), and copies its database while running."""

import os
import sqlite3
import subprocess
import sys

import pytest

from service.launch import ROOT
from tests.api.conftest import run_service
from workbench.training.store import JobStore


def a_database_with_history(path):
    store = JobStore(path, check=True)
    for n in range(3):
        job = store.create(f"old_{n}", {"training_type": "lora"}, path.parent / "runs", "tiny")
        for step in range(1, 200):
            store.metric(job["job_id"], step, loss=1.0 / step)
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def test_a_corrupt_database_is_moved_aside_reported_and_the_service_answers(tmp_path, models_dir):
    home = tmp_path / "home"
    home.mkdir()
    db = home / "workbench.db"
    a_database_with_history(db)
    data = bytearray(db.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8192] = os.urandom(8192)  # mid-file: the header still reads as SQLite
    db.write_bytes(bytes(data))

    with run_service(home, models_dir) as svc:
        health = svc.get("/health").json()
        assert health["status"] == "degraded"
        assert any("moved aside" in p and "workbench.db.broken-" in p for p in health["problems"])
        database = svc.get("/status").json()["server_info"]["database"]
        moved = database["moved_aside_at_start"]
        assert moved["file"] == str(db)
        assert "integrity check failed" in moved["reason"] or "malformed" in moved["reason"]
        assert open(moved["moved_to"], "rb").read() == bytes(data)  # kept as it was found
        assert "cannot be used" in svc.log_text() and moved["moved_to"] in svc.log_text()

        assert svc.get("/train/jobs").status_code == 200
        assert svc.get("/train/old_1/status").status_code == 404

        backup = svc.post("/system/backup")
        assert backup.status_code == 200, backup.text
        copy = backup.json()
        assert copy["path"].startswith(str(home / "backups")) and copy["jobs"] == 0
        assert sqlite3.connect(copy["path"]).execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_a_database_that_cannot_be_moved_aside_ends_start_up_in_one_clear_line(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    db = home / "workbench.db"
    db.write_bytes(b"")
    # A file mounted over itself cannot be renamed (EBUSY): as a database the service cannot move.
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", str(db), str(db)], capture_output=True).returncode:
        pytest.skip("needs root and mount")
    try:
        env = os.environ | {"WORKBENCH_HOME": str(home)}
        done = subprocess.run([sys.executable, "-m", "uvicorn", "service.main:app", "--port", "1"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run(["umount", str(db)], capture_output=True)
    assert done.returncode != 0
    assert f"refusing to start: {db} cannot be used: it is empty" in done.stderr
    assert "restore a backup" in done.stderr and "Traceback" not in done.stderr
