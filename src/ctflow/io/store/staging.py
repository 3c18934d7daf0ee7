"""Staging folders of writers in ``<dst>/.ctflow-tmp``, putting items in place, dead writers.

An item is assembled in a private staging folder named after its writer
(``<host>~<pid>~<random>~<id>``). A new item is that folder renamed into place; an existing
item is updated in place, its new arrays first and its ``meta.json`` last, in one
``os.replace`` (``_swap_in``). Folders left by writers that died are removed by later writers
on the same host (``_remove_dead_writers``) or on demand (:func:`remove_stale_writes`), never
following a symbolic link.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ctflow.io.files import as_source_path
from ctflow.io.store.format import _ARRAY_FILE, _META, _SEP, STAGING, is_item_dir

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["remove_stale_writes"]

#: The lock file of an item being rewritten in place (removed by the writer when done).
_LOCK = ".ctflow-lock"
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_COMPARE_BYTES = 4 * 1024 * 1024
# the staging folder is opened without following a symlink, and what is in it is removed
# relative to that descriptor (POSIX); elsewhere a symlinked staging folder is left alone
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | _CLOEXEC
_BY_FD = (
    hasattr(os, "O_NOFOLLOW")
    and os.open in os.supports_dir_fd
    and os.scandir in os.supports_fd
    and shutil.rmtree.avoids_symlink_attacks
)
# threads of one process exclude each other per item here (flock excludes processes, and the
# threads of a process too on local file systems, but not where it is emulated by POSIX locks)
_THREAD_LOCKS = [threading.Lock() for _ in range(64)]


@functools.cache
def _host() -> str:
    """Return this machine's host name as it appears in staging folder names."""
    return socket.gethostname().replace(_SEP, "-")


def _writer_tag() -> str:
    """Return ``<host>~<pid>``, the start of this process's staging folder names."""
    return f"{_host()}{_SEP}{os.getpid()}"


def _make_staging_dir(staging: Path, item_id: str) -> Path:
    """Create this writer's private folder in ``staging`` (which other writers may remove)."""
    name = f"{_writer_tag()}{_SEP}{uuid.uuid4().hex[:12]}{_SEP}{item_id[:32]}"
    tmp = staging / name
    staging.parent.mkdir(parents=True, exist_ok=True)  # dst itself is never removed
    for _ in range(100):
        with contextlib.suppress(FileExistsError):
            os.mkdir(staging)
        try:
            tmp.mkdir()
            return tmp
        except FileNotFoundError:  # another writer removed the empty staging folder meanwhile
            continue
    raise OSError(f"dump: cannot create a staging folder in {staging}")


def _rmdir_if_empty(staging: Path) -> None:
    """Remove the staging folder if it is empty (other writers may still be using it)."""
    with contextlib.suppress(OSError):  # not empty (other writers, leftovers) or already gone
        staging.rmdir()


def _fsync_dir(folder: Path) -> None:
    """Flush the entries of a folder (renames into it) to disk; nothing where that is not done."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    except OSError:  # Windows cannot open folders
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _lock_file(folder: Path) -> int | None:
    """Take the lock file of an item folder (``flock``); return its descriptor.

    The holder removes the file before it lets go, so a writer that was waiting on it finds
    it gone and takes a new one. None where there are no file locks (Windows, file systems
    without them): writers of one item in different processes then do not exclude each other.
    """
    if fcntl is None:
        return None
    path = folder / _LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _CLOEXEC, 0o666)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # no locks here: nobody can take them
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            return None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed it when done: take the new one


@contextlib.contextmanager
def _item_lock(folder: Path) -> Iterator[None]:
    """Hold the rewrite lock of an item folder: one writer at a time updates it in place."""
    with _THREAD_LOCKS[hash(os.path.abspath(folder)) % len(_THREAD_LOCKS)]:
        fd = _lock_file(folder)
        try:
            yield
        finally:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.unlink(folder / _LOCK)
                os.close(fd)


def _same_file(a: Path, b: Path) -> bool:
    """Tell whether ``b`` exists and holds the same bytes as ``a``."""
    try:
        with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
            if os.fstat(fa.fileno()).st_size != os.fstat(fb.fileno()).st_size:
                return False
            while True:
                block = fa.read(_COMPARE_BYTES)
                if block != fb.read(_COMPARE_BYTES):
                    return False
                if not block:
                    return True
    except FileNotFoundError:
        return False


def _replace_in_place(tmp: Path, final: Path, files: Sequence[str], sync: bool = True) -> None:
    """Update the item ``final`` to the one assembled in ``tmp``, with one visible step.

    The arrays of ``tmp`` (``files``: content-versioned names) are moved into ``final`` first,
    except those it has already, byte for byte (an array the current ``meta.json`` names is
    never replaced while readers may have it open; a damaged one is repaired), then
    ``meta.json`` is replaced with one ``os.replace``: a reader sees the old ``meta.json`` and
    the old arrays, or the new ``meta.json`` and the new arrays. The arrays no longer named are
    removed last. Writers of one item take turns (``_item_lock``), so none removes an array that
    another one's ``meta.json`` names.
    """
    with _item_lock(final):
        for name in files:
            if not _same_file(tmp / name, final / name):  # one the item has is left alone
                os.replace(tmp / name, final / name)
        if sync:
            _fsync_dir(final)  # the arrays are in place on disk before meta.json names them
        os.replace(tmp / _META, final / _META)
        if sync:
            _fsync_dir(final)
        keep = set(files)
        for entry in os.scandir(final):
            if _ARRAY_FILE.fullmatch(entry.name) and entry.name not in keep:
                with contextlib.suppress(OSError):  # gone already, or not a file
                    os.unlink(entry.path)


def _swap_in(tmp: Path, final: Path, files: Sequence[str], sync: bool = True) -> None:
    """Put the item assembled in ``tmp`` (arrays ``files`` + ``meta.json``) at ``final``.

    A new item is ``tmp`` renamed to ``final``. An existing item is updated in place
    (``_replace_in_place``). A folder at ``final`` that is not an item (no ``meta.json``) is
    moved into the staging folder (which cannot vanish while ``tmp`` is in it) and deleted.
    Concurrent writers of the same item are safe: each attempt either puts this writer's copy
    in place or retries.
    """
    trash: list[Path] = []
    try:
        for attempt in range(20):
            try:
                os.rename(tmp, final)
                if sync:
                    _fsync_dir(final.parent)  # the new item's name is on disk before dump returns
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            if is_item_dir(final):
                _replace_in_place(tmp, final, files, sync)
                shutil.rmtree(tmp, ignore_errors=True)  # empty by now
                return
            old = tmp.with_name(f"{tmp.name}-old{attempt}")
            try:
                os.rename(final, old)
            except FileNotFoundError:
                continue  # another writer moved it away first: try again
            trash.append(old)
        raise OSError(f"dump: could not replace {final}: other writers keep replacing it")
    finally:
        for old in trash:
            shutil.rmtree(old, ignore_errors=True)


def _process_is_gone(pid: int) -> bool:
    """Tell whether process ``pid`` of this machine has ended (zombies count as gone).

    False when that cannot be told (Windows): a staging folder is then left for its writer.
    """
    from ctflow.system import process_exists

    return process_exists(pid) is False


def _writer_of(name: str) -> tuple[str, int] | None:
    """Return (host, pid) of the writer of a staging folder, or None for another name."""
    parts = name.split(_SEP, 3)
    if len(parts) < 4 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _remove_entries(staging: Path, select: Callable[[str], bool]) -> list[Path]:
    """Remove what ``select`` picks among the entries of the staging folder.

    Never follows a symbolic link: a staging folder that is a link is not looked into, an
    entry that is a link is removed itself (not what it points to), and folders are removed
    with :func:`shutil.rmtree`, which does not follow links either.

    Returns
    -------
    list of Path
        The entries that were removed (not those that could not be).
    """
    removed: list[Path] = []
    if _BY_FD:
        try:
            fd = os.open(staging, _DIR_FLAGS)
        except OSError:  # missing, not a folder, or a symlink (ELOOP)
            return removed
        try:
            for entry in os.scandir(fd):
                if select(entry.name):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.name, dir_fd=fd, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.name, dir_fd=fd)
                    try:
                        os.lstat(entry.name, dir_fd=fd)
                    except FileNotFoundError:
                        removed.append(staging / entry.name)
        finally:
            os.close(fd)
        return removed
    try:  # elsewhere (Windows) rmtree does not follow links either; a linked staging is left
        if not stat.S_ISDIR(os.lstat(staging).st_mode):
            return removed
        entries = list(os.scandir(staging))
    except OSError:
        return removed
    for entry in entries:
        if select(entry.name):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            if not os.path.lexists(entry.path):
                removed.append(Path(entry.path))
    return removed


_scanned: dict[str, float] = {}  # staging folder -> when this process last looked in it
_RESCAN_S = 60.0


def _remove_dead_writers(staging: Path, *, now: bool = False) -> list[Path]:
    """Remove staging folders of writers on this host whose process has died.

    A process looks at most once a minute per staging folder (``now=True``: at once): its
    first write there removes what dead writers left, later ones would mostly find only live
    writers, and looking at every write would list the folder and check each writer's process
    for every item.

    Parameters
    ----------
    staging : Path
        The staging folder ``<dst>/.ctflow-tmp``.
    now : bool, default False
        Look even if this process looked less than a minute ago.

    Returns
    -------
    list of Path
        The removed folders.
    """
    key, t = str(staging), time.monotonic()
    if not now and t - _scanned.get(key, -_RESCAN_S) < _RESCAN_S:
        return []
    _scanned[key] = t
    host = _host()

    def dead(name: str) -> bool:
        writer = _writer_of(name)
        return writer is not None and writer[0] == host and _process_is_gone(writer[1])

    return _remove_entries(staging, dead)


def remove_stale_writes(dst: str | os.PathLike[str], *, all_writers: bool = False) -> list[Path]:
    """Delete what interrupted writers left in ``dst`` (never a complete item).

    Nothing outside ``dst`` is ever deleted: a staging folder that is a symbolic link is not
    looked into, and links in it are removed themselves, never followed.

    Parameters
    ----------
    dst : path
        Root folder of a dump.
    all_writers : bool, default False
        False: remove only leftovers of dead processes on this host (safe while other processes
        write). True: remove every staging folder — only when nothing is writing into ``dst``
        (e.g. leftovers of a machine that was lost, on a shared file system).

    Returns
    -------
    list of Path
        What was removed.

    Raises
    ------
    InvalidParameterError
        A path with a NUL byte, a name over 255 bytes or over 4096 bytes in all.

    Examples
    --------
    >>> import tempfile
    >>> remove_stale_writes(tempfile.mkdtemp())
    []
    """
    staging = as_source_path(dst, "remove_stale_writes") / STAGING
    if all_writers:
        removed = _remove_entries(staging, lambda name: True)
    else:
        removed = _remove_dead_writers(staging, now=True)
    _rmdir_if_empty(staging)
    return removed
