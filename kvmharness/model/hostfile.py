"""`--host FILE`: a HostProfile from a recorded host instead of the live /dev/kvm.

FILE is one of
- a host record (schema `kvmharness-host/1`, docs/host-record.md): what `kvmharness info --json`
  prints, including its older unnamed form (`"schema": 1`);
- a report (`kvmharness run --json`): the host record its header holds (`host.profile`);
- the older hand-written shapes: a JSON list of CPUID entries (KVM_GET_SUPPORTED_CPUID only) or
  an object

    {"supported": [...], "emulated": [...], "backend": "intel|amd|pvm|unknown",
     "kernel": "6.18", "params": {"ept": "Y", ...}, "xcr0": "0x602e7", "xss": "0x1800",
     "quirks_disabled": 0, "msr_index_list": ["0x10", ...], "feature_msrs": {"0x10a": "0x..."},
     "host_vendor": "intel|amd", "name": "..."}

Values given on the command line (backend, kernel, params) override the file's. Without a
backend anywhere, the table's CPU vendor picks kvm_intel or kvm_amd. Every way the file can be
wrong is one UsageError line.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from importlib import resources
from pathlib import Path

from ..cpu.cpuid import CpuidTable, load_json_file
from ..cpu.features import vendor_family, vendor_string
from ..errors import UsageError, did_you_mean, printable, shown
from .profile import BACKENDS, HostProfile
from .releases import parse_release

_KEYS = {"supported", "emulated", "backend", "kernel", "params", "xcr0", "xss", "quirks_disabled",
         "msr_index_list", "feature_msrs", "host_vendor", "name", "caps"}


def parse_kernel(text) -> tuple[int, int]:
    """'6.12' / '6.18.44-fc' / (6, 12) -> the rules the model applies, (6, 12); a kernel after
    the newest release the model knows gets that release's rules (model/releases.py); before
    the oldest, or unparsable: UsageError."""
    return parse_release(text).rules


def _num(value, where: str) -> int:
    if isinstance(value, bool):
        raise UsageError(f"{where}: expected a number, not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise UsageError(f"{where}: must not be negative")
        return value
    if isinstance(value, str):
        try:
            v = int(value, 0)
        except ValueError:
            raise UsageError(f"{where}: {shown(value)} is not a number") from None
        if v < 0:
            raise UsageError(f"{where}: must not be negative")
        return v
    raise UsageError(f"{where}: expected a number, not {type(value).__name__}")


REPORT_SCHEMA_PREFIX = "kvmharness-report/"


def report_host_record(report: dict, where: str) -> dict:
    """The host record a report's header holds; UsageError (one line) when it has none."""
    host = report.get("host")
    record = host.get("profile") if isinstance(host, dict) else None
    if not isinstance(record, dict):
        raise UsageError(f"{where}: this report has no host profile (host.profile), so it cannot be "
                         "judged offline: record it again with this kvmharness")
    return record


def profile_from_record(record: dict, where: str, kernel=None) -> HostProfile:
    """A host record (or its older unnamed form) as the model's HostProfile."""
    from ..host import HostFacts
    facts = HostFacts.from_json(record, where)
    try:
        profile = facts.to_profile(kernel)
    except UsageError as e:
        raise UsageError(f"{where}: {e}") from None
    return replace(profile, name=Path(where).stem)


def _is_record(data) -> bool:
    """A host record of any version (a version this kvmharness cannot read fails in from_json)."""
    from ..host import LEGACY_SCHEMAS, SCHEMA
    schema = data.get("schema") if isinstance(data, dict) else None
    return (isinstance(schema, str) and schema.startswith(SCHEMA.partition("/")[0] + "/")) or (
        schema in LEGACY_SCHEMAS and "supported_cpuid" in data)


def load_host_file(path, backend: str | None = None, kernel=None,
                   params: dict | None = None) -> HostProfile:
    if not str(path):
        raise UsageError("--host: the file name is empty (leave --host out for this machine's KVM)")
    where = printable(path)
    data = load_json_file(str(path))          # a recorded host, or a report holding one
    if isinstance(data, dict) and str(data.get("schema", "")).startswith(REPORT_SCHEMA_PREFIX):
        data = report_host_record(data, where)
    if _is_record(data):
        profile = profile_from_record(data, where, kernel)
        if backend is not None:
            profile = replace(profile, backend=backend)
        if params:
            check_param_names(params, profile.backend, profile.params)
            profile = replace(profile, params={**profile.params,
                                               **{str(k): str(v) for k, v in params.items()}})
        return profile
    if isinstance(data, dict) and "schema" in data:
        raise UsageError(f"{where}: schema {shown(data['schema'])} is neither a host record "
                         "(kvmharness-host/1, from `kvmharness info --json`) nor a report")
    fields: dict = {}
    if isinstance(data, list):
        supported = CpuidTable.from_json(data, where)
    elif isinstance(data, dict):
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise UsageError(f"{where}: unknown field(s) {', '.join(map(shown, unknown))} "
                             f"(known: {', '.join(sorted(_KEYS))})")
        if "supported" not in data:
            raise UsageError(f"{where}: missing field 'supported' (the KVM_GET_SUPPORTED_CPUID table)")
        supported = CpuidTable.from_json(data["supported"], f"{where}: supported")
        if "emulated" in data:
            fields["emulated"] = CpuidTable.from_json(data["emulated"], f"{where}: emulated")
        if "backend" in data:
            fields["backend"] = data["backend"]
        if "kernel" in data:
            release = parse_release(data["kernel"])
            fields["kernel"], fields["release"] = release.rules, release.given or str(release)
        if "params" in data:
            if not isinstance(data["params"], dict):
                raise UsageError(f"{where}: 'params' must be an object of name -> value")
            fields["params"] = {str(k): str(v) for k, v in data["params"].items()}
        if "xcr0" in data:
            fields["supported_xcr0"] = _num(data["xcr0"], f"{where}: xcr0")
        if "xss" in data:
            fields["supported_xss"] = _num(data["xss"], f"{where}: xss")
        if "quirks_disabled" in data:
            fields["quirks_disabled"] = _num(data["quirks_disabled"], f"{where}: quirks_disabled")
        if "msr_index_list" in data:
            if not isinstance(data["msr_index_list"], list):
                raise UsageError(f"{where}: 'msr_index_list' must be a list of MSR indices")
            fields["msr_index_list"] = frozenset(
                _num(x, f"{where}: msr_index_list[{i}]") for i, x in enumerate(data["msr_index_list"]))
        if "feature_msrs" in data:
            fm = data["feature_msrs"]
            if not isinstance(fm, dict):
                raise UsageError(f"{where}: 'feature_msrs' must be an object of index -> value")
            fields["feature_msrs"] = {_num(k, f"{where}: feature_msrs key"):
                                      _num(v, f"{where}: feature_msrs[{k}]") for k, v in fm.items()}
        if "host_vendor" in data:
            fields["host_vendor"] = printable(data["host_vendor"], 40)
        if "caps" in data:
            if not isinstance(data["caps"], dict):
                raise UsageError(f"{where}: 'caps' must be an object")
            fields["caps"] = dict(data["caps"])
        if "name" in data:
            fields["name"] = printable(data["name"], 80)
    else:
        raise UsageError(f"{where}: expected a JSON list of CPUID entries or an object with "
                         f"'supported', got {type(data).__name__}")
    if backend is not None:
        fields["backend"] = backend
    if kernel is not None:              # --kernel: these rules, for the file's kernel if it names one
        release = parse_release(kernel)
        fields["kernel"] = release.rules
        if release.beyond or "release" not in fields:
            fields["release"] = release.given or str(release)
    if fields.get("backend", "unknown") not in BACKENDS:
        raise UsageError(f"{where}: backend {shown(fields['backend'])} is not one of "
                         f"{', '.join(BACKENDS)}")
    fields.setdefault("host_vendor", vendor_family(vendor_string(supported)))
    if "backend" not in fields and fields["host_vendor"] in ("intel", "amd"):
        fields["backend"] = fields["host_vendor"]      # kvm_intel / kvm_amd by the CPU vendor
    if params:
        check_param_names(params, fields.get("backend", "unknown"), fields.get("params", {}))
        fields["params"] = {**fields.get("params", {}), **{str(k): str(v) for k, v in params.items()}}
    fields.setdefault("name", printable(Path(str(path)).stem, 80))
    return HostProfile(supported=supported, **fields)


@functools.lru_cache(maxsize=1)
def _module_params() -> dict:
    """kvm/kvm_intel/kvm_amd parameter names of the pinned releases (scripts/module_params.py)."""
    text = resources.files("kvmharness").joinpath("data/module_params.json").read_text()
    return json.loads(text)


def known_param_names(backend: str, recorded=()) -> set[str]:
    """The module parameters `--param` may name for a backend: kvm's and its module's (any
    backend's when it is pvm or unknown), plus those the host file recorded."""
    table = _module_params()
    vendor = (backend,) if backend in ("intel", "amd") else ("intel", "amd")
    return set(table["kvm"]).union(*(table[v] for v in vendor), recorded)


def check_param_names(params: dict, backend: str, recorded=()) -> None:
    """A `--param` name the backend does not have is a usage error, never silently ignored."""
    known = known_param_names(backend, recorded)
    unknown = [name for name in params if name not in known]
    if unknown:
        module = {"intel": "kvm_intel", "amd": "kvm_amd"}.get(backend, "the KVM modules")
        raise UsageError(f"--param {shown(unknown[0])}: not a parameter of kvm or {module}"
                         + did_you_mean(str(unknown[0]), known))
