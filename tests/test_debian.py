"""Debian kernel fetching (kvmharness.lab.debian): version order, package resolution (6.x single
package, 7.x linux-binary + linux-modules split), and the whole path through the real apt against
a local signed repository: verified download, unpack, depmod, then served from the cache."""

import email.utils
import hashlib
import os
import shutil
import subprocess

import pytest

from kvmharness.lab import debian
from kvmharness.lab.debian import DebianError, Stanza, compare_versions, fetch_kernel, resolve

TOOLS = ("apt-get", "dpkg-deb", "gpg", "depmod")


# -- pure -----------------------------------------------------------------------------------------
PAIRS = [("7.3.4-1~bpo13+1", "7.3~rc7-1~exp1"), ("6.12.117-1", "6.12.95-1~bpo12+1"),
         ("1.0~rc1", "1.0"), ("6.1.176-1", "6.1.170-3"), ("1:1.0", "2.0"), ("1.0-1", "1.0-1"),
         ("1.0a", "1.0+"), ("1.0.0", "1.0"), ("2.0-1+b1", "2.0-1"), ("6.18.15-1~bpo13+1", "6.18.15-1")]


@pytest.mark.parametrize("a, b", PAIRS)
def test_version_order_is_dpkgs(a, b):
    got = compare_versions(a, b)
    assert compare_versions(b, a) == -got
    if shutil.which("dpkg"):
        for op, want in (("lt", got < 0), ("eq", got == 0), ("gt", got > 0)):
            assert (subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0) == want


def _st(pkg, ver, suite, depends=""):
    return Stanza(pkg, ver, suite, depends)


STANZAS = [
    _st("linux-image-amd64", "6.1.176-1", "bookworm", "linux-image-6.1.0-50-amd64 (= 6.1.176-1)"),
    _st("linux-image-6.1.0-50-amd64", "6.1.176-1", "bookworm", "kmod, initramfs-tools | linux-initramfs-tool"),
    _st("linux-image-6.1.0-47-amd64", "6.1.170-3", "bookworm", "kmod"),
    _st("linux-image-6.1.0-50-cloud-amd64", "6.1.176-1", "bookworm", "kmod"),
    _st("linux-image-amd64", "7.3.4-1~bpo13+1", "trixie-backports", "linux-image-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1)"),
    _st("linux-image-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1", "trixie-backports",
        "dracut | initramfs-tools, linux-base-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), "
        "linux-binary-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), linux-modules-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1)"),
    _st("linux-binary-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1", "trixie-backports"),
    _st("linux-modules-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1", "trixie-backports", "kmod"),
    _st("linux-base-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1", "trixie-backports"),
    _st("linux-image-7.3-amd64", "7.3~rc7-1~exp1", "experimental", "linux-binary-7.3-amd64 (= 7.3~rc7-1~exp1)"),
    _st("linux-image-6.18.15+deb13-amd64", "6.18.15-1~bpo13+1", "trixie-backports",
        "kmod, linux-base-6.18.15+deb13-amd64 (= 6.18.15-1~bpo13+1)"),   # its linux-base is gone
]


def test_resolve_versions_suites_and_packaging():
    c = resolve("6.1", STANZAS)                      # newest 6.1.x, one package
    assert [s.package for s in c.packages] == ["linux-image-6.1.0-50-amd64"]
    assert resolve("6.1.170", STANZAS).image.package == "linux-image-6.1.0-47-amd64"
    assert resolve("bookworm", STANZAS).image.version == "6.1.176-1"
    c = resolve("7.3", STANZAS)                      # 7.3.4 beats 7.3~rc7; 7.x split packaging
    assert c.image.package == "linux-image-7.3.4+deb13-amd64"
    assert sorted(s.package for s in c.packages) == [
        "linux-base-7.3.4+deb13-amd64", "linux-binary-7.3.4+deb13-amd64", "linux-modules-7.3.4+deb13-amd64"]
    assert resolve("trixie-backports", STANZAS).image == c.image
    c = resolve("6.18", STANZAS)                     # linux-base missing: the image alone
    assert [s.package for s in c.packages] == ["linux-image-6.18.15+deb13-amd64"]
    assert resolve("linux-image-6.1.0-47-amd64", STANZAS).image.version == "6.1.170-3"


@pytest.mark.parametrize("spec, needle", [
    ("5.10", "no Debian amd64 kernel of that version (available: 6.1, 6.18, 7.3)"),
    ("trixie", "no linux-image-amd64 in trixie"),
    ("7.3~rc7", "linux-binary-7.3-amd64 of the same version is not in experimental"),   # split, parts missing
    ("lts please", "expected a kernel version"),
])
def test_resolve_errors(spec, needle):
    stanzas = [s if s.package != "linux-image-7.3-amd64" else
               _st(s.package, s.version, s.suite, s.depends + ", linux-modules-7.3-amd64 (= 7.3~rc7-1~exp1)")
               for s in STANZAS]
    with pytest.raises(DebianError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        resolve(spec, stanzas)


def test_parse_packages_keeps_only_kernel_stanzas():
    text = ("Package: bash\nVersion: 5.2\n\nPackage: linux-image-6.1.0-50-amd64\nVersion: 6.1.176-1\n"
            "Depends: kmod,\n initramfs-tools\nDescription: x\n\nPackage: linux-headers-6.1\nVersion: 1\n")
    (s,) = debian.parse_packages(text, "bookworm")
    assert (s.package, s.version, s.suite, s.depends) == ("linux-image-6.1.0-50-amd64", "6.1.176-1", "bookworm", "kmod,")


def test_system_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv("KVMHARNESS_DEBIAN_MIRROR", raising=False)
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "a.sources").write_text("Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n\n"
                                 "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n")
    assert debian.system_mirror([str(d)]) == "http://mirror.example/debian"
    (d / "a.sources").write_text("")
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://old.example/debian trixie main\n")
    assert debian.system_mirror([str(d), str(tmp_path / "sources.list")]) == "http://old.example/debian"
    with pytest.raises(DebianError, match="KVMHARNESS_DEBIAN_MIRROR"):
        debian.system_mirror([str(d)])
    monkeypatch.setenv("KVMHARNESS_DEBIAN_MIRROR", "file:/srv/mirror/")
    assert debian.system_mirror([str(d)]) == "file:/srv/mirror"


# -- through the real apt: a local repository signed with a throw-away key -----------------------
def _deb(pool, name, version, files, depends=""):
    root = pool / f"build-{name}"
    (root / "DEBIAN").mkdir(parents=True)
    control = (f"Package: {name}\nVersion: {version}\nArchitecture: amd64\nMaintainer: test <t@example.invalid>\n"
               f"Description: test kernel package\n" + (f"Depends: {depends}\n" if depends else ""))
    (root / "DEBIAN" / "control").write_text(control)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    out = pool / f"{name}_{version}_amd64.deb"
    subprocess.run(["dpkg-deb", "-Zgzip", "--root-owner-group", "-b", str(root), str(out)],
                   check=True, capture_output=True)
    shutil.rmtree(root)
    return out, control


def _sign_suite(repo, suite, debs, gnupg):
    stanzas = []
    for deb, control in debs:
        data = deb.read_bytes()
        stanzas.append(control + f"Filename: pool/{deb.name}\nSize: {len(data)}\n"
                       f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
    packages = "\n".join(stanzas).encode()
    d = repo / "dists" / suite
    (d / "main/binary-amd64").mkdir(parents=True)
    (d / "main/binary-amd64/Packages").write_bytes(packages)
    release = (f"Origin: kvmharness-test\nSuite: {suite}\nCodename: {suite}\n"
               f"Date: {email.utils.formatdate(usegmt=True)}\nArchitectures: amd64\nComponents: main\n"
               f"SHA256:\n {hashlib.sha256(packages).hexdigest()} {len(packages)} main/binary-amd64/Packages\n")
    (d / "Release").write_text(release)
    subprocess.run(["gpg", "--batch", "--yes", "--clearsign", "-o", str(d / "InRelease"), str(d / "Release")],
                   check=True, capture_output=True, env={**os.environ, "GNUPGHOME": str(gnupg)})


def make_repo(top):
    """Two suites: bookworm with a 6.x kernel in one package, trixie-backports with a 7.x kernel
    in the linux-binary + linux-modules + linux-base split; signed with a throw-away key."""
    missing = [t for t in TOOLS if not shutil.which(t) and not os.path.exists(f"/usr/sbin/{t}")]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt, dpkg, gnupg, kmod)")
    gnupg = top / "gnupg"
    gnupg.mkdir(mode=0o700, parents=True)
    env = {**os.environ, "GNUPGHOME": str(gnupg)}
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "kvmharness test <t@example.invalid>",
                    "ed25519", "sign", "never"], check=True, capture_output=True, env=env)
    keyring = top / "key.gpg"
    keyring.write_bytes(subprocess.run(["gpg", "--export"], check=True, capture_output=True, env=env).stdout)
    repo = top / "repo"
    pool = repo / "pool"
    pool.mkdir(parents=True)
    ko = b"\x7fELF not really a module"
    six = "6.99.1-1-amd64"
    old = [_deb(pool, "linux-image-amd64", "6.99.1-1", {}, f"linux-image-{six} (= 6.99.1-1)"),
           _deb(pool, f"linux-image-{six}", "6.99.1-1",
                {f"boot/vmlinuz-{six}": b"MZ six", f"lib/modules/{six}/kernel/arch/x86/kvm/kvm.ko": ko}, "kmod")]
    seven, v7 = "7.99.2+deb13-amd64", "7.99.2-1~bpo13+1"
    new = [_deb(pool, "linux-image-amd64", v7, {}, f"linux-image-{seven} (= {v7})"),
           _deb(pool, f"linux-image-{seven}", v7, {},
                f"linux-binary-{seven} (= {v7}), linux-modules-{seven} (= {v7}), linux-base-{seven} (= {v7})"),
           _deb(pool, f"linux-binary-{seven}", v7, {f"usr/lib/modules/{seven}/vmlinuz": b"MZ seven"}),
           _deb(pool, f"linux-modules-{seven}", v7, {f"usr/lib/modules/{seven}/kernel/arch/x86/kvm/kvm-amd.ko": ko}),
           _deb(pool, f"linux-base-{seven}", v7, {f"usr/lib/modules/{seven}/modules.order": b"kernel/arch/x86/kvm/kvm-amd.ko\n"})]
    _sign_suite(repo, "bookworm", old, gnupg)
    _sign_suite(repo, "trixie-backports", new, gnupg)
    # gpg started an agent for this throw-away home; the signing is done (apt verifies with gpgv,
    # no agent), so stop it rather than leave a daemon behind the test
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], capture_output=True, env=env)
    return {"mirror": f"file:{repo}", "keyring": str(keyring), "suites": ("bookworm", "trixie-backports"),
            "repo": repo}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("debrepo"))


def _fetch(repo, spec, cache, **kw):
    return fetch_kernel(spec, cache, mirror=repo["mirror"], keyring=repo["keyring"], suites=repo["suites"], **kw)


def test_fetch_verify_unpack_depmod_then_cached(repo, tmp_path):
    said = []
    k6 = _fetch(repo, "6.99", tmp_path, progress=said.append)
    assert (k6.release, k6.suite, k6.packages) == ("6.99.1-1-amd64", "bookworm", ("linux-image-6.99.1-1-amd64=6.99.1-1",))
    assert k6.vmlinuz.read_bytes() == b"MZ six" and (k6.modules_dir / "modules.dep").is_file()
    assert "kernel/arch/x86/kvm/kvm.ko" in (k6.modules_dir / "modules.dep").read_text()
    k7 = _fetch(repo, "trixie-backports", tmp_path)
    assert k7.release == "7.99.2+deb13-amd64" and k7.vmlinuz.read_bytes() == b"MZ seven"
    assert len(k7.packages) == 3 and (k7.modules_dir / "kernel/arch/x86/kvm/kvm-amd.ko").is_file()
    assert (k7.root / "lib/modules" / k7.release / "modules.dep").is_file()
    assert any("downloading" in m for m in said)
    # the repository goes away: the kernel is served from the cache, nothing is fetched again
    shutil.rmtree(repo["repo"] / "pool")
    said.clear()
    assert _fetch(repo, "7.99", tmp_path, progress=said.append) == k7
    assert said == [f"debian: linux-image-{k7.release} {k7.version} (trixie-backports) cached"]
    # the private apt state is all under the cache: nothing of the system's was used or written
    conf = (tmp_path / "apt" / "apt.conf").read_text()
    assert 'Dir::State::status "/dev/null"' in conf and 'Dir::Etc::Main "/dev/null"' in conf
    assert debian.cached_kernels(tmp_path) == sorted([k6, k7], key=lambda k: k.image_package)


def test_a_tampered_package_is_refused(tmp_path):
    own = make_repo(tmp_path / "r")
    deb = next((own["repo"] / "pool").glob("linux-image-6.99*.deb"))
    deb.write_bytes(deb.read_bytes() + b"tampered")      # no longer the size and hash apt signed
    with pytest.raises(DebianError, match="apt-get download failed"):
        _fetch(own, "6.99", tmp_path / "cache")
    assert not list((tmp_path / "cache" / "kernels").glob("*/kernel.json"))


def test_an_unsigned_repository_is_refused(repo, tmp_path):
    other = tmp_path / "other.gpg"
    other.write_bytes(b"")
    with pytest.raises(DebianError, match="apt-get update"):
        fetch_kernel("6.99", tmp_path / "c", mirror=repo["mirror"], keyring=str(other), suites=repo["suites"])


def test_a_package_that_does_not_unpack_is_one_line(tmp_path):
    if not shutil.which("dpkg-deb"):
        pytest.skip("needs dpkg-deb")
    bad = tmp_path / "linux-image-9.9_1_amd64.deb"
    bad.write_bytes(b"not an ar archive")
    with pytest.raises(DebianError, match=r"^dpkg-deb -x linux-image-9.9_1_amd64.deb failed "
                                          r"\(exit 2\): dpkg-deb") as e:
        debian.extract([bad], tmp_path / "root")
    assert "\n" not in str(e.value)
