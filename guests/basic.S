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
