"""The releases the model knows (kvmharness/model/releases.py): parsing, the rules applied and
said, the per-release behaviour table, and function locations checked against the trees."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROFILES, linux_trees
from kvmharness.errors import UsageError
from kvmharness.model import releases as R
from kvmharness.model.hostfile import load_host_file
from kvmharness.model.profile import HostProfile
from kvmharness.cpu.cpuid import CpuidTable

SPR = PROFILES / "fc-intel-sapphire-rapids-6.18host.json"


@pytest.mark.parametrize("text,rules,note", [
    ("6.18.44-fc-v782", (6, 18), ""), ("6.1.0-27-amd64", (6, 1), ""), ("6.12", (6, 12), ""),
    ("7.3.4", (7, 3), ""), ("v7.0", (7, 0), ""), ((6, 14), (6, 14), ""),
    ("7.4-rc2", (7, 3), "rules of 7.3 applied to 7.4-rc2"),
    ("8.1.0", (7, 3), "rules of 7.3 applied to 8.1.0"),
])
def test_parse_release(text, rules, note):
    r = R.parse_release(text)
    assert r.rules == rules and r.note == note
    assert r.beyond == bool(note)


@pytest.mark.parametrize("text", ["6.0", "5.15.100", "4.19", "weird", "", "6", "6.25", "7.x",
                                  "100.1", (5, 4), None, 6.18])
def test_parse_release_refuses(text):
    with pytest.raises(UsageError) as e:
        R.parse_release(text)
    assert "\n" not in str(e.value)


def test_releases_cover_r_min_to_r_max():
    assert R.RELEASES[0] == R.R_MIN == (6, 1) and R.RELEASES[-1] == R.R_MAX == (7, 3)
    assert (6, 19) in R.RELEASES and (6, 20) not in R.RELEASES and (7, 0) in R.RELEASES


def test_behaviour_table_well_formed():
    for b in R.BEHAVIOURS.values():
        assert b.changes[0].since == R.R_MIN, b.name
        assert all(c.source for c in b.changes), b.name
        assert [c.since for c in b.changes] == sorted({c.since for c in b.changes}), b.name
    with pytest.raises(ValueError):
        R.Behaviour("x", "doc", (R.Change((6, 2), True, "src"),))
    with pytest.raises(ValueError):
        R.Behaviour("x", "doc", (R.Change((6, 1), 0, "a"), R.Change((6, 1), 1, "b")))
    with pytest.raises(KeyError):
        R.value("no_such_behaviour", (6, 18))


def test_behaviour_values_per_release():
    assert not R.value("cpu_caps", (6, 13)) and R.value("cpu_caps", (6, 14))
    assert R.value("governed_features", (6, 1)) == frozenset()
    g612 = R.value("governed_features", (6, 12))
    assert {"nrip_save", "tsc_scale", "v_vmsave_vmload", "lbrv", "pausefilter", "pfthreshold",
            "vgif", "vnmi", "pdpe1gb", "xsaves", "vmx", "lam"} == g612
    assert "lam" not in R.value("governed_features", (6, 6))
    assert not R.value("cet", (6, 17)) and R.value("cet", (6, 18)) and R.value("cet", (7, 3))
    assert R.first("cet") == (6, 18) and R.since("cet", (6, 17)) is None
    assert R.change("cpu_caps", (7, 2)).source.startswith("kvm_vcpu_after_set_cpuid")


def test_a_behaviours_answer_per_kernel_and_release_is_computed_once():
    """Ctx.behaviour asks per rule per probe: releases.in_force caches the answer per
    (behaviour, series, release string); another point release is another answer."""
    R.in_force.cache_clear()
    first = R.in_force("pv_msr_missing_feature", (6, 12), "6.12.117")
    assert R.in_force("pv_msr_missing_feature", (6, 12), "6.12.117") is first
    assert R.in_force.cache_info().hits == 1
    (change,), why = first
    assert change.value == "unsupported" and "6.12.117 has it" in why
    # values() answers from the same cache, whatever shape the kernel is given in
    assert R.values("pv_msr_missing_feature", [6, 12], "6.12.117") == (("unsupported",), why)
    assert R.in_force.cache_info().hits == 2
    assert [c.value for c in R.in_force("pv_msr_missing_feature", (6, 12), "6.12.50")[0]] == [
        "invalid", "unsupported"]
    assert R.in_force("pv_msr_missing_feature", (6, 12), "")[1].count("this 6.12 kernel") == 1


def test_a_behaviour_with_stable_backports_is_read_only_through_the_rule_context():
    """releases.value/change/reason answer for the series (major.minor) and so ignore a stable
    backport; Ctx.behaviour and Ctx.behaviour_reason apply it by point release. A behaviour
    that has backports must be read only through those (scans the package source)."""
    import kvmharness
    with_backports = [b.name for b in R.BEHAVIOURS.values() if any(c.backports for c in b.changes)]
    assert with_backports
    root = Path(kvmharness.__file__).parent
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        for name in with_backports:
            read = re.findall(rf'\b(?:releases|R)\.(?:value|values|change|reason|since)\(\s*"{name}"',
                              text)
            assert not read, f"{path.relative_to(root)} reads {name} without its backports: {read}"


def test_governed_features_from_the_612_tree():
    """The 6.12 entry is governed_features.h of 6.12.107, name for name."""
    tree = next((t for t in linux_trees() if t.name.startswith("6.12.")), None)
    if tree is None:
        pytest.skip("no 6.12 tree")
    from kvmharness.cpu.features import by_name
    text = (tree / "arch/x86/kvm/governed_features.h").read_text()
    macros = re.findall(r"^KVM_GOVERNED_X86_FEATURE\((\w+)\)", text, re.M)
    assert {by_name(m).name for m in macros} == R.value("governed_features", (6, 12))


def test_cite_per_release():
    caps = "kvm_set_cpu_caps (arch/x86/kvm/cpuid.c)"
    assert R.cite(caps, (6, 19)) == caps
    assert R.cite(caps, (7, 0)) == ("kvm_initialize_cpu_caps / kvm_finalize_cpu_caps "
                                    "(arch/x86/kvm/cpuid.c, cpuid.h)")
    assert R.cite("kvm_set_cr4 (arch/x86/kvm/x86.c)", (7, 1)) == "kvm_set_cr4 (arch/x86/kvm/x86.c)"
    assert R.cite("kvm_set_cr4 (arch/x86/kvm/x86.c)", (7, 2)) == "kvm_set_cr4 (arch/x86/kvm/regs.c)"
    mixed = "kvm_valid_efer / __kvm_valid_efer (arch/x86/kvm/x86.c)"
    assert R.cite(mixed, (7, 3)) == mixed
    assert R.cite("hardware (SDM/APM instruction semantics)", (7, 3)) == \
        "hardware (SDM/APM instruction semantics)"
    assert R.cite(None, (7, 0)) is None and R.cite("", (7, 0)) == ""
    # cached per (citation, series): a kernel given as a list or with a point release is the same
    assert R.cite("kvm_set_cr4 (arch/x86/kvm/x86.c)", [7, 2, 8]) == "kvm_set_cr4 (arch/x86/kvm/regs.c)"
    # two names that are one function in a release are cited once
    lists = "kvm_probe_msr_to_save / kvm_init_msr_lists (arch/x86/kvm/x86.c)"
    assert R.cite(lists, (6, 1)) == "kvm_init_msr_list (arch/x86/kvm/x86.c)"
    assert R.cite(lists, (6, 12)) == lists


def _defined_in(tree, name: str) -> set[str]:
    """Files of `tree`'s arch/x86/kvm defining function or macro `name`."""
    out = set()
    kvm = tree / "arch/x86/kvm"
    pat = re.compile(rf"^(?:[A-Za-z_][\w \*]*[ \*])?{re.escape(name)}\((?![^)]*\);)|"
                     rf"^#define {re.escape(name)}\(", re.M)
    for f in list(kvm.glob("*.[ch]")) + list(kvm.glob("*/*.[ch]")):
        if pat.search(f.read_text(errors="replace")):
            out.add(str(f.relative_to(tree)))
    return out


def test_locations_match_the_trees():
    """Every LOCATIONS entry names, for each release with a tree, a function defined in the file
    it gives (for kvm_set_cpu_caps' 7.0 split: each half in one of the two files)."""
    checked = 0
    for tree in linux_trees():
        kernel = tuple(int(x) for x in tree.name.split(".")[:2])
        for old in R.LOCATIONS:
            loc = R.locate(old, kernel)
            files = [f.strip() for f in loc.file.split(",")]
            files = [files[0]] + [files[0].rsplit("/", 1)[0] + "/" + f for f in files[1:]]
            for name in (n.strip() for n in loc.name.split(" / ")):
                found = _defined_in(tree, name)
                assert found & set(files), f"{tree.name}: {name} not in {files} (found {found})"
                checked += 1
    assert checked >= 40


def test_host_file_kernel_past_r_max(tmp_path):
    h = load_host_file(SPR, kernel="7.4-rc2")
    assert h.kernel == (7, 3) and h.rules_note == "rules of 7.3 applied to 7.4-rc2"
    assert load_host_file(SPR, kernel="7.2").rules_note == ""      # no kernel of its own
    with pytest.raises(UsageError):
        load_host_file(SPR, kernel="5.10")
    p = tmp_path / "h.json"
    p.write_text(json.dumps({"supported": [], "kernel": "7.5.1"}))
    assert load_host_file(p).rules_note == "rules of 7.3 applied to 7.5.1"
    p.write_text(json.dumps({"supported": [], "kernel": "6.18.44"}))
    assert load_host_file(p, kernel="7.2").rules_note == "rules of 7.2 applied to 6.18.44"
    assert load_host_file(p, kernel="7.4-rc1").rules_note == "rules of 7.3 applied to 7.4-rc1"
    assert HostProfile(CpuidTable()).rules_note == ""


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "kvmharness", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_kernel_before_r_min_and_unparsable():
    for bad in ("6.0", "5.15", "x.y"):
        p = _cli("explain", "shstk", "--host", str(SPR), "--kernel", bad)
        assert p.returncode == 2 and p.stdout == ""
        assert len(p.stderr.strip().splitlines()) == 1 and "kernel version" in p.stderr


def test_cli_explain_and_lint_say_the_rules():
    p = _cli("explain", "pku", "--host", str(SPR), "--kernel", "7.4-rc2")
    assert p.returncode == 0, p.stderr
    assert "kernel 7.3 (rules of 7.3 applied to 7.4-rc2)" in p.stdout.splitlines()[0]
    assert "rules of 7.3 applied to 7.4-rc2" in json.loads(
        _cli("explain", "pku", "--host", str(SPR), "--kernel", "7.4-rc2", "--json").stdout)[
            "rules_note"]
    table = SPR
    p = _cli("lint", str(table), "--host", str(SPR), "--kernel", "7.4-rc2")
    assert p.stdout.startswith("lint: rules of 7.3 applied to 7.4-rc2\n")
    p = _cli("lint", str(table), "--host", str(SPR), "--kernel", "7.4-rc2", "--json")
    assert "rules of 7.3 applied to 7.4-rc2" in p.stderr and json.loads(p.stdout) is not None


def test_cli_explain_takes_a_matrix_group():
    """`explain GROUP` (a name `run --list` prints that is no CPU feature) explains what `run
    --feature GROUP` checks; --set/--clear, which edit one feature's guest, are a one-line
    exit 2 there (a group's configurations are the matrix's)."""
    p = _cli("explain", "misc_enable", "--host", str(SPR))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("misc_enable (group; `run --feature misc_enable` checks ")
    assert "configuration supported (the host's supported CPUID):" in p.stdout
    d = json.loads(_cli("explain", "xcr0.ymm", "--host", str(SPR), "--json").stdout)
    assert d["group"] == "xcr0.ymm" and d["kind"] == "CPUID bits 0xd.0.eax.2"
    assert [c["config"] for c in d["configs"]][:2] == ["on", "off"]
    p = _cli("explain", "misc_enable", "--host", str(SPR), "--set", "avx")
    assert p.returncode == 2 and p.stdout == "" and len(p.stderr.strip().splitlines()) == 1
    assert "explain misc_enable:" in p.stderr and "run --feature misc_enable" in p.stderr
    # a typo of a group name is told the group, beside the CPU features it is close to
    p = _cli("explain", "msr-idx", "--host", str(SPR))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert p.stderr.rstrip().endswith("(or the matrix group msr-index?)")


def test_explain_cites_function_names_of_the_release():
    import kvmharness.model as M
    from kvmharness.model.profile import VcpuConfig
    for kernel, want, not_want in (((6, 18), "kvm_set_cpu_caps (", "kvm_initialize_cpu_caps"),
                                   ((7, 2), "kvm_initialize_cpu_caps", "kvm_set_cpu_caps (")):
        h = load_host_file(SPR, kernel=kernel)
        text = M.render_explain(M.explain(h, VcpuConfig(h.supported), "pku"))
        assert want in text and not_want not in text
        cr4 = "kvm_set_cr4 (arch/x86/kvm/regs.c)" if kernel >= (7, 2) else \
            "kvm_set_cr4 (arch/x86/kvm/x86.c)"
        assert cr4 in text


@pytest.mark.kvm
def test_live_report_says_the_rules(tmp_path):
    """A live run with a kernel past R_MAX: table summary, KTAP, JUnit and the JSON header."""
    out = tmp_path / "r.json"
    junit = tmp_path / "r.xml"
    p = _cli("run", "--kernel", "7.4-rc2", "--feature", "pku", "--json", str(out), "--junit",
             str(junit), "-j", "1")
    assert p.returncode in (0, 1), p.stderr
    assert "rules of 7.3 applied to 7.4-rc2" in p.stdout
    report = json.loads(out.read_text())
    assert report["selection"]["rules_note"] == "rules of 7.3 applied to 7.4-rc2"
    assert report["selection"]["kernel_rules"] == "7.3"
    assert 'name="model.rules" value="rules of 7.3 applied to 7.4-rc2"' in junit.read_text()
    k = _cli("run", "--kernel", "7.4-rc2", "--feature", "pku", "--ktap", "-j", "1")
    assert "# model: rules of 7.3 applied to 7.4-rc2" in k.stdout.splitlines()[:8]


# -- per-release constants in lint ------------------------------------------------------------------


@pytest.mark.parametrize("kernel, version, flagged", [
    ("6.12", 1, False), ("6.12", 2, True), ("6.19", 2, True), ("7.0", 2, False), ("7.3", 3, True),
    ("6.1", 1, True)])
def test_lint_avx10_version_per_release(kernel, version, flagged):
    """CPUID.0x24.0:EBX[7:0] is capped at 1 from 6.12 and at 2 from 7.0 (the host here is an
    AVX10.2 part as far as the table says); 6.1 has no leaf 0x24."""
    from dataclasses import replace
    from kvmharness.model import lint
    h = load_host_file(SPR, kernel=kernel)
    h = replace(h, supported=h.supported.with_field(0x24, 0, "ebx", 0, 8, 2))
    guest = h.supported.with_field(0x24, 0, "ebx", 0, 8, version)
    found = [f for f in lint(h, guest) if f["status"] == "avx10-version"]
    assert bool(found) == flagged, found
    if found:
        assert "avx10_version_cap" not in found[0]["message"]
        assert any("__do_cpuid_func" in r for r in found[0]["reasons"])


@pytest.mark.parametrize("kernel, eraps, flagged", [("6.19", True, True), ("7.0", True, False),
                                                    ("7.0", False, True), ("7.3", True, False)])
def test_lint_rap_size_needs_eraps_from_70(kernel, eraps, flagged):
    from dataclasses import replace
    from kvmharness.model import lint
    h = load_host_file(SPR, kernel=kernel)
    sup = h.supported.with_bit(0x80000021, 0, "eax", 24, eraps)
    h = replace(h, supported=sup)
    guest = sup.with_field(0x80000021, 0, "ebx", 16, 8, 0x20)
    found = [f for f in lint(h, guest) if f["status"] == "rap-size"]
    assert bool(found) == flagged, found
