/* SPDX-License-Identifier: MIT */
/*
 * lib/ctx_x86_64.S - the context switch for x86_64 (System V ABI).
 *
 * ql__ctx_switch(from, to) is called like any function, so the caller has
 * already saved every caller-saved register it needs; the switch saves only
 * what a callee must preserve: rbx, rbp, r12-r15, the x87 control word and
 * MXCSR (its control bits). The frame it leaves on the stack, from the saved
 * stack pointer up:
 *
 *   sp+0   x87 control word (2 bytes in an 8-byte slot)
 *   sp+8   MXCSR (4 bytes in an 8-byte slot)
 *   sp+16  r15
 *   sp+24  r14
 *   sp+32  r13
 *   sp+40  r12
 *   sp+48  rbx
 *   sp+56  rbp
 *   sp+64  return address
 *
 * ql__ctx_make (lib/ctx.c) writes the same frame on a fresh stack with r12 =
 * arg, r13 = entry and the return address pointing at the trampoline below,
 * so the first switch "returns" into the trampoline, which calls entry(arg).
 */
/* Push the frame above and store the stack pointer in from->sp (%rdi). */
	.macro	SAVE_INTO_FROM
	pushq	%rbp
	pushq	%rbx
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	subq	$16, %rsp
	stmxcsr	8(%rsp)
	fnstcw	(%rsp)
	movq	%rsp, (%rdi)		/* from->sp */
	.endm

	.text

	.globl	ql__ctx_switch
	.hidden	ql__ctx_switch
	.type	ql__ctx_switch, @function
ql__ctx_switch:
	.cfi_startproc
	SAVE_INTO_FROM
.Lresume:
	movq	(%rsi), %rsp		/* to->sp */
	fldcw	(%rsp)
	ldmxcsr	8(%rsp)
	addq	$16, %rsp
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbx
	popq	%rbp
	ret
	.cfi_endproc
	.size	ql__ctx_switch, .-ql__ctx_switch

/*
 * ql__ctx_exit(to): resume *to and abandon the running context: nothing is
 * saved, so a context that ends writes no frame on its stack (the stack's
 * owner may reuse or unmap it as soon as *to runs).
 */
	.globl	ql__ctx_exit
	.hidden	ql__ctx_exit
	.type	ql__ctx_exit, @function
ql__ctx_exit:
	.cfi_startproc
	movq	%rdi, %rsi
	jmp	.Lresume
	.cfi_endproc
	.size	ql__ctx_exit, .-ql__ctx_exit

/*
 * ql__ctx_start(from, top, entry, arg): save the running context in *from
 * exactly as ql__ctx_switch does (so switching back to *from later returns
 * from this call), then begin entry(arg) on the stack whose highest address
 * is top, aligned down to 16 here. Nothing is written on the new stack
 * before entry runs, unlike ql__ctx_make's frame: a task that has not run
 * yet costs no store to its (cold) stack. The new context keeps the
 * running thread's x87 control word and MXCSR.
 */
	.globl	ql__ctx_start
	.hidden	ql__ctx_start
	.type	ql__ctx_start, @function
ql__ctx_start:
	.cfi_startproc
	SAVE_INTO_FROM
	andq	$-16, %rsi
	movq	%rsi, %rsp		/* the new stack, nothing on it */
	movq	%rcx, %r12		/* arg, as the trampoline expects */
	movq	%rdx, %r13		/* entry */
	xorl	%ebp, %ebp
	jmp	ql__ctx_trampoline
	.cfi_endproc
	.size	ql__ctx_start, .-ql__ctx_start

/*
 * First code of a new context: rsp is 16-byte aligned here (ql__ctx_make
 * and ql__ctx_start arrange it), so the call below enters entry with the
 * ABI's alignment. rbp is 0: debuggers and unwinders stop here.
 */
	.globl	ql__ctx_trampoline
	.hidden	ql__ctx_trampoline
	.type	ql__ctx_trampoline, @function
ql__ctx_trampoline:
	.cfi_startproc
	.cfi_undefined rip
	movq	%r12, %rdi
	callq	*%r13
	/* entry returned, which it must never do. */
	callq	ql__ctx_returned
	ud2
	.cfi_endproc
	.size	ql__ctx_trampoline, .-ql__ctx_trampoline

	.section .note.GNU-stack,"",@progbits
