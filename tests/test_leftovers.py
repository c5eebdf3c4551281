"""A killed run's frame cache is removed by a later run; a running one's never."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from movement.analysis import landmarks

HOLDER = """
import sys, tempfile, time
from pathlib import Path
from movement.analysis import landmarks
d = Path(tempfile.mkdtemp(prefix=landmarks.CACHE_PREFIX, dir=sys.argv[1]))
(d / landmarks.OWNER_FILE).write_text(landmarks._owner())
(d / "crops.u8").write_bytes(b"x" * 1000)
print(d, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(os.name != "posix", reason="a process's liveness is read on POSIX only")
def test_a_killed_runs_cache_goes_and_a_running_ones_stays(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        folder = Path(proc.stdout.readline().strip())
        assert folder.is_dir()
        assert landmarks.remove_leftovers(tmp_path) == []  # still running: kept
        assert folder.is_dir()
    finally:
        proc.kill()  # as kill -9: no handler runs, the folder stays behind
        proc.wait()
    assert folder.is_dir()
    assert landmarks.remove_leftovers(tmp_path) == [folder]
    assert not folder.exists()


def test_own_and_unowned_folders(tmp_path: Path) -> None:
    mine = tmp_path / (landmarks.CACHE_PREFIX + "mine")
    mine.mkdir()
    (mine / landmarks.OWNER_FILE).write_text(landmarks._owner())
    fresh = tmp_path / (landmarks.CACHE_PREFIX + "starting")  # owner not written yet
    fresh.mkdir()
    stale = tmp_path / (landmarks.CACHE_PREFIX + "stale")
    stale.mkdir()
    old = time.time() - landmarks.ORPHAN_AGE_S - 60
    os.utime(stale, (old, old))
    other = tmp_path / "not-ours"
    other.mkdir()
    os.utime(other, (old, old))
    assert landmarks.remove_leftovers(tmp_path) == [stale]
    assert mine.is_dir() and fresh.is_dir() and other.is_dir()


@pytest.mark.skipif(os.name != "posix", reason="a process's liveness is read on POSIX only")
def test_a_reused_pid_is_not_the_owner(tmp_path: Path) -> None:
    if landmarks._start_time(os.getpid()) is None:
        pytest.skip("no process start times on this system")
    d = tmp_path / (landmarks.CACHE_PREFIX + "reused")
    d.mkdir()
    (d / landmarks.OWNER_FILE).write_text(f"{os.getpid()} 1")  # our pid, another start
    assert landmarks.remove_leftovers(tmp_path) == [d]
