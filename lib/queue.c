/* SPDX-License-Identifier: MIT */
/*
 * lib/queue.c - the executor's run queues: the per-worker work-stealing
 * deque, the per-worker MPSC inbox and the global overflow queue.
 *
 * What it owns. Nothing but queue memory: the deque's slot array (allocated
 * once, at init) and the atomics of each structure. Items are opaque: the
 * deque stores `void *`, the inbox and the global queue link nodes the caller
 * embeds in its own objects, so pushing, stealing and taking never allocate.
 * Nothing here blocks, sleeps or takes a lock; waking a parked worker is the
 * caller's business (ql__inbox_push_mpsc() tells it when a wake-up may be
 * needed).
 *
 * Who may call it, from which threads. Each function's suffix says (see
 * lib/queue.h): `_local` is the owner only (the worker whose deque or inbox it
 * is), `_mpsc` any producer, ql__deque_steal() and the global queue any
 * thread. Breaking a contract is not caught at run time; it corrupts the
 * queue.
 *
 * ---------------------------------------------------------------- the deque
 *
 * A bounded Chase-Lev deque, in the C11 formulation of Lê, Pop, Cohen and
 * Zappa Nardelli, "Correct and Efficient Work-Stealing for Weak Memory
 * Models" (PPoPP 2013), without the growable array: a full deque refuses the
 * push (-ENOSPC) and the executor overflows half of it to the global queue.
 *
 * Two indices, both 64-bit and never reduced (at one operation per
 * nanosecond they overflow after 292 years): `top`, the index of the oldest
 * item, only ever incremented, always by a CAS; and `bottom`, the index one
 * past the newest item, written only by the owner. Item i lives in
 * slots[i & mask]. Invariants, at every moment when the owner is not inside
 * ql__deque_pop_local():
 *   - top <= bottom, and bottom - top <= capacity;
 *   - the items are exactly those at indices [top, bottom);
 *   - every modification of top is a seq_cst CAS that moves it forward by
 *     one (a thief, or the owner taking the last item) or, by the owner only,
 *     by k (ql__deque_pop_half_local()). So top is monotonic, and whoever's
 *     CAS moves top past index i owns item i, exactly once.
 * Inside pop, bottom is briefly top - 1 (the deque looked empty and the owner
 * is about to restore it).
 *
 * The owner pushes at the bottom without any read-modify-write and pops at
 * the bottom without one unless a single item is left; thieves CAS the top.
 * The one dangerous race is the owner popping item b while a thief steals
 * it: the owner does not CAS when it sees more than one item. The paper
 * prevents it with a seq_cst fence in each: the owner stores bottom = b, then
 * fences, then loads top; a thief loads top, then fences, then loads bottom.
 *
 * Fences versus seq_cst accesses. ThreadSanitizer does not model a
 * standalone atomic_thread_fence, so it would report the (correct) fenced
 * code as racy. Instead the four accesses that the fences order are seq_cst
 * operations themselves: the owner's store of bottom and load of top in pop,
 * the thief's loads of top and bottom in steal. The argument that the pop /
 * steal race cannot go wrong then runs on the single total order S of seq_cst
 * operations. Suppose the owner decremented bottom to b (store D), loaded top
 * = t_o < b (load L_o) and so took item b without a CAS, while a thief loaded
 * top = b (load T) and then a bottom greater than b (load B), and so also
 * went for item b. B read a value written before D (a later value is b
 * itself, or comes from a push after this pop, which made a new item b
 * legitimately). Every earlier bottom store is sequenced before D, so a
 * seq_cst B that precedes D in S is the only way B can see it: T < B < D < L_o
 * in S (each thread's seq_cst operations appear in S in program order). All
 * modifications of top are seq_cst CASes, so L_o, later in S than T, reads a
 * top at least as new as T did: t_o >= b. Contradiction; so at most one of
 * them takes item b, and when only one item is left both use a CAS. This is
 * the same argument the fences make; the seq_cst accesses give it directly.
 * They cost no more than the fences on x86-64 (the seq_cst store is the one
 * xchg the fence would have been, seq_cst loads are plain loads) and on
 * arm64 (stlr/ldar instead of dmb ish + str/ldr).
 *
 * The other orders are the paper's, or stronger: bottom's other stores are
 * releases, a thief's loads of it acquire (seq_cst includes acquire), so a
 * thief that sees index i below bottom sees the push that filled slot i.
 * The paper's "release fence; relaxed store of bottom" in push becomes a
 * release store: the only store it must order the slot write before is that
 * one. The paper's relaxed restores of bottom in pop become releases too,
 * which lets the proof below go through happens-before instead of appealing
 * to the model's fine print; they are plain stores on x86-64. The push's
 * load of top is acquire, as in the paper: it synchronizes with the CAS of
 * the thief that took the item whose slot is about to be reused, so that
 * thief's read of the slot happened before the overwrite. Slots are
 * _Atomic(void *) accessed relaxed: a thief may read a slot the owner is
 * overwriting (a stale thief whose CAS is bound to fail), which with plain
 * pointers would be a data race, undefined behaviour, and a TSan report.
 *
 * Steal-half. Moving n items with one CAS of top from t to t + n would be
 * wrong for a thief: the owner may meanwhile pop, CAS-free, an item inside
 * [t, t + n) (it saw more than one item, so it does not CAS), and both would
 * take it. So ql__deque_steal_half() is a loop of classic single-item steals,
 * each with its own CAS, pushing each item into the thief's own deque.
 *
 * Pop-half is different, and does use one CAS: it is the owner taking from
 * its own top. The race above needs the owner's CAS-free pop running at the
 * same time as the batch, and here the owner is the one running the batch.
 * While ql__deque_pop_half_local() runs nobody else writes bottom or any
 * slot; thieves only move top forward by one, each with a CAS. The owner
 * reads top = t, copies the items at [t, t + k) with k <= (bottom - t) / 2,
 * and CASes top from t to t + k. If the CAS succeeds, top was t at that
 * point of its modification order, so no thief had taken any of those items
 * (a thief takes index i only by moving top from i to i + 1), and every
 * thief whose CAS comes later finds top >= t + k: the k items are the
 * owner's alone, and they are the values it copied since only the owner
 * writes slots. If the CAS fails a thief moved top; the owner retries with
 * the new top (and a smaller k), and stops when fewer than 2 items are left.
 *
 * ---------------------------------------------------------------- the inbox
 *
 * An MPSC stack of intrusive nodes (Treiber push, take-all by exchange).
 * Producers CAS a node (or a pre-linked chain) onto the head; the consumer
 * swaps the head with NULL and reverses what it got, which yields push
 * order. Everything one producer pushed is in the stack in its order, so it
 * comes out in its order. ABA cannot hurt: see the global queue below, the
 * same argument.
 *
 * -------------------------------------------------------- the global queue
 *
 * The same structure with any number of takers, plus an approximate count.
 * A Treiber stack's ABA problem lives in pop-one: the popper reads head A
 * and A->next, and CASes head from A to A->next; if meanwhile A was popped,
 * others came and went and A was pushed back, the CAS succeeds and installs
 * a stale next. There is no pop-one here. A push reads nothing from the old
 * chain but the head pointer itself: it links node->next = A and CASes head
 * from A to node. If between the two steps A was taken and pushed again, the
 * CAS still succeeds and that is still correct: the new stack is node
 * followed by whatever A now heads, exactly a push onto the current stack.
 * Take-all is an unconditional exchange, with no expected value to go stale.
 *
 * The counter is incremented (relaxed) before the push's release CAS and
 * decremented after the take's acquire exchange, so the increment for a node
 * happens before the decrement for it and the counter never goes below zero;
 * it may briefly be high while a push is between its add and its CAS.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>

#include "queue.h"

/* ---------------------------------------------------------------- deque */

int ql__deque_init(struct ql_deque *d, unsigned capacity)
{
	_Atomic(void *) *slots;
	size_t bytes;

	assert(((uintptr_t)d & (QL_CACHELINE - 1)) == 0);
	if (capacity < 2 || capacity > QL_DEQUE_MAX_CAPACITY || (capacity & (capacity - 1)))
		return -EINVAL;
	/* aligned_alloc() wants a multiple of the alignment. */
	bytes = (size_t)capacity * sizeof(*slots);
	bytes = (bytes + QL_CACHELINE - 1) & ~(size_t)(QL_CACHELINE - 1);
	slots = aligned_alloc(QL_CACHELINE, bytes);
	if (!slots)
		return -ENOMEM;
	/*
	 * atomic_init: not an atomic operation, no order. The deque is not
	 * shared yet; whatever hands it to other threads publishes this.
	 */
	for (unsigned i = 0; i < capacity; i++)
		atomic_init(&slots[i], NULL);
	atomic_init(&d->bottom, 0);
	atomic_init(&d->top, 0);
	d->top_seen = 0;
	d->slots = slots;
	d->mask = capacity - 1;
	return 0;
}

void ql__deque_fini(struct ql_deque *d)
{
	/* Quiescent by contract: plain accesses. */
	free(d->slots);
	d->slots = NULL;
	d->mask = 0;
}

int ql__deque_push_local(struct ql_deque *d, void *item)
{
	if (!item)
		return -EINVAL;
	assert(d->slots);
	return ql__deque_push_inline(d, item);
}

void *ql__deque_pop_local(struct ql_deque *d)
{
	int64_t b, t;
	void *item;

	assert(d->slots);
	/* relaxed: only this thread, the owner, ever writes bottom. */
	b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
	/*
	 * A cheap exit for the common "nothing to do" poll, without the
	 * seq_cst store below. top only grows, so a stale top is smaller
	 * than the real one: if even the stale one reaches bottom, the deque
	 * really is empty (only this thread could add items). It is kept as
	 * top_seen: ql__deque_peek_local() then sees the deque empty too, and
	 * does not hand out the stale pointers of items thieves took.
	 * acquire, not relaxed, for that: a push may later reuse a slot on the
	 * strength of top_seen alone (see ql__deque_push_inline).
	 */
	t = atomic_load_explicit(&d->top, memory_order_acquire);
	if (t >= b) {
		d->top_seen = t;
		return NULL;
	}
	b--;
	/*
	 * seq_cst: claim index b before looking at top. This store and the
	 * load of top below are the paper's "store; seq_cst fence; load" (see
	 * the top of the file): in the total order S this store precedes our
	 * load, and a thief's loads of top and bottom are ordered the same
	 * way, so the two of us cannot both miss each other and take item b.
	 * Also a release: a thief that reads b sees items below it.
	 */
	atomic_store_explicit(&d->bottom, b, memory_order_seq_cst);
	/* seq_cst: the other half of the pair above. */
	t = atomic_load_explicit(&d->top, memory_order_seq_cst);
	d->top_seen = t; /* fresher room for pushes, and peeks */
	if (t > b) {
		/*
		 * Empty after all (thieves took the rest since the relaxed
		 * look): t == b + 1. Undo the claim. release: a thief reading
		 * this value synchronizes with us, so its CAS of top comes
		 * after the top == b + 1 we saw and fails; it cannot take a
		 * phantom item.
		 */
		atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
		return NULL;
	}
	/* relaxed: this thread wrote the slot; no thief takes index b while t < b. */
	item = atomic_load_explicit(&d->slots[b & d->mask], memory_order_relaxed);
	if (t < b)
		return item;
	/*
	 * t == b: the last item, which a thief may be taking too. Race for it
	 * the thieves' way, with a CAS of top. seq_cst: as the paper, and it
	 * keeps every modification of top seq_cst, which the argument at the
	 * top of the file relies on. Failure relaxed: we only learn we lost.
	 */
	if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1, memory_order_seq_cst,
						     memory_order_relaxed))
		item = NULL;
	/*
	 * Either way top is now b + 1: restore bottom to match (empty).
	 * release: as in the empty case above.
	 */
	atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
	return item;
}

unsigned ql__deque_pop_half_local(struct ql_deque *d, void **out, unsigned max)
{
	int64_t b, t, k;

	assert(d->slots);
	if (!out || !max)
		return 0;
	/* relaxed: only this thread, the owner, ever writes bottom. */
	b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
	/*
	 * relaxed: only a first guess, which the CAS below checks. (It is at
	 * least the top our last push saw, by read-read coherence, so
	 * [t, b) never spans more than the capacity and every slot in it
	 * holds the item of that index.)
	 */
	t = atomic_load_explicit(&d->top, memory_order_relaxed);
	for (;;) {
		k = (b - t) / 2;
		if (k > (int64_t)max)
			k = max;
		if (k <= 0)
			return 0;
		/*
		 * relaxed: this thread wrote these slots, and nobody else
		 * writes any slot (the owner is busy here, not pushing).
		 */
		for (int64_t i = 0; i < k; i++)
			out[i] = atomic_load_explicit(&d->slots[(t + i) & d->mask],
						      memory_order_relaxed);
		/*
		 * seq_cst: every modification of top is a seq_cst CAS (the
		 * pop / steal argument relies on it). Success means top was t,
		 * so items [t, t + k) are ours alone; see "Pop-half" at the
		 * top of the file for why one CAS is safe for the owner, and
		 * only for the owner. Failure relaxed: t gets the current top
		 * and we recompute k from it.
		 */
		if (atomic_compare_exchange_weak_explicit(&d->top, &t, t + k, memory_order_seq_cst,
							  memory_order_relaxed))
			return (unsigned)k;
		ql__cpu_relax();
	}
}

/*
 * One classic steal attempt. Returns 1 with the item in *out, 0 when the
 * deque is empty, -EAGAIN when another thread won the race for the top item.
 */
static int steal_one(struct ql_deque *d, void **out)
{
	int64_t t, b;
	void *item;

	/*
	 * seq_cst: the paper's "acquire load of top; seq_cst fence; acquire
	 * load of bottom" as two seq_cst loads. In S this load precedes our
	 * load of bottom, as the owner's store of bottom precedes its load of
	 * top in pop; that pairing is what keeps the two of us from both
	 * taking the owner's newest item (argued at the top of the file). It
	 * includes the paper's acquire.
	 */
	t = atomic_load_explicit(&d->top, memory_order_seq_cst);
	/*
	 * seq_cst: the second half of the pair. As an acquire it
	 * synchronizes with the (release or stronger) store that wrote this
	 * bottom, after which the owner had filled every slot below it.
	 */
	b = atomic_load_explicit(&d->bottom, memory_order_seq_cst);
	if (t >= b)
		return 0;
	/*
	 * relaxed: made visible by the acquire of bottom above. If the owner
	 * has since reused this slot (index t + capacity), it did so after
	 * seeing top > t, and the CAS below fails: the stale value is dropped.
	 */
	item = atomic_load_explicit(&d->slots[t & d->mask], memory_order_relaxed);
	/*
	 * seq_cst: as the paper; it keeps every modification of top seq_cst,
	 * and its release part is what the owner's acquire load of top in
	 * push pairs with before reusing the slot. Failure relaxed: we only
	 * learn we lost.
	 */
	if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1, memory_order_seq_cst,
						     memory_order_relaxed))
		return -EAGAIN;
	*out = item;
	return 1;
}

void *ql__deque_steal(struct ql_deque *d)
{
	void *item;

	assert(d->slots);
	for (int i = 0; i < QL_DEQUE_STEAL_TRIES; i++) {
		int ret = steal_one(d, &item);

		if (ret > 0)
			return item;
		if (ret == 0)
			return NULL;
		/* Lost a race: somebody else made progress; try again, briefly. */
		ql__cpu_relax();
	}
	return NULL;
}

unsigned ql__deque_steal_half(struct ql_deque *victim, struct ql_deque *dst)
{
	unsigned n, want, room, moved = 0;
	int64_t db, dt;

	assert(victim != dst);
	assert(victim->slots && dst->slots);
	n = ql__deque_len(victim);
	want = n - n / 2; /* ceil(n / 2) */
	if (!want)
		want = 1; /* len is a guess: try one steal anyway */
	/*
	 * Room in dst, which this thread owns. relaxed for bottom: only this
	 * thread writes it. relaxed for top: thieves of dst only move it
	 * forward, so a stale top underestimates the room and every push
	 * below is sure to fit (each push loads top again, no older than
	 * this, by read-read coherence).
	 */
	db = atomic_load_explicit(&dst->bottom, memory_order_relaxed);
	dt = atomic_load_explicit(&dst->top, memory_order_relaxed);
	room = (unsigned)((int64_t)dst->mask + 1 - (db - dt));
	if (want > room)
		want = room;
	/*
	 * One classic steal per item, never a batched CAS of the victim's
	 * top: the victim's owner may be popping, CAS-free, inside any range
	 * we would claim at once (see "Steal-half" at the top of the file).
	 */
	while (moved < want) {
		void *item = ql__deque_steal(victim);
		int ret;

		if (!item)
			break;
		ret = ql__deque_push_local(dst, item);
		assert(ret == 0); /* room was counted above */
		(void)ret;
		moved++;
	}
	return moved;
}

unsigned ql__deque_len(const struct ql_deque *d)
{
	int64_t t, b, n;

	/*
	 * relaxed, both: the answer is a hint by contract, and no memory is
	 * read on its strength. The two loads are not a snapshot, hence the
	 * clamping: bottom may be one below top inside a pop, and a stale top
	 * with a fresh bottom may exceed the capacity.
	 */
	t = atomic_load_explicit(&d->top, memory_order_relaxed);
	b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
	n = b - t;
	if (n <= 0)
		return 0;
	if (n > (int64_t)d->mask + 1)
		return (unsigned)(d->mask + 1);
	return (unsigned)n;
}

/* ------------------------------------------------------- node chains */

/*
 * Reverse a NULL-terminated chain in place; returns the new first node and
 * stores the length in *count (if count is not NULL). Plain accesses: the
 * caller owns every node of the chain.
 */
static struct ql_qnode *chain_reverse_all(struct ql_qnode *n, unsigned *count)
{
	struct ql_qnode *prev = NULL;
	unsigned k = 0;

	while (n) {
		struct ql_qnode *next = n->next;

		n->next = prev;
		prev = n;
		n = next;
		k++;
	}
	if (count)
		*count = k;
	return prev;
}

/*
 * Turn the caller's chain first->...->last (push order) into stack order,
 * last->...->first, with first->next left for the push to set. Plain
 * accesses: the nodes are the caller's until the push's CAS succeeds.
 */
static void chain_to_stack(struct ql_qnode *first, struct ql_qnode *last)
{
	struct ql_qnode *prev = NULL, *n = first;

	while (n != last) {
		struct ql_qnode *next = n->next;

		assert(next); /* last must be reachable from first */
		n->next = prev;
		prev = n;
		n = next;
	}
	last->next = prev;
}

/* ---------------------------------------------------------------- inbox */

void ql__inbox_init(struct ql_inbox *q)
{
	/* atomic_init: not shared yet; whoever shares the inbox publishes it. */
	atomic_init(&q->head, NULL);
}

int ql__inbox_push_batch_mpsc(struct ql_inbox *q, struct ql_qnode *first, struct ql_qnode *last)
{
	struct ql_qnode *old;

	assert(first && last);
	chain_to_stack(first, last);
	/* relaxed: only the first guess of the CAS loop, which checks it. */
	old = atomic_load_explicit(&q->head, memory_order_relaxed);
	do {
		/* Plain store: the chain is still ours; the CAS publishes it. */
		first->next = old;
		/*
		 * seq_cst on success: release, so the consumer's acquire
		 * exchange sees first->next and everything the producer wrote
		 * into the objects around the nodes (later pushes are RMWs and
		 * continue this push's release sequence, so a consumer that
		 * reads a later head still synchronizes with us); and seq_cst,
		 * so the caller's following seq_cst load of the consumer's
		 * parked flag cannot be ordered before this push (the Dekker
		 * pair described in lib/queue.h). Failure relaxed: old gets
		 * the current head and we link again.
		 */
	} while (!atomic_compare_exchange_weak_explicit(&q->head, &old, last, memory_order_seq_cst,
							memory_order_relaxed));
	return old == NULL;
}

int ql__inbox_push_mpsc(struct ql_inbox *q, struct ql_qnode *n)
{
	return ql__inbox_push_batch_mpsc(q, n, n);
}

struct ql_qnode *ql__inbox_take_all_local(struct ql_inbox *q)
{
	struct ql_qnode *n;

	/*
	 * relaxed: a look that avoids writing the head's line (and stealing it
	 * from producers) when there is nothing to take. A stale NULL only
	 * delays the batch to the next call; a consumer about to park checks
	 * with ql__inbox_empty() (seq_cst), and after that check this load
	 * sees at least what it saw (read-read coherence; only we remove).
	 */
	if (!atomic_load_explicit(&q->head, memory_order_relaxed))
		return NULL;
	/*
	 * acquire: synchronizes with the release part of every push whose
	 * node we get (each push's CAS heads a release sequence that every
	 * later push, itself an RMW, continues up to the head we read), so
	 * every next pointer in the chain, and what the producers wrote
	 * before pushing, is visible. Nothing of ours needs releasing.
	 */
	n = atomic_exchange_explicit(&q->head, NULL, memory_order_acquire);
	return chain_reverse_all(n, NULL);
}

int ql__inbox_empty(const struct ql_inbox *q)
{
	/*
	 * seq_cst: the consumer's half of the parking handshake (store its
	 * parked flag seq_cst, then this load); see ql__inbox_push_mpsc().
	 * For any other caller it is only a snapshot.
	 */
	return atomic_load_explicit(&q->head, memory_order_seq_cst) == NULL;
}

/* ---------------------------------------------------------------- global */

void ql__global_init(struct ql_global *q)
{
	/* atomic_init: not shared yet; whoever shares the queue publishes it. */
	atomic_init(&q->head, NULL);
	atomic_init(&q->count, 0);
}

void ql__global_push_batch(struct ql_global *q, struct ql_qnode *first, struct ql_qnode *last,
			   unsigned count)
{
	struct ql_qnode *old;

	if (!first)
		return;
	assert(last && count);
	chain_to_stack(first, last);
	/*
	 * relaxed: the CAS below, a release sequenced after this add, carries
	 * it to whoever takes these nodes, so the matching subtract in
	 * ql__global_take() comes after it in the counter's modification
	 * order: the counter never underflows. It may run ahead of the list
	 * for the few instructions until the CAS; the count is a hint.
	 */
	atomic_fetch_add_explicit(&q->count, count, memory_order_relaxed);
	/* relaxed: only the first guess of the CAS loop, which checks it. */
	old = atomic_load_explicit(&q->head, memory_order_relaxed);
	do {
		/* Plain store: the chain is still ours; the CAS publishes it. */
		first->next = old;
		/*
		 * release on success: a taker's acquire exchange then sees
		 * the chain's links, the count added above and the callers'
		 * objects (later pushes and takes are RMWs and continue the
		 * release sequence). No seq_cst: nobody parks on this queue.
		 * Failure relaxed: old gets the current head and we link
		 * again. ABA-safe: the only thing compared is the head, and
		 * the only thing linked to it is our own node (top of file).
		 */
	} while (!atomic_compare_exchange_weak_explicit(&q->head, &old, last, memory_order_release,
							memory_order_relaxed));
}

struct ql_qnode *ql__global_take(struct ql_global *q, unsigned *count)
{
	struct ql_qnode *n;
	unsigned k;

	/*
	 * relaxed: a look that avoids writing the line when the queue is
	 * empty, the common case for a worker checking it every few ticks.
	 * A stale NULL only means we find the nodes next time.
	 */
	if (!atomic_load_explicit(&q->head, memory_order_relaxed)) {
		if (count)
			*count = 0;
		return NULL;
	}
	/*
	 * acquire: synchronizes with the release CAS of every push whose
	 * nodes we get (the release sequences argument of the inbox), making
	 * the links and the pushed objects visible. An unconditional
	 * exchange: no expected value, so no ABA.
	 */
	n = atomic_exchange_explicit(&q->head, NULL, memory_order_acquire);
	n = chain_reverse_all(n, &k);
	/*
	 * relaxed: the adds for these nodes happen before this (through the
	 * acquire above), so the counter stays >= 0; readers take it as a
	 * hint.
	 */
	if (k)
		atomic_fetch_sub_explicit(&q->count, k, memory_order_relaxed);
	if (count)
		*count = k;
	return n;
}

unsigned ql__global_len(const struct ql_global *q)
{
	/* relaxed: a hint by contract; nothing is read on its strength. */
	unsigned long n = atomic_load_explicit(&q->count, memory_order_relaxed);

	return n > UINT_MAX ? UINT_MAX : (unsigned)n;
}
