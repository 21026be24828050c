"""Write a report file so that readers see either the old content or the whole new content, never a part.

A regular file (or a new one): the text goes to a temporary file in the target's directory, is
fsync'ed, then renamed over the target with os.replace (atomic within one filesystem); the
directory is fsync'ed afterwards so the rename survives a crash. On any exception the temporary
file is removed and the old file is left untouched.

Anything else is written in place, as a shell redirection would, because replacing it would
destroy it: "-" and every path to this process's open descriptors (/dev/stdout, /dev/fd/N,
/proc/self/fd/N, however spelt: written through the descriptor itself, so a shell's
`> out.txt` or `| jq` keeps working), and an existing device node or FIFO (/dev/null, a named
pipe; opening a FIFO waits for its reader, as a shell redirection does). A reader that has gone
away raises BrokenPipeError; any other failure is one UsageError line.

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
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):   # a device or FIFO
            _write_in_place(path, lambda: os.open(target, os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY),
                            payload)
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
_FD_DIR = re.compile(r"/proc/(\d+)(?:/task/\d+)?/fd")


def descriptor_of(path: str) -> int | None:
    """The open descriptor of this process that `path` names, else None: "-" is stdout; so is
    any spelling that leads, through symlinks (/dev/stdout, /dev/fd, /proc/self/fd,
    /proc/thread-self/fd, a link of the user's), to an entry of this process's fd directory."""
    if path == "-":
        return 1
    p = os.path.abspath(path)
    for _ in range(40):                                  # as many links as the kernel follows
        m = _FD_DIR.fullmatch(os.path.realpath(os.path.dirname(p)))
        name = os.path.basename(p)
        if m and int(m.group(1)) == os.getpid() and name.isdigit():
            return int(name)
        if not os.path.islink(p):
            return None
        try:
            p = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
        except OSError:
            return None
    return None


def _write_in_place(path: str, opener, payload: bytes) -> None:
    """Write to what cannot be replaced: through a descriptor `opener` returns, all of it. A
    reader that has gone (a pipe, a FIFO) raises BrokenPipeError for the caller to decide."""
    try:
        fd = opener()
    except (OSError, OverflowError) as e:
        raise UsageError(f"{path}: cannot write: {getattr(e, 'strerror', None) or e}") from None
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
    except BrokenPipeError:
        raise
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
