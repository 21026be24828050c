"""The ctypes mirrors and ioctl numbers against this machine's <linux/kvm.h>, compiled with gcc.

A C program generated here prints sizeof/offsetof of every mirrored struct member, every ioctl
number and every KVM_* constant the binding declares; the test compares them with the Python
values. Nothing is hand-copied: a struct, member or name the header lacks (newer than the header)
is wrapped in #ifdef on a macro introduced with it and is checked only where the header has it.
No /dev/kvm needed.

It runs twice: against the machine's installed header, and against the uapi headers of the newest
kernel tree in ../shared/reference/linux (so ids newer than the installed header, such as
KVM_X86_REG_KVM(KVM_REG_GUEST_SSP) of 6.18, are compared too). A tree's uapi headers are not
installed headers: two stand-ins this test writes supply what headers_install would have resolved
(`__user` and the __GENMASK macros).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest

from kvmharness.kvm import constants, ioctls, structs
from tests.conftest import LINUX_TREES

HEADER = "linux/kvm.h"

# Values the binding computes rather than declares: (key, python value, guard macro, C expression).
EXPRESSIONS = [
    ("KVM_X86_REG_GUEST_SSP", constants.KVM_X86_REG_GUEST_SSP, "KVM_REG_GUEST_SSP",
     "KVM_X86_REG_KVM(KVM_REG_GUEST_SSP)"),
    ("kvm_x86_reg_id(MSR, 0x10)", constants.kvm_x86_reg_id(constants.KVM_X86_REG_TYPE_MSR, 0x10),
     "KVM_X86_REG_TYPE_MSR", "KVM_X86_REG_MSR(0x10)"),
]


# -- what Python says -----------------------------------------------------------------------------
def _is_record(t) -> bool:
    return isinstance(t, type) and issubclass(t, (ctypes.Structure, ctypes.Union))


def _members(cls, prefix: str = "", base: int = 0):
    """(C member path, absolute offset, size) for every C-visible member of `cls`, descending into
    inline (unnamed in C) records and anonymous members, not into named C structs."""
    anonymous = set(getattr(cls, "_anonymous_", ()))
    for name, ftype, *_ in cls._fields_:
        desc = getattr(cls, name)
        off = base + desc.offset
        if name in anonymous:
            yield from _members(ftype, prefix, off)
            continue
        if name.startswith("_"):
            continue
        path = prefix + name
        yield path, off, ctypes.sizeof(ftype)
        if _is_record(ftype) and getattr(ftype, "_c_name_", None) is None:
            yield from _members(ftype, path + ".", off)


def _struct_checks(cls) -> list[tuple[str, int, str | None, str]]:
    """(key, python value, guard macro or None, C expression) for one named struct."""
    c = cls._c_name_
    guard = getattr(cls, "_guard_", None)
    field_guards = getattr(cls, "_field_guards_", {})
    out = [(f"sizeof {c}", ctypes.sizeof(cls), guard, f"sizeof({c})")]
    for path, off, size in _members(cls):
        g = field_guards.get(path.split(".")[0], guard)
        out.append((f"offsetof {c} {path}", off, g, f"offsetof({c}, {path})"))
        out.append((f"sizeof {c} {path}", size, g, f"sizeof((({c} *)0)->{path})"))
    if hasattr(cls, "_flex_"):
        name, elem = cls._flex_
        out.append((f"offsetof {c} {name}[]", ctypes.sizeof(cls), guard, f"offsetof({c}, {name})"))
        out.append((f"sizeof {c} {name}[0]", ctypes.sizeof(elem), guard,
                    f"sizeof((({c} *)0)->{name}[0])"))
    return out


def _constant_names() -> dict[str, int]:
    names = dict(constants.KVM_CAPS)
    for mod in (constants, structs):
        for k, v in vars(mod).items():
            if k.startswith(("KVM_", "SYNC_REGS_")) and isinstance(v, int) and not isinstance(v, bool):
                names[k] = int(v)
    return names


# -- what C says ----------------------------------------------------------------------------------
def _c_program() -> str:
    lines = ["#include <stddef.h>", "#include <stdio.h>", f"#include <{HEADER}>",
             "#define P(k, v) printf(\"%s=%llu\\n\", k, (unsigned long long)(v))",
             "int main(void) {"]

    def emit(key: str, expr: str, guard: str | None) -> None:
        if guard:
            lines.append(f"#ifdef {guard}")
        lines.append(f"  P(\"{key}\", {expr});")
        if guard:
            lines.append("#endif")

    for cls in structs.C_STRUCTS:
        for key, _, guard, expr in _struct_checks(cls):
            emit(key, expr, guard)
    for name in ioctls.IOCTLS:
        emit(f"ioctl {name}", name, name)
    for name in _constant_names():
        emit(f"const {name}", name, name)
    for key, _, guard, expr in EXPRESSIONS:
        emit(f"expr {key}", expr, guard)
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


def _newest_tree():
    """The newest reference tree that has both uapi headers, or None."""
    trees = [d for d in LINUX_TREES.glob("*") if (d / "include/uapi/linux/kvm.h").is_file()
             and (d / "arch/x86/include/uapi/asm/kvm.h").is_file()] if LINUX_TREES.is_dir() else []
    return max(trees, key=lambda d: tuple(int(x) for x in d.name.split("."))) if trees else None


def _tree_includes(tree, d) -> list[str]:
    """An include directory where <linux/kvm.h> and <asm/kvm.h> are the tree's uapi headers and
    everything else comes from the installed headers, plus the two stand-ins (see above)."""
    inc = d / "include"
    (inc / "linux").mkdir(parents=True)
    (inc / "asm").mkdir()
    (inc / "linux/kvm.h").symlink_to(tree / "include/uapi/linux/kvm.h")
    (inc / "asm/kvm.h").symlink_to(tree / "arch/x86/include/uapi/asm/kvm.h")
    (inc / "linux/compiler.h").write_text("#define __user\n")
    # bits h..l set, as the uapi <linux/bits.h> of 6.9+ defines them
    (inc / "linux/bits.h").write_text(
        "#include <linux/const.h>\n"
        "#define __GENMASK(h, l) ((~_UL(0) << (l)) & (~_UL(0) >> (63 - (h))))\n"
        "#define __GENMASK_ULL(h, l) ((~_ULL(0) << (l)) & (~_ULL(0) >> (63 - (h))))\n")
    return [f"-I{inc}"]


@pytest.fixture(scope="module", params=["installed", "newest-tree"])
def c_values(request, tmp_path_factory) -> dict[str, int]:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no gcc/cc on PATH: cannot compile the <linux/kvm.h> cross-check")
    d = tmp_path_factory.mktemp("uapi")
    flags: list[str] = []
    if request.param == "newest-tree":
        tree = _newest_tree()
        if tree is None:
            pytest.skip(f"no kernel tree with uapi headers under {LINUX_TREES}")
        flags = _tree_includes(tree, d)
    src, exe = d / "uapi.c", d / "uapi"
    src.write_text(_c_program())
    cp = subprocess.run([gcc, "-std=gnu11", "-Wall", *flags, "-o", str(exe), str(src)],
                        capture_output=True, text=True)
    if cp.returncode != 0:
        if f"{HEADER}: No such file" in cp.stderr:
            pytest.skip(f"<{HEADER}> not installed (linux-libc-dev / kernel-headers)")
        pytest.fail(f"gcc failed on the generated cross-check program:\n{cp.stderr[-4000:]}")
    run = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
    values = {"header": request.param}
    for line in run.stdout.splitlines():
        k, _, v = line.rpartition("=")
        values[k] = int(v)
    return values


def _compare(c_values: dict, checks) -> tuple[list[str], int]:
    wrong, checked = [], 0
    for key, py, guard, _ in checks:
        if key not in c_values:
            assert guard, f"{key}: unguarded but missing from the C output"
            continue
        checked += 1
        if c_values[key] != py:
            wrong.append(f"{key}: python {py:#x}, header {c_values[key]:#x}")
    return wrong, checked


@pytest.mark.parametrize("cls", structs.C_STRUCTS, ids=lambda c: c.__name__)
def test_struct_layout(c_values, cls):
    checks = _struct_checks(cls)
    wrong, checked = _compare(c_values, checks)
    assert not wrong, "\n".join(wrong)
    if checked == 0:
        pytest.skip(f"{cls._c_name_} is not in this <{HEADER}> (guard {cls._guard_})")
    # Every member of a struct the header has is checked, except members newer than the header.
    guards = set(getattr(cls, "_field_guards_", {}).values())
    unchecked = [k for k, _, g, _ in checks if k not in c_values and g not in guards]
    assert not unchecked, f"members not checked: {unchecked}"


def test_ioctl_numbers(c_values):
    checks = [(f"ioctl {n}", v, n, n) for n, v in ioctls.IOCTLS.items()]
    wrong, checked = _compare(c_values, checks)
    assert not wrong, "\n".join(wrong)
    # The core set is in every header since 5.x: all must have been compared.
    for name in ("KVM_RUN", "KVM_GET_SUPPORTED_CPUID", "KVM_SET_SREGS", "KVM_GET_MSRS",
                 "KVM_SET_USER_MEMORY_REGION", "KVM_ENABLE_CAP", "KVM_GET_XCRS"):
        assert f"ioctl {name}" in c_values, name
    assert checked >= len(ioctls.IOCTLS) - 2


def test_constants(c_values):
    names = _constant_names()
    checks = [(f"const {n}", v, n, n) for n, v in names.items()]
    wrong, checked = _compare(c_values, checks)
    assert not wrong, "\n".join(wrong)
    assert c_values["const KVM_API_VERSION"] == 12
    assert checked > 150


def test_computed_register_ids(c_values):
    """Register ids the binding builds (KVM_X86_REG_ID) are the header's; the newest tree has
    them all (6.18+), so there they must all have been compared."""
    wrong, checked = _compare(c_values, [(f"expr {k}", v, g, e) for k, v, g, e in EXPRESSIONS])
    assert not wrong, "\n".join(wrong)
    if c_values["header"] == "newest-tree":
        assert checked == len(EXPRESSIONS)
        for name in ("KVM_GET_ONE_REG", "KVM_SET_ONE_REG", "KVM_GET_REG_LIST"):
            assert f"ioctl {name}" in c_values
    elif checked == 0:
        pytest.skip("the installed header predates x86 ONE_REG ids (6.18)")


def test_ioctl_numbers_unique_and_flex_size_is_header_size():
    """Variable-length ioctls encode sizeof(header), as C's flexible array member does."""
    from ioctl_opt import IOC_SIZE
    assert len(set(ioctls.IOCTLS.values())) == len(ioctls.IOCTLS)
    for name, header in (("KVM_GET_SUPPORTED_CPUID", structs.kvm_cpuid2),
                         ("KVM_GET_MSR_INDEX_LIST", structs.kvm_msr_list),
                         ("KVM_GET_MSRS", structs.kvm_msrs)):
        assert IOC_SIZE(ioctls.IOCTLS[name]) == ctypes.sizeof(header)
