"""The bulk path of `kvmharness probe` (spec.parse_plain, machine.PlainBatch, Machine.run_plain,
describe_records) gives what the general path gives, probe for probe: the same parse, the same
loop entries, the same outcomes, the same text (scripts/bench_probe.py measures the speed)."""

from __future__ import annotations

import argparse
import ctypes
import io
import random
from contextlib import redirect_stdout

import pytest

from kvmharness import cli
from kvmharness import outcome as oc
from kvmharness.errors import UsageError
from kvmharness.guest import native
from kvmharness.guest.bodies import REGISTER_INPUTS
from kvmharness.guest.machine import (Machine, PlainBatch, Records, _decode_records,
                                      describe_records)
from kvmharness.guest.runner import Runner
from kvmharness.kvm import structs as ks
from kvmharness.model.profile import VcpuConfig
from kvmharness.probes import spec as ps
from kvmharness.probes.payloads import guest_code, parse

KINDS = tuple(REGISTER_INPUTS)


def _canonical_texts(rng: random.Random, n: int) -> list[str]:
    """Canonical probe strings of the register-input kinds, values near their limits and small."""
    out = []
    for _ in range(n):
        kind = rng.choice(KINDS)
        args = []
        for name in ps.KINDS[kind][0]:
            limit = ps._LIMITS[name]
            args.append(rng.choice([0, 1, rng.randrange(limit + 1), limit]))
        out.append(ps.ProbeSpec(kind, tuple(args)).text)
    return out


def _variants(text: str) -> list[str]:
    """Strings near a canonical one that parse_probe may accept but that are spelt otherwise."""
    kind, *args = text.split(":")
    out = [text.upper(), f" {text}", f"{text} ", f"{text}@cpl3", f"{text}@cr4+18", f"{text}:0",
           kind, f"{kind}:" + ":".join(a.replace("0x", "0x0") for a in args),
           f"{kind}:" + ":".join(str(int(a, 0)) if a.startswith("0x") else hex(int(a)) for a in args),
           f"{kind}:" + ":".join(f"0{a}" for a in args), f"{kind}:" + ":".join(f"{a}_" for a in args)]
    return out


def _expected(text: str):
    """What the general path makes of one string: its spec if it is plain, else None."""
    try:
        spec = ps.parse_probe(text)
    except UsageError:
        return None
    plain = spec.kind in KINDS and spec.from_baseline and spec.text == text
    return spec if plain else None


def test_parse_plain_agrees_with_parse_probe_string_by_string():
    rng = random.Random(16)
    texts = _canonical_texts(rng, 300)
    texts += [v for t in texts[:60] for v in _variants(t)]
    texts += ["cpuid:0x1:4294967296", "rdmsr:0x100000000", "xgetbv:4294967296", "vmcall:18446744073709551616",
              "vmcall:18446744073709551615", "wrmsr:0x10:0x1", "cr4:5", "insn:90", "shstk-near-ret",
              "host-rdmsr:0x10", "get-cpuid2:0x1:0", "", ":", "cpuid::", "cpuid:0x:0", "cpuid:0x1:-1"]
    for text in texts:
        spec = _expected(text)
        plain = ps.parse_plain([text], KINDS)
        assert (plain is None) == (spec is None), text
        if spec is not None:
            assert plain.kinds == [spec.kind] and plain.rows == {spec.kind: [0]}
            assert plain.args == {spec.kind: tuple([a] for a in spec.args)}, text


@pytest.mark.parametrize("mixed", [False, True])
def test_parse_plain_of_a_list_gives_each_strings_kind_row_and_arguments(mixed):
    rng = random.Random(17)
    texts = _canonical_texts(rng, 500) if mixed else [f"cpuid:{i:#x}:{i}" for i in range(500)]
    plain = ps.parse_plain(texts, KINDS)
    specs = [ps.parse_probe(t) for t in texts]
    assert plain.kinds == [s.kind for s in specs]
    for kind, rows in plain.rows.items():
        assert rows == [i for i, s in enumerate(specs) if s.kind == kind]
        assert list(zip(*plain.args[kind])) == [specs[i].args for i in rows]
    assert sorted(i for rows in plain.rows.values() for i in rows) == list(range(len(texts)))


@pytest.mark.parametrize("text", ["vmcall:" + "1" * 5000, "cpuid:0x1:" + "9" * 4301,
                                  "xgetbv:" + "1" * 21, "rdmsr:0x" + "f" * 5000])
def test_a_number_longer_than_any_limit_is_not_plain_and_is_the_general_paths_usage_error(text):
    """No argument's limit is above 2**64 - 1 (20 decimal digits, 16 hex): longer digit strings
    are not plain, and parse_probe refuses them in one line, as out of range. int() refuses a
    decimal string of more than 4300 digits (sys.int_info.default_max_str_digits): converting it
    in parse_plain was a ValueError, `kvmharness probe` an internal error (exit 1) instead of the
    usage error; and parse_number called it "not a number"."""
    assert all(len(str(limit)) <= 20 and len(f"{limit:x}") <= 16 for limit in ps._LIMITS.values())
    assert ps.parse_plain([text], KINDS) is None
    assert ps.parse_plain(["cpuid:0x1:0", text], KINDS) is None
    with pytest.raises(UsageError, match="out of range"):
        ps.parse_probe(text)
    assert cli.main(["probe", "cpuid:0x1:0", text]) == 2


def test_one_string_not_plain_makes_the_list_not_plain():
    good = [f"cpuid:0x1:{i}" for i in range(10)]
    for bad in ("cpuid:1:0", "cpuid:0x1:0@cpl3", "insn:90", "cpuid:0x1:0\ncpuid:0x1:1", "rdmsr:0x10\n"):
        for at in (0, 5, 10):
            assert ps.parse_plain(good[:at] + [bad] + good[at:], KINDS) is None, (bad, at)
    assert ps.parse_plain([], KINDS) is None
    assert ps.parse_plain(["cpuid:0x1:0\ncpuid:0x1:1", "x"], KINDS) is None    # two lines, two strings


def _entry(table, i: int) -> tuple:
    return tuple(table[i * 8:i * 8 + 7])


def _deref(fields: tuple) -> tuple:
    """A loop entry with its addresses replaced by the bytes they point at."""
    gpa, length, code_at, regs_at, flags, msr, tag = fields
    return (gpa, length, ctypes.string_at(code_at, length),
            ctypes.string_at(regs_at, ctypes.sizeof(ks.kvm_regs)), flags, msr, tag)


@pytest.mark.parametrize("mixed", [False, True])
def test_a_plain_batch_holds_the_loop_entry_of_each_probes_guest_code(mixed):
    texts = (_canonical_texts(random.Random(18), 200) if mixed
             else [f"rdmsr:{0x12340000 + i:#x}" for i in range(200)])
    batch = PlainBatch(texts, ps.parse_plain(texts, KINDS))
    assert batch.count == len(texts) and len(batch.table) == 8 * len(texts)
    for i, text in enumerate(texts):
        code = guest_code(parse(text))
        assert _deref(_entry(batch.table, i)) == _deref(native.PROBE_ENTRY.unpack(code.loop_entry)), text
        spec, code_i = batch[i]
        assert spec == parse(text) and code_i == code


def _record(tag: int, *regs: int) -> bytes:
    return native.RESULT.pack(tag, *regs, *[0] * (5 - len(regs)))


def test_describe_records_equals_describing_the_decoded_outcomes():
    texts = ["cpuid:0x1:0", "rdmsr:0x10", "xgetbv:0", "vmcall:3", "cpuid:0x7:0", "rdmsr:0x12345678",
             "cpuid:0x0:0", "cpuid:0xd:1", "vmmcall:0"]
    batch = PlainBatch(texts, ps.parse_plain(texts, KINDS))
    pairs = [(s, guest_code(s)) for s in map(parse, texts)]

    def done(i, *values):
        return _record(pairs[i][1].loop_entry[native.PROBE_DONE_TAG], *values)

    gp = _record(native.TAG_FAULT, 13, 0, 0x14000, 8, 0)
    pf = _record(native.TAG_FAULT, 14, 2, 0x14002, 8, 0xdead000)
    blocks = [done(0, 0xa10f11, 0x20800, 0xf7f83203, 0x178bfbff), done(1, 0x1234, 0, 0, 0x5),
              gp, done(3, 1 << 63, 2, 3, 4), done(4, 1, 2, 3, 4)]
    out = Records()
    out.records(memoryview(b"".join(blocks)), 5)
    out.add(oc.vm_exit("INTERNAL_ERROR", suberror=1))          # a probe the loop stopped at
    out.records(memoryview(pf + done(7, 0, 0, 0, 0)), 2)
    out.add(oc.timeout(1000.0))
    records = b"".join(blocks)
    expected = [oc.describe(o) for o in _decoded(pairs[:5], records)]
    expected += ["exit INTERNAL_ERROR/1"]
    expected += [oc.describe(o) for o in _decoded(pairs[6:8], pf + done(7, 0, 0, 0, 0))]
    expected += ["timeout after 1000.0 ms"]
    assert describe_records(batch, out) == expected
    assert expected[1] == "ok rax=0x1234 rdx=0x5" and expected[2] == "#GP(0) at 0x14000"
    # A block of one kind, all DONE: the column path.
    cpuids = [f"cpuid:0x1:{i}" for i in range(50)]
    batch = PlainBatch(cpuids, ps.parse_plain(cpuids, KINDS))
    values = [(i, i << 8, i << 16, (1 << 64) - 1 - i) for i in range(50)]
    block = b"".join(_record(native.TAG_DONE, *v) for v in values)
    out = Records()
    out.records(memoryview(block), 50)
    assert describe_records(batch, out) == [oc.describe(oc.ok(dict(zip(native.RESULT_REGS, v))))
                                            for v in values]


def _decoded(pairs, records: bytes) -> list[dict]:
    return _decode_records(pairs, memoryview((ctypes.c_char * len(records)).from_buffer_copy(records)))


def test_the_probe_list_argparse_shortcut_gives_argparses_own_result(monkeypatch):
    argvs = [["probe", "cpuid:0x1:0"], ["probe", "--", "cpuid:0x1:0", "rdmsr:0x10"],
             ["probe", "--timeout", "5", "a", "b", "--json"], ["probe", "a", "--", "--", "b"],
             ["probe", "--set", "avx", "--", "-x"]]
    def outcome(argv):
        try:
            return vars(cli.build_parser().parse_args(argv))
        except UsageError as e:
            return str(e)

    argvs += [["frob", "x"], ["info", "--json"], ["explain", "pku", "--kernel", "6.12"], ["run"]]
    ours = [outcome(a) for a in argvs]
    assert ours[-4].startswith("argument COMMAND: invalid choice: 'frob'")
    monkeypatch.setattr(cli._Parser, "_get_values", argparse.ArgumentParser._get_values)
    assert ours == [outcome(a) for a in argvs]


def _later_pythons_get_values(self, action, arg_strings):
    """argparse's _get_values for a positional list of plain strings as Pythons after
    python/cpython#81691 have it (CPython main's argparse read): the separating "--" was taken
    out by consume_positionals before, and nothing is taken out here."""
    return list(arg_strings)


@pytest.mark.parametrize("base", [argparse.ArgumentParser._get_values, _later_pythons_get_values],
                         ids=["this-python", "later-pythons"])
def test_the_argparse_shortcut_leaves_a_double_dash_to_the_running_pythons_argparse(base,
                                                                                    monkeypatch):
    """Where "--" is handled moved between Python releases: in 3.11.7, 3.12.1 and 3.13.0
    _get_values takes the first "--" out of a positional's strings; later ones take the separator
    out before and pass a literal "--" (one after the separator) through. The shortcut must give whatever the running
    argparse gives: a list with a "--" is argparse's own business (`probe -- --` on a later
    Python: the probe '--', a usage error, not an empty list and an internal error)."""
    monkeypatch.setattr(argparse.ArgumentParser, "_get_values", base)
    parser = cli.build_parser()
    probe = parser._subparsers._group_actions[0].choices["probe"]
    (action,) = [a for a in probe._actions if a.dest == "probes"]
    for strings in (["a"], ["a", "b"], ["--"], ["a", "--"], ["--", "a", "--", "b"], ["a", "--", "--"]):
        assert probe._get_values(action, list(strings)) == base(probe, action, list(strings)), strings


# -- on /dev/kvm ----------------------------------------------------------------------------------
# Outcomes that do not vary between runs (no TSC, no performance counters): CPUID leaves, MSRs
# no CPU has (#GP), EFER and APIC_BASE, XCR0 and XINUSE.
STABLE = ["cpuid:0x0:0", "cpuid:0x1:0", "cpuid:0x7:0", "rdmsr:0x12345678", "cpuid:0xd:0", "xgetbv:0",
          "cpuid:0x80000001:0", "rdmsr:0xc0000080", "xgetbv:1", "cpuid:0x40000000:0", "rdmsr:0x1b",
          "rdmsr:0x12345679", "cpuid:0xd:1", "xgetbv:0", "cpuid:0x1:0"]


def _general(runner, config, texts) -> list[str]:
    return [oc.describe(o) for o in runner.run_many(config, [(s, guest_code(s)) for s in map(parse, texts)])]


def _bulk(runner, config, texts) -> list[str]:
    batch = PlainBatch(texts, ps.parse_plain(texts, KINDS))
    return describe_records(batch, runner.run_plain(config, batch))


@pytest.mark.kvm
@pytest.mark.parametrize("user_space_msr", [0, 0x3])
def test_bulk_outcomes_are_the_general_paths_on_this_kvm(kvm, user_space_msr):
    """With user-space MSR exits the #GP probes stop the loop: handed back and decoded as
    run_probe would, then the batch goes on."""
    config = VcpuConfig(kvm.supported_cpuid(), user_space_msr=user_space_msr)
    cpuids = [f"cpuid:{leaf:#x}:{sub}" for leaf in (0, 1, 7, 0xd) for sub in range(3)]
    with Runner(kvm) as runner:
        for texts in (STABLE, cpuids, STABLE * 20):
            assert _bulk(runner, config, texts) == _general(runner, config, texts)
        assert runner.machines_created == 1


@pytest.mark.kvm
def test_without_the_native_loop_the_bulk_path_takes_run_many(kvm, monkeypatch):
    config = VcpuConfig(kvm.supported_cpuid())
    with Runner(kvm) as runner:
        expected = _general(runner, config, STABLE)
        monkeypatch.setattr(native, "_loaded", (None, "test: no native loop"))
        assert _bulk(runner, config, STABLE) == expected


@pytest.mark.kvm
def test_a_machine_that_breaks_in_a_bulk_batch_is_replaced_for_the_rest(kvm, monkeypatch):
    config = VcpuConfig(kvm.supported_cpuid())
    real = Machine.run_plain

    def breaks_after_five(self, batch, timeout_ms):
        head = batch.texts[:5]
        out = real(self, PlainBatch(head, ps.parse_plain(head, KINDS)), timeout_ms)
        self.broken = "test: broken after five probes"
        return out

    with Runner(kvm) as runner:
        expected = _general(runner, config, STABLE)
    monkeypatch.setattr(Machine, "run_plain", breaks_after_five)
    with Runner(kvm) as runner:
        assert _bulk(runner, config, STABLE) == expected
        assert runner.machines_created == 2


@pytest.mark.kvm
def test_the_probe_command_prints_the_same_on_both_paths(monkeypatch):
    def command(texts):
        buf = io.StringIO()
        with redirect_stdout(buf):
            assert cli.main(["probe", *texts]) == 0
        return buf.getvalue()

    texts = STABLE * 3
    assert ps.parse_plain(texts, KINDS) is not None         # the first command takes the bulk path
    bulk = command(texts)
    monkeypatch.setattr(ps, "parse_plain", lambda *a: None)
    assert command(texts) == bulk
    assert bulk.splitlines()[4].split() == ["rdmsr:0x12345678", "#GP(0)", "at", "0x14000"]
