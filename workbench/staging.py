"""Temporary files that outlive a killed process only until the next run, and the output lock.

Every temporary name carries the pid of the process that made it. Beside an output folder:
``.NAME.tmp-PID-HEX`` (a result being written), ``.NAME.run-PID-HEX`` (a notebook run's staging
folder) and ``.NAME.old-PID-HEX`` (the previous run, deleted once the new one is in place); in
the temporary folder: ``wb-capture-PID-...`` (spilled activations), ``wb-offload-PID-...``
(weights accelerate offloaded to disk) and ``wb-failed-PID-...`` (the notebook of a failed
run). ``sweep_stale`` removes those whose process is gone, so what a ``kill -9`` leaves behind
is removed by the next run that looks there.

One run writes an output folder at a time: ``output_lock`` holds ``.NAME.lock`` beside it with
``fcntl.flock``, which the kernel releases when the process dies, so a lock is never stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench.errors import OutputExistsError, WorkbenchError, one_line

_SIBLING = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|run|old)-(?P<pid>\d+)-[0-9a-f]{8}")
_TEMP = re.compile(r"wb-(?:capture|failed|offload)-(?P<pid>\d+)-.+")


def sibling_name(target_name: str, kind: str) -> str:
    """Hidden name beside ``target_name`` for this process's ``tmp``, ``run`` or ``old`` folder."""
    return f".{target_name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def temp_prefix(kind: str) -> str:
    """``tempfile`` prefix for a ``capture``, ``offload`` or ``failed`` file of this process."""
    return f"wb-{kind}-{os.getpid()}-"


def temp_dir() -> Path:
    return Path(tempfile.gettempdir())


def owner_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except (OverflowError, ValueError):  # not a pid this system can have
        return False
    return True


def sweep_stale(folder: Path) -> None:
    """Remove the temporary files in ``folder`` whose process is gone.

    A previous run moved aside (``.NAME.old-...``) is put back when ``NAME`` is missing: its
    process died between moving it aside and moving the new run in.
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _SIBLING.fullmatch(entry.name) or _TEMP.fullmatch(entry.name)
        if match is None or owner_alive(int(match["pid"])):
            continue
        path = Path(entry.path)
        if match.re is _SIBLING and match["kind"] == "old":
            target = path.parent / match["name"]
            if not os.path.lexists(target):
                with contextlib.suppress(OSError):  # else leave it there rather than lose it
                    os.replace(path, target)
                continue
        _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def swap_into_place(staged: Path, target: Path) -> None:
    """Rename ``staged`` to ``target``.

    An existing target is moved aside first, moved back if the second rename fails, and deleted
    only once the new folder is in place: at every moment one complete run is at ``target`` or
    (after a kill) beside it, where ``sweep_stale`` puts it back.
    """
    if not os.path.lexists(target):
        os.replace(staged, target)
        return
    old = target.parent / sibling_name(target.name, "old")
    os.replace(target, old)
    try:
        os.replace(staged, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_writable(target: Path) -> None:
    """Refuse, without writing anything, an output path under a file or in a read-only folder."""
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise WorkbenchError(f"{target} is inside {ancestor}, which is a file; choose a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise WorkbenchError(f"{ancestor} is not writable; choose an output folder elsewhere")


@contextmanager
def output_lock(target: Path) -> Iterator[None]:
    """Hold the lock of ``target`` (an output folder) for the block, or refuse at once.

    Creating the lock also proves that the folder beside ``target`` is writable, before any
    heavy work starts.
    """
    path = target.parent / f".{target.name}.lock"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path, target)
    except OSError as err:
        raise WorkbenchError(
            f"cannot write in {target.parent} ({one_line(err)}); choose an output folder elsewhere"
        ) from None
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding it; see _acquire
        os.close(fd)


def _acquire(path: Path, target: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise OutputExistsError(
                f"{target} is being written by another run (pid {owner or '?'}); wait for it "
                "to finish or choose another output folder"
            ) from None
        # The previous holder unlinks the file before releasing it; if that happened between
        # our open and flock, we hold a lock on a deleted file and must take the new one.
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)
