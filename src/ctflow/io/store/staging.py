"""Staging folders of writers in ``<dst>/.ctflow-tmp``, the final swap, and dead writers.

An item is assembled in a private staging folder named after its writer
(``<host>~<pid>~<random>~<id>``) and renamed into place when complete
(``_swap_in``). Folders left by writers that died are removed by later writers on the same
host (``_remove_dead_writers``) or on demand (:func:`remove_stale_writes`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from ctflow.io.store.format import _SEP, STAGING

__all__ = ["remove_stale_writes"]


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


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` is replaced without a half state.

    ``tmp`` lies in the staging folder, so the replaced item is moved there too (the staging
    folder cannot vanish while ``tmp`` is in it) and deleted. Concurrent writers of the same item
    are safe: each attempt either installs this writer's copy or retries.
    """
    trash: list[Path] = []
    try:
        for attempt in range(20):
            try:
                os.rename(tmp, final)
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
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
    try:
        entries = list(os.scandir(staging))
    except (FileNotFoundError, NotADirectoryError):
        return []
    host = _host()
    removed = []
    for entry in entries:
        writer = _writer_of(entry.name)
        if writer is not None and writer[0] == host and _process_is_gone(writer[1]):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def remove_stale_writes(dst: str | os.PathLike[str], *, all_writers: bool = False) -> list[Path]:
    """Delete what interrupted writers left in ``dst`` (never a complete item).

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
        The removed folders.

    Examples
    --------
    >>> import tempfile
    >>> remove_stale_writes(tempfile.mkdtemp())
    []
    """
    staging = Path(dst) / STAGING
    if all_writers:
        try:
            removed = [Path(e.path) for e in os.scandir(staging)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
    else:
        removed = _remove_dead_writers(staging, now=True)
    _rmdir_if_empty(staging)
    return removed
