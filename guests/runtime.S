# kvmharness guest runtime: exception stubs, the common fault path, and the CPL3 trampoline.
#
# Loaded at RUNTIME_BASE (kvmharness/guest/layout.py), executed at CPL0. On the kvm_pvm host CPL0
# code is interpreted by KVM's instruction emulator, so this file uses only basic integer
# instructions (mov, push, cmp, jcc, or, add, iretq, out): anything fancier ends KVM_RUN with
# KVM_EXIT_INTERNAL_ERROR instead of running.
#
# Protocol with the host (ports are written with `out imm8, al`, which always exits to userspace):
#   port 0xF1  DONE   the probe body finished; its results are in the general registers.
#   port 0xF0  FAULT  an exception nobody expected: rax = vector, rbx = error code (0 if the
#                     vector has none), rcx = faulting RIP, rdx = CS at the fault, rsi = CR2,
#                     rdi = RSP at the fault.
#
# CPL3 bodies cannot rely on `out` (I/O privilege is the hypervisor's business), so they finish
# by jumping to USER_DONE, a `ud2` on a user page: a #UD at exactly that address is DONE, reported
# from CPL0 with the body's registers untouched.
#
# Expected faults (selftests' KVM_ASM_SAFE, registers only): before the instruction the guest
# puts FIXUP_MAGIC in r9, the instruction's address in r10 and a landing address in r11. When a
# fault hits exactly that instruction, the handler resumes at r11 with r9 = 0x100 | vector and
# r10 = error code, so "no fault" (r9 = 0, set by the code after the instruction) never
# collides with #DE (vector 0).

        .intel_syntax noprefix
        .code64
        .text

        .include "harness.inc"
        .equ USER_RFLAGS, 0x0002        # IF=0, IOPL=0

        .globl idt_stubs
        .globl idt_stub_size
        .globl fault_common
        .globl to_user
        .globl fixup_magic

# One 16-byte stub per vector: push a dummy error code where the CPU pushes none, then the
# vector number. The host fills the IDT with idt_stubs + 16 * vector.
        .balign 16
idt_stubs:
        .set vec, 0
        .rept 256
        .balign 16
        .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
        push vec
        .else
        push 0
        push vec
        .endif
        jmp fault_common
        .set vec, vec + 1
        .endr
        .equ idt_stub_size, 16

# Stack here: [rsp] vector, [rsp+8] error code, [rsp+16] RIP, [rsp+24] CS, [rsp+32] RFLAGS,
# [rsp+40] RSP, [rsp+48] SS.
fault_common:
        cmp qword ptr [rsp + 16], USER_DONE
        jne 0f
        cmp qword ptr [rsp], 6
        jne 0f
        out PORT_DONE, al               # a CPL3 body finished: its registers are the result
        jmp 2f
0:
        cmp r9, [rip + fixup_magic]
        jne 1f
        cmp r10, [rsp + 16]
        jne 1f
        mov r9, [rsp]
        or r9, 0x100
        mov r10, [rsp + 8]
        mov [rsp + 16], r11
        add rsp, 16
        iretq
1:
        mov rax, [rsp]
        mov rbx, [rsp + 8]
        mov rcx, [rsp + 16]
        mov rdx, [rsp + 24]
        mov rsi, cr2
        mov rdi, [rsp + 40]
        out PORT_FAULT, al
2:
        hlt
        jmp 2b

# Enter the probe body at CPL3: r14 = its address, r15 = its stack pointer. Every other
# register reaches the body unchanged.
to_user:
        push USER_SS
        push r15
        push USER_RFLAGS
        push USER_CS
        push r14
        iretq

        .balign 8
fixup_magic:
        .quad 0xabacadaba
