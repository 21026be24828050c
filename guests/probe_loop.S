# HOST code, not a guest payload: the probe loop kvmharness/guest/native.py maps executable and
# calls through ctypes (x86-64 SysV ABI, position independent, raw system calls, no libc).
#
# Why it exists: on a nested host every return from KVM_RUN leaves the caches cold, and the few
# hundred interpreter instructions Python runs between two KVM_RUNs then cost ~4 µs instead of
# ~0.3 µs; the probe itself costs ~8 µs. Running a batch of probes back to back from here, with
# exactly the system calls the Python path makes, and decoding the results in Python afterwards
# takes that cost out (figures: scripts/bench.py, README "Performance").
#
# Per probe, the system calls Machine.run_probe makes: zero the scratch page if the body uses it,
# save the MSR a WRMSR body writes (KVM_GET_MSRS), copy the body into guest memory, load the
# entry registers through kvm_run's sync regs (kvm_dirty_regs = KVM_SYNC_X86_REGS), arm the probe
# timer (timer_settime of the calling thread's timer: kvmharness/guest/timer.py), KVM_RUN, disarm;
# if the exit is DONE (`out 0xF1`) or a fault the guest's IDT stub reported (`out 0xF0`), record
# the registers that carry the result, then put back what the body may have changed
# (KVM_SET_MSRS, KVM_SET_SREGS, KVM_SET_XCRS from the baseline).
        .intel_syntax noprefix
        .code64
        .include "harness.inc"
        .text

        .equ SYS_ioctl, 16
        .equ SYS_timer_settime, 223
        .equ KVM_RUN, 0xAE80
        .equ KVM_GET_MSRS, 0xC008AE88
        .equ KVM_SET_MSRS, 0x4008AE89
        .equ KVM_SET_SREGS, 0x4138AE84
        .equ KVM_SET_XCRS, 0x4188AEA7
        .equ KVM_EXIT_IO, 2
        .equ KVM_EXIT_IO_OUT, 1
        .equ KVM_SYNC_X86_REGS, 1
        .equ KVM_REGS_QWORDS, 18
        .equ PAGE_SIZE, 4096

# struct kvm_run (checked against kvmharness/kvm/structs.py by tests/test_native_loop.py)
        .equ RUN_EXIT_REASON, 8
        .equ RUN_IO_DIRECTION, 32
        .equ RUN_IO_PORT, 34
        .equ RUN_DIRTY_REGS, 296
        .equ RUN_SYNC_REGS, 304
# struct kvm_msrs with one entry: nmsrs, pad, then index, reserved, data
        .equ MSRS_NMSRS, 0
        .equ MSRS_INDEX, 8
        .equ MSRS_DATA, 16

# struct batch, struct probe and the result record: kvmharness/guest/native.py
        .equ B_FD, 0
        .equ B_RUN, 8
        .equ B_MEM, 16
        .equ B_PROBES, 24
        .equ B_COUNT, 32
        .equ B_NEXT, 40
        .equ B_RESUME, 48
        .equ B_ARM, 56                  # struct itimerspec: the probe timeout
        .equ B_DISARM, 88               # struct itimerspec: zero
        .equ B_OUT, 120                 # a result record per probe (R_SIZE bytes)
        .equ B_SCRATCH, 128             # host address of the CPL0 scratch page
        .equ B_SREGS, 136               # address of the baseline struct kvm_sregs
        .equ B_XCRS, 144                # address of the baseline struct kvm_xcrs
        .equ B_MSRS, 152                # address of a one-entry struct kvm_msrs
        .equ B_SAVED, 160               # out: KVM_GET_MSRS's count for the current probe's MSR
        .equ B_ERR_IOCTL, 168           # out: the request of the host ioctl that failed
        .equ B_ERRNO, 176               # out: its -errno
        .equ B_TIMER, 184               # the calling thread's timer id (timer_create)
        .equ P_GPA, 0
        .equ P_LEN, 8
        .equ P_CODE, 16                 # host address of the body's bytes
        .equ P_REGS, 24                 # host address of its struct kvm_regs image
        .equ P_FLAGS, 32
        .equ P_MSR, 40                  # F_MSR: the MSR saved before and restored after
        .equ P_DONE_TAG, 48             # the record's tag when the probe ends DONE
        .equ P_SHIFT, 6                 # 64 bytes per probe entry
        .equ F_ZERO_SCRATCH, 1
        .equ F_RESET_SREGS, 2
        .equ F_RESET_XCRS, 4
        .equ F_MSR, 8
        .equ R_SIZE, 48                 # result record: tag, RAX, RBX, RCX, RDX, RSI
        .equ TAG_DONE, 0                # DONE, the result in RAX..RDX: a P_DONE_TAG value
        .equ TAG_FAULT, 1               # a fault the guest's IDT stub reported
        .equ TAG_DONE_NAMED, 2          # DONE, the result in other registers: a P_DONE_TAG value

# Sizes native.py checks before it calls the loop: a probe_loop.S and a native.py that do not
# belong together (a stale install, say) must not write past each other's structs.
        .globl batch_size, probe_entry_size, probe_done_tag, result_size
        .set batch_size, B_TIMER + 8
        .set probe_entry_size, 1 << P_SHIFT
        .set probe_done_tag, P_DONE_TAG # an older loop wrote tag 0 for every DONE in the same size
        .set result_size, R_SIZE

        .equ ST_DONE, 0
        .equ ST_STOPPED, 1
        .equ ST_HOST_IOCTL, 2
        .equ ST_MSR_NOT_RESTORED, 3
        .equ ST_MSR_LOST, 4

# long probe_loop(struct batch *b)
#   Runs probes b->next .. b->count-1 and advances b->next past each one it recorded. Returns
#     ST_DONE             all were recorded;
#     ST_STOPPED          probe b->next ended in another exit, left in kvm_run (its registers in
#                         the sync regs, its MSR save in b->saved and the msrs buffer, nothing put
#                         back yet) for the caller to decode and clean up;
#     ST_HOST_IOCTL       a host ioctl around a probe failed: b->err_ioctl, b->errno (KVM_GET_MSRS
#                         before the run, else putting state back after b->next - 1);
#     ST_MSR_NOT_RESTORED KVM_SET_MSRS did not take the saved value back (after b->next - 1);
#     ST_MSR_LOST         the MSR could not be read before, and the WRMSR reached DONE;
#     -errno              KVM_RUN or timer_settime failed. Then b->resume is 1 if it was KVM_RUN, and
#                         the timer may still be armed: after -EINTR the guest is intact and a
#                         new call re-enters it without reloading anything, under the same timer.
#   The caller blocks asynchronous signals around the call and gives the vCPU its own mask with
#   KVM_SET_SIGNAL_MASK: a signal that arrives between two KVM_RUNs stays pending and makes the
#   next KVM_RUN return -EINTR at once, so none is noticed late. That includes a probe timer that
#   expired just after its KVM_RUN returned: the next probe's KVM_RUN returns -EINTR with that
#   probe's own timer still running, and the caller simply enters it again.
        .globl probe_loop
probe_loop:
        push rbx
        push r12
        push r13
        push r14
        mov rbx, rdi
        mov r13, [rbx + B_RUN]
next_probe:
        mov rax, [rbx + B_NEXT]
        cmp rax, [rbx + B_COUNT]
        jae all_done
        shl rax, P_SHIFT
        mov r12, [rbx + B_PROBES]
        add r12, rax
        cmp qword ptr [rbx + B_RESUME], 0
        jne enter
        test qword ptr [r12 + P_FLAGS], F_ZERO_SCRATCH
        jz 1f
        mov rdi, [rbx + B_SCRATCH]
        xor eax, eax
        mov ecx, PAGE_SIZE
        rep stosb
1:      test qword ptr [r12 + P_FLAGS], F_MSR
        jz 2f
        mov rdx, [rbx + B_MSRS]
        mov dword ptr [rdx + MSRS_NMSRS], 1
        mov rax, [r12 + P_MSR]          # index; reserved = 0
        mov [rdx + MSRS_INDEX], rax
        mov qword ptr [rdx + MSRS_DATA], 0
        mov esi, KVM_GET_MSRS
        call host_ioctl
        test rax, rax
        js host_failed
        mov [rbx + B_SAVED], rax
2:      mov rdi, [rbx + B_MEM]          # the body into guest memory
        add rdi, [r12 + P_GPA]
        mov rsi, [r12 + P_CODE]
        mov rcx, [r12 + P_LEN]
        rep movsb
        lea rdi, [r13 + RUN_SYNC_REGS]  # its registers into the sync regs
        mov rsi, [r12 + P_REGS]
        mov ecx, KVM_REGS_QWORDS
        rep movsq
        mov qword ptr [r13 + RUN_DIRTY_REGS], KVM_SYNC_X86_REGS
        lea rdx, [rbx + B_ARM]
        call set_timer
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
        lea rdx, [rbx + B_DISARM]
        call set_timer
        cmp dword ptr [r13 + RUN_EXIT_REASON], KVM_EXIT_IO
        jne stopped
        cmp byte ptr [r13 + RUN_IO_DIRECTION], KVM_EXIT_IO_OUT
        jne stopped
        mov r14, [r12 + P_DONE_TAG]     # the record's tag: the probe's own for DONE, TAG_FAULT
        cmp word ptr [r13 + RUN_IO_PORT], PORT_DONE
        je record
        mov r14d, TAG_FAULT
        cmp word ptr [r13 + RUN_IO_PORT], PORT_FAULT
        jne stopped
record:                                 # tag, RAX, RBX, RCX, RDX, RSI at out + next * R_SIZE
        mov rax, [rbx + B_NEXT]
        imul rax, rax, R_SIZE
        add rax, [rbx + B_OUT]
        mov [rax], r14
        mov rcx, [r13 + RUN_SYNC_REGS]
        mov [rax + 8], rcx
        mov rcx, [r13 + RUN_SYNC_REGS + 8]
        mov [rax + 16], rcx
        mov rcx, [r13 + RUN_SYNC_REGS + 16]
        mov [rax + 24], rcx
        mov rcx, [r13 + RUN_SYNC_REGS + 24]
        mov [rax + 32], rcx
        mov rcx, [r13 + RUN_SYNC_REGS + 32]
        mov [rax + 40], rcx
        inc qword ptr [rbx + B_NEXT]
# Put back what the body may have changed, as Machine._cleanup and Machine._prepare would.
        test qword ptr [r12 + P_FLAGS], F_MSR
        jz 4f
        cmp qword ptr [rbx + B_SAVED], 0
        je 3f
        mov rdx, [rbx + B_MSRS]         # still index + the saved value
        mov esi, KVM_SET_MSRS
        call host_ioctl
        test rax, rax
        js host_failed
        cmp rax, 1
        je 4f
        mov eax, ST_MSR_NOT_RESTORED
        jmp done
3:      cmp r14, TAG_FAULT              # not saved: harmless unless the write took effect
        je 4f
        mov eax, ST_MSR_LOST
        jmp done
4:      test qword ptr [r12 + P_FLAGS], F_RESET_SREGS
        jz 5f
        mov rdx, [rbx + B_SREGS]
        mov esi, KVM_SET_SREGS
        call host_ioctl
        test rax, rax
        js host_failed
5:      test qword ptr [r12 + P_FLAGS], F_RESET_XCRS
        jz next_probe
        mov rdx, [rbx + B_XCRS]
        mov esi, KVM_SET_XCRS
        call host_ioctl
        test rax, rax
        js host_failed
        jmp next_probe

all_done:
        mov eax, ST_DONE
        jmp done
stopped:
        mov eax, ST_STOPPED
        jmp done
host_failed:
        mov [rbx + B_ERRNO], rax
        mov eax, ST_HOST_IOCTL
done:
        pop r14
        pop r13
        pop r12
        pop rbx
        ret

# rax = ioctl(b->fd, esi, rdx), the request noted in b->err_ioctl in case it fails.
host_ioctl:
        mov [rbx + B_ERR_IOCTL], rsi
        mov eax, SYS_ioctl
        mov rdi, [rbx + B_FD]
        syscall
        ret

# rax = timer_settime(b->timer, 0, rdx, NULL)
set_timer:
        mov eax, SYS_timer_settime
        mov rdi, [rbx + B_TIMER]
        xor esi, esi
        xor r10d, r10d
        syscall
        ret
