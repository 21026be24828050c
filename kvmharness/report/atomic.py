"""Write a report file so that readers see either the old content or the whole new content, never a part.

A regular file (or a new one): the text goes to a temporary file in the target's directory, is
fsync'ed, then renamed over the target with os.replace (atomic within one filesystem); the
directory is fsync'ed afterwards so the rename survives a crash. On any exception the temporary
file is removed and the old file is left untouched.

Anything else is written in place, as a shell redirection would, because replacing it would
destroy it: "-" and /dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N (this process's open
descriptors: written through the descriptor itself, so a shell's `> out.txt` or `| jq` keeps
working), and an existing device node, FIFO or socket (/dev/null, a named pipe).

SIGINT, SIGTERM and SIGHUP are blocked (in the calling thread) from the creation of the temporary
file until it has been renamed or removed: a Ctrl-C or `kill` that arrives meanwhile takes effect
right after, so it can neither leave a temporary file behind nor stop a rename half-done. Only
SIGKILL (or a crash of the machine) can leave a `.NAME.*.tmp` file; the target is intact even then.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import sys
import tempfile

from ..errors import UsageError


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename itself has happened
    finally:
        os.close(fd)


def write_atomic(path, data: str | bytes) -> None:
    """Replace `path` with `data` (str is written as UTF-8) atomically.

    A symlink at `path` is followed: its target is replaced. A new file gets mode 0666 & ~umask;
    an existing file keeps its mode. OSError becomes one UsageError line naming the path.
    """
    path = os.fspath(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd = descriptor_of(path)
    if fd is not None:
        for stream in (sys.stdout, sys.stderr):     # what Python buffered goes out first
            stream.flush()
        _write_in_place(path, lambda: os.dup(fd), payload)
        return
    target = os.path.realpath(path)
    directory = os.path.dirname(target) or "."
    try:
        st = os.stat(target)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    except OSError as e:
        raise UsageError(f"{path}: cannot write: {e.strerror}") from None
    else:
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):   # a device, FIFO, socket
            _write_in_place(path, lambda: os.open(target, os.O_WRONLY | os.O_CLOEXEC), payload)
            return
        mode = st.st_mode & 0o7777

    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())     # read first: see Machine._call_loop
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
        _write_replace(path, target, directory, payload, mode)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)    # a deferred signal lands here
    _fsync_dir(directory)


_DEFERRED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
_STD_STREAMS = {"-": 1, "/dev/stdout": 1, "/dev/stderr": 2}
_FD_PATH = re.compile(r"/(?:dev/fd|proc/self/fd|proc/(\d+)/fd)/(\d+)")


def descriptor_of(path: str) -> int | None:
    """The open descriptor of this process that `path` names ("-" is stdout), else None."""
    if path in _STD_STREAMS:
        return _STD_STREAMS[path]
    m = _FD_PATH.fullmatch(os.path.normpath(path))
    if m is None or (m.group(1) is not None and int(m.group(1)) != os.getpid()):
        return None
    return int(m.group(2))


def _write_in_place(path: str, opener, payload: bytes) -> None:
    """Write to what cannot be replaced: through a descriptor `opener` returns, all of it."""
    try:
        fd = opener()
    except OSError as e:
        raise UsageError(f"{path}: cannot write: {e.strerror or e}") from None
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        raise UsageError(f"{path}: cannot write: {e.strerror or e}") from None
    finally:
        os.close(fd)


def _write_replace(path: str, target: str, directory: str, payload: bytes, mode: int) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp",
                                   dir=directory)
    except OSError as e:
        raise UsageError(f"{path}: cannot write: {e.strerror}") from None
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot write: {e.strerror or e}") from None
