"""The class generator (kvmharness/cpu/source.py): the committed catalogue equals what it reads
from every reference tree, and a tree it cannot read is one line naming the file."""

import os
import shutil
from pathlib import Path

import pytest

from conftest import LINUX_TREES, linux_trees
from kvmharness.cpu import features as cat
from kvmharness.cpu.source import read_tree
from kvmharness.errors import UsageError

FILES = ("Makefile", "arch/x86/kvm/cpuid.c", "arch/x86/kvm/reverse_cpuid.h",
         "arch/x86/include/asm/cpufeature.h", "arch/x86/include/asm/cpufeatures.h",
         "arch/x86/kvm/vmx/vmx.c", "arch/x86/kvm/svm/svm.c", "arch/x86/kvm/svm/sev.c")


def _ids(trees):
    return [t.name for t in trees]


@pytest.fixture(scope="module")
def trees():
    return linux_trees()


def _tree(trees, prefix: str) -> Path:
    t = next((t for t in trees if t.name.startswith(prefix)), None)
    if t is None:
        problem = f"no {prefix}* tree in {LINUX_TREES}"
        if os.environ.get("KVMHARNESS_REQUIRE_KVM") == "1":    # CI has them all: never a quiet skip
            pytest.fail(f"KVMHARNESS_REQUIRE_KVM=1 but {problem}")
        pytest.skip(problem)
    return t


def test_catalogue_equals_every_tree(trees):
    """For every release in ../shared/reference/linux: each catalogued bit's class is the
    generator's, every bit the tree initialises is catalogued, and the words agree."""
    for tree in trees:
        got = read_tree(tree)
        k = got.release
        problems = []
        for f in cat.FEATURES:
            ref = (f.leaf, f.subleaf, f.reg, f.bit)
            want = f.kvm_class(k)
            if got.classes.get(ref, "untracked") != want:
                problems.append(f"{f.name}: catalogue {want}, {tree.name} "
                                f"{got.classes.get(ref, 'untracked')}")
        known = {(f.leaf, f.subleaf, f.reg, f.bit) for f in cat.FEATURES}
        problems += [f"{got.names[r]} {r} ({c}) is not catalogued" for r, c in got.classes.items()
                     if r not in known]
        if got.words != set(cat.filtered_words(k)):
            problems.append(f"words: tree {sorted(got.words ^ set(cat.filtered_words(k)))} differ")
        assert not problems, f"{tree.name}: " + "; ".join(problems)
    assert len(trees) >= 1


def test_both_historical_forms_are_read(trees):
    old, new = read_tree(_tree(trees, "6.12.")), read_tree(_tree(trees, "7."))
    assert old.init_function == "kvm_set_cpu_caps" and new.init_function == "kvm_initialize_cpu_caps"
    # mask era: F() plain, the unconditional set emulated, f_gbpages x86_64, 0 /* VMX */ vendor
    assert old.classes[(1, 0, "ecx", 21)] == "emulated"          # X2APIC
    assert old.classes[(0x80000001, 0, "edx", 26)] == "x86_64"   # GBPAGES
    assert old.classes[(1, 0, "ecx", 5)] == "vendor"             # VMX (vmx.c with nested)
    assert old.classes[(7, 0, "ecx", 16)] == "passthrough"       # LA57 from raw CPUID
    assert old.classes[(1, 0, "ecx", 27)] == "runtime"           # OSXSAVE
    assert old.classes[(0x80000001, 0, "edx", 0)] == "aliased"   # FPU copy
    assert new.classes[(0x80000021, 0, "eax", 24)] == "plain"    # ERAPS


def _copy(tree: Path, tmp: Path) -> Path:
    out = tmp / tree.name
    for rel in FILES:
        src = tree / rel
        if src.is_file():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, out / rel)
    return out


def test_a_changed_tree_changes_the_answer(trees, tmp_path):
    """The generator reads the source, not the catalogue: a patched initialiser shows."""
    t = _copy(_tree(trees, "6.18."), tmp_path)
    cpuid = t / "arch/x86/kvm/cpuid.c"
    cpuid.write_text(cpuid.read_text().replace("\t\tF(PKU),", "\t\tEMULATED_F(PKU),", 1)
                     .replace("\t\tF(AVX512_BF16),\n", "", 1))
    got = read_tree(t)
    assert got.classes[(7, 0, "ecx", 3)] == "emulated"
    assert (7, 1, "eax", 5) not in got.classes


@pytest.mark.parametrize("damage, message", [
    (lambda t: (t / "arch/x86/kvm/cpuid.c").unlink(), "cpuid.c: missing; expected KVM's CPUID code"),
    (lambda t: (t / "arch/x86/kvm/cpuid.c").write_text("int x;\n"),
     "cpuid.c: expected a definition of kvm_initialize_cpu_caps or kvm_set_cpu_caps()"),
    (lambda t: (t / "arch/x86/kvm/reverse_cpuid.h").write_text("\n"),
     "reverse_cpuid.h: expected 'static const struct cpuid_reg reverse_cpuid[]"),
    (lambda t: (t / "arch/x86/include/asm/cpufeature.h").write_text("\n"),
     "cpufeature.h: expected 'enum cpuid_leafs"),
    (lambda t: (t / "arch/x86/kvm/cpuid.c").write_text(
        (t / "arch/x86/kvm/cpuid.c").read_text().replace("F(PKU),", "NEW_F(PKU),", 1)),
     "uses NEW_F(PKU); expected one of F, SCATTERED_F"),
    (lambda t: (t / "arch/x86/kvm/cpuid.c").write_text(
        (t / "arch/x86/kvm/cpuid.c").read_text().replace("F(PKU),", "F(NO_SUCH_BIT),", 1)),
     "names X86_FEATURE_NO_SUCH_BIT, which neither cpufeatures.h nor reverse_cpuid.h defines"),
])
def test_unreadable_tree_is_one_line(trees, tmp_path, damage, message):
    t = _copy(_tree(trees, "6.18."), tmp_path)
    damage(t)
    with pytest.raises(UsageError) as e:
        read_tree(t)
    text = str(e.value)
    assert message in text and "\n" not in text


def test_not_a_tree(tmp_path):
    with pytest.raises(UsageError, match="not a directory"):
        read_tree(tmp_path / "nothing")
    (tmp_path / "x").mkdir()
    with pytest.raises(UsageError, match="Makefile: missing"):
        read_tree(tmp_path / "x")


# -- --source and `kvmharness catalogue` ------------------------------------------------------------
def _cli(*args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "kvmharness", *args], capture_output=True,
                          text=True, timeout=120)


SPR = Path(__file__).resolve().parent / "data" / "profiles" / "fc-intel-sapphire-rapids-6.18host.json"


def test_explain_with_source_takes_the_trees_classes_and_release(trees):
    import json
    new, old = _tree(trees, "7.2."), _tree(trees, "6.18.")
    d = json.loads(_cli("explain", "movrs", "--host", str(SPR), "--source", str(new), "--json").stdout)
    assert d["class"] == "plain" and d["kernel"] == "7.2"
    assert f"classes read from {new} (7.2.8)" in d["rules_note"]
    d = json.loads(_cli("explain", "movrs", "--host", str(SPR), "--source", str(old), "--json").stdout)
    assert d["class"] == "untracked" and d["kernel"] == "6.18"
    d = json.loads(_cli("explain", "movrs", "--host", str(SPR), "--source", str(new), "--kernel",
                        "6.19", "--json").stdout)
    assert d["class"] == "plain" and d["kernel"] == "6.19"         # --kernel: the other rules


def test_a_patched_tree_changes_the_model(trees, tmp_path):
    """A patch author's tree: PKU made EMULATED_F is effective without host support."""
    from kvmharness.cpu.source import with_source
    from kvmharness.model import effective_caps, load_host_file
    from kvmharness.model.profile import VcpuConfig
    from kvmharness.conformance.config import edit_cpuid
    t = _copy(_tree(trees, "6.18."), tmp_path)
    cpuid = t / "arch/x86/kvm/cpuid.c"
    cpuid.write_text(cpuid.read_text().replace("\t\tF(PKU),", "\t\tEMULATED_F(PKU),", 1))
    host = load_host_file(SPR, kernel="6.18")
    table = edit_cpuid(host.supported, (), ("pku",))
    host = host.__class__(**{**host.__dict__, "supported": table})
    vcpu = VcpuConfig(edit_cpuid(table, ("pku",), ()))
    assert not effective_caps(host, vcpu).has("pku")
    patched = with_source(host, t)
    assert effective_caps(patched, vcpu).has("pku")
    assert effective_caps(patched, vcpu).klass("pku") == "emulated"


def test_catalogue_command(trees):
    a, b = _tree(trees, "6.18."), _tree(trees, "7.2.")
    p = _cli("catalogue", "--source", str(a), "--source", str(b))
    assert p.returncode == 0, p.stderr
    assert "movrs" in p.stdout and "untracked -> plain" in p.stdout
    assert "gp_on_user_cpuid" in p.stdout and "untracked -> emulated" in p.stdout
    p = _cli("catalogue", "--source", str(b))                     # against its own release
    assert p.returncode == 0 and "no class differences" in p.stdout
    p = _cli("catalogue", "--source", str(b), "--kernel", "6.12", "--json")
    import json
    d = json.loads(p.stdout)
    assert {"feature": "eraps", "ref": "0x80000021.0.eax.24", "a": "plain", "b": "untracked"} in \
        d["differences"]


@pytest.mark.parametrize("args, message", [
    (("catalogue",), "give --source TREE"),
    (("catalogue", "--kernel", "6.12"), "give --source TREE"),
    (("catalogue", "--kernel", "6.1", "--kernel", "6.12", "--kernel", "7.0"), "at most two sides"),
    (("catalogue", "--source", "/nonexistent/tree"), "/nonexistent/tree: not a directory"),
    (("explain", "pku", "--host", str(SPR), "--source", "/nonexistent/tree"), "not a directory"),
    (("lint", str(SPR), "--host", str(SPR), "--source", "/nonexistent/tree"), "not a directory"),
    (("rejudge", "/nonexistent/r.json", "--source", "/nonexistent/tree"), "not a directory"),
])
def test_source_usage_errors_are_one_line(args, message):
    p = _cli(*args)
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and message in p.stderr


def test_rejudge_with_source(trees):
    from tests.test_rejudge import constructed_report
    from kvmharness.conformance.rejudge import rejudge
    rep = constructed_report(("pku",))
    again = rejudge(rep, "constructed", None, str(_tree(trees, "7.2.")))
    assert again["selection"]["kernel_rules"] == "7.2"
    assert again["selection"]["classes_source"]["version"] == "7.2.8"
    assert "classes read from" in again["selection"]["rules_note"]


@pytest.mark.kvm
def test_live_run_with_source(trees, tmp_path):
    import json
    out = tmp_path / "r.json"
    p = _cli("run", "--source", str(_tree(trees, "7.2.")), "--feature", "pku", "--json", str(out),
             "-j", "1")
    assert p.returncode in (0, 1), p.stderr
    sel = json.loads(out.read_text())["selection"]
    assert sel["kernel_rules"] == "7.2" and sel["classes_source"]["version"] == "7.2.8"
    assert "classes read from" in p.stdout


@pytest.mark.kvm
def test_live_reported_bits_are_tracked_by_this_release(kvm):
    """Every bit this host's KVM_GET_SUPPORTED_CPUID sets in a capability word is a catalogued
    bit the host's release tracks: KVM cannot advertise what its cap initialisation leaves out,
    so a failure means the catalogue (or the release the model picked) is wrong for this kernel."""
    from kvmharness.host import gather_facts
    from kvmharness.model.releases import parse_release
    facts = gather_facts(kvm)
    k = parse_release(facts.kernel_release).rules
    table = facts.supported_cpuid
    wrong = []
    for leaf, sub, reg in cat.kvm_words(k):
        value = table.reg(leaf, sub, reg)
        for bit in range(32):
            if value >> bit & 1:
                from kvmharness.cpu.cpuid import BitRef
                f = cat.by_ref(BitRef(leaf, sub, reg, bit))
                if f is None or not f.tracked(k):
                    wrong.append(f"{leaf:#x}.{sub}.{reg}.{bit} ({f.name if f else 'uncatalogued'})")
    assert not wrong, f"{facts.kernel_release}: KVM reports bits release {k} does not track: {wrong}"


def _recorded_reports():
    labs = Path(__file__).resolve().parent / "data" / "labs"
    return sorted(labs.glob("*.json")) if labs.is_dir() else []


@pytest.mark.parametrize("path", _recorded_reports() or [None],
                         ids=[p.name for p in _recorded_reports()] or ["none"])
def test_recorded_lab_kernels_report_only_tracked_bits(path):
    """Each recorded lab report's KVM_GET_SUPPORTED_CPUID (real kvm_amd/kvm_intel of that
    kernel, 7.3.4 included) sets only bits its release tracks: the evidence at hand for 7.3,
    whose source was not obtainable (Debian's 7.3.4 source package is not on the mirror)."""
    if path is None:
        pytest.skip("no recorded lab reports in tests/data/labs")
    import json
    from kvmharness.cpu.cpuid import BitRef
    from kvmharness.host import HostFacts
    from kvmharness.model.releases import parse_release
    data = json.loads(path.read_text())
    record = (data.get("host") or {}).get("profile") if "host" in data else data
    if not isinstance(record, dict) or "supported_cpuid" not in record:
        pytest.skip(f"{path.name} holds no host record")
    facts = HostFacts.from_json(record, str(path))
    k = parse_release(facts.kernel_release).rules
    table, wrong = facts.supported_cpuid, []
    for leaf, sub, reg in cat.kvm_words(k):
        for bit in range(32):
            if table.reg(leaf, sub, reg) >> bit & 1:
                f = cat.by_ref(BitRef(leaf, sub, reg, bit))
                if f is None or not f.tracked(k):
                    wrong.append(f"{leaf:#x}.{sub}.{reg}.{bit}")
    assert not wrong, f"{path.name} ({facts.kernel_release}): untracked in {k}: {wrong}"
