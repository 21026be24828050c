"""lint's inputs: every shape VMM users have (tests/data/lint/README.md), recognised by content;
the vendor-mismatch warning; `lint --json`'s schema and header. Pure data: no /dev/kvm (the CLI
runs use --host)."""

from __future__ import annotations

import json

import pytest

from kvmharness.cpu.cpuid import CpuidTable
from kvmharness.cpu.tables import SHAPES, parse_bitmap, read_table
from kvmharness.errors import UsageError
from kvmharness.model import lint
from kvmharness.model.lint import lint_report_problem, vendor_warning

from profiles import GENOA_618, PROFILES, SPR_618, fc_profile

LINT = PROFILES.parent / "lint"
GENOA = PROFILES / f"{GENOA_618}.json"


@pytest.mark.parametrize("name,shape", [
    (GENOA, "json-list"), (LINT / "genoa-6.18-kvm_cpuid2.json", "kvm_cpuid2"),
    (LINT / "genoa-6.18-fc-dump.json", "firecracker-dump"),
    (LINT / "genoa-6.18-fc-fingerprint.json", "firecracker-dump")])
def test_every_genoa_shape_reads_as_the_same_table(name, shape):
    got = read_table(str(name))
    assert got.shape == shape
    assert got.table == CpuidTable.load(str(GENOA)) and len(got.table) > 40


def test_fingerprint_says_which_kernel_it_was_taken_on():
    got = read_table(str(LINT / "genoa-6.18-fc-fingerprint.json"))
    assert any("6.18.30" in n for n in got.notes)


def test_a_template_is_linted_for_what_it_forces_on():
    got = read_table(str(LINT / "fc-template-cet-on.json"))
    assert got.shape == "firecracker-template" and "x" in got.notes[0]
    t = got.table
    assert t.reg(7, 0, "ecx") == 1 << 7 and t.reg(7, 0, "edx") == 1 << 20     # SHSTK, IBT only
    assert t.reg(1, 0, "ecx") == 1 << 31                                      # HYPERVISOR
    findings = lint(fc_profile(GENOA_618), t)
    flagged = {f["feature"] for f in findings if f["flagged"]}
    assert flagged == {"ibt"}            # SVM never supports IBT; SHSTK is KVM's on Genoa 6.18


def test_bitmaps():
    assert parse_bitmap("0b" + "0" * 31 + "1", "t") == (1, 0xFFFFFFFF)
    assert parse_bitmap("0b1" + "x" * 31, "t") == (1 << 31, 1 << 31)
    assert parse_bitmap("0b" + "_".join(["0000"] * 8), "t") == (0, 0xFFFFFFFF)
    for bad in ("0b101", "1" * 34, "0b" + "2" * 32, 5, None):
        with pytest.raises(UsageError):
            parse_bitmap(bad, "t")


def test_cpuid_r_uses_cpu_0_of_a_multi_cpu_dump_and_says_so(tmp_path):
    got = read_table(str(LINT / "this-host-cpuid-r.txt"))
    assert got.shape == "cpuid-r" and "CPU 0" in got.notes[0]
    assert got.table.reg(0, 0, "ebx") == 0x68747541                  # "Auth"
    assert got.table.entry(7, 0).flags == 1                          # subleaves matter for 7
    one = tmp_path / "one.txt"
    text = (LINT / "this-host-cpuid-r.txt").read_text()
    one.write_text(text[:text.index("CPU 1:")].replace("CPU 0:", "CPU:"))
    single = read_table(str(one))
    assert single.notes == [] and single.table == got.table


def test_cpuid_r_bad_line_names_its_number(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("CPU 0:\n   0x00000000 0x00: eax=0x1 ebx=0x2 ecx=0x3 edx=0x4\n   vendor = \x1b[31m\n")
    with pytest.raises(UsageError) as e:
        read_table(str(bad))
    assert "line 3" in str(e.value) and "\x1b" not in str(e.value)


@pytest.mark.parametrize("content", [b"garbage\n", b'{"a": 1}', b"\xff\xfe", b"42", b'"s"'])
def test_an_unknown_shape_is_one_line_listing_the_accepted_ones(tmp_path, content):
    f = tmp_path / "x"
    f.write_bytes(content)
    with pytest.raises(UsageError) as e:
        read_table(str(f))
    msg = str(e.value)
    assert "\n" not in msg and all(shape in msg for shape in SHAPES)


@pytest.mark.parametrize("doc,words", [
    ({"nent": 2, "entries": [{"function": 0}]}, '"nent" is 2'),
    ({"nent": 1, "entries": 5}, "entries"),
    ({"cpuid_modifiers": [{"leaf": "0xzz", "modifiers": []}]}, "not a number"),
    ({"cpuid_modifiers": [{"leaf": "0x1", "modifiers": [{"register": "esi", "bitmap": "0b"}]}]},
     "register"),
    ({"cpuid_modifiers": [{"leaf": "0x1"}]}, "missing 'modifiers'"),
    ([{"function": 0}] * 5000, "at most 4096")])
def test_malformed_known_shapes(tmp_path, doc, words):
    f = tmp_path / "t.json"
    f.write_text(json.dumps(doc))
    with pytest.raises(UsageError) as e:
        read_table(str(f))
    assert words in str(e.value)


def test_the_host_record_shape_is_its_supported_table():
    got = read_table(str(LINT / "this-host-info.json"))
    assert got.shape == "host-record"
    assert got.table.reg(0, 0, "ebx") == 0x68747541 and len(got.table) > 10


def test_vendor_mismatch_warns():
    spr, genoa = CpuidTable.load(str(PROFILES / f"{SPR_618}.json")), CpuidTable.load(str(GENOA))
    w = vendor_warning(fc_profile(GENOA_618), spr)
    assert w and "GenuineIntel" in w and "AuthenticAMD" in w
    assert vendor_warning(fc_profile(GENOA_618), genoa) is None
    assert vendor_warning(fc_profile(SPR_618), CpuidTable()) is None     # no leaf 0: no claim


def _cli(args, capsys):
    from kvmharness.cli import main
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_lint_json_has_a_schema_and_a_header(capsys):
    host = str(PROFILES / f"{GENOA_618}.json")
    code, out, err = _cli(["lint", "--json", "--host", host, "--kernel", "6.18",
                           str(LINT / "fc-template-cet-on.json")], capsys)
    doc = json.loads(out)
    assert lint_report_problem(doc) is None, lint_report_problem(doc)
    assert doc["schema"] == "kvmharness-lint/1" and doc["kernel_rules"] == "6.18"
    assert doc["host"]["backend"] == "amd" and doc["host"]["vendor"] == "amd"
    assert doc["input"]["shape"] == "firecracker-template" and doc["input"]["notes"]
    assert code == 1 and doc["summary"]["flagged"] == 1 and err == ""


def test_lint_text_shows_notes_and_the_vendor_warning(capsys):
    host = str(PROFILES / f"{GENOA_618}.json")
    code, out, err = _cli(["lint", "--host", host, str(PROFILES / f"{SPR_618}.json")], capsys)
    first = out.splitlines()[0]
    assert first.startswith("warning: the table's CPU vendor is GenuineIntel")
    code, out, err = _cli(["lint", "--host", host, str(LINT / "this-host-cpuid-r.txt")], capsys)
    assert out.startswith("note: `cpuid -r` dump of 2 CPUs")


def test_lint_report_problem_catches_a_wrong_summary(capsys):
    host = str(PROFILES / f"{GENOA_618}.json")
    code, out, _ = _cli(["lint", "--json", "--host", host, str(GENOA)], capsys)
    doc = json.loads(out)
    assert lint_report_problem(doc) is None
    doc["summary"]["flagged"] += 1
    assert "summary" in lint_report_problem(doc)
