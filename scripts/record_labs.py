#!/usr/bin/env python3
"""Record the lab reports of tests/data/labs/ again (kvmharness/lab/recordings.py lists them).

    python scripts/record_labs.py [--only NAME]... [--timeout S]

Each lab boots its kernel under QEMU (`kvmharness vm`, minutes under TCG), so they run one after
the other. A report is replaced only when its run produced one (a mismatch still records: the
test then shows it). Prints each lab's figures; exits 0 when every lab produced a report, 2 when
one could not (its error is shown), as `kvmharness vm` does.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kvmharness.lab.recordings import BY_NAME, LABS_DIR, RECORDINGS  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", default=[], choices=sorted(BY_NAME), metavar="NAME")
    ap.add_argument("--timeout", type=int, default=1500, help="seconds per lab (default 1500)")
    args = ap.parse_args()
    chosen = [BY_NAME[n] for n in args.only] or list(RECORDINGS)
    failed = []
    for rec in chosen:
        final = REPO / LABS_DIR / f"{rec.name}.json"
        fd, tmp = tempfile.mkstemp(prefix=f".{rec.name}.", suffix=".json", dir=final.parent)
        os.close(fd)
        cmd = rec.command(tmp)
        if cmd[1] == "vm":
            cmd[2:2] = ["--timeout", str(args.timeout)]
        print(f"== {rec.name}: {rec.what}\n   {' '.join(cmd)}", flush=True)
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "kvmharness", *cmd[1:]], cwd=REPO,
                           stdout=subprocess.DEVNULL, timeout=args.timeout + 120)
        wall = time.monotonic() - t0
        if p.returncode in (0, 1) and os.path.getsize(tmp) > 0:
            os.replace(tmp, final)
            print(f"   recorded {final.relative_to(REPO)} (exit {p.returncode}, {wall:.0f} s)", flush=True)
        else:
            os.unlink(tmp)
            failed.append(rec.name)
            print(f"   FAILED: exit {p.returncode} after {wall:.0f} s, nothing recorded", flush=True)
    if failed:
        print(f"not recorded: {', '.join(failed)}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
