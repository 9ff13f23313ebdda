"""Files only their owner may read: created 0600 from the first instant, or brought to 0600.

Every file that holds a key, a token or an audit trail goes through here, so that no such file
is ever world-readable, not even between its creation and a later ``chmod`` (the umask only ever
removes bits, so ``os.open(..., 0o600)`` can never create anything more open than 0600)::

    write_private_file(path, data)        # atomic: readers see nothing or all of it
    fd = open_private_append(path)        # the audit log: O_APPEND, 0600, mode repaired
    ensure_private(path, create=True)     # a SQLite store before sqlite3.connect() opens it

SQLite creates its ``-wal`` and ``-shm`` files with the permissions of the database file, so a
store made private before its first connection stays private with its journals.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

__all__ = [
    "PRIVATE_MODE",
    "ensure_private",
    "mode_problem",
    "open_private_append",
    "write_private_file",
]

#: Read and write for the owner, nothing for group and others.
PRIVATE_MODE = 0o600

# Bits that must not be set on a private file: any access for group or others.
_OPEN_BITS = stat.S_IRWXG | stat.S_IRWXO
# link() is refused by some filesystems (FAT, some FUSE and container volumes).
_NO_LINK = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS})


def mode_problem(mode: int) -> str | None:
    """Why a file of permission bits ``mode`` is not private, or None when it is.

    >>> mode_problem(0o600) is None, mode_problem(0o640)
    (True, 'readable by its group (mode 0640)')
    """
    bits = stat.S_IMODE(mode)
    if bits & stat.S_IRWXO:
        return f"readable or writable by other users (mode {bits:04o})"
    if bits & stat.S_IRWXG:
        return f"readable by its group (mode {bits:04o})"
    return None


def write_private_file(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool = False
) -> None:
    """Write ``data`` to ``path`` as a 0600 file, atomically.

    The bytes go to a temporary 0600 file in the same directory, are fsynced, and the file is then
    linked (or, with ``overwrite``, renamed) into place, so ``path`` never exists half-written
    and never with wider permissions. The directory is fsynced afterwards.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false (nothing is written).
        OSError: the directory is missing or not writable, the disk is full, ...
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_MODE)
    try:
        try:
            os.fchmod(fd, PRIVATE_MODE)  # in case the umask also took owner bits away
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, target)
        else:
            _link_no_clobber(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_directory(target.parent)


def _link_no_clobber(tmp: Path, target: Path) -> None:
    """Give ``tmp``'s inode the name ``target``, failing if ``target`` exists (no race)."""
    try:
        os.link(tmp, target)
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        # No hard links here: check, then rename (a tiny race, on such filesystems only).
        if target.exists():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
        os.rename(tmp, target)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return  # not every platform lets a directory be opened; the file itself is synced
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; nothing more can be done
    finally:
        os.close(fd)


def ensure_private(path: str | os.PathLike[str], *, create: bool = False) -> bool:
    """Make the existing file at ``path`` private (0600); return True if its mode had to change.

    With ``create``, a missing file is created empty and 0600 (for stores that another library
    opens later, such as SQLite). Without it, a missing file raises ``FileNotFoundError``.
    Symbolic links are followed: the file they point to is the one that holds the secret.
    """
    if create:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_MODE)
        except FileExistsError:
            pass
        else:
            try:
                os.fchmod(fd, PRIVATE_MODE)
            finally:
                os.close(fd)
            return False
    mode = os.stat(path).st_mode
    if stat.S_IMODE(mode) & _OPEN_BITS == 0:
        return False
    os.chmod(path, stat.S_IMODE(mode) & ~_OPEN_BITS)
    return True


def open_private_append(path: str | os.PathLike[str]) -> int:
    """Open ``path`` for appending (created 0600 if missing) and return the file descriptor.

    An existing file with group or other bits has them removed. Every ``os.write`` to the
    descriptor goes to the end of the file (``O_APPEND``), whatever other writers do. The
    caller closes the descriptor.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_MODE)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_IMODE(mode) & _OPEN_BITS:
            os.fchmod(fd, stat.S_IMODE(mode) & ~_OPEN_BITS)
    except BaseException:
        os.close(fd)
        raise
    return fd
