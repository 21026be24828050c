#!/usr/bin/env python3
"""Regenerate kvmharness/data/module_params.json: the module parameter names of kvm, kvm_intel
and kvm_amd in every kernel release under ../shared/reference/linux (their union per module), so
`--param NAME=VALUE` can refuse a name the backend never had. Only names are recorded.

    python3 scripts/module_params.py [REFERENCE_LINUX_DIR]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARAM = re.compile(r"\bmodule_param(?:_named|_cb|_unsafe|_named_unsafe|_call)?\(\s*([a-z_0-9]+)")
# Which source files build which module (arch/x86/kvm/Makefile).
MODULES = {"intel": ("arch/x86/kvm/vmx",), "amd": ("arch/x86/kvm/svm",),
           "kvm": ("arch/x86/kvm", "arch/x86/kvm/mmu", "virt/kvm")}


def names_in(root: Path, subdir: str) -> set[str]:
    found = set()
    for path in sorted((root / subdir).glob("*.[ch]")):
        found.update(PARAM.findall(path.read_text(errors="replace")))
    return found


def main() -> int:
    ref = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared/reference/linux"
    releases = sorted(p for p in ref.iterdir() if (p / "arch/x86/kvm").is_dir())
    if not releases:
        print(f"no kernel sources under {ref}", file=sys.stderr)
        return 2
    out = {module: sorted(set().union(*(names_in(r, d) for r in releases for d in dirs)))
           for module, dirs in MODULES.items()}
    out = {"releases": [r.name for r in releases], **out}
    target = REPO / "kvmharness/data/module_params.json"
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{target.relative_to(REPO)}: " + ", ".join(f"{m} {len(out[m])}" for m in MODULES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
