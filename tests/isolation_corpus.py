"""A corpus of hostile probe bodies, by what they reach, and the harmless probes run after each:
tests/test_isolation.py and scripts/isolation.py. Each body is its instruction text and bytes
(assembled once with GNU as; the text is what the bytes say)."""

HOSTILE = [  # (kind, name, probe, instructions)
    ('memory', 'pml4', 'insn:48c704250080000000000000', 'mov qword ptr [0x8000], 0'),
    ('memory', 'code-pte', 'insn:48c70425a0b0000000000000', 'mov qword ptr [0xb0a0], 0'),
    ('memory', 'gdt-cs', 'insn:48c704251010000000000000', 'mov qword ptr [0x1010], 0'),
    ('memory', 'idt-gp-gate', 'insn:48c70425d020000000000000', 'mov qword ptr [0x20d0], 0'),
    ('memory', 'idt-ud-gate', 'insn:48c704256020000000000000', 'mov qword ptr [0x2060], 0'),
    ('memory', 'tss-rsp0', 'insn:48c704250430000034120000', 'mov qword ptr [0x3004], 0x1234'),
    ('memory', 'runtime-stubs', 'insn:48b8f4f4f4f4f4f4f4f448c7c70000010048c7c100020000f348ab', 'mov rax, 0xf4f4f4f4f4f4f4f4; mov rdi, 0x10000; mov rcx, 512; rep stosq'),
    ('memory', 'kernel-stack', 'insn:48b8414141414141414148c7c700f0050048c7c100020000f348ab', 'mov rax, 0x4141414141414141; mov rdi, 0x5f000; mov rcx, 512; rep stosq'),
    ('memory', 'user-done', 'insn:c7042500f0010090909090', 'mov dword ptr [0x1f000], 0x90909090'),
    ('memory', 'scratch-page', 'insn:48c707ffffffff48c787f80f0000ffffffff', 'mov qword ptr [rdi], -1; mov qword ptr [rdi+0xff8], -1'),
    ('memory', 'user-data', 'insn:48c7042500000300ffffffff', 'mov qword ptr [0x30000], -1'),
    ('descriptors', 'lidt-zero', 'insn:0f011f', 'lidt [rdi]'),
    ('descriptors', 'lgdt-zero', 'insn:0f0117', 'lgdt [rdi]'),
    ('descriptors', 'ds-null', 'insn:31c08ed88ec0', 'xor eax, eax; mov ds, ax; mov es, ax'),
    ('control', 'cr8-15', 'insn:b80f000000440f22c0', 'mov eax, 15; mov cr8, rax'),
    ('control', 'cr0-wp-off', 'insn:0f20c04825fffffeff0f22c0', 'mov rax, cr0; and rax, ~0x10000; mov cr0, rax'),
    ('control', 'cr3-reload-elsewhere', 'insn:48c7c0009000000f22d8', 'mov rax, 0x9000; mov cr3, rax'),
    ('control', 'efer-nxe', 'insn:b9800000c00f320d000800000f30', 'mov ecx, 0xc0000080; rdmsr; or eax, 0x800; wrmsr'),
    ('debug', 'dr0-code-breakpoint', 'insn:48c7c0004001000f23c048c7c0010400000f23f8', 'mov rax, 0x14000; mov dr0, rax; mov rax, 0x401; mov dr7, rax'),
    ('debug', 'dr7-general-detect', 'insn:48c7c0012400000f23f8', 'mov rax, 0x2401; mov dr7, rax'),
    ('debug', 'dr3-dr6', 'insn:48c7c0341200000f23d848b8f84fffff000000000f23f0', 'mov rax, 0x1234; mov dr3, rax; mov rax, 0xffff4ff8; mov dr6, rax'),
    ('msr', 'pat', 'insn:b977020000b800000000ba000000000f30', 'mov ecx, 0x277; mov eax, 0x0; mov edx, 0x0; wrmsr'),
    ('msr', 'lstar', 'insn:b9820000c0b834120000ba000000000f30', 'mov ecx, 0xc0000082; mov eax, 0x1234; mov edx, 0x0; wrmsr'),
    ('msr', 'star', 'insn:b9810000c0b800000000ba100023000f30', 'mov ecx, 0xc0000081; mov eax, 0x0; mov edx, 0x230010; wrmsr'),
    ('msr', 'sfmask', 'insn:b9840000c0b800470000ba000000000f30', 'mov ecx, 0xc0000084; mov eax, 0x4700; mov edx, 0x0; wrmsr'),
    ('msr', 'sysenter-cs', 'insn:b974010000b808000000ba000000000f30', 'mov ecx, 0x174; mov eax, 0x8; mov edx, 0x0; wrmsr'),
    ('msr', 'misc-enable', 'insn:b9a0010000b800000000ba000000000f30', 'mov ecx, 0x1a0; mov eax, 0x0; mov edx, 0x0; wrmsr'),
    ('msr', 'tsc-adjust', 'insn:b93b000000b800001000ba000000000f30', 'mov ecx, 0x3b; mov eax, 0x100000; mov edx, 0x0; wrmsr'),
    ('msr', 'tsc', 'insn:b910000000b800100000ba000000000f30', 'mov ecx, 0x10; mov eax, 0x1000; mov edx, 0x0; wrmsr'),
    ('msr', 'tsc-deadline', 'insn:b9e0060000b801000000ba000000000f30', 'mov ecx, 0x6e0; mov eax, 0x1; mov edx, 0x0; wrmsr'),
    ('msr', 'mtrr-deftype', 'insn:b9ff020000b800000000ba000000000f30', 'mov ecx, 0x2ff; mov eax, 0x0; mov edx, 0x0; wrmsr'),
    ('msr', 'kernel-gs-base', 'insn:b9020100c0b834120000ba000000000f30', 'mov ecx, 0xc0000102; mov eax, 0x1234; mov edx, 0x0; wrmsr'),
    ('msr', 'spec-ctrl', 'insn:b948000000b801000000ba000000000f30', 'mov ecx, 0x48; mov eax, 0x1; mov edx, 0x0; wrmsr'),
    ('msr', 'poll-control', 'insn:b9054d564bb800000000ba000000000f30', 'mov ecx, 0x4b564d05; mov eax, 0x0; mov edx, 0x0; wrmsr'),
    ('pv-msr', 'kvmclock-on-pml4', 'insn:b9014d564bb801800000ba000000000f30', 'mov ecx, 0x4b564d01; mov eax, 0x8001; mov edx, 0x0; wrmsr'),
    ('pv-msr', 'kvmclock-legacy-on-gdt', 'insn:b912000000b801100000ba000000000f30', 'mov ecx, 0x12; mov eax, 0x1001; mov edx, 0x0; wrmsr'),
    ('pv-msr', 'steal-time-on-pml4', 'insn:b9034d564bb801800000ba000000000f30', 'mov ecx, 0x4b564d03; mov eax, 0x8001; mov edx, 0x0; wrmsr'),
    ('pv-msr', 'async-pf-on-idt', 'insn:b9024d564bb801200000ba000000000f30', 'mov ecx, 0x4b564d02; mov eax, 0x2001; mov edx, 0x0; wrmsr'),
    ('pv-msr', 'pv-eoi-on-runtime', 'insn:b9044d564bb801000100ba000000000f30', 'mov ecx, 0x4b564d04; mov eax, 0x10001; mov edx, 0x0; wrmsr'),
    ('pv-msr', 'wall-clock-on-idt', 'insn:b9004d564bb800200000ba000000000f30', 'mov ecx, 0x4b564d00; mov eax, 0x2000; mov edx, 0x0; wrmsr'),
    ('apic', 'x2apic-on', 'insn:b91b000000b8000de0fe31d20f30', 'mov ecx, 0x1b; mov eax, 0xfee00d00; xor edx, edx; wrmsr'),
    ('apic', 'apic-off', 'insn:b91b000000b800010000ba000000000f30', 'mov ecx, 0x1b; mov eax, 0x100; mov edx, 0x0; wrmsr'),
    ('apic', 'x2apic-tpr', 'insn:b91b000000b8000de0fe31d20f30b908080000b8f0000000ba000000000f30', 'mov ecx, 0x1b; mov eax, 0xfee00d00; xor edx, edx; wrmsr; mov ecx, 0x808; mov eax, 0xf0; mov edx, 0x0; wrmsr'),
    ('apic', 'x2apic-timer-armed', 'insn:b91b000000b8000de0fe31d20f30b932080000b840000000ba000000000f30b938080000b810000000ba000000000f30', 'mov ecx, 0x1b; mov eax, 0xfee00d00; xor edx, edx; wrmsr; mov ecx, 0x832; mov eax, 0x40; mov edx, 0x0; wrmsr; mov ecx, 0x838; mov eax, 0x10; mov edx, 0x0; wrmsr'),
    ('apic', 'x2apic-lvt-lint0', 'insn:b91b000000b8000de0fe31d20f30b935080000b800070000ba000000000f30', 'mov ecx, 0x1b; mov eax, 0xfee00d00; xor edx, edx; wrmsr; mov ecx, 0x835; mov eax, 0x700; mov edx, 0x0; wrmsr'),
    ('events', 'self-nmi', 'insn:b91b000000b8000de0fe31d20f30b930080000b800440400ba000000000f30', 'mov ecx, 0x1b; mov eax, 0xfee00d00; xor edx, edx; wrmsr; mov ecx, 0x830; mov eax, 0x44400; mov edx, 0x0; wrmsr'),
    ('events', 'self-init', 'insn:b91b000000b8000de0fe31d20f30b930080000b800450400ba000000000f30', 'mov ecx, 0x1b; mov eax, 0xfee00d00; xor edx, edx; wrmsr; mov ecx, 0x830; mov eax, 0x44500; mov edx, 0x0; wrmsr'),
    ('events', 'self-smi', 'insn:b91b000000b8000de0fe31d20f30b930080000b800420400ba000000000f30', 'mov ecx, 0x1b; mov eax, 0xfee00d00; xor edx, edx; wrmsr; mov ecx, 0x830; mov eax, 0x44200; mov edx, 0x0; wrmsr'),
    ('events', 'self-ipi-fixed-masked', 'insn:b91b000000b8000de0fe31d20f30b930080000b841400400ba000000000f30', 'mov ecx, 0x1b; mov eax, 0xfee00d00; xor edx, edx; wrmsr; mov ecx, 0x830; mov eax, 0x44041; mov edx, 0x0; wrmsr'),
    ('events', 'sti-with-interrupt', 'insn:b91b000000b8000de0fe31d20f30b930080000b841400400ba000000000f30fb90', 'mov ecx, 0x1b; mov eax, 0xfee00d00; xor edx, edx; wrmsr; mov ecx, 0x830; mov eax, 0x44041; mov edx, 0x0; wrmsr; sti; nop'),
    ('fpu', 'mxcsr-unmasked', 'insn:c707000000000fae17', 'mov dword ptr [rdi], 0; ldmxcsr [rdi]'),
    ('fpu', 'x87-control-word', 'insn:66c7070000d92f', 'mov word ptr [rdi], 0x0; fldcw [rdi]'),
    ('fpu', 'xmm0-set', 'insn:660f76c0', 'pcmpeqd xmm0, xmm0'),
    ('flags', 'iopl-ac', 'insn:9c48810c24003004009d', 'pushfq; or qword ptr [rsp], 0x43000; popfq'),
    ('exit', 'hlt', 'insn:f4', 'hlt'),
    ('exit', 'triple-fault', 'insn:0f011f0f0b', 'lidt [rdi]; ud2'),
]

# The same MSR writes through the wrmsr probe (the native loop's kind, when the MSR is not one
# that reaches further) as well as through raw WRMSR bytes.
HOSTILE_WRMSR = [
    ('msr', 'pat-wrmsr', 'wrmsr:0x277:0x0', 'wrmsr probe'),
    ('msr', 'lstar-wrmsr', 'wrmsr:0xc0000082:0x1234', 'wrmsr probe'),
    ('msr', 'star-wrmsr', 'wrmsr:0xc0000081:0x23001000000000', 'wrmsr probe'),
    ('msr', 'sfmask-wrmsr', 'wrmsr:0xc0000084:0x4700', 'wrmsr probe'),
    ('msr', 'sysenter-cs-wrmsr', 'wrmsr:0x174:0x8', 'wrmsr probe'),
    ('msr', 'misc-enable-wrmsr', 'wrmsr:0x1a0:0x0', 'wrmsr probe'),
    ('msr', 'tsc-adjust-wrmsr', 'wrmsr:0x3b:0x100000', 'wrmsr probe'),
    ('msr', 'tsc-wrmsr', 'wrmsr:0x10:0x1000', 'wrmsr probe'),
    ('msr', 'tsc-deadline-wrmsr', 'wrmsr:0x6e0:0x1', 'wrmsr probe'),
    ('msr', 'mtrr-deftype-wrmsr', 'wrmsr:0x2ff:0x0', 'wrmsr probe'),
    ('msr', 'kernel-gs-base-wrmsr', 'wrmsr:0xc0000102:0x1234', 'wrmsr probe'),
    ('msr', 'spec-ctrl-wrmsr', 'wrmsr:0x48:0x1', 'wrmsr probe'),
    ('msr', 'poll-control-wrmsr', 'wrmsr:0x4b564d05:0x0', 'wrmsr probe'),
    ('pv-msr', 'kvmclock-on-pml4-wrmsr', 'wrmsr:0x4b564d01:0x8001', 'wrmsr probe'),
    ('pv-msr', 'kvmclock-legacy-on-gdt-wrmsr', 'wrmsr:0x12:0x1001', 'wrmsr probe'),
    ('pv-msr', 'steal-time-on-pml4-wrmsr', 'wrmsr:0x4b564d03:0x8001', 'wrmsr probe'),
    ('pv-msr', 'async-pf-on-idt-wrmsr', 'wrmsr:0x4b564d02:0x2001', 'wrmsr probe'),
    ('pv-msr', 'pv-eoi-on-runtime-wrmsr', 'wrmsr:0x4b564d04:0x10001', 'wrmsr probe'),
    ('pv-msr', 'wall-clock-on-idt-wrmsr', 'wrmsr:0x4b564d00:0x2000', 'wrmsr probe'),
    ('apic', 'x2apic-on-wrmsr', 'wrmsr:0x1b:0xfee00d00', 'wrmsr probe'),
]

HARMLESS = [
    'cpuid:1:0',
    'cpuid:7:0',
    'rdmsr:0x277',
    'rdmsr:0x1b',
    'rdmsr:0xc0000082',
    'rdmsr:0xc0000081',
    'rdmsr:0xc0000084',
    'rdmsr:0x3b',
    'rdmsr:0x6e0',
    'rdmsr:0x174',
    'rdmsr:0x1a0',
    'rdmsr:0x2ff',
    'rdmsr:0xc0000102',
    'rdmsr:0x48',
    'rdmsr:0x4b564d05',
    'rdmsr:0x4b564d01',
    'rdmsr:0x4b564d03',
    'rdmsr:0x4b564d02',
    'rdmsr:0x4b564d04',
    'rdmsr:0x12',
    'rdmsr:0x802',
    'cr4:7',
    'xsetbv:0:0x1',
    'insn:90',
    'insn:0f21f80f21c30f21f10f21da',  # mov rax, dr7; mov rbx, dr0; mov rcx, dr6; mov rdx, dr3
    'insn:440f20c00f20c30f20d90f20d2',  # mov rax, cr8; mov rbx, cr0; mov rcx, cr3; mov rdx, cr2
    'insn:488b042500800000488b1c25a0b00000488b0c2510100000488b1425d0200000',  # mov rax, [0x8000]; mov rbx, [0xb0a0]; mov rcx, [0x1010]; mov rdx, [0x20d0]
    'insn:488b042504300000488b1c2500000100488b0c25f8ff0500488b142500f00100',  # mov rax, [0x3004]; mov rbx, [0x10000]; mov rcx, [0x5fff8]; mov rdx, [0x1f000]
    'insn:488b042500000300488b1c2500100000488b0c2560200000488b1425f88f0000',  # mov rax, [0x30000]; mov rbx, [0x1000]; mov rcx, [0x2060]; mov rdx, [0x8ff8]
    'insn:0fae1f8b07d97f080fb75f08',  # stmxcsr [rdi]; mov eax, [rdi]; fnstcw [rdi+8]; movzx ebx, word ptr [rdi+8]
    'insn:66480f7ec0',  # movq rax, xmm0
    'insn:9c58',  # pushfq; pop rax
    'insn:fb9090fa',  # sti; nop; nop; cli
    'insn:0f0b',  # ud2
    'insn:488b042500000700',  # mov rax, [0x70000]
]


def harmless_after(runner, config, hostile: str | None, native: bool) -> list[dict]:
    """The outcomes of HARMLESS run right after `hostile` (None: on a fresh vCPU) on the native
    loop's path (Runner.run_many: loopable stretches in the loop) or the Python path (one probe
    at a time). Each starts on a fresh machine of `config`."""
    from kvmharness.probes.payloads import parse
    runner.release(config)
    specs = [parse(p) for p in HARMLESS]
    if hostile is not None:
        runner.run(config, parse(hostile), timeout_ms=300)
    if native:
        return runner.run_many(config, [(s, None) for s in specs], timeout_ms=300)
    return [runner.run(config, s, timeout_ms=300) for s in specs]


def differences(fresh: list[dict], after: list[dict]) -> list[str]:
    """The harmless probes whose outcome after a hostile body is not a fresh vCPU's."""
    if not len(fresh) == len(after) == len(HARMLESS):     # zip would compare a prefix only
        return [f"{len(after)} outcomes after, {len(fresh)} fresh, for {len(HARMLESS)} probes"]
    return [f"{p}: fresh {a} / after {b}" for p, a, b in zip(HARMLESS, fresh, after)
            if _comparable(a) != _comparable(b)]


def _comparable(outcome: dict) -> dict:
    """A timeout's duration varies run to run; nothing else may."""
    return {k: v for k, v in outcome.items() if k != "after_ms"}
