# CET behavioural payloads: shadow stacks (SHSTK) and indirect-branch tracking (IBT).
#
# The host sets the CET state before each payload (kvmharness/probes/payloads.py): CR4.CET via
# KVM_SET_SREGS and U_CET/S_CET/PLx_SSP via KVM_SET_MSRS, and writes any token into the
# shadow-stack pages. The user payloads run at CPL3, entered through to_user's IRETQ, which
# loads SSP from IA32_PL3_SSP when U_CET.SH_STK_EN is set. A control-protection fault (#CP,
# vector 21) arrives at the CPL0 handler as an ordinary fault report; its error code says which
# check fired: 1 NEAR-RET, 2 FAR-RET, 3 ENDBRANCH, 4 RSTORSSP, 5 SETSSBSY.
#
# None of this executes on a host whose KVM lacks CET (the model skips it there); every
# instruction here is still assembled and its layout checked by tests/test_cet_payloads.py.

        .intel_syntax noprefix
        .code64
        .include "harness.inc"
        .text

# -- shadow stack, user mode ------------------------------------------------------------------

# A near RET whose return address on the data stack was changed: #CP(NEAR-RET) at the RET.
        .globl shstk_near_ret
shstk_near_ret:
        call 1f
        DONE                            # not reached: the RET below goes to 2f or faults
1:      lea rax, [rip + 2f]
        mov [rsp], rax                  # tamper with the return address (data stack only)
        .globl shstk_near_ret_ret
shstk_near_ret_ret:
        ret
2:      mov rax, 1                      # reached only without shadow-stack enforcement
        DONE

# A far RET to a changed return address: the far CALL put CS and the return LIP on the shadow
# stack too, so the LRET check fails with #CP(FAR-RET).
        .globl shstk_far_ret
shstk_far_ret:
        rex.w call fword ptr [rip + far_target]
        DONE
far_callee:
        lea rax, [rip + 3f]
        mov [rsp], rax                  # the return RIP (the CS above it stays USER_CS)
        .globl shstk_far_ret_lret
shstk_far_ret_lret:
        rex.w retf
3:      mov rax, 1
        DONE

# RSTORSSP with the restore token the host put at SHSTK_USER + 0x800: SSP becomes the token's
# address, which RDSSP then reports in rax.
        .globl shstk_rstorssp
shstk_rstorssp:
        rstorssp [SHSTK_USER + 0x800]
        rdsspq rax
        DONE

# RSTORSSP of a location holding no valid restore token: #CP(RSTORSSP).
        .globl shstk_rstorssp_bad
shstk_rstorssp_bad:
        rstorssp [SHSTK_USER + 0x700]
        DONE

# WRSS (U_CET.WR_SHSTK_EN set by the host) writes the shadow-stack page; an ordinary load reads
# the value back into rbx.
        .globl shstk_wrss
shstk_wrss:
        mov rax, 0x5a5a1234
        mov rdi, SHSTK_USER + 0x100
        wrssq [rdi], rax
        mov rbx, [rdi]
        DONE

# An ordinary store to a shadow-stack page (PTE R/W=0, Dirty=1) faults: #PF, error code
# P|W|U (0x7) with the shadow-stack bit (6) clear.
        .globl shstk_write_fault
shstk_write_fault:
        mov rax, 1
        mov [SHSTK_USER + 0x100], rax
        DONE

# -- shadow stack, supervisor mode ------------------------------------------------------------

# SETSSBSY takes the supervisor token at PL0_SSP (the host put one at SHSTK_SUPER + 0xff8):
# SSP = PL0_SSP and the token's busy bit is set. A CALL/RET pair then balances on the shadow
# stack. rax = SSP after SETSSBSY, rbx = the token after it (busy), rcx = 1 after the RET.
        .globl sss_supervisor
sss_supervisor:
        setssbsy
        rdsspq rax
        mov rbx, [SHSTK_SUPER + 0xff8]
        call 4f
        mov rcx, 1
        DONE
4:      ret

# Interrupt delivery through IA32_INTERRUPT_SSP_TABLE. The host points vector 3's gate at
# sss_ist_handler with IST=1 and puts a supervisor shadow-stack token at INT_SSP_TAB[1]. INT3 at
# CPL0 with S_CET.SH_STK_EN then switches SSP to the token (checking it and setting its busy bit)
# and pushes CS, LIP and the old SSP there. The handler reports rax = SSP (token address - 24)
# and rbx = the token (busy).
        .globl sss_int_ssp_tab
sss_int_ssp_tab:
        int3
        DONE                            # not reached: the handler below ends the payload
        .globl sss_ist_handler
sss_ist_handler:
        rdsspq rax
        mov rbx, [IST_TOKEN]
        DONE

# -- indirect-branch tracking, user mode ------------------------------------------------------

# An indirect JMP to a target that does not start with ENDBR64: #CP(ENDBRANCH) at the target.
        .globl ibt_no_endbr
ibt_no_endbr:
        lea rax, [rip + no_endbr_target]
        jmp rax
        .globl no_endbr_target
no_endbr_target:
        mov rax, 1
        DONE

# The same jump with the NOTRACK prefix (U_CET.NO_TRACK_EN set by the host) is not tracked.
        .globl ibt_notrack
ibt_notrack:
        lea rax, [rip + notrack_target]
        notrack jmp rax
notrack_target:
        mov rax, 1
        DONE

# An indirect JMP to a target that starts with ENDBR64 is fine.
        .globl ibt_endbr
ibt_endbr:
        lea rax, [rip + endbr_target]
        jmp rax
endbr_target:
        endbr64
        mov rax, 1
        DONE

        .balign 8
far_target:
        .quad far_callee
        .word USER_CS
