"""Assemble `guests/*.S` (GNU as) into flat binaries, cached by content hash: the guest payloads,
and the host's native probe loop (probe_loop.S, linked at 0 and position independent).

A payload is linked at a fixed guest address; the result is the flat image plus its symbol table.
The cache lives in $XDG_CACHE_HOME/kvmharness (or ~/.cache/kvmharness), created private to the
user (0700); entries in a directory, or files, that another user could write are ignored and
rebuilt. Entries are keyed by the SHA-256 of (tool version of this recipe, source text, link
address), written to a temporary name and renamed into place, so xdist workers building at once
never see half a file. The recorded hash covers everything an entry gives back (the code and the
symbol table, which places the loop's entry points and the payloads' labels: a wrong address is
a jump into the middle of an instruction): an entry whose content no longer matches it, or that
has a key too many or too few, is rebuilt, never run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import EnvironmentProblem, UsageError, printable

RECIPE = "as --64; ld -Ttext; objcopy -O binary; v2"
_TOOLS = ("as", "ld", "objcopy", "nm")


@dataclass(frozen=True)
class Image:
    name: str
    base: int
    code: bytes
    symbols: dict[str, int]

    def sym(self, name: str) -> int:
        try:
            return self.symbols[name]
        except KeyError:
            raise UsageError(f"payload {self.name}: no symbol {name!r}") from None


def sources_dir() -> Path:
    """Where the payload sources are: the installed kvmharness.guests package, else the checkout."""
    try:
        root = resources.files("kvmharness.guests")
        path = Path(str(root))
        if (path / "runtime.S").is_file():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "guests"


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/kvmharness, else ~/.cache/kvmharness; one that cannot be made is an
    environment error (exit 2). A relative XDG_CACHE_HOME is ignored, as the XDG spec says."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        base, source = xdg, "XDG_CACHE_HOME"
    else:
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            raise EnvironmentProblem("no usable home directory for the payload cache: set HOME or "
                                     "XDG_CACHE_HOME to an absolute directory")
        base, source = os.path.join(home, ".cache"), "HOME"
    path = Path(base) / "kvmharness"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.is_dir():
            raise NotADirectoryError(20, "Not a directory")
    except OSError as e:
        raise EnvironmentProblem(f"payload cache {printable(path)}: {e.strerror or e} (from {source}; "
                                 "point XDG_CACHE_HOME at a writable directory)") from None
    return path


def _check_tools() -> None:
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        raise EnvironmentProblem(
            f"GNU binutils not found ({', '.join(missing)} missing): install the 'binutils' package "
            "(e.g. apt-get install binutils) to assemble guest payloads")


_memo: dict[tuple[str, int], Image] = {}


def assemble(name: str, base: int) -> Image:
    """Return the flat image of guests/NAME.S linked at `base` (memoised per process)."""
    key = (name, base)
    img = _memo.get(key)
    if img is None:
        img = _memo[key] = _assemble(name, base)
    return img


def _assemble(name: str, base: int) -> Image:
    src_path = sources_dir() / f"{name}.S"
    try:
        source = src_path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no guest payload source {src_path}") from None
    # Included files (guests/*.inc) are part of what gets built, so part of the key.
    includes = b"".join(p.read_bytes() for p in sorted(src_path.parent.glob("*.inc")))
    digest = hashlib.sha256(b"\0".join([RECIPE.encode(), source, includes, str(base).encode()])).hexdigest()
    cached = _load_cached(digest)
    if cached is not None:
        return Image(name, base, *cached)
    code, symbols = _build(name, src_path, base)
    _store_cached(digest, code, symbols)
    return Image(name, base, code, symbols)


def _private(path: Path) -> bool:
    """Owned by this user and writable by nobody else: the cache holds code this process runs
    (the native probe loop runs in the host process itself)."""
    try:
        st = path.stat()
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _load_cached(digest: str) -> tuple[bytes, dict] | None:
    directory = cache_dir()
    entry = directory / f"{digest}.json"
    if not (_private(directory) and _private(entry)):
        return None                          # someone else could have written it: rebuild
    try:
        meta = json.loads(entry.read_text())
        if not isinstance(meta, dict) or set(meta) != {"key", "code", "symbols", "sha256"}:
            return None
        code, symbols = bytes.fromhex(meta["code"]), meta["symbols"]
        if (meta["key"] != digest or not isinstance(symbols, dict)
                or not all(isinstance(k, str) and type(v) is int for k, v in symbols.items())
                or _content_hash(digest, code, symbols) != meta["sha256"]):
            return None                      # tampered or corrupt: rebuild, never run it
        return code, symbols
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _content_hash(digest: str, code: bytes, symbols: dict) -> str:
    """SHA-256 of everything an entry gives back: its key, code and symbol table (canonical JSON)."""
    return hashlib.sha256(json.dumps([digest, code.hex(), symbols], sort_keys=True,
                                     separators=(",", ":")).encode()).hexdigest()


def _store_cached(digest: str, code: bytes, symbols: dict) -> None:
    directory = cache_dir()
    if not _private(directory):
        return
    meta = {"key": digest, "code": code.hex(), "symbols": symbols,
            "sha256": _content_hash(digest, code, symbols)}
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    except OSError:
        return                               # an unwritable cache only costs a rebuild next time
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(meta, f)
        os.replace(tmp, directory / f"{digest}.json")
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


TOOL_TIMEOUT_S = 60.0       # a payload assembles in well under a second; a stuck tool is stopped


def _run(cmd: list[str], what: str) -> str:
    # Its own session, so a timeout stops the tool and anything it started (which would
    # otherwise keep the pipes open and the wait going).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise EnvironmentProblem(f"{what}: {cmd[0]} did not finish within {TOOL_TIMEOUT_S:g} s "
                                 "and was stopped") from None
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    proc = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if proc.returncode != 0:
        first = (proc.stderr or proc.stdout).strip().splitlines()
        raise EnvironmentProblem(f"{what} failed: {first[0] if first else 'exit ' + str(proc.returncode)}")
    return proc.stdout


def _build(name: str, src: Path, base: int) -> tuple[bytes, dict]:
    _check_tools()
    try:
        workdir = tempfile.TemporaryDirectory(prefix="kvmharness-as-")
    except OSError as e:
        raise EnvironmentProblem(f"no usable temporary directory to assemble {src.name} in "
                                 f"({e.strerror or e}): set TMPDIR to a writable directory") from None
    with workdir as tmp:
        obj, elf, flat = (os.path.join(tmp, f"{name}.{ext}") for ext in ("o", "elf", "bin"))
        _run(["as", "--64", "-I", str(src.parent), "-o", obj, str(src)], f"assembling {src.name}")
        _run(["ld", "-static", "-nostdlib", f"-Ttext={base:#x}", "-e", f"{base:#x}",
              "-o", elf, obj], f"linking {src.name}")
        _run(["objcopy", "-O", "binary", "-j", ".text", elf, flat], f"objcopy {src.name}")
        symbols = {}
        for line in _run(["nm", elf], f"nm {src.name}").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "TtAaDd":
                symbols[parts[2]] = int(parts[0], 16)
        return Path(flat).read_bytes(), symbols
