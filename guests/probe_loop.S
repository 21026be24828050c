# HOST code, not a guest payload: the probe loop kvmharness/guest/native.py maps executable and
# calls through ctypes (x86-64 SysV ABI, position independent, raw system calls, no libc).
#
# Why it exists: on a nested host every return from KVM_RUN leaves the caches cold, and the few
# hundred interpreter instructions Python runs between two KVM_RUNs then cost ~4 µs instead of
# ~0.3 µs; the probe itself costs ~8 µs. Running a batch of probes back to back from here, with
# exactly the system calls the Python path makes, and decoding the results in Python afterwards
# takes that cost out (figures: scripts/bench.py, README "Speed").
#
# Per probe, as Machine._enter does: copy the body into guest memory, load the entry registers
# through kvm_run's sync regs (kvm_dirty_regs = KVM_SYNC_X86_REGS), arm the probe timer
# (setitimer), KVM_RUN, disarm, and if the exit is DONE (`out 0xF1`) store RAX, RBX, RCX, RDX.
        .intel_syntax noprefix
        .code64
        .include "harness.inc"
        .text

        .equ SYS_ioctl, 16
        .equ SYS_setitimer, 38
        .equ ITIMER_REAL, 0
        .equ KVM_RUN, 0xAE80
        .equ KVM_EXIT_IO, 2
        .equ KVM_EXIT_IO_OUT, 1
        .equ KVM_SYNC_X86_REGS, 1
        .equ KVM_REGS_QWORDS, 18

# struct kvm_run (checked against kvmharness/kvm/structs.py by tests/test_native_loop.py)
        .equ RUN_EXIT_REASON, 8
        .equ RUN_IO_DIRECTION, 32
        .equ RUN_IO_PORT, 34
        .equ RUN_DIRTY_REGS, 296
        .equ RUN_SYNC_REGS, 304

# struct batch and struct probe: kvmharness/guest/native.py (Batch, PROBE_ENTRY)
        .equ B_FD, 0
        .equ B_RUN, 8
        .equ B_MEM, 16
        .equ B_PROBES, 24
        .equ B_COUNT, 32
        .equ B_NEXT, 40
        .equ B_RESUME, 48
        .equ B_ARM, 56                  # struct itimerval: the probe timeout
        .equ B_DISARM, 88               # struct itimerval: zero
        .equ B_OUT, 120                 # 4 qwords per probe: RAX, RBX, RCX, RDX at DONE
        .equ P_GPA, 0
        .equ P_LEN, 8
        .equ P_CODE, 16                 # host address of the body's bytes
        .equ P_REGS, 24                 # host address of its struct kvm_regs image
        .equ P_SHIFT, 5                 # 32 bytes per probe entry

# long probe_loop(struct batch *b)
#   Runs probes b->next .. b->count-1 and advances b->next past each one that ended in DONE.
#   Returns 0 when all did; 1 when probe b->next ended in another exit, left in kvm_run (and its
#   registers in the sync regs) for the caller to decode; -errno when KVM_RUN failed. Then
#   b->resume is 1 and the timer may still be armed: after -EINTR the guest is intact and a new
#   call re-enters it without reloading anything, under the same timer.
        .globl probe_loop
probe_loop:
        push rbx
        push r12
        push r13
        mov rbx, rdi
next_probe:
        mov rax, [rbx + B_NEXT]
        cmp rax, [rbx + B_COUNT]
        jae all_done
        cmp qword ptr [rbx + B_RESUME], 0
        jne enter
        shl rax, P_SHIFT
        mov r12, [rbx + B_PROBES]
        add r12, rax
        mov rdi, [rbx + B_MEM]          # the body into guest memory
        add rdi, [r12 + P_GPA]
        mov rsi, [r12 + P_CODE]
        mov rcx, [r12 + P_LEN]
        rep movsb
        mov r13, [rbx + B_RUN]          # its registers into the sync regs
        lea rdi, [r13 + RUN_SYNC_REGS]
        mov rsi, [r12 + P_REGS]
        mov ecx, KVM_REGS_QWORDS
        rep movsq
        mov qword ptr [r13 + RUN_DIRTY_REGS], KVM_SYNC_X86_REGS
        mov eax, SYS_setitimer
        mov edi, ITIMER_REAL
        lea rsi, [rbx + B_ARM]
        xor edx, edx
        syscall
        test rax, rax
        jnz done
        mov qword ptr [rbx + B_RESUME], 1
enter:
        mov eax, SYS_ioctl
        mov rdi, [rbx + B_FD]
        mov esi, KVM_RUN
        xor edx, edx
        syscall
        test rax, rax
        jnz done                        # -errno; b->resume stays 1
        mov qword ptr [rbx + B_RESUME], 0
        mov eax, SYS_setitimer
        mov edi, ITIMER_REAL
        lea rsi, [rbx + B_DISARM]
        xor edx, edx
        syscall
        mov r13, [rbx + B_RUN]
        cmp dword ptr [r13 + RUN_EXIT_REASON], KVM_EXIT_IO
        jne stopped
        cmp byte ptr [r13 + RUN_IO_DIRECTION], KVM_EXIT_IO_OUT
        jne stopped
        cmp word ptr [r13 + RUN_IO_PORT], PORT_DONE
        jne stopped
        mov rax, [rbx + B_NEXT]
        shl rax, P_SHIFT
        add rax, [rbx + B_OUT]
        mov rcx, [r13 + RUN_SYNC_REGS]
        mov [rax], rcx
        mov rcx, [r13 + RUN_SYNC_REGS + 8]
        mov [rax + 8], rcx
        mov rcx, [r13 + RUN_SYNC_REGS + 16]
        mov [rax + 16], rcx
        mov rcx, [r13 + RUN_SYNC_REGS + 24]
        mov [rax + 24], rcx
        inc qword ptr [rbx + B_NEXT]
        jmp next_probe
all_done:
        xor eax, eax
        jmp done
stopped:
        mov eax, 1
done:
        pop r13
        pop r12
        pop rbx
        ret
