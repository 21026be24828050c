"""Hostile input: random and malformed CPUID tables, probe strings and report/table JSON files.

Issue "Hardening: faults, load, hostile input, unprivileged use", item 3. What may happen:
  * KVM_SET_CPUID2 with any table: success or KvmError, never a crash; through the Runner a
    refused configuration is an outcome (ioctl_error), and the Runner stays usable.
  * the model (effective_caps, expect) and the CPUID-table loader: UsageError or an answer.
  * probe strings: parse() raises UsageError only; the real CLI exits 2 with exactly one line.
  * malformed JSON into `diff`, `run --baseline` (fails before running anything) and `lint`:
    exit 2 and one line.
Hypothesis runs derandomized (a fixed seed) without an example database, so every run tries the
same examples and nothing is written to the tree.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmharness.cpu.cpuid import CpuidEntry, CpuidTable
from kvmharness.errors import UsageError
from tests.conftest import REPO, open_fds

U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF


def _settings(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# == CPUID tables =================================================================================
LEAVES = [0, 1, 2, 4, 5, 6, 7, 0xA, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x19, 0x1D, 0x1E, 0x1F,
          0x24, 0x40000000, 0x40000001, 0x40000100, 0x40000101, 0x80000000, 0x80000001,
          0x80000007, 0x80000008, 0x8000000A, 0x8000001F, 0x80000021, 0x80000022, 0xFFFFFFFF]
u32 = st.integers(0, U32)
reg = st.one_of(u32, st.sampled_from([0, U32, 0x80000000, 1, 0xE7, 0x60000, 0x3030, 0x2F]))
any_entries = st.builds(
    CpuidEntry,
    function=st.one_of(st.sampled_from(LEAVES), u32),
    index=st.one_of(st.integers(0, 70), u32),
    flags=st.one_of(st.integers(0, 7), u32),
    eax=reg, ebx=reg, ecx=reg, edx=reg)
# The entries KVM_SET_CPUID2 itself checks (kvm_check_cpuid): 0x80000008.EAX[15:8] virtual
# address bits (0, 48 or 57), 0xD.0 EDX:EAX dynamic xfeatures (need ARCH_REQ_XCOMP_GUEST_PERM).
checked_entries = st.one_of(
    st.builds(lambda a: CpuidEntry(0x80000008, 0, 0, a, 0x50020005), reg),
    st.builds(lambda a, d: CpuidEntry(0xD, 0, 1, a, 0x980, 0x980, d), reg, reg))
entries = st.one_of(any_entries, checked_entries)


@st.composite
def mutated(draw, base: list[CpuidEntry], max_extra: int = 8) -> list[CpuidEntry]:
    """A real table, bent: bits flipped, registers replaced, entries dropped, duplicated, added."""
    out = list(base)
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "set", "drop", "dup", "add"]))
        if op == "add" or not out:
            out.append(draw(entries))
            continue
        i = draw(st.integers(0, len(out) - 1))
        e = out[i]
        r = draw(st.sampled_from(["eax", "ebx", "ecx", "edx", "flags", "index"]))
        if op == "flip":
            out[i] = CpuidEntry(**{**e.__dict__, r: getattr(e, r) ^ (1 << draw(st.integers(0, 31)))})
        elif op == "set":
            out[i] = CpuidEntry(**{**e.__dict__, r: draw(reg)})
        elif op == "drop":
            del out[i]
        else:
            out.insert(draw(st.integers(0, len(out))), e)
    out += draw(st.lists(entries, max_size=max_extra))
    return out


@pytest.fixture(scope="module")
def supported(kvm):
    return list(kvm.supported_cpuid())


KVM_ERRNOS = {errno.EINVAL, errno.E2BIG, errno.EPERM, errno.ENOMEM, errno.EFAULT}


def _set_cpuid2(kvm, table) -> int | None:
    """KVM_SET_CPUID2 on a fresh vCPU: None on success, else the errno."""
    from kvmharness.kvm.binding import KvmError
    with kvm.create_vm() as vm:
        vcpu = vm.create_vcpu(0)
        try:
            vcpu.set_cpuid2(table)
        except KvmError as e:
            assert e.ioctl == "KVM_SET_CPUID2"
            return e.errno
        assert isinstance(vcpu.get_cpuid2(), CpuidTable)    # and reads back without trouble
        return None


@pytest.mark.kvm
def test_kvm_set_cpuid2_takes_any_table_or_refuses_it(kvm, supported):
    seen: dict = {}
    fds = open_fds()

    @_settings(60)
    @given(st.one_of(st.lists(entries, max_size=40), mutated(supported)))
    def check(table):
        err = _set_cpuid2(kvm, table)
        assert err is None or err in KVM_ERRNOS, errno.errorcode.get(err, err)
        seen[err] = seen.get(err, 0) + 1
    check()
    for n in (257, 300, 4096):                  # more than KVM_MAX_CPUID_ENTRIES
        assert _set_cpuid2(kvm, [CpuidEntry(i) for i in range(n)]) == errno.E2BIG
    assert open_fds() == fds
    assert None in seen and len(seen) > 1, seen                 # both paths were exercised
    print("KVM_SET_CPUID2 results:", {errno.errorcode.get(k, "ok") if k else "ok": v
                                      for k, v in seen.items()})


@pytest.mark.kvm
def test_runner_turns_a_refused_configuration_into_an_outcome(kvm, supported):
    """Random tables through Runner.run: every answer is an outcome dict; a table KVM refuses is
    ioctl_error KVM_SET_CPUID2 with KVM's errno; the Runner keeps working and leaks no fd."""
    from kvmharness.guest.runner import Runner
    from kvmharness.model.profile import VcpuConfig
    from kvmharness.probes.payloads import parse
    kinds = {"ok", "exception", "exit", "ioctl_error", "timeout", "rejected", "skip"}
    spec = parse("cpuid:0:0")
    counts: dict = {}
    fds = open_fds()
    with Runner(kvm) as runner:

        @_settings(25)
        @given(st.one_of(mutated(supported), st.lists(entries, max_size=20),
                         st.just([CpuidEntry(i) for i in range(300)])))
        def check(table):
            config = VcpuConfig(CpuidTable(table))
            direct = _set_cpuid2(kvm, list(config.cpuid))
            o = runner.run(config, spec, None, 100)
            assert isinstance(o, dict) and o["kind"] in kinds, o
            if direct is not None:
                assert o == {"kind": "ioctl_error", "ioctl": "KVM_SET_CPUID2", "errno": direct,
                             "error": errno.errorcode[direct]}
                made = []
                real = kvm.create_vm
                kvm.create_vm = lambda: made.append(1) or real()
                try:
                    assert runner.run(config, spec, None, 100) == o
                finally:
                    del kvm.create_vm
                assert made == []                   # the refusal is remembered, not retried
            counts[o["kind"]] = counts.get(o["kind"], 0) + 1
            runner.release(config)
        check()
        o = runner.run(VcpuConfig(CpuidTable(supported)), spec)
        assert o["kind"] == "ok"
    assert open_fds() == fds                        # the Runner closed (and joined) what it made
    assert counts.get("ioctl_error") and counts.get("ok"), counts


# -- the model -----------------------------------------------------------------------------------
def _profiles():
    from tests import profiles as P
    return [P.pvm_profile(), P.fc_profile(P.SPR_618), P.fc_profile(P.GENOA_61)]


NAMES = None


def _payload_names():
    global NAMES
    if NAMES is None:
        from kvmharness.probes.payloads import payload_names
        NAMES = sorted(payload_names())
    return NAMES


def _num(n: int):
    return st.sampled_from([str(n), hex(n)])


@st.composite
def probe_texts(draw) -> str:
    """Syntactically valid probe strings of every kind, with random arguments and modifiers."""
    kind = draw(st.sampled_from(["cpuid", "cr4", "sregs-cr4", "rdmsr", "wrmsr", "host-rdmsr",
                                 "host-wrmsr", "xgetbv", "xsetbv", "host-xcr0", "get-cpuid2",
                                 "insn", "payload"]))
    leaf = draw(st.one_of(st.sampled_from(LEAVES), st.integers(0, U32)))
    msr = draw(st.one_of(st.sampled_from([0x10, 0x1B, 0x3A, 0x48, 0x49, 0x10A, 0x277, 0x345,
                                          0x6A0, 0x6A2, 0x6A4, 0xDA0, 0xC0000080, 0xC0000103,
                                          0x4B564D00, 0x4B564D02, 0x12345678]),
                         st.integers(0, U32)))
    val = draw(st.one_of(st.sampled_from([0, 1, 3, 7, 0xE7, 0x207, 0x803, U64]), st.integers(0, U64)))
    bit = draw(st.integers(0, 63))
    body = {
        "cpuid": lambda: f"cpuid:{draw(_num(leaf))}:{draw(_num(draw(st.integers(0, 70))))}",
        "get-cpuid2": lambda: f"get-cpuid2:{draw(_num(leaf))}:{draw(_num(draw(st.integers(0, 3))))}",
        "cr4": lambda: f"cr4:{bit}", "sregs-cr4": lambda: f"sregs-cr4:{bit}",
        "rdmsr": lambda: f"rdmsr:{draw(_num(msr))}", "host-rdmsr": lambda: f"host-rdmsr:{draw(_num(msr))}",
        "wrmsr": lambda: f"wrmsr:{draw(_num(msr))}:{draw(_num(val))}",
        "host-wrmsr": lambda: f"host-wrmsr:{draw(_num(msr))}:{draw(_num(val))}",
        "xgetbv": lambda: f"xgetbv:{draw(st.integers(0, 3))}",
        "xsetbv": lambda: f"xsetbv:{draw(st.integers(0, 3))}:{draw(_num(val))}",
        "host-xcr0": lambda: f"host-xcr0:{draw(_num(val))}",
        "insn": lambda: "insn:" + draw(st.binary(min_size=1, max_size=16)).hex(),
        "payload": lambda: draw(st.sampled_from(_payload_names())),
    }[kind]()
    mods = draw(st.lists(st.one_of(
        st.just("cpl3"),
        st.builds(lambda r, s, b: f"{r}{s}{b}", st.sampled_from(["cr0", "cr4", "efer"]),
                  st.sampled_from("+-"), st.integers(0, 63)),
        st.builds(lambda v: f"xcr0={v:#x}", st.integers(0, U64)),
        st.builds(lambda i, v: f"msr:{i:#x}={v:#x}", st.integers(0, U32), st.integers(0, U64))),
        max_size=3))
    return body + ("@" + ",".join(mods) if mods else "")


@pytest.mark.parametrize("profile", _profiles(), ids=lambda p: p.name)
def test_model_answers_or_raises_usage_error_for_any_guest_table(profile):
    from kvmharness.model.caps import effective_caps
    from kvmharness.model.expect import expect
    from kvmharness.model.profile import VcpuConfig
    from kvmharness.probes.payloads import parse
    base = list(profile.supported)

    @_settings(30)
    @given(st.one_of(mutated(base), st.lists(entries, max_size=30)),
           st.lists(probe_texts(), min_size=1, max_size=4))
    def check(table, texts):
        vcpu = VcpuConfig(CpuidTable(table), enforce_pv_cpuid=len(table) % 2 == 1)
        try:
            caps = effective_caps(profile, vcpu)
        except UsageError:
            return
        for text in texts:
            try:
                spec = parse(text)
                exp = expect(profile, vcpu, spec, caps)
            except UsageError:
                continue
            assert isinstance(exp.pattern, dict)
    check()


def test_model_answers_or_raises_usage_error_for_any_host_table():
    """The other input: a HostProfile whose supported table (and backend/kernel) is garbage."""
    from dataclasses import replace
    from kvmharness.model.caps import effective_caps
    from kvmharness.model.expect import expect
    from kvmharness.model.profile import VcpuConfig
    from kvmharness.probes.payloads import parse
    base = _profiles()[0]

    @_settings(40)
    @given(mutated(list(base.supported), max_extra=20),
           st.sampled_from(["intel", "amd", "pvm", "unknown"]),
           st.tuples(st.integers(4, 7), st.integers(0, 30)),
           st.lists(probe_texts(), min_size=1, max_size=3))
    def check(table, backend, kernel, texts):
        host = replace(base, supported=CpuidTable(table), backend=backend, kernel=kernel)
        vcpu = VcpuConfig(CpuidTable(table))
        try:
            caps = effective_caps(host, vcpu)
        except UsageError:
            return
        for text in texts:
            try:
                expect(host, vcpu, parse(text), caps)
            except UsageError:
                pass
    check()


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
              st.text(max_size=10), st.sampled_from(["0x10", "7", "-1", "0x1ffffffff", ""])),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.sampled_from(["function", "index", "flags", "eax",
                                                             "ebx", "ecx", "edx", "x"]), inner,
                                            max_size=7)),
    max_leaves=30)


@_settings(120)
@given(json_values)
def test_cpuid_table_from_json_accepts_or_raises_usage_error(data):
    try:
        table = CpuidTable.from_json(data, "t.json")
    except UsageError as e:
        assert "\n" not in str(e)
        return
    for e in table:
        assert all(0 <= v <= U32 for v in (e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx))


# == probe strings ==============================================================================
@_settings(400)
@given(st.one_of(
    st.text(max_size=40),
    st.text(alphabet="cpuidnsrgmwxethobvl0123456789abcdefx:@,+-=_ ", max_size=40),
    st.builds(lambda a, b: a + b, probe_texts(), st.text(max_size=6)),
    st.builds(lambda a, i, c: a[:i] + c + a[i:], probe_texts(), st.integers(0, 40),
              st.sampled_from([":", "@", ",", "=", "+", "-", "\n", " ", "0x", "ffffffffffffffffff"]))))
def test_probe_parser_raises_only_usage_error(text):
    from kvmharness.probes.payloads import parse
    try:
        spec = parse(text)
    except UsageError:
        return
    for a in spec.args:
        assert isinstance(a, (int, bytes, str))
        if isinstance(a, int):
            assert 0 <= a <= U64
    for reg in ("cr0", "cr4", "efer"):
        assert 0 <= getattr(spec, f"{reg}_set") <= U64
    if spec.kind != "payload":
        assert parse(str(spec)) == spec                  # what it prints, it reads back


@_settings(100)
@given(probe_texts())
def test_valid_probe_strings_parse(text):
    from kvmharness.probes.payloads import parse
    try:
        parse(text)
    except UsageError as e:           # the generator stays within every documented limit
        pytest.fail(f"{text!r}: {e}")


# Bugs in kvmharness/probes/spec.py found here, fixed: ordinary tests now.
def test_probe_errors_are_one_line_even_with_a_newline_in_an_argument():
    from kvmharness.probes.payloads import parse
    with pytest.raises(UsageError) as e:
        parse("cpuid:0x1ffffffffff\n:0")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["insn:90@msr:0x100000277=0x6", "insn:90@msr:0x277=0x10000000000000006"])
def test_msr_modifier_out_of_range_is_refused(text):
    from kvmharness.probes.payloads import parse
    with pytest.raises(UsageError, match="out of range"):
        parse(text)


def _cli_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "KVMHARNESS_DEBUG"}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def _one_line(code: int, stderr: str, want: int = 2) -> str:
    lines = stderr.strip().splitlines()
    assert code == want and len(lines) == 1 and lines[0].startswith("kvmharness: "), (code, stderr)
    assert "Traceback" not in stderr
    return lines[0]


def test_hostile_probe_strings_through_the_real_cli():
    """A sample through `python -m kvmharness probe` (concurrently): exit 2, one stderr line.
    The parser runs before /dev/kvm is opened, so this needs no KVM."""
    sample = ["", "@", "cpuid:1:2:3", "cpuid:-1:0", "insn:0f0", "insn:" + "90" * 300,
              "cr4:99999999999999999999999", "xsetbv:0:0x1" + "0" * 20, "insn:90@msr:1", "🦀",
              "x" * 5000, "insn:90@" + ",".join(["cr4+1"] * 500) + ",cr4+64"]
    procs = [subprocess.Popen([sys.executable, "-m", "kvmharness", "probe", s], cwd=REPO,
                              env=_cli_env(KVMHARNESS_DEVICE="/nonexistent/kvm"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for s in sample]
    for s, p in zip(sample, procs):
        out, err = p.communicate(timeout=60)
        _one_line(p.returncode, err)
        assert out == "", s


# == malformed JSON files ======================================================================
HOST = {"kernel": "6.18.44", "backend": "kvm_pvm", "module_params": {}, "cpu": {},
        "nested": {}, "hostname": "h"}


def _result(rid: str, verdict: str = "pass") -> dict:
    feature, config, label = rid.split("/")
    return {"id": rid, "feature": feature, "config": {"name": config, "set": [], "clear": []},
            "probe": "cr4:23", "label": label, "category": "behaviour",
            "expected": {"kind": "exception", "vector": 13},
            "observed": {"kind": "exception", "vector": 13, "name": "GP", "error_code": 0},
            "verdict": verdict, "reason": ["r"],
            "known": {"id": "k", "reason": "r"} if verdict == "known" else None,
            "skip_reason": "s" if verdict == "skip" else None,
            "reproduce": "kvmharness probe cr4:23", "duration_us": 1.0}


@pytest.fixture(scope="module")
def good_report(tmp_path_factory) -> Path:
    from kvmharness.report import build_report, dumps_report
    rep = build_report(HOST, [_result("a/b/c"), _result("a/b/d", "mismatch"),
                              _result("x/y/z", "known")], "2026-11-25T10:00:00Z", 1.0, {})
    p = tmp_path_factory.mktemp("good") / "good.json"
    p.write_text(dumps_report(rep))
    return p


def _bad_files(directory: Path, good: Path) -> dict[str, Path]:
    text = good.read_text()
    files = {
        "empty": b"", "open-brace": b"{", "null": b"null", "list": b"[]", "number": b"42",
        "truncated-1": text[:1].encode(), "truncated-half": text[:len(text) // 2].encode(),
        "truncated-end": text[:-2].encode(),
        "latin1": b'{"schema": "kvmharness-report/1", "host": "\xe9"}',
        "bom": b"\xef\xbb\xbf" + text.encode(), "nul": b"\x00" * 64,
        "nan": json.dumps({**json.loads(text), "duration_s": float("nan")}).encode(),
        "results-not-list": json.dumps({**json.loads(text), "results": {"a": 1}}).encode(),
        "result-missing-keys": json.dumps({**json.loads(text), "results": [{"id": "a/b/c"}]}).encode(),
        "other-schema": json.dumps({**json.loads(text), "schema": "kvmharness-report/99"}).encode(),
        **HOSTILE_JSON,
    }
    out = {}
    for name, data in files.items():
        p = directory / f"{name}.json"
        p.write_bytes(data)
        out[name] = p
    out["directory"] = directory
    out["missing"] = directory / "missing.json"
    return out


# load_json_file (kvmharness/cpu/cpuid.py) used to let RecursionError and the int-digits
# ValueError out (`diff` printed "internal error", exit 1).
HOSTILE_JSON = {"deep": b"[" * 100_000, "bigint": b'{"schema": ' + b"7" * 5000 + b"}"}


BAD_NAMES = ["empty", "open-brace", "null", "list", "number", "truncated-1", "truncated-half",
             "truncated-end", "latin1", "bom", "nul", "nan", "results-not-list",
             "result-missing-keys", "other-schema", "deep", "bigint", "directory", "missing"]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, good_report):
    return _bad_files(tmp_path_factory.mktemp("bad"), good_report)


def _main(args, capsys, monkeypatch, **env) -> tuple[int, str, str]:
    from kvmharness.cli import main
    monkeypatch.delenv("KVMHARNESS_DEBUG", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", BAD_NAMES)
def test_diff_refuses_a_malformed_report_with_one_line(name, bad_files, good_report, capsys,
                                                      monkeypatch):
    bad = bad_files[name]
    for args in (["diff", str(bad), str(good_report)], ["diff", str(good_report), str(bad)]):
        code, out, err = _main(args, capsys, monkeypatch)
        line = _one_line(code, err)
        assert str(bad) in line and out == ""


@pytest.mark.parametrize("name", BAD_NAMES)
def test_run_baseline_refuses_a_malformed_report_before_running(name, bad_files, capsys,
                                                               monkeypatch, tmp_path):
    """With no /dev/kvm the run itself would exit 4: exit 2 proves the baseline was checked
    first. The --json target must not be created."""
    out_file = tmp_path / "r.json"
    code, out, err = _main(["run", "--baseline", str(bad_files[name]), "--json", str(out_file)],
                           capsys, monkeypatch, KVMHARNESS_DEVICE=str(tmp_path / "no-kvm"))
    line = _one_line(code, err)
    assert str(bad_files[name]) in line
    assert not out_file.exists()


CPUID_BAD = {
    "not-a-list": b'{"function": 1}', "entry-not-object": b"[1, 2]",
    "missing-function": b'[{"eax": 1}]', "bool": b'[{"function": true}]',
    "negative": b'[{"function": -1}]', "too-wide": b'[{"function": 1, "eax": 4294967296}]',
    "string-garbage": b'[{"function": "0xzz"}]', "float": b'[{"function": 1.5}]',
}


@pytest.mark.parametrize("name", BAD_NAMES + list(CPUID_BAD))
def test_lint_file_raises_only_usage_error(name, bad_files, tmp_path):
    from kvmharness.model.lint import lint_file
    from tests.profiles import pvm_profile
    if name in CPUID_BAD:
        path = tmp_path / f"{name}.json"
        path.write_bytes(CPUID_BAD[name])
    else:
        path = bad_files[name]
    if name in ("list",):          # [] is a valid (empty) CPUID table
        assert lint_file(pvm_profile(), str(path)) == []
        return
    with pytest.raises(UsageError) as e:
        lint_file(pvm_profile(), str(path))
    assert "\n" not in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize("name", ["empty", "truncated-half", "latin1", "directory", "missing",
                                  "number"])
def test_lint_command_refuses_malformed_input_with_one_line(name, bad_files, capsys, monkeypatch):
    code, out, err = _main(["lint", str(bad_files[name])], capsys, monkeypatch)
    line = _one_line(code, err)
    assert str(bad_files[name]) in line                # about the file, not "invalid choice"


def test_malformed_inputs_through_the_real_cli(bad_files, good_report):
    """The same through real processes, concurrently: exit 2, one line, for diff, run
    --baseline and lint."""
    runs = [["diff", str(bad_files["truncated-half"]), str(good_report)],
            ["diff", str(good_report), str(bad_files["latin1"])],
            ["run", "--baseline", str(bad_files["truncated-end"])],
            ["run", "--baseline", str(bad_files["directory"]), "-j", "2"]]
    runs.append(["lint", str(bad_files["truncated-half"])])
    procs = [subprocess.Popen([sys.executable, "-m", "kvmharness", *a], cwd=REPO,
                              env=_cli_env(KVMHARNESS_DEVICE="/nonexistent/kvm"), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for a in runs]
    for a, p in zip(runs, procs):
        out, err = p.communicate(timeout=60)
        _one_line(p.returncode, err)


# -- reports that validate must also diff ---------------------------------------------------------
@_settings(80)
@given(st.data())
def test_a_report_that_validates_can_be_diffed_and_rendered(data):
    """Random edits of a valid report: validate_report accepts or raises UsageError; whatever it
    accepts, diff_reports/apply_baseline/render_diff handle without raising."""
    from kvmharness.report import (apply_baseline, build_report, diff_reports, render_diff,
                                   render_table, summary_line, to_junit, to_ktap, validate_report)
    base = build_report(HOST, [_result("a/b/c"), _result("a/b/d", "mismatch"),
                               _result("x/y/z", "known"), _result("s/k/p", "skip")],
                        "2026-11-25T10:00:00Z", 1.0, {})
    rep = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 4))):
        node, key = rep, None
        path = []
        while isinstance(node, (dict, list)) and node and data.draw(st.booleans()):
            key = data.draw(st.sampled_from(sorted(node) if isinstance(node, dict)
                                            else range(len(node))))
            path.append(key)
            if not isinstance(node[key], (dict, list)) or not node[key]:
                break
            node = node[key]
        if not path:
            continue
        parent = rep
        for k in path[:-1]:
            parent = parent[k]
        parent[path[-1]] = data.draw(json_values)
    try:
        rep = validate_report(json.loads(json.dumps(rep, allow_nan=True)), "r.json")
    except UsageError as e:
        assert "\n" not in str(e)
        return
    for a, b in ((base, rep), (rep, base), (rep, rep)):
        d = diff_reports(a, b, "a.json", "b.json")
        render_diff(d)
        assert d.exit_code in (0, 1)
    render_diff(apply_baseline(base, rep))
    render_table(rep, show=("pass", "mismatch", "known", "skip", "error"))
    summary_line(rep)
    to_junit(rep)
    to_ktap(rep)


# == the promised exit 2, one line (issue 16) =====================================================
def _with_result_field(good: Path, tmp_path: Path, name: str, key: str, raw_value: str) -> Path:
    """good.json with results[0].observed[key] set to raw JSON text: schema-valid otherwise."""
    rep = json.loads(good.read_text())
    rep["results"][0]["observed"][key] = "@@VALUE@@"
    p = tmp_path / name
    p.write_text(json.dumps(rep).replace('"@@VALUE@@"', raw_value))
    return p


@pytest.mark.parametrize("name,raw", [
    ("digits-300", "1" * 300), ("digits-5000", "9" * 5000), ("negative-400", "-" + "7" * 400),
    ("deep-100", "[" * 100 + "]" * 100), ("deep-900", "[" * 900 + "]" * 900),
    ("deep-dicts", '{"a":' * 200 + "0" + "}" * 200), ("nan", "NaN"), ("inf", "-Infinity")])
def test_unusable_numbers_and_nesting_in_a_valid_report(name, raw, good_report, tmp_path, capsys,
                                                        monkeypatch):
    """Before: diff printed 'internal error' (OverflowError, RecursionError) and exited 1, and a
    full `run --baseline` lost its verdict. Now the file is refused before anything runs."""
    bad = _with_result_field(good_report, tmp_path, f"{name}.json", "x", raw)
    for args in (["diff", str(good_report), str(bad)], ["diff", str(bad), str(good_report)],
                 ["run", "--baseline", str(bad)]):
        code, out, err = _main(args, capsys, monkeypatch,
                               KVMHARNESS_DEVICE=str(tmp_path / "no-kvm"))
        line = _one_line(code, err)
        assert str(bad) in line and len(line) < 300 and out == ""


def test_a_5000_digit_kernel_is_one_short_line(capsys, monkeypatch):
    for text in ("6." + "1" * 5000, "1" * 5000, "1" * 5000 + ".1", "6.18" + "\x1b[2J"):
        code, out, err = _main(["explain", "shstk", "--host", str(PROFILE), "--kernel", text],
                               capsys, monkeypatch)
        line = _one_line(code, err)
        assert len(line) < 200 and "\x1b" not in line and "kernel version" in line


PROFILE = REPO / "tests" / "data" / "profiles" / "fc-amd-genoa-6.18host.json"


def test_host_empty_is_a_usage_error_not_this_machine(capsys, monkeypatch):
    for args in (["explain", "shstk", "--host", ""], ["lint", str(PROFILE), "--host", ""]):
        code, out, err = _main(args, capsys, monkeypatch)
        assert "--host" in _one_line(code, err) and out == ""


def test_param_names_the_backend_lacks_are_refused(capsys, monkeypatch):
    base = ["explain", "shstk", "--host", str(PROFILE)]
    for param, hint in (("bogus=1", None), ("ept=Y", "npt"), ("np=N", "npt")):
        code, out, err = _main(base + ["--param", param], capsys, monkeypatch)
        line = _one_line(code, err)
        assert "kvm_amd" in line and (hint is None or f"did you mean: {hint}" in line)
    for param in ("npt=N", "tdp_mmu=N", "ignore_msrs=Y"):      # kvm_amd's and kvm's own
        code, out, err = _main(base + ["--param", param], capsys, monkeypatch)
        assert code == 0, err


def test_names_from_input_files_are_printed_escaped(tmp_path, capsys, monkeypatch):
    host = json.loads(PROFILE.read_text())
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps({"supported": host, "name": "h\x1b]0;pwned\x07\n2nd line",
                                "\x1b[31mred": 1}))
    code, out, err = _main(["explain", "shstk", "--host", str(evil)], capsys, monkeypatch)
    line = _one_line(code, err)
    assert "\x1b" not in line and "\\u001b" in line          # the unknown key, escaped
    named = tmp_path / "named.json"
    named.write_text(json.dumps({"supported": host, "name": "h\x1b]0;pwned\x07\n2nd line"}))
    code, out, err = _main(["explain", "shstk", "--host", str(named)], capsys, monkeypatch)
    assert code == 0 and "\x1b" not in out and "\x07" not in out and "2nd line" in out
    assert not any(line.startswith("2nd line") for line in out.splitlines())
    weird = tmp_path / "we\x1bird\nname.json"
    code, out, err = _main(["lint", str(weird)], capsys, monkeypatch)
    assert "\x1b" not in _one_line(code, err)


def _child_peak_rss_kib(args, **env) -> tuple[subprocess.CompletedProcess, int]:
    """Run the CLI in a fresh process; its peak RSS from wait4()."""
    proc = subprocess.Popen([sys.executable, "-m", "kvmharness", *args], cwd=REPO,
                            env=_cli_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = proc.communicate(timeout=300)
    # Popen has reaped it; ru_maxrss of RUSAGE_CHILDREN is the largest child so far, so compare
    # with a baseline child (see the caller).
    import resource
    return (subprocess.CompletedProcess(args, proc.returncode, out, err),
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def test_reading_a_huge_table_or_report_stays_within_ten_times_the_file(tmp_path):
    """Before: a 64 MiB CPUID table took 2.1 GB and 31 s. Tables are refused from their size
    (KVM takes 256 entries); a large report is read within ~10x its size."""
    entry = '{"function": %d, "index": 0, "flags": 0, "eax": 1, "ebx": 2, "ecx": 3, "edx": 4}'
    table = tmp_path / "t64.json"
    with open(table, "w") as f:
        f.write("[" + ", ".join(entry % i for i in range(800_000)) + "]")
    size = table.stat().st_size
    assert size > 60 << 20
    done, _ = _child_peak_rss_kib(["lint", str(table), "--host", str(PROFILE)])
    _one_line(done.returncode, done.stderr)
    # A 20 MiB report (schema-valid, 20k results), diffed with itself; and a dense one refused.
    from kvmharness.report import build_report, dumps_report
    results = [_result(f"f{i}/c/l") for i in range(20_000)]
    for r in results:
        r["reason"] = ["a reason of a realistic length, naming the KVM function " * 3]
    big = tmp_path / "big.json"
    big.write_text(dumps_report(build_report(HOST, results, "2026-11-25T10:00:00Z", 1.0, {})))
    baseline, base_rss = _child_peak_rss_kib(["diff", str(PROFILE), str(PROFILE)])
    assert baseline.returncode == 2
    done, rss = _child_peak_rss_kib(["diff", str(big), str(big)])
    assert done.returncode == 0, done.stderr
    grown = (rss - base_rss) * 1024
    assert grown < 10 * 2 * big.stat().st_size, (grown >> 20, big.stat().st_size >> 20)
    dense = tmp_path / "dense.json"
    dense.write_text("[" + ",".join(["{}"] * 3_000_000) + "]")
    done, _ = _child_peak_rss_kib(["diff", str(dense), str(dense)])
    assert "too dense" in _one_line(done.returncode, done.stderr)


def test_unusable_cache_dir_or_home_is_an_environment_error(tmp_path, monkeypatch):
    from kvmharness.errors import EnvironmentProblem
    from kvmharness.guest import assemble
    afile = tmp_path / "afile"
    afile.write_text("x")
    for env in ({"XDG_CACHE_HOME": str(afile / "x")}, {"XDG_CACHE_HOME": "", "HOME": str(afile)},
                {"XDG_CACHE_HOME": "relative", "HOME": str(afile)},
                {"XDG_CACHE_HOME": "/proc/version"}):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        with pytest.raises(EnvironmentProblem) as e:
            assemble.cache_dir()
        assert "\n" not in str(e.value) and "XDG_CACHE_HOME" in str(e.value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "ok"))
    assert assemble.cache_dir() == tmp_path / "ok" / "kvmharness"


@pytest.mark.kvm
def test_unusable_cache_dir_through_the_real_cli(kvm, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    done = subprocess.run([sys.executable, "-m", "kvmharness", "probe", "cpuid:0:0"], cwd=REPO,
                          env=_cli_env(XDG_CACHE_HOME=str(afile / "x")), capture_output=True,
                          text=True, timeout=120)
    assert "payload cache" in _one_line(done.returncode, done.stderr)


@pytest.mark.parametrize("redirect,words", [(">&-", "standard output is closed"),
                                            (">/dev/full", "No space left on device")])
def test_stdout_closed_or_full(redirect, words, good_report):
    done = subprocess.run(f'exec "{sys.executable}" -m kvmharness diff "{good_report}" '
                          f'"{good_report}" {redirect}', shell=True, cwd=REPO, env=_cli_env(),
                          capture_output=False, stderr=subprocess.PIPE, text=True, timeout=60)
    assert words in _one_line(done.returncode, done.stderr)


def test_a_deleted_working_directory(tmp_path, good_report):
    gone = tmp_path / "gone"
    gone.mkdir()
    done = subprocess.run(f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -m '
                          f'kvmharness diff "{good_report}" "{good_report}"', shell=True,
                          env=_cli_env(), capture_output=True, text=True, timeout=60)
    assert "working directory" in _one_line(done.returncode, done.stderr)


def test_a_stuck_assembler_is_stopped_after_the_timeout(tmp_path, monkeypatch):
    """A GNU as that never returns (and leaves a child holding its pipes): stopped, with its
    whole process group, one EnvironmentProblem line."""
    from kvmharness.errors import EnvironmentProblem
    from kvmharness.guest import assemble
    fake = tmp_path / "bin"
    fake.mkdir()
    pids = tmp_path / "pids"
    for tool in ("as", "ld", "objcopy", "nm"):
        (fake / tool).write_text(f"#!/bin/sh\nsleep 600 &\necho $$ $! >> {pids}\nwait\n")
        (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(assemble, "TOOL_TIMEOUT_S", 0.5)
    monkeypatch.setattr(assemble, "_memo", {})
    with pytest.raises(EnvironmentProblem) as e:
        assemble.assemble("runtime", 0x10000)
    assert "did not finish within 0.5 s" in str(e.value) and "\n" not in str(e.value)
    import time
    for pid in map(int, pids.read_text().split()):
        for _ in range(100):                     # SIGKILL is delivered asynchronously
            try:                                 # gone, or a zombie waiting for its reaper
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                break
            if state in ("Z", "X"):
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"process {pid} of the stuck assembler is still running")
