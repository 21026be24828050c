"""Command line: thin front-ends over the engine. Every user error is one line and an exit code.

Exit codes (kselftest): 0 all as expected, 1 mismatch or failure, 2 usage or environment error,
4 nothing could run (no /dev/kvm, no permission).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import sys

from . import __version__
from .errors import (EXIT_MISMATCH, EXIT_OK, EnvironmentProblem, HarnessError, NoKvm, UsageError,
                     printable)


class _Parser(argparse.ArgumentParser):
    def error(self, message):          # argparse's own errors: one line, exit 2
        where = self.prog.removeprefix("kvmharness").strip()
        raise UsageError(f"{where}: {message}" if where else message)

    def _get_values(self, action, arg_strings):
        # A positional list of plain strings (no type, no choices) is the strings themselves:
        # argparse would pass each through its identity type and its choices check, ~0.5 µs a
        # string: for `probe` with thousands of reproduce lines, as much as parsing the probes
        # (scripts/bench_probe.py). A list with a "--" in it is left to argparse: 3.11.7, 3.12.1
        # and 3.13.0 take the first "--" out here; releases after python/cpython#81691 (fixed
        # in September 2024) take the separator out before and keep a literal "--" after it.
        if (not action.option_strings and action.nargs == argparse.ONE_OR_MORE
                and action.type is None and action.choices is None and "--" not in arg_strings):
            return list(arg_strings)
        # The subcommand takes every string after its name the same way (3.11 to 3.13 and
        # after: through the identity type, then the name checked against the subcommands).
        if action.nargs == argparse.PARSER and action.type is None:
            strings = list(arg_strings)
            self._check_value(action, strings[0])
            return strings
        return super()._get_values(action, arg_strings)


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="F",
                   help="set feature F in the guest CPUID (a name such as shstk, or LEAF.SUBLEAF.REG.BIT)")
    p.add_argument("--clear", action="append", default=[], metavar="F",
                   help="clear feature F in the guest CPUID")


def _mask(text: str) -> int:
    from .cpu.cpuid import parse_number
    value = parse_number(text, "mask")
    if value > 0xFFFFFFFF:
        raise UsageError(f"mask {text}: must fit in 32 bits")
    return value


def _add_host_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", metavar="FILE",
                   help="answer for a recorded host: its supported CPUID (a JSON list) or an object "
                   "{supported, emulated, backend, kernel, params, ...} instead of this machine")
    p.add_argument("--backend", choices=("intel", "amd", "pvm", "unknown"),
                   help="with --host: the KVM backend (default: from the file, else the CPU vendor)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="with --host: a module parameter (e.g. ept=N), repeatable")
    p.add_argument("--kernel", metavar="X.Y", help="predict for this kernel version")
    _add_source_option(p)


def _add_source_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", metavar="TREE",
                   help="judge with the CPUID classes read from this Linux source tree (a patched "
                   "kernel, say) and the other rules of its release (--kernel overrides those)")


def _with_source(profile, args):
    """--source TREE: the classes of that tree, the rules of its release unless --kernel."""
    if not getattr(args, "source", None):
        return profile
    from .cpu.source import with_source
    return with_source(profile, args.source, args.kernel)


def _check_source(args) -> None:
    """A tree that cannot be read fails before anything else is done."""
    if getattr(args, "source", None):
        from .cpu.source import read_tree
        read_tree(args.source)


def _host_profile(args):
    """The model's HostProfile: a recorded host (--host) or this machine's KVM, with the classes
    of --source TREE."""
    return _with_source(_plain_host_profile(args), args)


def _plain_host_profile(args):
    from .model.hostfile import load_host_file
    from .model.releases import parse_release
    kernel = parse_release(args.kernel) if args.kernel else None
    _check_source(args)
    if args.host is not None:               # --host "" is a mistake, never this machine
        params = {}
        for kv in args.param:
            name, sep, value = kv.partition("=")
            if not sep or not name:
                raise UsageError(f"--param {kv!r}: expected NAME=VALUE")
            params[name] = value
        return load_host_file(args.host, backend=args.backend, kernel=kernel, params=params or None)
    if args.backend or args.param:
        raise UsageError("--backend and --param describe a recorded host: use them with --host")
    from .guest.runner import open_kvm
    from .host import gather_facts
    with open_kvm() as kvm:
        return gather_facts(kvm).to_profile(kernel)


def _add_report_options(p: argparse.ArgumentParser) -> None:
    """The outputs of a judged run, shared by run and rejudge."""
    p.add_argument("--json", metavar="FILE", help="write the JSON report to FILE ('-': stdout, the "
                   "table then goes to stderr)")
    p.add_argument("--ktap", action="store_true", help="print KTAP on stdout instead of the table")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML to FILE ('-': stdout)")
    p.add_argument("--baseline", metavar="FILE",
                   help="compare with an earlier JSON report; exit 1 only on regressions")
    p.add_argument("--show", default=",".join(DEFAULT_SHOW), metavar="VERDICTS",
                   help="verdicts listed in the table (default mismatch,error; 'all' for every result)")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="kvmharness", description="KVM x86 effective-capability model, checked "
                 "against the running kernel through /dev/kvm.")
    ap.add_argument("--version", action="version", version=f"kvmharness {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("info", help="what this host's KVM offers")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("probe", help="run single probes in one guest configuration",
                       description="Run probes in a guest whose CPUID is KVM_GET_SUPPORTED_CPUID "
                       "with the --set/--clear edits. PROBE is cpuid:LEAF:SUB, cr4:BIT, sregs-cr4:BIT, "
                       "rdmsr:INDEX, wrmsr:INDEX:VALUE, host-rdmsr:INDEX, host-wrmsr:INDEX:VALUE, "
                       "xgetbv:INDEX, xsetbv:INDEX:VALUE, host-xcr0:VALUE, get-cpuid2:LEAF:SUB, "
                       "msr-index:INDEX, host-get-reg:REG, host-set-reg:REG:VALUE, reg-list:N, "
                       "insn:HEXBYTES or a named "
                       "payload, optionally followed by @MODS (cpl3, cr4+BIT, cr4-BIT, cr0±BIT, "
                       "efer±BIT, xcr0=V, msr:I=V).")
    _add_config_options(p)
    p.add_argument("--enforce-pv-cpuid", action="store_true",
                   help="enable KVM_CAP_ENFORCE_PV_FEATURE_CPUID on the vCPU")
    p.add_argument("--disable-quirks", type=_mask, default=0, metavar="MASK",
                   help="KVM_CAP_DISABLE_QUIRKS2 mask (e.g. 0x40: MWAIT_NEVER_UD_FAULTS)")
    p.add_argument("--user-space-msr", type=_mask, default=0, metavar="MASK",
                   help="KVM_CAP_X86_USER_SPACE_MSR mask: MSR accesses KVM refuses exit to "
                   "userspace (1 INVAL, 2 UNKNOWN, 4 FILTER) instead of #GP")
    p.add_argument("--vendor", choices=("intel", "amd", "hygon"),
                   help="the guest CPUID vendor string (leaf 0) instead of the host's")
    p.add_argument("--enable-cap", action="append", default=[], metavar="NAME=ARG",
                   help="enable a VM cap with args[0]=ARG before the vCPU is created, e.g. "
                   "MSR_PLATFORM_INFO=0 or X86_DISABLE_EXITS=0x2 (repeatable)")
    p.add_argument("--msr-filter", metavar="SPEC",
                   help="KVM_X86_SET_MSR_FILTER: allow|deny[,r|w|rw:BASE:N:BITMAP]... (bit i of "
                   "BITMAP allows MSR BASE+i)")
    p.add_argument("--hyperv", action="store_true",
                   help="Hyper-V guest: the leaves of KVM_GET_SUPPORTED_HV_CPUID, with "
                   "KVM_CAP_HYPERV_ENFORCE_CPUID")
    p.add_argument("--timeout", type=float, default=1000.0, metavar="MS",
                   help="per-probe timeout in milliseconds (default 1000)")
    p.add_argument("--json", action="store_true", help="print a JSON list of results")
    p.add_argument("probes", nargs="+", metavar="PROBE")

    p = sub.add_parser("run", help="the conformance matrix: every probe of every feature, judged",
                       description="Run the conformance matrix against this host's KVM and judge "
                       "every observation against the model. Exit 0 when everything is as "
                       "expected (pass, known deviation, skip), 1 on a mismatch or error (with "
                       "--baseline: on a regression against it), 2 on usage errors, 4 when "
                       "nothing could run.")
    p.add_argument("--feature", action="append", default=[], metavar="F",
                   help="only this feature (repeatable); 'cpuid' selects the CPUID table checks; "
                   "--list shows them all")
    p.add_argument("--list", action="store_true",
                   help="list the matrix's features and groups with their result counts here, "
                   "and run nothing")
    p.add_argument("-j", "--jobs", type=int, default=0, metavar="N",
                   help="worker processes (default: the number of CPUs)")
    _add_report_options(p)
    p.add_argument("--timeout", type=float, default=1000.0, metavar="MS",
                   help="per-probe timeout in milliseconds (default 1000)")
    p.add_argument("--kernel", metavar="X.Y", help="predict for this kernel version instead of uname's")
    _add_source_option(p)

    p = sub.add_parser("rejudge", help="judge a recorded report again with the current model, offline",
                       description="Judge the observations of a report recorded by `kvmharness run` "
                       "again with this kvmharness's model and known deviations, using the host "
                       "record in the report's header (no /dev/kvm needed). Outputs and exit codes "
                       "are run's: 0 as expected, 1 on a mismatch or error (with --baseline: on a "
                       "regression), 2 when the report is unusable or lacks the host record.")
    p.add_argument("report", metavar="REPORT.json")
    _add_report_options(p)
    p.add_argument("--kernel", metavar="X.Y",
                   help="apply this kernel's rules instead of the ones the report was judged with")
    _add_source_option(p)

    p = sub.add_parser("catalogue", help="CPUID class differences between kernel trees or releases",
                       description="Print the bits whose KVM class differs between two sides, "
                       "each a Linux source tree (--source TREE, read as `run --source` reads it) "
                       "or a release of the committed catalogue (--kernel X.Y): what a patch "
                       "changes in what KVM advertises. One --source alone is compared with the "
                       "catalogue of its release. Exit 0 (differences are the answer), 2 when a "
                       "tree cannot be read.")
    p.add_argument("--source", action="append", default=[], metavar="TREE",
                   help="a Linux source tree (repeatable, at most two sides in all)")
    p.add_argument("--kernel", action="append", default=[], metavar="X.Y",
                   help="a release of the catalogue (repeatable, at most two sides in all)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("explain", help="the model's reasoning for one feature or matrix group",
                       description="Why a feature is or is not usable by a guest: supported? "
                       "emulated? in guest CPUID? KVM class for the kernel -> effective -> every "
                       "expectation for the feature's probes, each with its reason chain. A "
                       "matrix group that is no one CPU feature (`run --list`: misc_enable, "
                       "xcr0.ymm, cpuid, ...) gets the expectation of every probe `run --feature "
                       "GROUP` checks, by guest configuration.")
    p.add_argument("feature", metavar="FEATURE|GROUP")
    _add_config_options(p)
    _add_host_options(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("lint", help="check a VMM's guest CPUID table against this host and kernel",
                       description="List the features a guest CPUID table advertises that the "
                       "guest could not really use here, and why. The table may be a JSON list "
                       "of {function, index, flags, eax, ebx, ecx, edx}, a kvm_cpuid2-style "
                       "{nent, entries}, a Firecracker CPU template or cpu-template-helper dump "
                       "or fingerprint, `info --json` output, or the text of `cpuid -r`; the "
                       "shape is recognised. Exit 1 when any is flagged.")
    p.add_argument("table", metavar="TABLE")
    _add_host_options(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("vm", help="run a kvmharness command inside a kernel booted under QEMU",
                       description="Boot a kernel under QEMU with virtme-ng (the host's root shared "
                       "read-only), load kvm and the vendor module the L1 CPU calls for, and run "
                       "`kvmharness ARGS` there; report files it writes come back here, and its exit "
                       "status is this command's. A panic, oops, a boot that never reaches "
                       "userspace or a timeout exits 2 with the console's last lines. See docs/labs.md.")
    kernel = p.add_mutually_exclusive_group(required=True)
    kernel.add_argument("--kernel", metavar="PATH", help="a bzImage/vmlinuz (a built tree's, or one "
                        "with lib/modules/RELEASE beside it)")
    kernel.add_argument("--debian", metavar="VERSION|SUITE", help="Debian's kernel: 7.3, 6.12.117, "
                        "trixie, sid, ... (fetched with a private apt, verified, cached)")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                   help="auto (default): KVM when this host gives its guests VMX/SVM, else TCG")
    p.add_argument("--cpu", metavar="MODEL", help="QEMU -cpu model (default: max under TCG, host under KVM)")
    p.add_argument("--param", action="append", default=[], metavar="MODULE.PARAM=VALUE",
                   help="a kvm/kvm_amd/kvm_intel parameter inside (e.g. kvm_amd.npt=0), repeatable")
    p.add_argument("--cpus", type=int, default=2, metavar="N", help="guest CPUs (default 2)")
    p.add_argument("--memory", default="2G", metavar="SIZE", help="guest memory (default 2G)")
    p.add_argument("--timeout", type=float, default=1200, metavar="S",
                   help="seconds for the whole boot and run (default 1200)")
    p.add_argument("--console", metavar="FILE", help="keep the guest console log in FILE")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="-- ARGS...",
                   help="the kvmharness command to run inside (e.g. -- run --json r.json)")

    p = sub.add_parser("diff", help="what changed between two reports (kernels, hosts, patches)",
                       description="Compare two JSON reports by result id. Exit 1 when NEW has a "
                       "regression against OLD (pass/known/skip -> mismatch/error, or a new "
                       "failing result), else 0.")
    p.add_argument("old", metavar="OLD.json")
    p.add_argument("new", metavar="NEW.json")
    return ap


# -- commands ---------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from .host import gather_facts
    from .info import render_info
    from .guest.runner import open_kvm
    with open_kvm() as kvm:
        facts = gather_facts(kvm)
    if args.json:
        _emit(json.dumps(facts.to_json(), indent=2))
    else:
        from .guest import native
        why_not = native.unavailable_reason()
        _emit(render_info(facts))
        _emit(f"{'probe loop':<22}" + ("native (guests/probe_loop.S): CPL0 probes from the baseline run back to back"
                                       if why_not is None else f"Python, one probe per KVM_RUN call ({why_not})"))
    return EXIT_OK


def _vm_cap(text: str) -> tuple[str, int]:
    """--enable-cap NAME=ARG: a KvmCap name (KVM_CAP_ prefix optional) and its args[0]."""
    from .cpu.cpuid import parse_number
    from .kvm.constants import KvmCap
    name, sep, arg = text.partition("=")
    name = name.strip().upper().removeprefix("KVM_CAP_")
    if not sep or name not in KvmCap.__members__:
        raise UsageError(f"--enable-cap {text!r}: expected NAME=ARG with NAME a KVM_CAP_* name")
    return name, parse_number(arg, f"--enable-cap {text}")


def cmd_probe(args) -> int:
    if not 0 < args.timeout <= 600_000:
        raise UsageError(f"--timeout {args.timeout}: must be between 0 and 600000 ms")
    # Thousands of probes make tens of thousands of small objects, none in a reference cycle:
    # the cycle collector would only rescan them (~25% of the per-probe time). Back on after.
    import gc
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _probe(args)
    finally:
        if collecting:
            gc.enable()


def _probe(args) -> int:
    from . import outcome as oc
    from .conformance.config import GuestConfig, parse_msr_filter
    from .kvm.constants import KvmCap
    from .guest.bodies import REGISTER_INPUTS
    from .guest.machine import PlainBatch, describe_records
    from .guest.runner import Runner
    from .probes.payloads import guest_code, parse
    from .probes.spec import parse_plain

    # Thousands of canonical reproduce lines of the register-input kinds (cpuid, rdmsr, ...) go
    # as one table into the native loop and come back as records formatted as they are, with
    # no object per probe (Machine.run_plain); anything else, or --json, takes the general path.
    plain = None if args.json else parse_plain(args.probes, tuple(REGISTER_INPUTS))
    specs = [] if plain else [parse(p) for p in args.probes]
    config = GuestConfig("cli", tuple(args.set), tuple(args.clear), args.enforce_pv_cpuid,
                         args.disable_quirks, args.user_space_msr, args.vendor,
                         tuple(_vm_cap(c) for c in args.enable_cap),
                         parse_msr_filter(args.msr_filter) if args.msr_filter else None, args.hyperv)
    with Runner() as runner:
        hv = None
        if args.hyperv:
            if not runner.kvm.check_extension(KvmCap.SYS_HYPERV_CPUID):
                raise UsageError("--hyperv: this KVM has no KVM_GET_SUPPORTED_HV_CPUID "
                                 "(KVM_CAP_SYS_HYPERV_CPUID is 0): no Hyper-V emulation here")
            hv = runner.kvm.supported_hv_cpuid()
        vcpu = config.vcpu(runner.kvm.supported_cpuid(), hv)    # resolves feature names: errors first
        if plain:
            batch = PlainBatch(args.probes, plain)
            described = describe_records(batch, runner.run_plain(vcpu, batch, args.timeout))
        else:
            outcomes = runner.run_many(vcpu, [(spec, guest_code(spec)) for spec in specs], args.timeout)
            described = None if args.json else list(map(oc.describe, outcomes))
    # A plain probe's string is its canonical text already; a spec makes its text once.
    names = args.probes if plain else [spec.text for spec in specs]
    if args.json:
        config_json = config.to_json()
        _emit(json.dumps([{"probe": name, "config": config_json, "outcome": oc.to_json(outcome)}
                          for name, outcome in zip(names, outcomes)], indent=2))
    else:
        edits = " ".join([f"+{f}" for f in args.set] + [f"-{f}" for f in args.clear])
        width = max(map(len, names))
        lines = [f"# guest CPUID: KVM_GET_SUPPORTED_CPUID {edits}".rstrip()]
        lines += map("  ".join, zip(map(str.ljust, names, itertools.repeat(width)), described))
        _emit("\n".join(lines))
    return EXIT_OK


def _report_host(facts) -> dict:
    """The report header's host: a summary for people and diffs, and the whole host record
    (`profile`), which is what `rejudge` and `--host REPORT` judge with."""
    import socket
    d = facts.to_json()
    return {"kernel": d["kernel_release"], "backend": d["backend_module"],
            "module_params": {"kvm": d["kvm_params"], d["backend_module"]: d["backend_params"]},
            "cpu": {"vendor": d["cpu_vendor"], "family": d["cpu_family"], "model": d["cpu_model"],
                    "stepping": d["cpu_stepping"], "model_name": d.get("cpu_model_name"),
                    "microcode": d.get("microcode")},
            "nested": {"hypervisor_bit": bool(d.get("hypervisor")),
                       "signature": d.get("hypervisor_signature")},
            "lab": d.get("lab"),
            "hostname": socket.gethostname(),
            "profile": d}


def cmd_run(args) -> int:
    import datetime
    import time

    from .conformance.engine import matrix_feature, plan
    from .conformance.execute import execute
    from .host import gather_facts
    from .guest.runner import open_kvm
    from .report import VERDICTS, build_report, ktap_skip_all, progress_line
    from .model.releases import parse_release

    if not 0 < args.timeout <= 600_000:
        raise UsageError(f"--timeout {args.timeout}: must be between 0 and 600000 ms")
    if args.jobs < 0:
        raise UsageError(f"--jobs {args.jobs}: must be 0 (all CPUs) or more")
    if args.list:
        return _list_matrix(args)
    out = _ReportOutputs(args)                                # bad options and input: fail early
    selected = list(dict.fromkeys(matrix_feature(f) for f in args.feature))   # as the matrix names them
    kernel = parse_release(args.kernel) if args.kernel else None
    _check_source(args)
    try:
        with open_kvm() as kvm:
            facts = gather_facts(kvm)
    except NoKvm as e:
        if args.ktap:                   # a KTAP consumer still gets a parseable "skipped" run
            _emit(ktap_skip_all(str(e)), end="")
        raise
    profile = _with_source(facts.to_profile(kernel), args)
    items = plan(profile, selected or None)
    jobs = args.jobs or os.cpu_count() or 1

    tty = sys.stderr.isatty()
    counts = {v: 0 for v in VERDICTS}

    def progress(result):
        counts[result["verdict"]] += 1
        if tty:
            sys.stderr.write("\r" + progress_line(sum(counts.values()), len(items), counts))
            sys.stderr.flush()

    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    results = execute(items, profile, jobs, args.timeout, progress)
    if tty:
        sys.stderr.write("\n")
    report = build_report(_report_host(facts), results, started, time.monotonic() - t0,
                          {"features": selected, "jobs": jobs,
                           "kernel_rules": ".".join(map(str, profile.kernel)),
                           "rules_note": profile.rules_note, **_source_selection(profile)})
    return out.write(report)


DEFAULT_SHOW = ("mismatch", "error")


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _list_matrix(args) -> int:
    """`run --list`: the matrix's features and groups, with their result counts on this host."""
    from .conformance.engine import matrix_listing
    from .guest.runner import open_kvm
    from .host import gather_facts
    from .model.releases import parse_release
    kernel = parse_release(args.kernel) if args.kernel else None
    with open_kvm() as kvm:
        profile = _with_source(gather_facts(kvm).to_profile(kernel), args)
    rows = matrix_listing(profile)
    width = max(len("FEATURE"), *(len(r["name"]) for r in rows))
    lines = [f"{'FEATURE':<{width}}  RESULTS  CONFIGS  WHAT"]
    lines += [f"{r['name']:<{width}}  {r['results']:>7}  {r['configs']:>7}  {r['kind']}" for r in rows]
    groups = sum(1 for r in rows if r["kind"] == "group")
    lines.append(f"{len(rows) - groups} features and tables, {groups} groups, "
                 f"{sum(r['results'] for r in rows)} results (`run --feature NAME` runs one)")
    _emit("\n".join(lines))
    return EXIT_OK


class _ReportOutputs:
    """The outputs of a judged run (run, rejudge): options checked before anything runs, then
    the report written as asked, and the run's exit status."""

    def __init__(self, args):
        from .report import VERDICTS, load_report
        from .report.atomic import descriptor_of
        self.args = args
        show = VERDICTS if args.show == "all" else tuple(v.strip() for v in args.show.split(",") if v.strip())
        if not show or any(v not in VERDICTS for v in show):
            raise UsageError(f"--show {args.show!r}: a comma-separated list of {', '.join(VERDICTS)}, or 'all'")
        self.show = show
        for option in ("json", "junit", "baseline"):
            if getattr(args, option) == "":
                raise UsageError(f"--{option}: the file name is empty")
        # Standard output carries at most one machine format; the table and summary then go to stderr.
        on_stdout = [name for name, on in (("--ktap", args.ktap),
                                           ("--json", args.json and descriptor_of(args.json) == 1),
                                           ("--junit", args.junit and descriptor_of(args.junit) == 1)) if on]
        if len(on_stdout) > 1:
            raise UsageError(f"{' and '.join(on_stdout)} both want standard output")
        self.human = sys.stderr if on_stdout else sys.stdout
        self.baseline = load_report(args.baseline) if args.baseline else None

    def write(self, report: dict) -> int:
        from .report import (apply_baseline, dumps_report, exit_code, render_diff, render_table,
                             summary_line, to_junit, to_ktap)
        from .report.text import render_not_pass
        args, human = self.args, self.human
        if args.json:
            _write_report(args.json, dumps_report(report))
        if args.junit:
            _write_report(args.junit, to_junit(report))
        d = apply_baseline(self.baseline, report) if self.baseline is not None else None
        if args.ktap:
            _emit(to_ktap(report), end="")
        else:
            table = render_table(report, show=self.show)
            if table:
                _emit(table, human)
            if self.show == DEFAULT_SHOW and _isatty(human):   # a person reads it: what did not pass
                rest = render_not_pass(report)
                if rest:
                    _emit(rest.rstrip("\n"), human)
            _emit(summary_line(report), human)
        if d is not None:
            _emit(render_diff(d).rstrip("\n"), human)
            return d.exit_code
        return exit_code(report)


def cmd_rejudge(args) -> int:
    from .conformance.rejudge import rejudge
    from .report import load_report
    from .model.releases import parse_release
    if args.kernel:
        parse_release(args.kernel)                  # a bad --kernel fails before the file is read
    _check_source(args)
    out = _ReportOutputs(args)
    report = load_report(args.report)
    return out.write(rejudge(report, args.report, args.kernel, args.source))


def _source_selection(profile) -> dict:
    """The report header's record of --source (selection.classes_source)."""
    if profile.source is None:
        return {}
    return {"classes_source": {"path": profile.source.path,
                               "version": profile.source.version_text}}


def cmd_catalogue(args) -> int:
    from .cpu.source import class_sides, class_differences, render_class_differences
    sides = class_sides(args.source, args.kernel)
    diffs = class_differences(*sides)
    if args.json:
        _emit(json.dumps({"a": sides[0].label, "b": sides[1].label, "differences": diffs}, indent=2))
    else:
        _emit(render_class_differences(sides[0], sides[1], diffs).rstrip("\n"))
    return EXIT_OK


def cmd_explain(args) -> int:
    from .conformance.config import edit_cpuid
    from .conformance.engine import matrix_group
    from .cpu.features import by_ref, resolve
    from .model.explain import explain, render_explain
    from .model.profile import VcpuConfig
    group = matrix_group(args.feature)          # a matrix name that is no one CPU feature
    if group is not None:
        from .conformance.explain import explain_group, render_group
        if args.set or args.clear:
            raise UsageError(f"explain {group}: a matrix group is explained in the guest "
                             f"configurations `run --feature {group}` gives it; --set and "
                             "--clear edit the guest of a CPU feature's explanation")
        d = explain_group(_host_profile(args), group)
        _emit(json.dumps(d, indent=2) if args.json else render_group(d).rstrip("\n"))
        return EXIT_OK
    try:
        feature = by_ref(resolve(args.feature))     # unknown names fail before touching KVM
    except UsageError as e:
        from .conformance.engine import matrix_groups
        from .errors import did_you_mean
        near = did_you_mean(str(args.feature).strip().lower(), matrix_groups())
        if not near:
            raise
        raise UsageError(f"{e} (or the matrix group {near.removeprefix('; did you mean: ')})") \
            from None
    if feature is None:
        raise UsageError(f"explain {args.feature!r}: no catalogued CPU feature at that bit")
    host = _host_profile(args)
    vcpu = VcpuConfig(edit_cpuid(host.supported, tuple(args.set), tuple(args.clear)))
    d = explain(host, vcpu, feature.name)
    _emit(json.dumps(d, indent=2) if args.json else render_explain(d).rstrip("\n"))
    return EXIT_OK


def cmd_lint(args) -> int:
    from .cpu.tables import read_table
    from .model.lint import flagged, lint, lint_report, render_lint, vendor_warning
    source = read_table(args.table)             # malformed input fails before touching KVM
    host = _host_profile(args)
    findings = lint(host, source.table)
    warnings = [w for w in (vendor_warning(host, source.table),) if w]
    if host.rules_note:                 # never judged with other rules silently
        _emit(f"lint: {host.rules_note}", sys.stderr if args.json else None)
    if args.json:
        release = os.uname().release if args.host is None else ".".join(map(str, host.kernel))
        _emit(json.dumps(lint_report(host, release, source.to_json(args.table), findings,
                                     warnings + [host.rules_note] * bool(host.rules_note)),
                         indent=2))
    else:
        _emit(render_lint(findings, source.notes, warnings).rstrip("\n"))
    return EXIT_MISMATCH if flagged(findings) else EXIT_OK


def cmd_diff(args) -> int:
    from .report import diff_reports, load_report, render_diff
    old, new = load_report(args.old), load_report(args.new)
    d = diff_reports(old, new, args.old, args.new)
    _emit(render_diff(d).rstrip("\n"))
    return d.exit_code


def cmd_vm(args) -> int:
    from .lab import vm
    from .lab.kernel import kernel_from_debian, kernel_from_path
    inner = args.args[1:] if args.args[:1] == ["--"] else args.args
    if args.cpus < 1 or args.cpus > 64:
        raise UsageError(f"--cpus {args.cpus}: between 1 and 64")
    if not 0 < args.timeout <= 24 * 3600:
        raise UsageError(f"--timeout {args.timeout}: seconds, more than 0")
    params = vm.parse_params(args.param)
    memory = vm.parse_memory(args.memory)
    vm.check_command(inner)                 # a usage error inside fails before anything boots
    vm.qemu_binary(), vm.vng_binary(), vm.check_udev()
    say = lambda msg: print(msg, file=sys.stderr, flush=True)   # noqa: E731
    kernel = (kernel_from_path(args.kernel) if args.kernel
              else kernel_from_debian(args.debian, say))
    res = vm.run_vm(kernel, inner, accel=args.accel, cpu=args.cpu, params=params, cpus=args.cpus,
                    memory=memory, timeout_s=args.timeout, keep_console=args.console)
    t = res.timings
    say(f"vm: {kernel.release} under {res.lab['accel'].upper()} (-cpu {res.lab['cpu']}, QEMU "
        f"{res.lab['qemu']}): userspace at {t.get('userspace_s')} s, /dev/kvm at {t.get('dev_kvm_s')} s, "
        f"kvmharness {' '.join(inner[:1])} took {t.get('run_s')} s, {t.get('wall_s')} s wall; exit {res.status}")
    return res.status


COMMANDS = {"info": cmd_info, "probe": cmd_probe, "run": cmd_run, "explain": cmd_explain,
            "lint": cmd_lint, "diff": cmd_diff, "rejudge": cmd_rejudge, "catalogue": cmd_catalogue,
            "vm": cmd_vm}


def _write_report(path: str, text: str) -> None:
    """A report to FILE (see report/atomic.py); to a pipe whose reader has gone, like _emit: the
    output ends, the command goes on to its verdict."""
    from .report import write_atomic
    from .report.atomic import descriptor_of
    try:
        write_atomic(path, text)
    except BrokenPipeError:
        fd = descriptor_of(path)
        if fd is not None:
            _reader_gone(fd)


def _emit(text: str, file=None, end: str = "\n") -> None:
    """Command output. A reader that has gone away (`| head -1`) ends the output, not the
    command: its exit status stays the one it computed (a mismatch must still exit 1 in CI).
    Output that cannot be written at all (a full disk, an I/O error) is an environment error."""
    file = file or sys.stdout
    try:
        file.write(text + end)
        file.flush()
    except BrokenPipeError:
        _reader_gone(file.fileno())
    except OSError as e:
        name = "standard error" if file is sys.stderr else "standard output"
        _reader_gone(file.fileno())         # Python's flush at exit must not fail again
        raise EnvironmentProblem(f"cannot write {name}: {e.strerror or e}") from None


def _reader_gone(fd: int) -> None:
    """Point a descriptor whose reader has gone at /dev/null: nothing more is written for it,
    and Python's own flush at exit cannot fail on it again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def reproduce_line(config_args: list[str], probe: str) -> str:
    return shlex.join(["kvmharness", "probe", *config_args, probe])


def _check_process_environment() -> None:
    """What every command needs from the process it runs in, checked before anything is done."""
    for fd, name in ((1, "standard output"), (2, "standard error")):
        try:
            os.fstat(fd)
        except OSError:
            # A closed descriptor would be reused by the next open() (/dev/kvm as "stdout"):
            # park /dev/null there, then refuse.
            devnull = os.open(os.devnull, os.O_WRONLY)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
            raise EnvironmentProblem(f"{name} is closed (run with it open, e.g. >/dev/null)")
    try:
        os.getcwd()
    except OSError as e:
        raise EnvironmentProblem(f"the working directory is unusable ({e.strerror}): "
                                 "cd to a directory that exists") from None


def main(argv: list[str] | None = None) -> int:
    try:
        _check_process_environment()
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except HarnessError as e:
        _print_error(f"kvmharness: {printable(e, 500)}")
        for line in getattr(e, "console_tail", ()):     # a lab that crashed: what its console said
            _print_error(f"  | {printable(line, 300)}")
        return e.exit_code
    except KeyboardInterrupt:
        _print_error("kvmharness: interrupted")
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:                      # a harness bug: one line unless asked for more
        if os.environ.get("KVMHARNESS_DEBUG"):
            raise
        _print_error(f"kvmharness: internal error: {type(e).__name__}: {printable(e, 500)} "
                     "(set KVMHARNESS_DEBUG=1 for the traceback)")
        return EXIT_MISMATCH


def _print_error(line: str) -> None:
    """The one line of an error, on stderr if it can take it (else nothing more can be said)."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, AttributeError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
