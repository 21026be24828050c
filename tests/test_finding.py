"""Finding things: `run --list`, `run --feature` typo suggestions, the README's feature names
working where the README says they do, and what `run` prints on a terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import pytest

from kvmharness.conformance.engine import matrix_feature, matrix_listing
from kvmharness.cpu.features import resolve
from kvmharness.errors import UsageError
from kvmharness.probes.matrix import GROUPS, features
from kvmharness.report.text import render_not_pass
from tests.conftest import REPO

from profiles import GENOA_618, fc_profile

README = (REPO / "README.md").read_text()


def _readme_names() -> tuple[list[str], list[str], list[str]]:
    """The backticked names of the README's paragraph on feature names: those it says work
    everywhere, the other catalogued features (--set/--clear/explain/lint only), and the matrix
    groups (run --feature only)."""
    para = README[README.index("- **Features**"):]
    para = " ".join(para[:para.index("\n- ")].split())
    everywhere, rest = para.split("These work everywhere", 1)
    catalogued, groups = rest.split("own groups", 1)

    def names(text):
        return [n for n in re.findall(r"`([^`\s]+)`", text)
                if n not in ("F", "LEAF.SUBLEAF.REG.BIT", "/proc/cpuinfo", "explain", "lint")
                and not n.startswith("-")]
    return names(everywhere), names(catalogued), names(groups)


def test_the_readme_feature_names_work_where_it_says():
    everywhere, catalogued, groups = _readme_names()
    assert len(everywhere) >= 6 and catalogued and len(groups) >= 2, (everywhere, groups)
    for name in everywhere:
        resolve(name)                        # --set, --clear, explain, lint's vocabulary
        assert matrix_feature(name) in features(), name      # run --feature, pytest option
    for name in catalogued:
        resolve(name)
        with pytest.raises(UsageError, match="no probes in the matrix"):
            matrix_feature(name)
    for name in groups:
        assert matrix_feature(name) == name


@pytest.mark.parametrize("typo,hint", [("shstak", "shstk"), ("x2apc", "x2apic"),
                                       ("misc-enable", "misc_enable"), ("mwiat", "monitor"),
                                       ("cpuidd", "cpuid")])
def test_a_feature_typo_suggests_names_like_explain_does(typo, hint):
    with pytest.raises(UsageError) as e:
        matrix_feature(typo)
    msg = str(e.value)
    assert f"did you mean: {hint}" in msg or f", {hint}" in msg, msg
    assert "run --list" in msg and len(msg) < 200


def test_the_listing_covers_the_matrix_with_result_counts():
    rows = matrix_listing(fc_profile(GENOA_618))
    names = [r["name"] for r in rows]
    assert set(names) == set(features()) | {"cpuid"}
    by = {r["name"]: r for r in rows}
    assert by["shstk"]["kind"] == "CPU feature 0x7.0.ecx.7" and by["shstk"]["results"] > 10
    assert all(by[g]["kind"] == "group" for g in GROUPS)
    assert by["xcr0.ymm"]["kind"].startswith("CPUID bits 0xd.0.eax.2")
    assert all(r["results"] >= r["configs"] >= 1 for r in rows)


def test_not_pass_listing():
    def res(rid, verdict, **kw):
        return {"id": rid, "verdict": verdict, "observed": {"kind": "exception", "vector": 6},
                "expected": {"kind": "ok"}, "reproduce": f"kvmharness probe {rid}",
                "skip_reason": kw.get("why"), **kw}
    report = {"results": [res("a/on/x", "pass"), res("b/on/y", "known"),
                          res("c/on/z", "mismatch"), res("d/on/w", "unpredicted", why="no rule"),
                          *(res(f"e/on/{i}", "skip", why="no CET here") for i in range(5))]}
    text = render_not_pass(report)
    lines = text.splitlines()
    assert lines[0].startswith("not pass (8)")
    assert lines[1].startswith("mismatch") and "observed #UD, expected ok" in lines[1]
    assert "| kvmharness probe c/on/z" in lines[1]
    assert "no prediction" in next(line for line in lines if line.startswith("unpredicted"))
    assert lines[-1].startswith("skip") and "5 x no CET here" in lines[-1] and "(+2 more)" in lines[-1]
    assert "a/on/x" not in text
    assert render_not_pass({"results": [res("a/on/x", "pass")]}) == ""


def _on_a_terminal(args) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "kvmharness", *args], stdout=slave,
                            stderr=slave, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:                       # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")


@pytest.mark.kvm
def test_run_on_a_terminal_ends_with_what_did_not_pass(kvm):
    code, out = _on_a_terminal(["run", "--feature", "monitor", "--feature", "shstk", "-j", "1"])
    lines = [line for line in out.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[-1].split(":")[0].endswith("results"), lines[-3:]
    assert any(line.startswith("not pass (") for line in lines), lines[-10:]
    listed = [line for line in lines if re.match(r"(known|unpredicted|mismatch|error|skip) ", line)]
    assert listed and all("| kvmharness probe" in line for line in listed
                          if not line.startswith("skip"))


@pytest.mark.kvm
def test_run_list(kvm):
    done = subprocess.run([sys.executable, "-m", "kvmharness", "run", "--list"], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["FEATURE", "RESULTS", "CONFIGS", "WHAT"]
    assert any(line.startswith("shstk ") for line in lines) and "results" in lines[-1]


def test_every_command_the_readme_shows_parses():
    """The README's command examples are valid command lines of this kvmharness."""
    import shlex

    from kvmharness.cli import build_parser
    block = README[README.index("## Commands"):]
    block = block[block.index("```sh") + 5:]
    block = block[:block.index("```")]
    lines = [line.split("#", 1)[0].split(">", 1)[0].strip() for line in block.splitlines()]
    commands = [shlex.split(line)[1:] for line in lines if line.startswith("kvmharness ")]
    assert len(commands) >= 10
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)
