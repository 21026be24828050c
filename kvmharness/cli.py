"""Command line: thin front-ends over the engine. Every user error is one line and an exit code.

Exit codes (kselftest): 0 all as expected, 1 mismatch or failure, 2 usage or environment error,
4 nothing could run (no /dev/kvm, no permission).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from . import __version__
from .errors import EXIT_MISMATCH, EXIT_OK, EXIT_USAGE, HarnessError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message):          # argparse's own errors: one line, exit 2
        where = self.prog.removeprefix("kvmharness").strip()
        raise UsageError(f"{where}: {message}" if where else message)


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="F",
                   help="set feature F in the guest CPUID (a name such as shstk, or LEAF.SUBLEAF.REG.BIT)")
    p.add_argument("--clear", action="append", default=[], metavar="F",
                   help="clear feature F in the guest CPUID")


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
                       "xgetbv:INDEX, xsetbv:INDEX:VALUE, host-xcr0:VALUE, insn:HEXBYTES or a named "
                       "payload, optionally followed by @MODS (cpl3, cr4+BIT, cr4-BIT, cr0±BIT, "
                       "efer±BIT, xcr0=V, msr:I=V).")
    _add_config_options(p)
    p.add_argument("--enforce-pv-cpuid", action="store_true",
                   help="enable KVM_CAP_ENFORCE_PV_FEATURE_CPUID on the vCPU")
    p.add_argument("--timeout", type=float, default=1000.0, metavar="MS",
                   help="per-probe timeout in milliseconds (default 1000)")
    p.add_argument("--json", action="store_true", help="print a JSON list of results")
    p.add_argument("probes", nargs="+", metavar="PROBE")
    return ap


# -- commands ---------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from .host import gather_facts
    from .info import render_info
    from .kvm.binding import Kvm
    with Kvm.open() as kvm:
        facts = gather_facts(kvm)
    if args.json:
        print(json.dumps(facts.to_json(), indent=2))
    else:
        print(render_info(facts))
    return EXIT_OK


def cmd_probe(args) -> int:
    from . import outcome as oc
    from .conformance.config import GuestConfig
    from .guest.runner import Runner
    from .probes.payloads import PAYLOADS, payload_names
    from .probes.spec import parse_probe

    if not 0 < args.timeout <= 600_000:
        raise UsageError(f"--timeout {args.timeout}: must be between 0 and 600000 ms")
    specs = [parse_probe(p, payload_names()) for p in args.probes]
    config = GuestConfig("cli", tuple(args.set), tuple(args.clear), args.enforce_pv_cpuid)
    with Runner() as runner:
        vcpu = config.vcpu(runner.kvm.supported_cpuid())     # resolves feature names: errors first
        results = []
        for spec in specs:
            code = PAYLOADS[spec.args[0]].code() if spec.kind == "payload" else None
            outcome = runner.run(vcpu, spec, code, args.timeout)
            results.append({"probe": str(spec), "config": config.to_json(), "outcome": outcome})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        edits = " ".join([f"+{f}" for f in args.set] + [f"-{f}" for f in args.clear])
        print(f"# guest CPUID: KVM_GET_SUPPORTED_CPUID {edits}".rstrip())
        width = max(len(r["probe"]) for r in results)
        for r in results:
            print(f"{r['probe']:<{width}}  {oc.describe(r['outcome'])}")
    return EXIT_OK


COMMANDS = {"info": cmd_info, "probe": cmd_probe}


def reproduce_line(config_args: list[str], probe: str) -> str:
    return shlex.join(["kvmharness", "probe", *config_args, probe])


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except HarnessError as e:
        print(f"kvmharness: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("kvmharness: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:                      # a harness bug: one line unless asked for more
        if os.environ.get("KVMHARNESS_DEBUG"):
            raise
        print(f"kvmharness: internal error: {type(e).__name__}: {e} "
              "(set KVMHARNESS_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_MISMATCH


if __name__ == "__main__":
    sys.exit(main())
