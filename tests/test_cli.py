"""The command line as a user meets it: exit codes and one-line errors, never a traceback."""

import json
import os
import pwd
import subprocess
import sys

import pytest

from tests.conftest import REPO


def cli(*args, env=None, user=None):
    e = dict(os.environ, **(env or {}))
    e["PYTHONPATH"] = str(REPO)
    cmd = [sys.executable, "-m", "kvmharness", *args]
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=e, cwd=REPO, timeout=120)


def one_line_error(p, code):
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvmharness: "), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def test_help_and_version():
    assert cli("--help").returncode == 0
    assert "kvmharness" in cli("--version").stdout
    for sub in ("info", "probe", "run", "diff"):
        assert cli(sub, "--help").returncode == 0


@pytest.mark.parametrize("args, needle", [
    (["probe", "cr4:x"], '"x" is not a number'),
    (["probe", "cr4:99"], "out of range"),
    (["probe", "frob:1"], "unknown probe kind"),
    (["probe", "cpuif:1:0"], "unknown probe kind 'cpuif'; did you mean: cpuid? (kinds: "),
    (["probe", "shstk-near-rt"], "did you mean: shstk-near-ret"),      # a named payload
    (["probe", "rdmsr"], "takes 1 argument"),
    (["probe", "insn:0f0"], "even number of hex digits"),
    (["probe", "insn:90@cpl9"], "unknown modifier"),
    # a long probe string is quoted short: the reason stays on the line (printed up to 500 chars)
    (["probe", "insn:" + "90" * 300], "at most 256 instruction bytes"),
    (["probe", "cpuid:0x1:" + "9" * 600], "out of range"),
    (["probe", "vmcall:" + "1" * 5000], "a number of 5000 digits is out of range"),
    (["probe", "rdmsr:0x" + "f" * 600], "is out of range (max 0xffffffff)"),
    (["probe", "x" * 600 + ":1"], "unknown probe kind"),
    (["probe", "insn:90@" + "cpl4," * 100], "unknown modifier"),
    (["probe", "--set", "no_such_feature", "insn:90"], "no_such_feature"),
    (["probe", "--set", "7.0.exx.7", "insn:90"], "register must be one of"),
    (["probe", "--timeout", "-5", "insn:90"], "--timeout"),
    (["probe"], "required"),
    (["frobnicate"], "invalid choice"),
    (["run", "--feature", "no_such_feature"], "not in the matrix"),
    (["run", "--feature", "avx2"], "the CPU feature 'avx2' has no probes in the matrix"),
    (["run", "--json", ""], "--json: the file name is empty"),
    (["run", "--baseline", ""], "--baseline: the file name is empty"),
    (["run", "--show", "mismatch,bogus"], "--show 'mismatch,bogus'"),
    (["run", "--ktap", "--json", "-"], "--ktap and --json both want standard output"),
    (["run", "--json", "/dev/stdout", "--junit", "-"], "--json and --junit both want standard output"),
    (["explain", "7.0.ecx.31"], "no catalogued CPU feature at that bit"),
    (["diff", "/nonexistent/a.json", "/nonexistent/b.json"], "no such file"),
])
def test_usage_errors_are_one_line_exit_2(args, needle):
    line = one_line_error(cli(*args), 2)
    assert needle in line


def test_malformed_report_for_diff(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "kvmharness-report/1", "results": [')
    line = one_line_error(cli("diff", str(bad), str(bad)), 2)
    assert "bad.json" in line


def test_missing_device_exits_4(tmp_path):
    p = cli("probe", "insn:90", env={"KVMHARNESS_DEVICE": str(tmp_path / "kvm")})
    assert "does not exist" in one_line_error(p, 4)
    p = cli("info", env={"KVMHARNESS_DEVICE": str(tmp_path / "kvm")})
    one_line_error(p, 4)


def test_a_device_that_is_not_kvm_exits_4():
    p = cli("info", env={"KVMHARNESS_DEVICE": "/dev/null"})
    assert "/dev/null is not a KVM device" in one_line_error(p, 4)


def test_ktap_without_kvm_is_a_parseable_skip(tmp_path):
    """kselftest's ksft_exit_skip(): a plan of 0 with the reason, and exit 4 (KSFT_SKIP)."""
    p = cli("run", "--ktap", env={"KVMHARNESS_DEVICE": str(tmp_path / "kvm")})
    assert p.returncode == 4
    assert p.stdout == f"KTAP version 1\n1..0 # SKIP {tmp_path / 'kvm'} does not exist: load kvm_intel, kvm_amd or kvm_pvm\n"


def test_a_reader_that_goes_away_does_not_change_the_exit_status(tmp_path):
    """`kvmharness diff OLD NEW | head -0` with a regression: still exit 1 (CI must not pass)."""
    from tests.reports import report, result
    from kvmharness.report import dumps_report
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(dumps_report(report([result(f"shstk/base/probe{i}") for i in range(200)])))
    new.write_text(dumps_report(report([result(f"shstk/base/probe{i}", "mismatch") for i in range(200)])))
    e = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "kvmharness", "diff", str(old), str(new)], cwd=REPO,
                            env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()                         # before it writes a byte
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 1 and stderr == "", stderr


@pytest.mark.kvm
def test_a_report_reader_that_goes_away_does_not_change_the_exit_status():
    """`run --json - | head -c0`: the report's pipe closes; the verdict (here with the 6.1 rules
    on this 6.18 host: mismatches, exit 1) is still the exit status, not a write error."""
    e = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "kvmharness", "run", "--kernel", "6.1", "--json", "-"],
                            cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    stderr = proc.stderr.read()
    rc = proc.wait(timeout=120)
    reference = cli("run", "--kernel", "6.1")
    assert rc == reference.returncode and rc in (0, 1) and "cannot write" not in stderr, stderr


@pytest.mark.kvm
def test_feature_names_select_as_for_set_and_the_report_records_the_matrix_name(tmp_path):
    out = tmp_path / "r.json"
    for spelling in ("shadow_stack", "7.0.ecx.7", "X86_FEATURE_SHSTK"):
        p = cli("run", "--feature", spelling, "--feature", "shstk", "--json", str(out))
        assert p.returncode in (0, 1), p.stderr
        report = json.loads(out.read_text())
        assert report["selection"]["features"] == ["shstk"]
        assert {r["id"].split("/")[0] for r in report["results"]} == {"shstk"}


@pytest.mark.kvm
@pytest.mark.parametrize("target", ["-", "/dev/stdout"])
def test_a_report_on_stdout_is_the_only_thing_there(target):
    """`run --json - | jq`: the JSON alone on stdout, the table and summary on stderr."""
    p = cli("run", "--feature", "pku", "--json", target)
    assert p.returncode in (0, 1), p.stderr
    assert len(json.loads(p.stdout)["results"]) > 0
    assert p.stderr.strip().splitlines()[-1].startswith(f"{len(json.loads(p.stdout)['results'])} results: ")


@pytest.mark.kvm
def test_a_report_to_stdout_redirected_to_a_file_lands_in_that_file(tmp_path):
    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        e = dict(os.environ, PYTHONPATH=str(REPO))
        p = subprocess.run([sys.executable, "-m", "kvmharness", "run", "--feature", "pku", "--json",
                            "/dev/stdout"], cwd=REPO, env=e, stdout=f, stderr=subprocess.PIPE, text=True)
    assert p.returncode in (0, 1), p.stderr
    assert len(json.loads(out.read_text())["results"]) > 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_no_permission_exits_4():
    if not os.path.exists("/dev/kvm") or os.stat("/dev/kvm").st_mode & 0o006:
        pytest.skip("/dev/kvm is missing or world-accessible here")
    nobody = str(pwd.getpwnam("nobody").pw_uid)
    env = {"XDG_CACHE_HOME": "/tmp"}
    reach = subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
                            sys.executable, "-c", "import ioctl_opt"], capture_output=True)
    if reach.returncode != 0:
        pytest.skip("the unprivileged user cannot reach this Python installation")
    p = cli("probe", "insn:90", user=nobody, env=env)
    assert "no read-write access" in one_line_error(p, 4)


@pytest.mark.kvm
def test_probe_json_output():
    p = cli("probe", "--json", "--set", "shstk", "cpuid:0:0", "rdmsr:0x12345678", "insn:0f0b")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [r["probe"] for r in out] == ["cpuid:0x0:0", "rdmsr:0x12345678", "insn:0f0b"]
    assert out[0]["config"] == {"name": "cli", "set": ["shstk"], "clear": []}
    assert out[0]["outcome"]["kind"] == "ok" and out[0]["outcome"]["regs"]["rax"].startswith("0x")
    from kvmharness.guest.layout import KERNEL_CS, KERNEL_PAYLOAD
    assert out[1]["outcome"] == {"kind": "exception", "vector": 13, "name": "GP", "error_code": 0,
                                 "rip": hex(KERNEL_PAYLOAD), "cs": hex(KERNEL_CS)}
    assert out[2]["outcome"]["name"] == "UD"


@pytest.mark.kvm
def test_info_json_is_complete():
    p = cli("info", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    for key in ("api_version", "caps", "supported_cpuid", "emulated_cpuid", "msr_index_list",
                "feature_msrs", "backend_module", "kvm_params", "kernel_release", "cpu_vendor",
                "hypervisor", "xcomp_guest_supp"):
        assert key in d
    assert d["api_version"] == 12


@pytest.mark.kvm
def test_info_names_features():
    p = cli("info")
    assert p.returncode == 0, p.stderr
    assert "supported features" in p.stdout and " fpu " in p.stdout


@pytest.mark.kvm
def test_info_says_which_probe_loop_runs():
    assert "probe loop            native (guests/probe_loop.S)" in cli("info").stdout
    off = cli("info", env={"KVMHARNESS_NATIVE_LOOP": "0"})
    assert off.returncode == 0, off.stderr
    assert "probe loop            Python, one probe per KVM_RUN call (KVMHARNESS_NATIVE_LOOP=0)" in off.stdout


@pytest.mark.kvm
def test_run_gives_the_same_report_with_and_without_the_native_loop(tmp_path):
    reports = []
    for flag in ("1", "0"):
        out = tmp_path / f"native-{flag}.json"
        p = cli("run", "--feature", "xsave", "--feature", "rdtscp", "--feature", "pku", "--json", str(out),
                env={"KVMHARNESS_NATIVE_LOOP": flag})
        assert p.returncode in (0, 1), p.stderr
        reports.append(out)
    d = cli("diff", str(reports[0]), str(reports[1]))
    assert d.returncode == 0 and "no changes" in d.stdout, d.stdout
