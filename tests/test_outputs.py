"""Output folders: checked before the work, written as one set, leftovers of killed runs cleaned (issue 17)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bayesbridge.errors import OutputPathError
from bayesbridge.io import atomic_path, check_output_dir, check_output_file, clean_stale, output_set
from bayesbridge.io.outputs import STAGING_PREFIX, process_tag

NAMES = ("posterior.nc", "inference_data.nc", "validation.csv")
STAGES = ("staging", "staged", "moving", "moved")


def _write_set(folder: Path, run_id: str) -> None:
    with output_set(folder) as stage:
        for name in NAMES:
            (stage / name).write_text(run_id)


def _state(folder: Path) -> set[str]:
    """The run ids found in the set's files (one id: a consistent set)."""
    return {(folder / name).read_text() if (folder / name).exists() else "<missing>" for name in NAMES}


def _dead_tag() -> str:
    """A process tag of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    tag = process_tag(proc.pid)
    proc.wait()
    return tag


def test_output_set_moves_every_file_or_none(tmp_path):
    out = tmp_path / "out"
    _write_set(out, "old")
    (out / "keep.txt").write_text("a user's file")
    with pytest.raises(RuntimeError), output_set(out) as stage:
        (stage / "posterior.nc").write_text("new")
        raise RuntimeError("failure half-way")
    assert _state(out) == {"old"} and (out / "keep.txt").exists()
    with output_set(out) as stage:
        (stage / "figures").mkdir()
        (stage / "figures" / "a.png").write_text("new")
        for name in NAMES:
            (stage / name).write_text("new")
    assert _state(out) == {"new"} and (out / "figures" / "a.png").read_text() == "new"
    assert sorted(p.name for p in out.iterdir()) == ["figures", "inference_data.nc", "keep.txt", "posterior.nc",
                                                    "validation.csv"]


def test_commits_into_one_folder_wait_for_each_other(tmp_path):
    import threading

    from bayesbridge.io.outputs import commit_lock

    out = tmp_path / "out"
    _write_set(out, "first")
    writer = threading.Thread(target=_write_set, args=(out, "second"))
    with commit_lock(out):  # another run is moving its files in
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive() and _state(out) == {"first"}
    writer.join(timeout=10)
    assert not writer.is_alive() and _state(out) == {"second"}


def test_stale_leftovers_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    dead, live = _dead_tag(), process_tag()
    (tmp_path / f"{STAGING_PREFIX}{dead}-abc123").mkdir()
    (tmp_path / f"{STAGING_PREFIX}{live}-def456").mkdir()
    (tmp_path / f".posterior.nc.{dead}.x1y2z3.tmp").write_text("partial")
    (tmp_path / f".posterior.nc.{live}.q1w2e3.tmp").write_text("in progress")
    (tmp_path / ".user-notes.tmp").write_text("not ours")
    removed = {p.name for p in clean_stale(tmp_path)}
    assert removed == {f"{STAGING_PREFIX}{dead}-abc123", f".posterior.nc.{dead}.x1y2z3.tmp"}
    assert {p.name for p in tmp_path.iterdir()} == {f"{STAGING_PREFIX}{live}-def456", f".posterior.nc.{live}.q1w2e3.tmp",
                                                   ".user-notes.tmp"}


def test_an_interrupted_commit_is_rolled_forward(tmp_path):
    _write_set(tmp_path, "old")
    stage = tmp_path / f"{STAGING_PREFIX}{_dead_tag()}-0a1b2c"
    stage.mkdir()
    for name in NAMES[1:]:  # the first file was already moved when the writer died
        (stage / name).write_text("new")
    (tmp_path / NAMES[0]).write_text("new")
    (stage / ".commit").write_text(json.dumps({"files": list(NAMES)}))
    assert _state(tmp_path) == {"old", "new"}  # mixed until the next run
    check_output_dir(tmp_path)
    assert _state(tmp_path) == {"new"} and not stage.exists()


def test_atomic_path_names_carry_the_process_tag(tmp_path):
    with atomic_path(tmp_path / "a.json") as tmp:
        assert tmp.name.startswith(f".a.json.{process_tag()}.") and tmp.name.endswith(".tmp")
        tmp.write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_output_paths_are_checked_before_the_work(tmp_path):
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(OutputPathError, match="is a file"):
        check_output_dir(file, "--out")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_dir(file / "sub", "--out")
    with pytest.raises(OutputPathError, match="cannot write into"):
        check_output_dir("/proc/self/out", "--out")  # not writable, even for root
    with pytest.raises(OutputPathError, match="is a folder"):
        check_output_file(tmp_path, "--json")
    assert check_output_dir(tmp_path / "new" / "deep") == tmp_path / "new" / "deep"
    assert not (tmp_path / "new").exists()  # checked, not created
    if os.geteuid() != 0:  # permissions do not bind root
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputPathError, match="cannot write into"):
            check_output_dir(locked / "out")


def _paused_writer(folder: Path, stage: str) -> tuple[int, int]:
    """Fork a process that writes a set with run id 'new' and pauses at ``stage``; return (pid, stderr fd)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: write the set, pausing at the stage
        code = 0
        try:
            os.dup2(write, 2)
            sys.stderr = os.fdopen(write, "w", buffering=1)  # pytest may have replaced sys.stderr
            os.environ["BAYESBRIDGE_TEST_STAGE_PAUSE"] = f"{stage}:{0.5 if stage in ('moving', 'moved') else 30}"
            signal.signal(signal.SIGINT, signal.default_int_handler)
            _write_set(folder, "new")
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            code = 1
        os._exit(code)
    os.close(write)
    return pid, read


def _wait_for(fd: int, stage: str, timeout: float = 20.0) -> None:
    seen, end = b"", time.monotonic() + timeout
    while f"bayesbridge-stage: {stage}".encode() not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        if not ready:
            raise AssertionError(f"the writer never reached stage {stage!r} (stderr: {seen!r})")
        seen += os.read(fd, 4096)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("stage", STAGES)
def test_a_killed_writer_leaves_one_complete_set(tmp_path, stage, sig):
    out = tmp_path / "out"
    _write_set(out, "old")
    pid, fd = _paused_writer(out, stage)
    try:
        _wait_for(fd, stage)
        os.kill(pid, sig)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    after = _state(out)
    if sig == signal.SIGINT:
        # interrupts are held back while the files are moved: the commit completes, then the run stops
        assert os.waitstatus_to_exitcode(status) == 130
        assert after == ({"new"} if stage in ("moving", "moved") else {"old"})
        assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no leftovers
    else:
        # a hard kill cannot be held back: a commit cut short is completed by the next run
        assert after == ({"old", "new"} if stage == "moving" else {"new"} if stage == "moved" else {"old"})
    # the next run (here: its output check, which every command does first) cleans the leftovers
    check_output_dir(out)
    assert _state(out) == ({"old"} if stage in ("staging", "staged") else {"new"})
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_rendering_background_and_inline_write_the_same_files(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from bayesbridge.apps.rendering import start_rendering

    def line():
        fig = Figure(figsize=(2, 2))
        fig.add_subplot().plot([0, 1], [1, 0])
        return fig

    bg = start_rendering({"a": line, "b": line}, tmp_path / "bg").wait()
    inline = start_rendering({"a": line}, tmp_path / "inline", background=False).wait()
    assert sorted(bg) == ["a", "b"] and list(inline) == ["a"]
    for path in (*bg.values(), *inline.values()):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
