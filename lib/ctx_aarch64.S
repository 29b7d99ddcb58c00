/* SPDX-License-Identifier: MIT */
/*
 * lib/ctx_aarch64.S - the context switch for aarch64 (AAPCS64, Linux).
 *
 * ql__ctx_switch(from, to) is called like any function, so the caller has
 * already saved every caller-saved register it needs; the switch saves only
 * what a callee must preserve: x19-x28, the frame pointer x29, the link
 * register x30 (where the switch returns to), the low 64 bits of v8-v15
 * (d8-d15: AAPCS64 makes only those callee-saved, the upper halves and
 * v0-v7, v16-v31 are the caller's business) and FPCR, the floating-point
 * control register (rounding mode, flush-to-zero, default NaN; not FPSR,
 * whose cumulative exception flags are status, not control). x18 is the
 * platform register, a scratch register on Linux, and is left alone. The
 * stack pointer is what struct ql_ctx holds. The frame it leaves on the
 * stack, 22 slots of 8 bytes (176 bytes, a multiple of 16 so sp stays
 * 16-byte aligned as the architecture demands of every sp-based access),
 * from the saved stack pointer up:
 *
 *   sp+0    x19            sp+8    x20
 *   sp+16   x21            sp+24   x22
 *   sp+32   x23            sp+40   x24
 *   sp+48   x25            sp+56   x26
 *   sp+64   x27            sp+72   x28
 *   sp+80   x29 (fp)       sp+88   x30 (lr: where the switch returns)
 *   sp+96   d8             sp+104  d9
 *   sp+112  d10            sp+120  d11
 *   sp+128  d12            sp+136  d13
 *   sp+144  d14            sp+152  d15
 *   sp+160  FPCR           sp+168  padding (zero)
 *
 * ql__ctx_make (lib/ctx.c) writes the same frame on a fresh stack with x19 =
 * arg, x20 = entry, x29 = 0, FPCR = the creating thread's, and x30 pointing
 * at the trampoline below, so the first switch "returns" into the
 * trampoline, which calls entry(arg) with sp 16-byte aligned.
 *
 * Writing FPCR can be slow (some cores serialise on it), and nearly every
 * switch is between contexts with the same FP control state, so the switch
 * writes it only when the incoming value differs from the outgoing one.
 *
 * Out of scope: SME streaming mode and ZA state (AAPCS64 has a call to an
 * ordinary function made with PSTATE.SM = 0 and ZA dormant, so the switch
 * never sees them live), the SVE bits above d8-d15 (caller-saved), and the
 * shadow call stack some toolchains keep in x18 (not used on Linux user
 * space by GCC). With -mbranch-protection=bti (or =standard) the switch
 * starts with a BTI landing pad and the object carries the GNU property note
 * saying so, so that linking it does not turn BTI off for the whole program;
 * the trampoline is only ever reached by `ret` or a direct `b`, which BTI
 * does not check.
 */
#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define BTI_C	hint	#34		/* bti c; a no-op on cores without BTI */
#define QL_PROPERTY_BTI 1
#else
#define BTI_C
#define QL_PROPERTY_BTI 0
#endif
/* The switch neither signs nor authenticates x30: compatible with PAC code. */
#if defined(__ARM_FEATURE_PAC_DEFAULT) && __ARM_FEATURE_PAC_DEFAULT
#define QL_PROPERTY_PAC 2
#else
#define QL_PROPERTY_PAC 0
#endif
#define QL_PROPERTY_FLAGS (QL_PROPERTY_BTI | QL_PROPERTY_PAC)

/* Push the frame above (x9 keeps the outgoing FPCR). */
	.macro	SAVE_FRAME
	sub	sp, sp, #176
	.cfi_def_cfa_offset 176
	stp	x19, x20, [sp, #0]
	stp	x21, x22, [sp, #16]
	stp	x23, x24, [sp, #32]
	stp	x25, x26, [sp, #48]
	stp	x27, x28, [sp, #64]
	stp	x29, x30, [sp, #80]
	.cfi_offset x29, -96
	.cfi_offset x30, -88
	stp	d8, d9, [sp, #96]
	stp	d10, d11, [sp, #112]
	stp	d12, d13, [sp, #128]
	stp	d14, d15, [sp, #144]
	mrs	x9, fpcr
	str	x9, [sp, #160]
	.endm

	.text

	.globl	ql__ctx_switch
	.hidden	ql__ctx_switch
	.type	ql__ctx_switch, %function
	.p2align 4
ql__ctx_switch:
	.cfi_startproc
	BTI_C
	SAVE_FRAME
	mov	x10, sp
	str	x10, [x0]		/* from->sp */
.Lresume:
	ldr	x10, [x1]		/* to->sp */
	mov	sp, x10
	/*
	 * From here on the frame is the incoming context's; the CFI above
	 * still describes it correctly (same layout), which is all an
	 * unwinder stopping here can ask for.
	 */
	ldr	x10, [sp, #160]
	cmp	x9, x10
	b.eq	1f
	msr	fpcr, x10
1:
	ldp	x19, x20, [sp, #0]
	ldp	x21, x22, [sp, #16]
	ldp	x23, x24, [sp, #32]
	ldp	x25, x26, [sp, #48]
	ldp	x27, x28, [sp, #64]
	ldp	x29, x30, [sp, #80]
	.cfi_restore x29
	.cfi_restore x30
	ldp	d8, d9, [sp, #96]
	ldp	d10, d11, [sp, #112]
	ldp	d12, d13, [sp, #128]
	ldp	d14, d15, [sp, #144]
	add	sp, sp, #176
	.cfi_def_cfa_offset 0
	ret
	.cfi_endproc
	.size	ql__ctx_switch, .-ql__ctx_switch

/*
 * ql__ctx_exit(to): resume *to and abandon the running context: nothing is
 * saved, so a context that ends writes no frame on its stack (the stack's
 * owner may reuse or unmap it as soon as *to runs). x9 carries the running
 * FPCR into the switch's second half, which compares it as usual.
 */
	.globl	ql__ctx_exit
	.hidden	ql__ctx_exit
	.type	ql__ctx_exit, %function
	.p2align 4
ql__ctx_exit:
	.cfi_startproc
	BTI_C
	mrs	x9, fpcr
	mov	x1, x0
	b	.Lresume
	.cfi_endproc
	.size	ql__ctx_exit, .-ql__ctx_exit

/*
 * ql__ctx_start(from, top, entry, arg): save the running context in *from
 * exactly as ql__ctx_switch does (so switching back to *from later returns
 * from this call), then begin entry(arg) on the stack whose highest address
 * is top, aligned down to 16 here, with x29 and x30 zero. Nothing is
 * written on the new stack before entry runs. FPCR is left as it is: the
 * new context keeps the running thread's.
 */
	.globl	ql__ctx_start
	.hidden	ql__ctx_start
	.type	ql__ctx_start, %function
	.p2align 4
ql__ctx_start:
	.cfi_startproc
	BTI_C
	SAVE_FRAME
	str	xzr, [sp, #168]
	mov	x10, sp
	str	x10, [x0]		/* from->sp */
	and	x1, x1, #~15
	mov	sp, x1			/* the new stack, nothing on it */
	mov	x19, x3			/* arg, as the trampoline expects */
	mov	x20, x2			/* entry */
	mov	x29, #0
	mov	x30, #0
	b	ql__ctx_trampoline
	.cfi_endproc
	.size	ql__ctx_start, .-ql__ctx_start

/*
 * First code of a new context: sp is 16-byte aligned here (ql__ctx_make
 * and ql__ctx_start arrange it, and the switch pops a frame of a multiple of 16 bytes), so
 * entry runs with the ABI's alignment. x29 is 0 and the return address is
 * marked undefined: debuggers and unwinders stop here.
 */
	.globl	ql__ctx_trampoline
	.hidden	ql__ctx_trampoline
	.type	ql__ctx_trampoline, %function
	.p2align 4
ql__ctx_trampoline:
	.cfi_startproc
	.cfi_undefined x30
	mov	x0, x19			/* arg */
	blr	x20			/* entry(arg) */
	/* entry returned, which it must never do. */
	bl	ql__ctx_returned
	brk	#0
	.cfi_endproc
	.size	ql__ctx_trampoline, .-ql__ctx_trampoline

#if QL_PROPERTY_FLAGS
	/* GNU_PROPERTY_AARCH64_FEATURE_1_AND: BTI (bit 0), PAC (bit 1). */
	.pushsection .note.gnu.property, "a"
	.p2align 3
	.word	4			/* name size ("GNU\0") */
	.word	16			/* descriptor size */
	.word	5			/* NT_GNU_PROPERTY_TYPE_0 */
	.asciz	"GNU"
	.word	0xc0000000		/* GNU_PROPERTY_AARCH64_FEATURE_1_AND */
	.word	4			/* property data size */
	.word	QL_PROPERTY_FLAGS
	.word	0			/* padding to 8 bytes */
	.popsection
#endif

	.section .note.GNU-stack,"",%progbits
