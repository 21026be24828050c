"""The ending the check scripts share (hangs.py, soak.py, parallel_runs.py): one FAIL line per
failure, then the verdict word or the failure count; exit status 0 or 1."""


def finish(failures: list[str], verdict: str) -> int:
    for f in failures:
        print(f"FAIL: {f}")
    print(verdict if not failures else f"{len(failures)} failure(s)")
    return 0 if not failures else 1
