"""Files and folders the workflow writes take the umask's mode, as ``open()`` and ``mkdir`` give
them, not ``mkstemp``'s 0600 / ``mkdtemp``'s 0700: a team on a shared file system can read a
sweep's results and a web server can serve its leaderboard."""

from __future__ import annotations

import os
import stat

import pytest

from peftbench.records.files import staging_dir, write_json_atomic, write_text_atomic


@pytest.fixture(params=[0o022, 0o027, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_take_the_mode_open_would_give(tmp_path, umask):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives under this umask
    write_text_atomic(tmp_path / "a.txt", "x")
    write_json_atomic(tmp_path / "b.json", {"a": 1})
    assert mode(tmp_path / "a.txt") == mode(plain) == 0o666 & ~umask
    assert mode(tmp_path / "b.json") == 0o666 & ~umask


def test_staging_folders_take_the_mode_mkdir_would_give(tmp_path, umask):
    (tmp_path / "plain").mkdir()
    folder = staging_dir(tmp_path, prefix=".stage.")
    assert mode(folder) == mode(tmp_path / "plain") == 0o777 & ~umask


def test_the_umask_is_left_as_it_was(tmp_path, umask):
    write_text_atomic(tmp_path / "a.txt", "x")
    assert os.umask(umask) == umask
