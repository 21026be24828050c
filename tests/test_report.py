"""Report layer: schema validation, exit codes, atomic writes, KTAP, JUnit and text rendering."""

import json
import math
import os
import random
import re
import stat
import threading
import xml.etree.ElementTree as ET

import pytest

from kvmharness.errors import UsageError
from kvmharness.report import (SCHEMA, VERDICTS, build_report, dumps_report, report_problem,
                               exit_code, load_report, progress_line, render_table, summary_line,
                               to_junit, to_ktap, validate_report, write_atomic)
from kvmharness.report import atomic as atomic_mod
from kvmharness.report.ktap import ktap_name
from kvmharness.report.schema import id_problem
from tests.reports import HOST, report, result

def sample_results():
    return [
        result("shstk/claimed-unsupported/cr4.cet", "mismatch",
               observed={"kind": "ok", "regs": {"rax": "0x800620"}}),
        result("shstk/base/cr4.cet"),
        result("ibt/base/cpuid.7.0.edx.20", "skip", category="table"),
        result("shstk/pvm/cr4.cet", "known"),
        result("la57/base/cr4.la57", "error",
               observed={"kind": "ioctl_error", "ioctl": "KVM_SET_SREGS", "errno": 22,
                         "error": "EINVAL"}),
        result("ibt/base/cr4.cet"),
    ]


def make_report(results=None):
    return report(sample_results() if results is None else results,
                  {"features": ["shstk", "ibt", "la57"], "jobs": 2})


# -- build / validate ------------------------------------------------------------------------
def test_build_report_sorts_counts_and_validates():
    rep = make_report()
    assert rep["schema"] == SCHEMA == "kvmharness-report/1"
    ids = [r["id"] for r in rep["results"]]
    assert ids == sorted(ids)
    assert rep["summary"] == {"pass": 2, "mismatch": 1, "known": 1, "unpredicted": 0, "skip": 1,
                              "error": 1, "total": 6}
    assert set(VERDICTS) == {"pass", "mismatch", "known", "unpredicted", "skip", "error"}
    assert validate_report(rep, "x.json") is rep
    # JSON round trip keeps it valid
    assert validate_report(json.loads(dumps_report(rep)), "x.json") == rep


def test_dumped_report_has_one_result_per_line():
    """dumps_report: an indented header, then each result alone on one line (grep/jq -c work),
    ASCII only, newline-terminated; an empty result list is still valid JSON."""
    rep = make_report()
    text = dumps_report(rep)
    assert text.endswith("}\n") and text.isascii()
    lines = text.splitlines()
    rows = [json.loads(line.strip().rstrip(",")) for line in lines if line.startswith('    {"id": ')]
    assert rows == rep["results"]
    assert '  "schema": "kvmharness-report/1",' in lines and '  "results": [' in lines
    empty = dict(rep, results=[], summary=dict.fromkeys(rep["summary"], 0))
    assert json.loads(dumps_report(empty)) == empty


def test_build_report_accepts_datetime():
    import datetime as dt
    rep = build_report(HOST, [], dt.datetime(2026, 11, 25, 10, 0, 0, 123), 0, {})
    assert rep["started"] == "2026-11-25T10:00:00Z"


def test_build_report_rejects_engine_bugs_as_valueerror():
    with pytest.raises(ValueError, match="duplicate id"):
        make_report([result("a/b/c"), result("a/b/c")])


def _mutate(fn):
    rep = make_report()
    fn(rep)
    return rep


def _set_result(which, key, value):
    """Set a key of the first result (which=0) or of the first result with verdict `which`."""
    def fn(rep):
        r = rep["results"][0] if which == 0 else next(r for r in rep["results"] if r["verdict"] == which)
        r[key] = value
    return fn


MALFORMED = [
    ("list top level", lambda rep: None, [1, 2], "top level is a list"),
    ("no schema", lambda rep: rep.pop("schema"), None, 'no "schema" key'),
    ("other schema", lambda rep: rep.update(schema="cpuid-profile/1"), None, "not a kvmharness report"),
    ("schema not str", lambda rep: rep.update(schema=1), None, "not a kvmharness report"),
    ("newer version", lambda rep: rep.update(schema="kvmharness-report/2"), None,
     "schema version \"2\" is not supported"),
    ("missing header key", lambda rep: rep.pop("host"), None, 'missing key "host"'),
    ("tool not object", lambda rep: rep.update(tool="kvmharness"), None, '"tool" must be an object'),
    ("host without kernel", lambda rep: rep["host"].pop("kernel"), None, 'missing key "kernel"'),
    ("bad started", lambda rep: rep.update(started="yesterday"), None, "not an ISO 8601 time"),
    ("negative duration", lambda rep: rep.update(duration_s=-1), None, "must not be negative"),
    ("nan duration", lambda rep: rep.update(duration_s=math.nan), None, "finite number"),
    ("results not list", lambda rep: rep.update(results={}), None, '"results" must be a list'),
    ("result not object", lambda rep: rep["results"].__setitem__(0, "x"), None,
     "results[0]: must be an object"),
    ("missing result key", lambda rep: rep["results"][1].pop("reproduce"), None,
     'missing key "reproduce"'),
    ("bad verdict", _set_result(0, "verdict", "fail"), None, '"verdict" is "fail"'),
    ("bad category", _set_result(0, "category", "cpuid"), None, '"category" is "cpuid"'),
    ("duplicate ids", lambda rep: rep["results"][1].update(id=rep["results"][0]["id"]), None,
     "duplicate id"),
    ("id with hash", _set_result(0, "id", "shstk/x#1/cr4"), None, "contains '#'"),
    ("id with newline", _set_result(0, "id", "shstk/x\n/cr4"), None, "whitespace"),
    ("id with space", _set_result(0, "id", "shstk/x y/cr4"), None, "whitespace"),
    ("id with escape", _set_result(0, "id", "shstk/\x1b[31m/cr4"), None, "control character"),
    ("empty id", _set_result(0, "id", ""), None, "is empty"),
    ("id not str", _set_result(0, "id", 7), None, '"id" must be a string'),
    ("observed without kind", _set_result(0, "observed", {"regs": {}}), None, 'no "kind"'),
    ("expected not object", _set_result(0, "expected", "#GP"), None, '"expected" must be an object'),
    ("reason not list", _set_result(0, "reason", "because"), None, '"reason" must be a list'),
    ("reason item not str", _set_result(0, "reason", ["a", 3]), None, '"reason"[1]'),
    ("config set not list", lambda rep: rep["results"][0]["config"].update(set="shstk"), None,
     '"set" must be a list'),
    ("known without entry", _set_result("known", "known", None), None, 'needs a "known" object'),
    ("skip without reason", _set_result("skip", "skip_reason", ""), None, 'needs a non-empty "skip_reason"'),
    ("negative duration_us", _set_result(0, "duration_us", -5), None, "must not be negative"),
    ("bool duration_us", _set_result(0, "duration_us", True), None, "finite number"),
    ("summary disagrees", lambda rep: rep["summary"].update(mismatch=0), None,
     '"mismatch" is 0 but the results have 1'),
    ("summary missing total", lambda rep: rep["summary"].pop("total"), None, 'missing key "total"'),
    ("summary not int", lambda rep: rep["summary"].update(total="6"), None, "must be an integer"),
]


@pytest.mark.parametrize("name,mutate,replacement,fragment", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_validate_rejects_with_one_line(name, mutate, replacement, fragment):
    obj = replacement if replacement is not None else _mutate(mutate)
    with pytest.raises(UsageError) as e:
        validate_report(obj, "old.json")
    msg = str(e.value)
    assert msg.startswith("old.json: "), msg
    assert "\n" not in msg and "\r" not in msg, msg
    assert fragment in msg, msg
    assert len(msg) < 300


def test_validate_ignores_unknown_keys():
    rep = make_report()
    rep["future"] = {"x": 1}
    rep["results"][0]["flakiness"] = 0.1
    assert validate_report(rep, "r.json") is rep


def test_load_report(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(dumps_report(make_report()))
    assert load_report(str(good))["summary"]["total"] == 6

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match=r"bad\.json: invalid JSON at line 1"):
        load_report(str(bad))
    with pytest.raises(UsageError, match="no such file"):
        load_report(str(tmp_path / "missing.json"))
    profile = tmp_path / "profile.json"
    profile.write_text('[{"function": 0}]')
    with pytest.raises(UsageError, match="profile.json: not a kvmharness report: the top level is a list"):
        load_report(str(profile))


@pytest.mark.parametrize("verdicts,code", [
    (["pass", "known", "skip"], 0),
    (["pass", "mismatch"], 1),
    (["pass", "error"], 1),
    (["skip", "error"], 1),
    (["skip", "skip"], 4),
    ([], 4),
    (["known"], 0),
])
def test_exit_code(verdicts, code):
    results = [result(f"f/c/l{i}", v) for i, v in enumerate(verdicts)]
    assert exit_code(make_report(results)) == code


# -- atomic writes ---------------------------------------------------------------------------
def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_write_atomic_creates_and_replaces(tmp_path):
    target = tmp_path / "r.json"
    write_atomic(target, "one\n")
    assert target.read_text() == "one\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    target.chmod(0o640)
    write_atomic(str(target), b"two\xff")
    assert target.read_bytes() == b"two\xff"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert _leftovers(tmp_path) == []


def test_descriptor_paths_name_this_processs_descriptors():
    from kvmharness.report.atomic import descriptor_of
    assert [descriptor_of(p) for p in ("-", "/dev/stdout", "/dev/stderr", "/dev/fd/7",
                                       "/proc/self/fd/5", f"/proc/{os.getpid()}/fd/4")] == [1, 1, 2, 7, 5, 4]
    assert [descriptor_of(p) for p in ("/tmp/x", "/dev/null", "/proc/1/fd/4", "fd/3")] == [None] * 4


def test_every_spelling_of_a_descriptor_path_is_one(tmp_path):
    """A path is a descriptor by where it leads, not by how it is spelt: a shell's `> out.txt`
    must never be replaced behind its back."""
    from kvmharness.report.atomic import descriptor_of
    link = tmp_path / "out"
    link.symlink_to("/dev/stdout")
    spellings = ["/dev//stdout", "/dev/./stdout", "/proc/thread-self/fd/1", "/dev/fd/../fd/1", str(link)]
    assert [descriptor_of(p) for p in spellings] == [1] * len(spellings)
    assert descriptor_of(str(tmp_path / "plain.json")) is None


def test_write_atomic_writes_through_a_descriptor_path(tmp_path):
    """/dev/fd/N (and so /dev/stdout in `| jq` or `> out.txt`): written through the descriptor,
    never a file put in place of what it points at."""
    r, w = os.pipe()
    try:
        write_atomic(f"/dev/fd/{w}", "report\n")
        os.close(w)
        assert os.read(r, 100) == b"report\n"
    finally:
        os.close(r)
    out = tmp_path / "out.txt"
    with open(out, "w") as f:
        f.write("before ")
        f.flush()
        write_atomic(f"/proc/self/fd/{f.fileno()}", "report")      # after what was written
        f.write(" after")
    assert out.read_text() == "before report after" and _leftovers(tmp_path) == []


def test_write_atomic_writes_into_a_fifo_or_a_device_in_place(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_atomic(fifo, "through the pipe")
    reader.join(timeout=10)
    assert got == [b"through the pipe"] and stat.S_ISFIFO(fifo.stat().st_mode)
    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))     # a /dev/null of the test's own
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    write_atomic(null, "discarded")
    assert stat.S_ISCHR(null.stat().st_mode) and _leftovers(tmp_path) == []
    full = tmp_path / "full"
    os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))          # /dev/full: ENOSPC
    with pytest.raises(UsageError, match="full: cannot write: No space left on device"):
        write_atomic(full, "x")


def test_write_atomic_follows_symlink(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


@pytest.mark.parametrize("where,exc,expect", [
    ("replace", OSError(28, "No space left on device"), UsageError),
    ("fsync", RuntimeError("disk on fire"), RuntimeError),
    ("fsync", KeyboardInterrupt(), KeyboardInterrupt),
])
def test_write_atomic_failure_keeps_old_file(tmp_path, monkeypatch, where, exc, expect):
    target = tmp_path / "report.json"
    target.write_text("old content\n")

    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(atomic_mod.os, where, boom)
    with pytest.raises(expect) as e:
        write_atomic(target, "x" * 100000)
    if expect is UsageError:
        assert str(e.value).startswith(f"{target}: cannot write")
        assert "\n" not in str(e.value)
    assert target.read_text() == "old content\n"
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_write_atomic_failure_mid_write(tmp_path, monkeypatch):
    """The write itself dies half-way: the target is untouched and the temp file is gone."""
    target = tmp_path / "report.json"
    target.write_text("old\n")
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise OSError(5, "Input/output error")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr(atomic_mod.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(UsageError, match="Input/output error"):
        write_atomic(target, "new content " * 1000)
    assert target.read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_write_atomic_bad_places(tmp_path):
    with pytest.raises(UsageError, match="cannot write"):
        write_atomic(tmp_path / "no-such-dir" / "r.json", "x")
    (tmp_path / "d").mkdir()
    with pytest.raises(UsageError, match="is a directory"):
        write_atomic(tmp_path / "d", "x")
    assert _leftovers(tmp_path) == []


# -- KTAP ------------------------------------------------------------------------------------
RESULT_LINE = re.compile(r"^(ok|not ok) (\d+) ([^#]*?)(?: # (\S+)(?: (.*))?)?$")


def parse_ktap(text):
    lines = text.split("\n")
    assert lines[-1] == "", "output ends in a newline"
    lines = lines[:-1]
    assert lines[0] == "KTAP version 1"
    plan = re.match(r"^1\.\.(\d+)", lines[1])
    assert plan, lines[1]
    tests, totals = [], None
    for line in lines[2:]:
        m = RESULT_LINE.match(line)
        if m:
            tests.append({"ok": m.group(1) == "ok", "n": int(m.group(2)), "name": m.group(3),
                          "directive": m.group(4), "data": m.group(5)})
            continue
        assert line.startswith("# "), f"not a KTAP line: {line!r}"
        t = re.match(r"^# Totals: pass:(\d+) fail:(\d+) xfail:(\d+) xpass:(\d+) skip:(\d+) error:(\d+)$", line)
        if t:
            totals = dict(zip(("pass", "fail", "xfail", "xpass", "skip", "error"), map(int, t.groups())))
    return int(plan.group(1)), tests, totals, lines


def test_ktap_structure():
    rep = make_report()
    plan, tests, totals, lines = parse_ktap(to_ktap(rep))
    assert plan == len(rep["results"]) == len(tests)
    assert [t["n"] for t in tests] == list(range(1, plan + 1))
    assert [t["name"] for t in tests] == [r["id"] for r in rep["results"]]
    by_name = {t["name"]: t for t in tests}
    assert by_name["shstk/base/cr4.cet"] == {"ok": True, "n": by_name["shstk/base/cr4.cet"]["n"],
                                             "name": "shstk/base/cr4.cet", "directive": None, "data": None}
    assert by_name["shstk/claimed-unsupported/cr4.cet"]["ok"] is False
    assert by_name["shstk/claimed-unsupported/cr4.cet"]["directive"] is None
    skip = by_name["ibt/base/cpuid.7.0.edx.20"]
    assert (skip["ok"], skip["directive"], skip["data"]) == (True, "SKIP", "host lacks IBT")
    xfail = by_name["shstk/pvm/cr4.cet"]
    assert (xfail["ok"], xfail["directive"]) == (True, "XFAIL")
    assert xfail["data"].startswith("pvm-cr4-static: ")
    err = by_name["la57/base/cr4.la57"]
    assert (err["ok"], err["directive"]) == (False, "ERROR")
    assert totals == {"pass": 2, "fail": 1, "xfail": 1, "xpass": 0, "skip": 1, "error": 1}
    assert lines[-1].startswith("# Totals:")
    # The diagnostics of a failure come directly before its result line.
    i = lines.index(f"not ok {by_name['shstk/claimed-unsupported/cr4.cet']['n']} "
                    "shstk/claimed-unsupported/cr4.cet")
    before = lines[i - 5:i]
    assert before[0] == "# expected: #GP(0)"
    assert before[1] == "# observed: ok rax=0x800620"
    assert before[2].startswith("# because: CR4.CET is reserved")
    assert before[4] == "# reproduce: kvmharness probe --set shstk cr4:23"
    # Header records the host.
    assert "# host: ci-1 kernel 6.18.44-fc-v782 backend kvm_pvm" in lines
    assert any(line.startswith("# module kvm: enable_pmu=Y") for line in lines)


def test_ktap_hostile_strings_stay_on_their_lines():
    r = result("f/c/l", "mismatch", reason=["line one\nnot ok 99 fake", "\x1b[2Jclear"],
               reproduce="kvmharness probe\r\nok 98 fake")
    s = result("f/c/s", "skip", skip_reason="gone\nok 97 fake # SKIP")
    rep = make_report([r, s])
    plan, tests, totals, lines = parse_ktap(to_ktap(rep))
    assert plan == 2 and [t["n"] for t in tests] == [1, 2]
    assert "\x1b" not in "\n".join(lines)
    assert totals["fail"] == 1 and totals["skip"] == 1


def test_ktap_empty_and_names():
    rep = make_report([])
    text = to_ktap(rep)
    assert text.splitlines()[:2] == ["KTAP version 1", "1..0 # SKIP nothing to run"]
    assert text.splitlines()[-1] == "# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:0 error:0"
    assert ktap_name("a#b c\nd") == "a_b_c_d"
    assert ktap_name("") == "unnamed"


# -- JUnit -----------------------------------------------------------------------------------
def test_junit_counts_and_shape():
    rep = make_report()
    root = ET.fromstring(to_junit(rep))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1 and suites[0].get("name") == "kvmharness"
    suite = suites[0]
    cases = suite.findall("testcase")
    assert len(cases) == 6
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) \
        == ("6", "1", "1", "1")
    assert len(suite.findall("testcase/failure")) == 1
    assert len(suite.findall("testcase/error")) == 1
    assert len(suite.findall("testcase/skipped")) == 1
    names = {(c.get("classname"), c.get("name")) for c in cases}
    assert len(names) == 6
    assert ("shstk", "claimed-unsupported/cr4.cet") in names
    fail = suite.find("testcase[@name='claimed-unsupported/cr4.cet']/failure")
    assert fail.get("message") == "expected #GP(0), observed ok rax=0x800620"
    assert "reproduce: kvmharness probe --set shstk cr4:23" in fail.text
    known = suite.find("testcase[@name='pvm/cr4.cet']")
    assert known.find("failure") is None and known.find("skipped") is None
    assert "pvm-cr4-static" in known.find("system-out").text
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["host.kernel"] == "6.18.44-fc-v782"
    assert props["host.cpu.microcode"] == "0xb002116"
    assert props["module.kvm_pvm.nested"] == "N"
    assert cases[0].get("time") == "0.000041"


def test_junit_any_characters_parse():
    nasty = "\x00\x01\x1b[31m <&>\"' ]]> \ud800 \ufffe \U0001F600 \t\r\n end"
    r = result("f/c/l", "mismatch", reason=[nasty], reproduce=nasty,
               observed={"kind": "ok", "regs": {"rax": nasty}})
    s = result("f/c/s", "skip", skip_reason=nasty)
    rep = make_report([r, s])
    rep["host"]["hostname"] = nasty
    rep["host"]["module_params"]["kvm"][nasty] = nasty
    text = to_junit(rep)
    root = ET.fromstring(text.encode("utf-8"))
    suite = root.find("testsuite")
    assert suite.get("failures") == "1" and suite.get("skipped") == "1"
    assert "\U0001F600" in suite.find("testcase/failure").text
    assert "<&>" in suite.find("testcase/failure").text


# -- text ------------------------------------------------------------------------------------
def test_summary_line():
    line = summary_line(make_report())
    assert line == ("6 results: 2 pass, 1 mismatch, 1 known, 0 unpredicted, 1 skip, 1 error in 0.8 s "
                    "(6.18.44-fc-v782, kvm_pvm)")


def test_render_table_alignment_and_details():
    rep = make_report()
    text = render_table(rep)
    lines = text.splitlines()
    assert lines[0].split() == ["VERDICT", "ID", "EXPECTED", "OBSERVED"]
    rows = [line for line in lines if line.split()[0] in VERDICTS]
    assert [row.split()[0] for row in rows] == ["mismatch", "error", "known"]
    col_id = lines[0].index("ID")
    col_exp = lines[0].index("EXPECTED")
    col_obs = lines[0].index("OBSERVED")
    for row in rows:
        assert row[col_id - 1] == " " and row[col_id] != " "
        assert row[col_exp:].startswith("#GP(0)")
        assert row[col_obs - 1] == " " and row[col_obs] != " "
    assert "ok rax=0x800620" in rows[0]
    # details are indented under their row
    i = lines.index(rows[0])
    assert lines[i + 1].startswith(" " * col_id + "because: CR4.CET")
    assert any("reproduce: kvmharness probe --set shstk cr4:23" in line for line in lines)
    assert any("known: pvm-cr4-static: PVM keeps CR4 static" in line for line in lines)
    assert "shstk/base/cr4.cet" not in text  # passes not shown by default
    assert render_table(make_report([result("a/b/c")])) == ""
    every = render_table(rep, show=VERDICTS)
    assert len([line for line in every.splitlines() if line.split()[0] in VERDICTS]) == 6


def test_render_table_cleans_control_characters():
    rep = make_report([result("a/b/c", "mismatch", reason=["\x1b[2J\nboom"])])
    text = render_table(rep)
    assert "\x1b" not in text and "\\x1b[2J boom" in text


def test_progress_line():
    counts = {"pass": 50, "mismatch": 1, "known": 5, "skip": 1}
    line = progress_line(57, 153, counts)
    assert line == "[ 57/153]  37%  pass 50  mismatch 1  known 5  unpredicted 0  skip 1  error 0"
    assert len(progress_line(7, 153, counts)) == len(line)
    assert progress_line(0, 0, {}).startswith("[0/0] 100%")
    assert len(progress_line(57, 153, counts, width=20)) == 19


# -- unpredicted: ran, but the model had nothing an observation could contradict ------------------
def _with_unpredicted():
    return make_report(sample_results() + [result("rdrand/off/rdrand", "unpredicted",
                                                  observed={"kind": "ok", "regs": {"rax": "0x1"}})])


def test_unpredicted_is_counted_apart_from_pass_everywhere():
    rep = _with_unpredicted()
    assert rep["summary"]["unpredicted"] == 1 and rep["summary"]["pass"] == 2
    assert ", 1 unpredicted, " in summary_line(rep)
    ktap = to_ktap(rep)
    [line] = [x for x in ktap.splitlines() if "rdrand/off/rdrand" in x and not x.startswith("#")]
    assert line.startswith("ok ") and "# SKIP unpredicted: the model has no rule" in line
    assert "skip:2 " in ktap.splitlines()[-1] and "pass:2 " in ktap.splitlines()[-1]
    root = ET.fromstring(to_junit(rep))
    [case] = [c for c in root.iter("testcase") if c.get("classname") == "rdrand"]
    [skipped] = list(case)
    assert skipped.tag == "skipped" and skipped.get("type") == "unpredicted"
    assert "observed ok rax=0x1" in skipped.get("message")
    assert root.get("skipped") == "2"
    table = render_table(rep, show=("unpredicted",))
    assert "unpredicted: the model has no rule" in table
    only = [result("rdrand/off/rdrand", "unpredicted"), result("shstk/base/cr4.cet")]
    assert exit_code(make_report(only)) == 0 == exit_code(make_report(only[:1]))


def test_unpredicted_needs_its_reason_and_old_reports_without_the_key_still_load():
    rep = _with_unpredicted()
    bad = json.loads(dumps_report(rep))
    for r in bad["results"]:
        if r["verdict"] == "unpredicted":
            r["skip_reason"] = None
    assert 'verdict "unpredicted" needs a non-empty "skip_reason"' in report_problem(bad)
    old = json.loads(dumps_report(make_report()))        # written before the verdict existed
    del old["summary"]["unpredicted"]
    assert report_problem(old) is None
    wrong = json.loads(dumps_report(rep))
    del wrong["summary"]["unpredicted"]                  # but a missing count must still be right
    assert report_problem(wrong) == 'summary: "unpredicted" is 0 but the results have 1'


def _per_character(rid):
    """report.schema.id_problem as it was: a loop over the characters."""
    if not rid:
        return "is empty"
    for ch in rid:
        if ch == "#":
            return "contains '#' (not allowed in a KTAP test name)"
        if ch.isspace():
            return "contains whitespace"
        if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or 0xD800 <= ord(ch) < 0xE000:
            return f"contains the control character {ch!r}"
    return None


def test_id_problem_agrees_with_a_per_character_check():
    rng = random.Random(148)
    found = 0
    for _ in range(20000):
        rid = "".join(chr(rng.choice([rng.randrange(0x20, 0x7F), rng.randrange(0x110000), rng.randrange(0x100),
                                      rng.randrange(0xD700, 0xE100), 0x2028, 0x3000, 0x85, 0xA0, 0x1C]))
                      for _ in range(rng.randrange(6)))
        assert id_problem(rid) == _per_character(rid), repr(rid)
        found += id_problem(rid) is not None
    assert 1000 < found < 19000
    assert id_problem("pku/on/cpuid.7.0") is None
