"""A fault of the harness or of the machine it runs on (too few file descriptors, memory, a
missing assembler) is an `error` result or a one-line exit 2, never a mismatch: it says nothing
about KVM."""

import errno
import json
import os
import resource
import subprocess
import sys

import pytest

from kvmharness.conformance.engine import Item, Session
from kvmharness.conformance.config import GuestConfig
from kvmharness.errors import RESOURCE_ERRNOS, MachineFault
from kvmharness.outcome import ioctl_error
from tests.test_cli import REPO, one_line_error


def _run_limited(nofile: int, *args, env=None):
    """`kvmharness ARGS` with RLIMIT_NOFILE lowered to `nofile` (what `ulimit -n` does)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    e = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "kvmharness", *args], capture_output=True,
                          text=True, env=e, cwd=REPO, timeout=120, preexec_fn=limit)


def _verdicts(path) -> dict:
    return {r["id"]: (r["verdict"], r["observed"].get("kind")) for r in json.loads(path.read_text())["results"]}


@pytest.fixture(scope="module")
def unlimited(tmp_path_factory):
    from tests.conftest import require_kvm
    require_kvm()
    d = tmp_path_factory.mktemp("faults")
    p = _run_limited(1024, "run", "-j", "1", "--feature", "xsave", "--feature", "pcid",
                     "--json", str(d / "r.json"))
    assert p.returncode in (0, 1), p.stderr
    return _verdicts(d / "r.json")


@pytest.mark.kvm
def test_few_file_descriptors_give_the_same_verdicts(unlimited, tmp_path):
    """`ulimit -n 16` used to turn 72-209 results into mismatches (EMFILE creating a vCPU was
    taken for KVM refusing the configuration). Machines closed in the background are waited for
    before a new one is refused."""
    p = _run_limited(16, "run", "-j", "1", "--feature", "xsave", "--feature", "pcid",
                     "--json", str(tmp_path / "r.json"))
    assert p.returncode in (0, 1), p.stderr
    assert _verdicts(tmp_path / "r.json") == unlimited


@pytest.mark.kvm
def test_no_file_descriptor_for_a_vm_is_an_error_result_never_a_mismatch(unlimited, tmp_path):
    p = _run_limited(6, "run", "-j", "1", "--feature", "xsave", "--feature", "pcid",
                     "--json", str(tmp_path / "r.json"))
    assert p.returncode == 1, p.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    ran = [r for r in report["results"] if r["verdict"] != "skip"]
    assert ran and all(r["verdict"] == "error" for r in ran), {r["verdict"] for r in ran}
    assert all("Too many open files" in r["observed"]["message"] for r in ran)
    # the same ids as a run that could open them, nothing lost
    assert {r["id"] for r in report["results"]} == set(unlimited)


@pytest.mark.kvm
def test_no_file_descriptor_for_a_worker_is_one_line_exit_2(unlimited):
    line = one_line_error(_run_limited(10, "run", "-j", "2", "--feature", "xsave"), 2)
    assert "cannot start a worker process: Too many open files" in line


@pytest.mark.parametrize("err", sorted(RESOURCE_ERRNOS))
def test_an_outcome_of_a_resource_errno_is_an_error_verdict(err):
    """KVM_RUN or a setup ioctl failing for want of memory, say: the host's state, not KVM's."""
    from tests.profiles import pvm_profile          # a recorded profile: no KVM needed
    from kvmharness.model.expect import expect
    from kvmharness.probes.spec import parse_probe
    profile = pvm_profile()
    session = Session(profile)
    item = Item("xsave", GuestConfig("on", set=("xsave",)), "cpuid", "cpuid:0xd:0")
    spec = parse_probe(item.probe)
    exp = expect(profile, session.vcpu(item.config), spec)
    r = session._verdict(item, spec, exp, [str(x) for x in exp.reasons], ioctl_error("KVM_RUN", err))
    assert r["verdict"] == "error" and errno.errorcode[err] in r["observed"]["message"]
    r = session._verdict(item, spec, exp, [], ioctl_error("KVM_RUN", errno.EINVAL))
    assert r["verdict"] == "mismatch"                   # any other errno is KVM's answer
    lzcnt = Item("abm", GuestConfig("off", clear=("abm",)), "lzcnt", "insn:f3480fbdc0")
    spec = parse_probe(lzcnt.probe)
    exp = expect(profile, session.vcpu(lzcnt.config), spec)
    assert session._verdict(lzcnt, spec, exp, [], ioctl_error("KVM_RUN", err))["verdict"] == "error"
    assert session._verdict(lzcnt, spec, exp, ["no rule"], {"kind": "ok", "regs": {}})["verdict"] == "unpredicted"


@pytest.mark.kvm
def test_a_vm_that_cannot_be_made_for_want_of_a_resource_is_not_cached_as_refused(monkeypatch):
    from tests.conftest import require_kvm
    require_kvm()
    from kvmharness.guest import runner as runner_mod
    from kvmharness.kvm.binding import KvmError
    from kvmharness.host import gather_facts
    from kvmharness.probes.spec import parse_probe
    with runner_mod.Runner() as runner:
        profile = gather_facts(runner.kvm).to_profile()
        config = GuestConfig("supported").vcpu(profile.supported)
        real = runner_mod.Machine
        failures = iter([KvmError(errno.ENOMEM, "KVM_CREATE_VCPU")] * 2)

        def flaky(kvm, cfg):
            e = next(failures, None)
            if e is not None:
                raise e
            return real(kvm, cfg)
        monkeypatch.setattr(runner_mod, "Machine", flaky)
        with pytest.raises(MachineFault, match="KVM_CREATE_VCPU: Cannot allocate memory"):
            runner.run(config, parse_probe("cpuid:0:0"))
        assert runner.run(config, parse_probe("cpuid:0:0"))["kind"] == "ok"   # memory is back


@pytest.mark.kvm
def test_missing_assembler_mid_run_is_an_error_result(tmp_path, monkeypatch):
    """A payload assembled lazily (the pytest front-end judges one item at a time) with binutils
    gone: that item is an `error` naming the package, not a mismatch."""
    from tests.conftest import require_kvm
    require_kvm()
    from kvmharness.guest import assemble as A
    from kvmharness.guest.runner import Runner
    from kvmharness.host import gather_facts
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")
    A._memo.clear()
    from kvmharness.probes.payloads import Payload
    Payload.code.cache_clear()
    try:
        with Runner() as runner:
            session = Session(gather_facts(runner.kvm).to_profile(), runner)
            item = Item("fixup", GuestConfig("supported"), "fixup-selftest", "fixup-selftest")
            r = session.judge(item)
        assert r["verdict"] == "error", r
        assert "GNU binutils not found" in r["observed"]["message"]
    finally:
        A._memo.clear()
        Payload.code.cache_clear()
