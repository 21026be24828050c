#!/bin/sh
# kvmharness without root: a throwaway user in a throwaway group that owns /dev/kvm (0660),
# with its own venv (pip install of the repository), runs info, probe, run -j 2 and the pytest
# front-end; its payload cache must be created 0700, and a tampered cache entry must be rebuilt,
# not run. /dev/kvm's owner and mode are restored, the user, group and files removed, whatever
# happens. Prints the time of each step.
#
#     sudo scripts/unprivileged.sh            (root is needed to create the user and chmod /dev/kvm)
#
# The fast variant of this check (system Python + PYTHONPATH, no venv, ~2 s) is the test
# tests/test_hardening.py::test_unprivileged_user_in_the_kvm_group.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${KVMHARNESS_UNPRIV_PYTHON:-/usr/bin/python3}     # root's pyenv under /root is 0700
[ "$(id -u)" = 0 ] || { echo "unprivileged.sh: run as root" >&2; exit 2; }
[ -c /dev/kvm ] || { echo "unprivileged.sh: no /dev/kvm" >&2; exit 4; }
for t in useradd userdel groupadd groupdel setpriv "$PYTHON"; do
    command -v "$t" >/dev/null || { echo "unprivileged.sh: $t not found" >&2; exit 2; }
done

TAG=kvmh$$
USER_=${TAG}u
GROUP_=${TAG}g
DIR=$(mktemp -d /tmp/kvmharness-unpriv.XXXXXX)
KVM_OWNER=$(stat -c %u:%g /dev/kvm)
KVM_MODE=$(stat -c %a /dev/kvm)
cleanup() {
    chown "$KVM_OWNER" /dev/kvm
    chmod "$KVM_MODE" /dev/kvm
    userdel "$USER_" 2>/dev/null || true
    groupdel "$GROUP_" 2>/dev/null || true
    rm -rf "$DIR"
    echo "restored /dev/kvm: $(stat -c '%A %U %G' /dev/kvm)"
}
trap cleanup EXIT INT TERM

now() { date +%s.%N; }
step() {    # step NAME CMD...: run CMD, print its time
    name=$1; shift
    t0=$(now)
    "$@"
    printf '%-44s %6.2f s\n' "$name" "$(echo "$(now) - $t0" | bc)"
}

groupadd --system "$GROUP_"
useradd --system --no-create-home --no-user-group -g "$GROUP_" -s /usr/sbin/nologin \
    -d "$DIR/home" "$USER_"
mkdir "$DIR/home"
chmod 755 "$DIR"
chown "$USER_:$GROUP_" "$DIR/home"
chmod 700 "$DIR/home"

as_user() {
    setpriv --reuid="$USER_" --regid="$GROUP_" --init-groups \
        env -i PATH="$DIR/home/venv/bin:/usr/bin:/bin" HOME="$DIR/home" LANG=C.UTF-8 \
        $(env | grep -E '^PIP_' | tr '\n' ' ') "$@"
}

echo "user $USER_ (uid $(id -u "$USER_")), group $GROUP_; /dev/kvm was $(stat -c '%A %U %G' /dev/kvm)"
# pip builds in a copy of the repository: the user cannot write /work/main
cp -r "$REPO" "$DIR/src" && rm -rf "$DIR/src/.git" "$DIR/src/.ci-venv" "$DIR/src/build" "$DIR/src"/*.egg-info
chown -R "$USER_:$GROUP_" "$DIR/src"
step "venv ($PYTHON -m venv)" as_user "$PYTHON" -m venv "$DIR/home/venv"
step "pip install the repository" as_user "$DIR/home/venv/bin/pip" install -q "$DIR/src"

cd "$DIR/home"
set +e
as_user kvmharness probe insn:90 2>"$DIR/noaccess.err"
rc=$?
set -e
[ "$rc" = 4 ] || { echo "FAIL: without access: exit $rc, expected 4" >&2; exit 1; }
echo "without access: exit 4: $(cat "$DIR/noaccess.err")"

chgrp "$GROUP_" /dev/kvm
chmod 660 /dev/kvm
echo "/dev/kvm now $(stat -c '%A %U %G' /dev/kvm)"

step "kvmharness info" as_user sh -c 'kvmharness info >/dev/null'
step "kvmharness probe (cpuid, #GP, payload)" as_user kvmharness probe cpuid:0:0 rdmsr:0x12345678 fixup-selftest
CACHE="$DIR/home/.cache/kvmharness"
perm=$(stat -c '%a %U' "$CACHE")
[ "$perm" = "700 $USER_" ] || { echo "FAIL: payload cache is $perm" >&2; exit 1; }
echo "payload cache $CACHE: $perm"

# Tamper: every cached image of the fixup payload becomes HLTs (its recorded hash kept).
step "tamper with the cached payload" as_user "$DIR/home/venv/bin/python" - "$CACHE" <<'EOF'
import json, pathlib, sys
n = 0
for p in pathlib.Path(sys.argv[1]).glob("*.json"):
    meta = json.loads(p.read_text())
    if "fixup_selftest" in meta["symbols"]:
        meta["code"] = "f4" * (len(meta["code"]) // 2)
        p.write_text(json.dumps(meta))
        n += 1
assert n, "no cached image of fixup-selftest"
EOF
out=$(as_user kvmharness probe --json fixup-selftest)
echo "$out" | as_user "$DIR/home/venv/bin/python" -c '
import json, sys
o = json.load(sys.stdin)[0]["outcome"]
assert o["kind"] == "ok" and o["regs"]["rbx"] == "0x106", o
print("tampered payload was rebuilt, not run:", o)'

step "kvmharness run -j 2 --json" as_user kvmharness run -j 2 --json "$DIR/home/report.json" --show error
as_user "$DIR/home/venv/bin/python" -c "
import json; r = json.load(open('$DIR/home/report.json')); s = r['summary']
assert s['total'] > 0 and s['error'] == 0, s
print('report:', s)"
step "pytest --pyargs kvmharness.conformance -n 2" as_user "$DIR/home/venv/bin/python" -m pytest -q \
    -p no:cacheprovider --pyargs kvmharness.conformance -n 2 --junitxml "$DIR/home/junit.xml" \
    --kvmharness-feature pku --kvmharness-feature xsave
echo "OK: everything ran as $USER_ without root"
