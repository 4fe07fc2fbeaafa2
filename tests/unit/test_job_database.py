"""The job database as a file: owner-only, a damaged one moved aside and told (never reused, never
replaced in silence), a backup taken while it is written."""

import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from workbench.settings import Settings
from workbench.training import dbfile
from workbench.training.store import JobStore

ROOT = Path(__file__).parents[2]


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def store_with_a_job(path: Path) -> JobStore:
    store = JobStore(path, check=True)
    job = store.create("kept", {"training_type": "lora"}, path.parent / "runs", "tiny")
    for step in range(1, 50):
        store.metric(job["job_id"], step, loss=1.0 / step)
    return store


def test_home_and_database_are_owner_only_even_when_they_were_not(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    db = home / "workbench.db"
    JobStore(db).close()
    os.chmod(db, 0o644)

    settings = Settings(home=home)
    JobStore(settings.home_dir / "workbench.db", check=True).close()
    assert mode(home) == 0o700 and mode(db) == 0o600
    fresh = Settings(home=tmp_path / "new-home").home_dir
    JobStore(fresh / "workbench.db").close()
    assert mode(fresh) == 0o700 and mode(fresh / "workbench.db") == 0o600


def test_a_new_database_is_made_whole_and_reopens_with_its_history(tmp_path):
    path = tmp_path / "workbench.db"
    store_with_a_job(path).close()
    again = JobStore(path, check=True)
    assert again.moved_aside is None and again.latest("kept")["experiment_name"] == "kept"
    assert not list(tmp_path.glob(".*new"))


def damage(path: Path, how: str) -> None:
    if how == "zero-length":
        path.write_bytes(b"")
    elif how == "mid-file":
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle:middle + 4096] = os.urandom(4096)
        path.write_bytes(bytes(data))
    elif how == "header":
        data = bytearray(path.read_bytes())
        data[:100] = b"not a database" * 7 + b"xx"
        path.write_bytes(bytes(data))
    elif how == "tables-gone":
        db = sqlite3.connect(path)
        db.executescript("DROP TABLE jobs; DROP TABLE metrics; DROP TABLE events;")
        db.close()


@pytest.mark.parametrize("how, reason", [
    ("zero-length", "empty (0 bytes)"), ("mid-file", ""), ("header", ""), ("tables-gone", "tables are gone"),
])
def test_a_damaged_database_is_moved_aside_kept_and_told(tmp_path, how, reason, caplog):
    path = tmp_path / "workbench.db"
    store = store_with_a_job(path)
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    damage(path, how)
    before = path.read_bytes()

    again = JobStore(path, check=True)

    assert again.moved_aside is not None, how
    assert reason in again.moved_aside["reason"]
    aside = Path(again.moved_aside["moved_to"])
    assert aside.read_bytes() == before  # kept exactly as found
    assert dbfile.damaged_copies(tmp_path) == [aside]
    assert str(path) in caplog.text and str(aside) in caplog.text and "restore a backup" in caplog.text
    assert again.jobs() == []  # a new database, usable at once
    again.create("next", {"training_type": "lora"}, tmp_path / "runs", "tiny")


def test_a_database_that_cannot_be_moved_aside_ends_start_up_with_what_to_do(tmp_path, monkeypatch):
    path = tmp_path / "workbench.db"
    path.write_bytes(b"")

    def refuse(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(dbfile.os, "rename", refuse)
    with pytest.raises(dbfile.DatabaseDamaged, match="empty .*move it away yourself"):
        JobStore(path, check=True)


def test_a_store_from_before_the_marker_is_not_taken_for_damage(tmp_path):
    path = tmp_path / "workbench.db"
    store_with_a_job(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=0")
    db.close()
    again = JobStore(path, check=True)
    assert again.moved_aside is None and again.latest("kept") is not None


def test_a_backup_while_jobs_write_is_whole_and_checked(tmp_path):
    path = tmp_path / "workbench.db"
    store = store_with_a_job(path)
    job = store.latest("kept")
    stop = threading.Event()

    def write():
        step = 1000
        while not stop.is_set():
            store.metric(job["job_id"], step, loss=0.5)
            step += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        copy = store.backup(tmp_path / "copy.db")
    finally:
        stop.set()
        writer.join()
    assert copy["jobs"] == 1 and mode(copy["path"]) == 0o600
    db = sqlite3.connect(copy["path"])
    assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    assert db.execute("SELECT count(*) FROM metrics").fetchone()[0] >= 49


def test_the_backup_command(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    store_with_a_job(home / "workbench.db").close()
    env = os.environ | {"WORKBENCH_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "workbench", "backup"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (copy,) = (home / "backups").glob("workbench-*.db")
    assert f"{copy}: 1 jobs" in done.stdout and "To restore" in done.stdout
