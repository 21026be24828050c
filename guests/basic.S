# Basic named payloads: machine-level behaviours that need more than one instruction.
        .intel_syntax noprefix
        .code64
        .include "harness.inc"
        .text

# Load an IDT with limit 0, then raise #UD: #UD can't be delivered (#GP), neither can the #GP
# (#DF), nor the #DF: a triple fault, which KVM reports as KVM_EXIT_SHUTDOWN.
        .globl triple_fault
triple_fault:
        lidt [rip + empty_idtr]
        ud2

# Execute ud2 under a fixup (KVM_ASM_SAFE style), then report the vector and error code the
# handler recorded: r9 = 0x100 | vector (0 if no fault), r10 = error code; rax = 1 proves the
# code after the landing point ran.
        .globl fixup_selftest
fixup_selftest:
        mov r9, [rip + magic]
        lea r10, [rip + 1f]
        lea r11, [rip + 2f]
1:      ud2
        xor r9d, r9d
2:      mov rax, 1
        mov rbx, r9
        mov rcx, r10
        DONE

        .balign 8
magic:  .quad FIXUP_MAGIC
empty_idtr:
        .word 0
        .quad 0

# -- runtime CPUID bits: what the guest's own writes change ------------------------------------
# A label <entry>.<step> marks each later instruction that can fault: an exception expectation
# names its step, and the label's address is the RIP compared (Payload.steps, probes/payloads.py).

# A guest MOV sets CR4.OSXSAVE, then CPUID.1: ECX[27] (OSXSAVE) must read 1 (KVM rewrites it
# from CR4, kvm_update_cpuid_runtime). Results: rax..rdx = CPUID.1.
        .globl osxsave_runtime
osxsave_runtime:
        mov rax, cr4
        or rax, 1 << 18
osxsave_runtime.mov_to_cr4:
        mov cr4, rax
        mov eax, 1
        xor ecx, ecx
        cpuid
        DONE

# A guest MOV sets CR4.PKE, then CPUID.7.0: ECX[4] (OSPKE) must read 1.
        .globl ospke_runtime
ospke_runtime:
        mov rax, cr4
        or rax, 1 << 22
ospke_runtime.mov_to_cr4:
        mov cr4, rax
        mov eax, 7
        xor ecx, ecx
        cpuid
        DONE

# CR4.OSXSAVE, then XSETBV XCR0 = x87|SSE|YMM, then CPUID.0xD.0: EBX (the XSAVE area size for
# the features enabled in XCR0) must follow XCR0. Results: rax..rdx = CPUID.0xD.0.
        .globl xsave_size_runtime
xsave_size_runtime:
        mov rax, cr4
        or rax, 1 << 18
xsave_size_runtime.mov_to_cr4:
        mov cr4, rax
        xor ecx, ecx
        mov eax, 7
        xor edx, edx
xsave_size_runtime.xsetbv:
        xsetbv
        mov eax, 0xd
        xor ecx, ecx
        cpuid
        DONE

# A guest WRMSR of IA32_TSC moves IA32_TSC_ADJUST by the same amount (the host set both to 0
# first): rbx = TSC read back, rcx = TSC_ADJUST (tsc_msrs_test's guest-side check).
        .globl tsc_guest_write
tsc_guest_write:
        mov ecx, 0x10
        mov eax, 0x00000000
        mov edx, 0x108                  # TSC = 0x108_0000_0000 = 2^40 + 2^35
        wrmsr
        rdmsr
        shl rdx, 32
        or rax, rdx
        mov rbx, rax
        mov ecx, 0x3b
        rdmsr
        shl rdx, 32
        or rax, rdx
        mov rcx, rax
        DONE
