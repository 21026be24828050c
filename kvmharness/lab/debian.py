"""Debian's kernels for the labs: fetch, verify, unpack and depmod one, cached in the user's cache.

    from kvmharness.lab.debian import fetch_kernel
    k = fetch_kernel("7.3")          # or "6.1", "6.12.117", "trixie", "sid", "linux-image-…-amd64"
    k.release, k.vmlinuz, k.modules_dir, k.packages

apt does the fetching and the verifying, in a private configuration under
$XDG_CACHE_HOME/kvmharness/debian/apt (its own sources list, lists, archives, an empty dpkg
status, and none of /etc/apt's settings), so the system's packages and apt state are untouched.
`apt-get update` checks each suite's signed InRelease against Debian's archive keyring
(/usr/share/keyrings/debian-archive-keyring.gpg) and the Packages files against its hashes;
`apt-get download` checks every .deb against the hash in those Packages files. The one
relaxation is `Check-Valid-Until false`: sid's and experimental's Release files are often older
than their Valid-Until on a machine whose clock runs ahead, and a stale-but-signed list is fine
for picking a kernel.

Packaging: 6.x ships one `linux-image-<release>` package holding /boot/vmlinuz-<release> and the
modules. 7.x splits it: `linux-image-<release>` is a metapackage depending on
`linux-binary-<release>` (the image), `linux-modules-<release>` and `linux-base-<release>`
(modules.order, modules.builtin, …). Both are unpacked with `dpkg-deb -x` into one root and
`depmod -b` indexes the modules there. The result is kept under
$XDG_CACHE_HOME/kvmharness/debian/kernels/<package>_<version>/ with kernel.json written last, so a
half-unpacked kernel is never taken for a cached one.

The mirror is the system's own Debian mirror (the first URI of /etc/apt/sources.list(.d) that
serves a Debian suite), or KVMHARNESS_DEBIAN_MIRROR. Every failure is one DebianError line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ..errors import EnvironmentProblem
from .process import run_step

# Suites searched, oldest first; a version given as X.Y is looked for in all of them.
SUITES = ("bookworm", "bookworm-backports", "trixie", "trixie-backports", "sid", "experimental")
SUITE_ALIASES = {"unstable": "sid", "rc-buggy": "experimental"}
FLAVOUR = "amd64"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
LISTS_MAX_AGE_S = 7 * 24 * 3600
APT_TIMEOUT_S = 1800
DPKG_TIMEOUT_S = 600             # dpkg-deb -x of one package, depmod of one kernel
_STANZA_PACKAGES = re.compile(r"^linux-(image|binary|modules|base)-")
_IMAGE_RE = re.compile(rf"^linux-image-(\d[^ ]*?)(?<!-cloud)(?<!-rt)-{FLAVOUR}$")   # not cloud/rt/unsigned
_VERSION_SPEC = re.compile(r"^\d+\.\d+(\.\d+)?(~rc\d+)?$")

Progress = Callable[[str], None]


class DebianError(EnvironmentProblem):
    """A kernel could not be fetched: one line saying why (exit 2)."""


@dataclass(frozen=True)
class DebianKernel:
    release: str                 # `uname -r` of the kernel: "7.3.4+deb13-amd64"
    version: str                 # the Debian package version: "7.3.4-1~bpo13+1"
    suite: str                   # where it was found: "trixie-backports"
    vmlinuz: Path
    modules_dir: Path            # …/lib/modules/<release>, indexed by depmod
    packages: tuple[str, ...]    # what was unpacked, as PACKAGE=VERSION

    @property
    def root(self) -> Path:
        """The directory holding lib/modules/<release> (depmod's and modprobe's -d base)."""
        return self.modules_dir.parent.parent.parent

    @property
    def image_package(self) -> str:
        return f"linux-image-{self.release}"

    def to_json(self) -> dict:
        return {"release": self.release, "version": self.version, "suite": self.suite,
                "vmlinuz": str(self.vmlinuz), "modules_dir": str(self.modules_dir),
                "packages": list(self.packages)}

    @classmethod
    def from_json(cls, d: dict) -> "DebianKernel":
        return cls(d["release"], d["version"], d["suite"], Path(d["vmlinuz"]),
                   Path(d["modules_dir"]), tuple(d["packages"]))


# -- Debian version order (Debian Policy 5.6.12), for picking the newest candidate ----------------
def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return -1 if ac < bc else 1
            i, j = i + 1, j + 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = (a[i] > b[j]) - (a[i] < b[j])
            i, j = i + 1, j + 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as `dpkg --compare-versions` orders two Debian versions."""
    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
        return int(epoch or 0), upstream, revision
    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def upstream_version(version: str) -> str:
    """'7.3.4-1~bpo13+1' -> '7.3.4'; '1:6.1.176-1' -> '6.1.176'."""
    v = version.split(":", 1)[-1]
    return v.rpartition("-")[0] if "-" in v else v


# -- Packages stanzas: pure resolution -----------------------------------------------------------
@dataclass(frozen=True)
class Stanza:
    package: str
    version: str
    suite: str
    depends: str = ""

    def depends_on(self) -> list[str]:
        """Package names of Depends (alternatives and version constraints dropped)."""
        return [alt.split("(")[0].strip() for group in self.depends.split(",")
                for alt in group.split("|") if alt.strip()]


def parse_packages(text: str, suite: str) -> list[Stanza]:
    """The kernel packages' stanzas of one Packages file (the rest is skipped unparsed)."""
    out = []
    for block in text.split("\n\n"):
        if not block.startswith("Package: linux-"):
            continue
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(": ")
            if sep and not line.startswith(" "):
                fields[key] = value.strip()
        name = fields.get("Package", "")
        if _STANZA_PACKAGES.match(name) and "Version" in fields:
            out.append(Stanza(name, fields["Version"], suite, fields.get("Depends", "")))
    return out


@dataclass(frozen=True)
class Choice:
    image: Stanza                # the linux-image-<release>-amd64 package chosen
    packages: tuple[Stanza, ...]  # what to unpack: the image itself (6.x) or binary+modules+base (7.x)


def resolve(spec: str, stanzas: Iterable[Stanza]) -> Choice:
    """The kernel a --debian SPEC names: a suite (its linux-image-amd64's kernel), a version X.Y or
    X.Y.Z (the newest amd64 kernel of that version in any suite), or a linux-image package name.
    DebianError when nothing matches."""
    spec = spec.strip()
    suite = SUITE_ALIASES.get(spec, spec)
    by_suite: dict[tuple[str, str], list[Stanza]] = {}
    for s in stanzas:
        by_suite.setdefault((s.suite, s.package), []).append(s)

    def newest(cands: list[Stanza]) -> Stanza:
        best = cands[0]
        for c in cands[1:]:
            if compare_versions(c.version, best.version) > 0:
                best = c
        return best

    if suite in SUITES:
        meta = by_suite.get((suite, f"linux-image-{FLAVOUR}"))
        if not meta:
            raise DebianError(f"--debian {spec}: no linux-image-{FLAVOUR} in {suite}")
        meta_pkg = newest(meta)
        image_names = [d for d in meta_pkg.depends_on() if _IMAGE_RE.match(d)]
        if not image_names:
            raise DebianError(f"--debian {spec}: linux-image-{FLAVOUR} {meta_pkg.version} in {suite} "
                              "depends on no linux-image-<release>-amd64")
        cands = by_suite.get((suite, image_names[0]), [])
        if not cands:
            raise DebianError(f"--debian {spec}: {image_names[0]} is not in {suite}")
        image = newest(cands)
    elif _VERSION_SPEC.match(spec) or _IMAGE_RE.match(spec):
        def wanted(s: Stanza) -> bool:
            if _IMAGE_RE.match(spec):
                return s.package == spec
            up = upstream_version(s.version)
            return _IMAGE_RE.match(s.package) is not None and (
                up == spec or up.startswith(spec + ".") or up.startswith(spec + "~"))
        cands = [s for ss in by_suite.values() for s in ss if wanted(s)]
        if not cands:
            known = sorted({m.group(0) for ss in by_suite.values() for s in ss
                            if _IMAGE_RE.match(s.package)
                            for m in [re.match(r"\d+\.\d+", upstream_version(s.version))] if m},
                           key=lambda v: tuple(int(x) for x in v.split(".")))
            raise DebianError(f"--debian {spec}: no Debian {FLAVOUR} kernel of that version "
                              f"(available: {', '.join(known) or 'none'})")
        image = newest(cands)
    else:
        raise DebianError(f"--debian {spec!r}: expected a kernel version (7.3, 6.12.117), a suite "
                          f"({', '.join(SUITES)}) or a linux-image-…-{FLAVOUR} package")
    # 7.x: the image is a metapackage over linux-binary + linux-modules (both needed); any
    # release may add linux-base (modules.order, modules.builtin: depmod's inputs), which the
    # archive sometimes no longer carries for an older backport (then depmod does without).
    deps = image.depends_on()
    split = [d for d in deps if re.match(r"^linux-(binary|modules)-\d", d)]
    base = [d for d in deps if re.match(r"^linux-base-\d", d)]
    found = [] if split else [image]
    for name in split + base:
        same = [s for s in by_suite.get((image.suite, name), []) if s.version == image.version]
        if same:
            found.append(same[0])
        elif name in split:
            raise DebianError(f"{image.package} {image.version}: {name} of the same version is not in "
                              f"{image.suite}")
    return Choice(image, tuple(found))


# -- the private apt -----------------------------------------------------------------------------
def system_mirror(paths: Iterable[str] = ("/etc/apt/sources.list.d", "/etc/apt/sources.list")) -> str:
    """KVMHARNESS_DEBIAN_MIRROR, else the first URI of the system's sources serving a Debian suite
    (not the security archive)."""
    env = os.environ.get("KVMHARNESS_DEBIAN_MIRROR", "").strip()
    if env:
        return env.rstrip("/")
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix in (".sources", ".list"))
        elif p.is_file():
            files.append(p)
    suites = set(SUITES) | {"stable", "oldstable", "testing", "unstable", "forky"}
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        if f.suffix == ".sources":
            for block in text.split("\n\n"):
                uris = re.search(r"^URIs:\s*(\S+)", block, re.M)
                suite = re.search(r"^Suites:\s*(\S+)", block, re.M)
                if uris and suite and suite.group(1).split("-")[0] in suites and "security" not in uris.group(1):
                    return uris.group(1).rstrip("/")
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m and m.group(2).split("-")[0] in suites and "security" not in m.group(1):
                    return m.group(1).rstrip("/")
    raise DebianError("no Debian mirror in /etc/apt/sources.list(.d): set KVMHARNESS_DEBIAN_MIRROR "
                      "to one (the URI a sources.list line names)")


def default_cache() -> Path:
    from ..guest.assemble import cache_dir
    return cache_dir() / "debian"


class PrivateApt:
    """apt with its own configuration under DIR/apt; nothing of /etc/apt but the keyring."""

    def __init__(self, base: Path, mirror: str, keyring: str = KEYRING,
                 suites: tuple[str, ...] = SUITES, kind: str = "deb",
                 status: str = "/dev/null"):
        self.base = base
        self.dir = base / "apt"
        self.mirror = mirror
        self.keyring = keyring
        self.suites = suites
        self.kind = kind            # "deb" (binary packages) or "deb-src" (source packages)
        # The dpkg status apt resolves against: none (download exactly what is named), or the
        # system's, only read, to fetch just what a host tool lacks (the Bochs lab's GRUB).
        self.status = status
        self.conf = self.dir / "apt.conf"

    def configure(self) -> None:
        if not os.path.isfile(self.keyring):
            raise DebianError(f"{self.keyring} missing: install the debian-archive-keyring package, "
                              "which apt needs to verify Debian's suites")
        for d in ("lists/partial", "archives/partial", "etc/apt.conf.d", "state", "debs"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        sources = "".join(f"{self.kind} [signed-by={self.keyring}] {self.mirror} {s} main\n"
                          for s in self.suites)
        (self.dir / "etc/sources.list").write_text(sources)
        d = self.dir
        conf = f'''\
Dir::Etc::Main "/dev/null"; Dir::Etc::Parts "{d}/etc/apt.conf.d";
Dir::Etc::SourceList "{d}/etc/sources.list"; Dir::Etc::SourceParts "/dev/null";
Dir::Etc::Preferences "/dev/null"; Dir::Etc::PreferencesParts "/dev/null";
Dir::State "{d}/state"; Dir::State::Lists "{d}/lists"; Dir::State::status "{self.status}";
Dir::Cache "{d}"; Dir::Cache::Archives "{d}/archives"; Dir::Log "{d}";
APT::Architecture "{FLAVOUR}"; APT::Architectures {{ "{FLAVOUR}"; }};
Acquire::Languages "none"; Acquire::Check-Valid-Until "false"; Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";
APT::Sandbox::User "root";
'''
        if not self.conf.is_file() or self.conf.read_text() != conf:
            self.conf.write_text(conf)

    def run(self, args: list[str], what: str, cwd: Path | None = None) -> str:
        """apt-get/apt-cache ARGS in this configuration; one DebianError line on failure."""
        env = {**os.environ, "APT_CONFIG": str(self.conf), "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
        return run_step(args, what, APT_TIMEOUT_S, error=DebianError, cwd=cwd, env=env,
                        capture_output=True, text=True,
                        missing="fetching Debian kernels needs apt (Debian/Ubuntu)").stdout

    def lists_age(self) -> float | None:
        index = "*_Sources*" if self.kind == "deb-src" else "*_Packages*"
        stamps = [f.stat().st_mtime for f in (self.dir / "lists").glob(index)]
        return time.time() - min(stamps) if len(stamps) >= len(self.suites) else None

    def lists_stamp(self) -> str:
        """What the package lists are now: their names, sizes and times."""
        files = sorted((self.dir / "lists").glob("*_Packages*"))
        return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)

    def update(self) -> None:
        self.run(["apt-get", "update", "-q"], "apt-get update (private lists)")

    def stanzas(self) -> list[Stanza]:
        """Kernel stanzas of every suite's Packages file that apt verified (Trusted: yes)."""
        listing = self.run(["apt-get", "indextargets", "--format", "$(FILENAME)|$(RELEASE)|$(TRUSTED)",
                             "Created-By: Packages"], "apt-get indextargets")
        out: list[Stanza] = []
        for line in listing.splitlines():
            path, _, rest = line.partition("|")
            suite, _, trusted = rest.partition("|")
            if not path or not os.path.exists(path):
                continue
            if trusted != "yes":
                raise DebianError(f"{suite}: its package list is not signed by a trusted key")
            text = self.run(["/usr/lib/apt/apt-helper", "cat-file", path], f"reading {path}")
            out += parse_packages(text, suite)
        return out

    def download(self, packages: Iterable[Stanza], into: Path) -> list[Path]:
        """apt-get download PACKAGE=VERSION…: apt checks each against its Packages hash (a file
        already there with the right hash is not fetched again)."""
        pkgs = list(packages)
        self.run(["apt-get", "download", "-q", *[f"{s.package}={s.version}" for s in pkgs]],
                  "apt-get download", cwd=into)
        files = []
        for s in pkgs:
            ver = s.version.replace(":", "%3a")
            f = into / f"{s.package}_{ver}_{FLAVOUR}.deb"
            if not f.is_file():
                raise DebianError(f"apt-get download left no {f.name}")
            files.append(f)
        return files


# -- unpacking -----------------------------------------------------------------------------------
def extract(debs: Iterable[Path], dest: Path) -> None:
    """dpkg-deb -x every package into dest (made if missing): unpacked, not installed."""
    dest.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        run_step(["dpkg-deb", "-x", deb, dest], f"dpkg-deb -x {deb.name}", DPKG_TIMEOUT_S,
                 error=DebianError, capture_output=True, text=True)


def unpack(debs: Iterable[Path], dest: Path) -> tuple[str, Path, Path]:
    """A kernel's packages extracted into dest, then depmod: (release, vmlinuz, modules_dir)."""
    debs = list(debs)
    extract(debs, dest)
    mods = [m for base in ("usr/lib/modules", "lib/modules") for m in sorted((dest / base).glob("*"))
            if (m / "kernel").is_dir()]
    if not mods:
        raise DebianError(f"no lib/modules/<release>/kernel in {', '.join(d.name for d in debs)}")
    modules_dir = mods[0]
    release = modules_dir.name
    images = [p for p in (dest / "boot" / f"vmlinuz-{release}", modules_dir / "vmlinuz") if p.is_file()]
    if not images:
        raise DebianError(f"no vmlinuz for {release} in {', '.join(d.name for d in debs)}")
    depmod = shutil.which("depmod") or "/usr/sbin/depmod"
    base = modules_dir.parent.parent.parent
    run_step([depmod, "-b", base, release], f"depmod -b {base} {release}", DPKG_TIMEOUT_S,
             error=DebianError, missing="install the kmod package", capture_output=True, text=True)
    return release, images[0], modules_dir


# -- the entry point -----------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(base: Path):
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_kernels(cache: Path | None = None) -> list[DebianKernel]:
    """Every kernel unpacked in the cache (kernel.json present)."""
    base = (cache or default_cache()) / "kernels"
    out = []
    for marker in sorted(base.glob("*/kernel.json")):
        try:
            out.append(DebianKernel.from_json(json.loads(marker.read_text())))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def fetch_kernel(spec: str, cache: Path | None = None, *, refresh: bool = False,
                 progress: Progress | None = None, mirror: str | None = None,
                 keyring: str = KEYRING, suites: tuple[str, ...] = SUITES) -> DebianKernel:
    """The Debian kernel SPEC names (see resolve), downloaded, verified and unpacked once.

    The private package lists are fetched when missing, older than a week (a failed refresh then
    keeps the old lists), when `refresh`, or when SPEC names nothing in them. `mirror`, `keyring`
    and `suites` default to the system's mirror, Debian's archive keyring and SUITES."""
    say = progress or (lambda msg: None)
    base = cache or default_cache()
    with _locked(base):
        apt = PrivateApt(base, mirror or system_mirror(), keyring, suites)
        apt.configure()
        age = apt.lists_age()
        if age is None or refresh:
            say("debian: fetching the package lists of " + ", ".join(suites))
            apt.update()
        elif age > LISTS_MAX_AGE_S:
            say(f"debian: package lists are {age / 86400:.0f} days old, refreshing")
            with contextlib.suppress(DebianError):
                apt.update()
        memo = _Memo(base / "resolved.json", apt.lists_stamp())
        known = memo.kernel(spec)
        if known is not None:               # the same lists named this cached kernel before
            say(f"debian: {known.image_package} {known.version} ({known.suite}) cached")
            return known
        try:
            choice = resolve(spec, apt.stanzas())
        except DebianError:
            if refresh or age is None:
                raise
            say(f"debian: {spec} not in the cached lists, refreshing them")
            apt.update()
            choice = resolve(spec, apt.stanzas())
        img = choice.image
        key = f"{img.package}_{img.version}".replace(":", "%3a").replace("/", "_")
        dest = base / "kernels" / key
        marker = dest / "kernel.json"
        if marker.is_file():
            try:
                kernel = DebianKernel.from_json(json.loads(marker.read_text()))
                if kernel.vmlinuz.is_file() and kernel.modules_dir.is_dir():
                    say(f"debian: {img.package} {img.version} ({img.suite}) cached")
                    memo.remember(spec, marker)
                    return kernel
            except (OSError, ValueError, KeyError, TypeError):
                pass
        names = " ".join(s.package for s in choice.packages)
        say(f"debian: downloading {names} {img.version} ({img.suite})")
        debs = apt.download(choice.packages, apt.dir / "debs")
        say(f"debian: unpacking and depmod {img.package}")
        (base / "kernels").mkdir(exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=base / "kernels"))
        try:
            release, _, _ = unpack(debs, work)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(work, dest)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        # Paths are taken again from the final place.
        mods = next(m for b in ("usr/lib/modules", "lib/modules") for m in [dest / b / release]
                    if (m / "kernel").is_dir())
        image = next(p for p in (dest / "boot" / f"vmlinuz-{release}", mods / "vmlinuz") if p.is_file())
        kernel = DebianKernel(release, img.version, img.suite, image, mods,
                              tuple(f"{s.package}={s.version}" for s in choice.packages))
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(kernel.to_json(), indent=2) + "\n")
        os.replace(tmp, marker)
        memo.remember(spec, marker)
        return kernel


class _Memo:
    """SPEC -> the cached kernel it resolved to, valid while the package lists are the same
    files (name, size, mtime): resolving reads ~60 MB of lists (4-5 s, more on a loaded host),
    and the same lists always name the same kernel."""

    def __init__(self, path: Path, stamp: str):
        self.path, self.stamp = path, stamp
        try:
            data = json.loads(path.read_text())
            self.specs = data["specs"] if data.get("stamp") == stamp else {}
        except (OSError, ValueError, KeyError, TypeError):
            self.specs = {}

    def kernel(self, spec: str) -> DebianKernel | None:
        marker = self.specs.get(spec)
        if not marker:
            return None
        try:
            k = DebianKernel.from_json(json.loads(Path(marker).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return k if k.vmlinuz.is_file() and k.modules_dir.is_dir() else None

    def remember(self, spec: str, marker: Path) -> None:
        self.specs[spec] = str(marker)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"stamp": self.stamp, "specs": self.specs}, indent=2))
        os.replace(tmp, self.path)


__all__ = ["DebianError", "DebianKernel", "Stanza", "Choice", "SUITES", "compare_versions",
           "upstream_version", "parse_packages", "resolve", "system_mirror", "fetch_kernel",
           "cached_kernels", "extract", "unpack", "default_cache"]
