"""Runner: one Machine per guest configuration, reused across probes, replaced when broken."""

from __future__ import annotations

import os
import queue
import signal
import threading

from .. import outcome as oc
from ..errors import RESOURCE_ERRNOS, MachineFault, NoKvm
from ..kvm.binding import Kvm, KvmError
from ..model.profile import VcpuConfig
from ..probes.spec import ProbeSpec
from .machine import DEFAULT_TIMEOUT_MS, GuestCode, Machine, PlainBatch, Records


KVM_API_VERSION = 12                # the only one Linux has ever had (KVM_GET_API_VERSION)


def open_kvm() -> Kvm:
    """/dev/kvm, or the device KVMHARNESS_DEVICE names (tests use it to simulate a missing one),
    checked to be KVM: NoKvm (exit 4, one line) for anything else."""
    kvm = Kvm.open(os.environ.get("KVMHARNESS_DEVICE", "/dev/kvm"))
    try:
        version = kvm.api_version()
    except KvmError as e:
        kvm.close()
        raise NoKvm(f"{kvm.path} is not a KVM device (KVM_GET_API_VERSION: {e.strerror})") from None
    if version != KVM_API_VERSION:
        kvm.close()
        raise NoKvm(f"{kvm.path}: KVM API version {version}, this tool speaks {KVM_API_VERSION}")
    return kvm


class _Closer:
    """Closes released machines on a background thread: tearing a VM down costs the kernel
    ~0.3 ms (more with a full irqchip), which need not sit on the probing thread's path."""

    def __init__(self):
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def put(self, machine: Machine) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="kvmharness-closer", daemon=True)
            self._thread.start()
        self._q.put(machine)

    def _loop(self) -> None:
        # Ctrl-C and SIGTERM must reach the main thread, never this one (the probe timer's
        # signal only ever goes to the thread that probes).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        while (m := self._q.get()) is not None:
            m.close()

    def join(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join()
            self._thread = None


class Runner:
    def __init__(self, kvm: Kvm | None = None):
        self._own_kvm = kvm is None
        self.kvm = kvm if kvm is not None else open_kvm()
        self._machines: dict[VcpuConfig, Machine] = {}
        self._refused: dict[VcpuConfig, dict] = {}      # configurations KVM would not build
        self.machines_created = 0
        self._last: tuple = (None, None)    # (config, machine): consecutive probes skip hashing
        self._closer = _Closer()

    def machine(self, config: VcpuConfig) -> Machine:
        m = self._machines.get(config)
        if m is not None and m.broken:
            del self._machines[config]      # gone even if its replacement cannot be built
            self._closer.put(m)
            m = None
        if m is None:
            m = self._machines[config] = Machine(self.kvm, config)
            self.machines_created += 1
        return m

    def _new_machine(self, config: VcpuConfig) -> Machine:
        """self.machine(config). Short of a resource (RESOURCE_ERRNOS: file descriptors, memory),
        it waits for the machines being closed in the background to be gone and tries once more;
        still short, it raises MachineFault: that is the host's state, not KVM refusing the
        configuration (which is cached as the configuration's outcome)."""
        for attempt in (1, 2):
            try:
                return self.machine(config)
            except (KvmError, OSError) as e:
                if e.errno not in RESOURCE_ERRNOS:
                    raise
                if attempt == 2:
                    what = e.ioctl if isinstance(e, KvmError) else "guest memory"
                    raise MachineFault(f"the host could not give a new VM what it needs ({what}: "
                                       f"{os.strerror(e.errno)})") from None
                self._closer.join()

    def _live(self, config: VcpuConfig) -> Machine | dict:
        """The working machine of `config`, or KVM's refusal to build it (an outcome dict)."""
        last_config, machine = self._last
        if config is not last_config or machine.broken:
            refused = self._refused.get(config)
            if refused is not None:
                return refused
            try:
                machine = self._new_machine(config)
            except KvmError as e:
                refused = self._refused[config] = oc.ioctl_error(e.ioctl, e.errno)
                return refused
            self._last = (config, machine)
        return machine

    def run(self, config: VcpuConfig, spec: ProbeSpec, code: GuestCode | None = None,
            timeout_ms: float = DEFAULT_TIMEOUT_MS) -> dict:
        """The probe's outcome. If KVM refuses the configuration itself (e.g. KVM_SET_CPUID2
        rejecting a dynamic xfeature without permission), that refusal is the outcome."""
        machine = self._live(config)
        if isinstance(machine, dict):
            return machine
        return machine.run_probe(spec, code, timeout_ms)

    def run_many(self, config: VcpuConfig, probes: list[tuple[ProbeSpec, GuestCode | None]],
                 timeout_ms: float = DEFAULT_TIMEOUT_MS) -> list[dict]:
        """run() of each (spec, code) in order, through the native loop where it can (Machine.run_many);
        a machine that breaks on the way is replaced for the probes after it."""
        out: list[dict] = []
        while len(out) < len(probes):
            machine = self._live(config)
            if isinstance(machine, dict):
                return out + [machine] * (len(probes) - len(out))
            out += machine.run_many(probes[len(out):] if out else probes, timeout_ms)
        return out

    def run_plain(self, config: VcpuConfig, batch: PlainBatch,
                  timeout_ms: float = DEFAULT_TIMEOUT_MS) -> Records:
        """The outcomes of a bulk `probe`'s plain probes, as run_many gives them, kept as the
        native loop's records (Machine.run_plain). Probes after a machine that broke, and all of
        them where the loop cannot run, go through run_many."""
        machine = self._live(config)
        out = Records()
        if not isinstance(machine, dict):
            out = machine.run_plain(batch, timeout_ms) or out
        rest = [batch[i] for i in range(out.done, batch.count)]
        for outcome in self.run_many(config, rest, timeout_ms) if rest else ():
            out.add(outcome)
        return out

    def release(self, config: VcpuConfig) -> None:
        """Close the machine of a configuration that will not be used again."""
        self._refused.pop(config, None)
        if self._last[0] is config:
            self._last = (None, None)
        m = self._machines.pop(config, None)
        if m is not None:
            self._closer.put(m)

    def close(self) -> None:
        self._last = (None, None)
        for m in self._machines.values():
            m.close()
        self._machines.clear()
        self._closer.join()
        if self._own_kvm:
            self.kvm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
