/* SPDX-License-Identifier: MIT */
/*
 * tests/check_queue.c - the run queues (lib/queue.c): work-stealing deque,
 * MPSC inbox, global overflow queue.
 *
 * Two kinds of test. The semantic ones run on one thread and check every
 * contract of lib/queue.h: LIFO pops, FIFO steals, full and empty, the
 * argument errors, pop-half and steal-half counts and order, and a long
 * random sequence of operations on two deques compared step by step with a
 * trivial model. The stress ones run real threads against each other and
 * prove that every item is consumed exactly once: a per-item atomic counter
 * that must end at exactly 1 everywhere, and a total that must match (plus
 * per-producer FIFO order for the inbox).
 *
 * Sizes. At normal speed the deque stress moves 2 million items and the
 * inbox stress 8 x 250,000 nodes (the whole suite takes about a second).
 * ThreadSanitizer runs this code five to ten times slower, so under it
 * (detected at compile time, or forced with QILIN_TSAN=1 in the
 * environment) the sizes are divided by 4; with QILIN_STRESS set (make
 * test-stress) they are multiplied by 4.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "helpers.h"
#include "queue.h"

/* Sanitizers reserve terabytes of address space up front: no RLIMIT_AS test. */
#if T_TSAN || defined(__SANITIZE_ADDRESS__)
#define T_RESERVES_VM 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define T_RESERVES_VM 1
#endif
#endif
#ifndef T_RESERVES_VM
#define T_RESERVES_VM 0
#endif

/* n scaled for the build and the environment (see the top of the file). */
static unsigned scaled(unsigned n)
{
	if (T_TSAN || getenv("QILIN_TSAN"))
		n /= 4;
	if (getenv("QILIN_STRESS"))
		n *= 4;
	return n ? n : 1;
}

/*
 * ck_assert_msg() for hot loops: Check records the location of every passing
 * assertion (a write to its message file in fork mode), which would dominate
 * a loop of millions of checks. This one costs a comparison until it fails.
 */
#define T_REQUIRE(expr, ...)                       \
	do {                                       \
		if (!(expr))                       \
			ck_abort_msg(__VA_ARGS__); \
	} while (0)

/* xorshift64*: a small per-thread random generator. */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/* Items are the numbers 1..N disguised as pointers (NULL means "none"). */
#define ITEM(i) ((void *)(uintptr_t)(i))
#define IDX(p) ((uintptr_t)(p))

/* ------------------------------------------------------------- deque: semantics */

START_TEST(test_deque_init_args)
{
	static struct ql_deque d;
	/* clang-format off */
	static const unsigned bad[] = { 0, 1, 3, 6, 100, 255, QL_DEQUE_MAX_CAPACITY + 1,
					QL_DEQUE_MAX_CAPACITY << 1, UINT32_MAX };
	/* clang-format on */

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_int_eq(ql__deque_init(&d, bad[i]), -EINVAL);
	/* fini of a zeroed deque, and twice in a row, is harmless. */
	ql__deque_fini(&d);
	ck_assert_int_eq(ql__deque_init(&d, 2), 0);
	ck_assert_uint_eq(ql__deque_len(&d), 0);
	ql__deque_fini(&d);
	ql__deque_fini(&d);
	ck_assert_int_eq(ql__deque_init(&d, 256), 0);
	ck_assert_int_eq(ql__deque_push_local(&d, NULL), -EINVAL);
	ck_assert_uint_eq(ql__deque_len(&d), 0);
	ql__deque_fini(&d);

	/* The layout promise: top and bottom on different lines. */
	ck_assert_uint_eq(_Alignof(struct ql_deque), QL_CACHELINE);
	ck_assert_uint_ge(offsetof(struct ql_deque, top) - offsetof(struct ql_deque, bottom),
			  QL_CACHELINE);
	ck_assert_uint_eq(sizeof(struct ql_inbox), QL_CACHELINE);
	ck_assert_uint_eq(_Alignof(struct ql_global), QL_CACHELINE);
}
END_TEST

/* -ENOMEM: the slot array cannot be had under a small address-space limit. */
START_TEST(test_deque_enomem)
{
	static struct ql_deque d;
	struct rlimit old, lim;

	ck_assert_int_eq(getrlimit(RLIMIT_AS, &old), 0);
	lim = old;
	lim.rlim_cur = 512ul << 20; /* the array would be 8 GiB */
	ck_assert_int_eq(setrlimit(RLIMIT_AS, &lim), 0);
	ck_assert_int_eq(ql__deque_init(&d, QL_DEQUE_MAX_CAPACITY), -ENOMEM);
	ck_assert_int_eq(setrlimit(RLIMIT_AS, &old), 0);
	ql__deque_fini(&d); /* zeroed: a no-op */
	ck_assert_int_eq(ql__deque_init(&d, 4), 0);
	ql__deque_fini(&d);
}
END_TEST

START_TEST(test_deque_lifo_fifo)
{
	static struct ql_deque d;

	ck_assert_int_eq(ql__deque_init(&d, 8), 0);
	ck_assert_ptr_null(ql__deque_pop_local(&d));
	ck_assert_ptr_null(ql__deque_steal(&d));
	for (uintptr_t i = 1; i <= 8; i++) {
		ck_assert_int_eq(ql__deque_push_local(&d, ITEM(i)), 0);
		ck_assert_uint_eq(ql__deque_len(&d), i);
	}
	ck_assert_int_eq(ql__deque_push_local(&d, ITEM(9)), -ENOSPC);
	ck_assert_uint_eq(ql__deque_len(&d), 8);
	/* The owner pops the newest, thieves take the oldest. */
	ck_assert_ptr_eq(ql__deque_pop_local(&d), ITEM(8));
	ck_assert_ptr_eq(ql__deque_pop_local(&d), ITEM(7));
	ck_assert_ptr_eq(ql__deque_steal(&d), ITEM(1));
	ck_assert_ptr_eq(ql__deque_steal(&d), ITEM(2));
	ck_assert_uint_eq(ql__deque_len(&d), 4);
	/* Room again: the slots freed at both ends are reused. */
	for (uintptr_t i = 10; i <= 13; i++)
		ck_assert_int_eq(ql__deque_push_local(&d, ITEM(i)), 0);
	ck_assert_int_eq(ql__deque_push_local(&d, ITEM(14)), -ENOSPC);
	ck_assert_ptr_eq(ql__deque_steal(&d), ITEM(3));
	ck_assert_ptr_eq(ql__deque_pop_local(&d), ITEM(13));
	ck_assert_ptr_eq(ql__deque_steal(&d), ITEM(4));
	ck_assert_ptr_eq(ql__deque_steal(&d), ITEM(5));
	ck_assert_ptr_eq(ql__deque_steal(&d), ITEM(6));
	ck_assert_ptr_eq(ql__deque_pop_local(&d), ITEM(12));
	ck_assert_ptr_eq(ql__deque_pop_local(&d), ITEM(11));
	/* The last item, by pop (the CAS path). */
	ck_assert_ptr_eq(ql__deque_pop_local(&d), ITEM(10));
	ck_assert_ptr_null(ql__deque_pop_local(&d));
	ck_assert_ptr_null(ql__deque_steal(&d));
	ck_assert_uint_eq(ql__deque_len(&d), 0);
	/* The last item, by steal; then the deque works on as before. */
	ck_assert_int_eq(ql__deque_push_local(&d, ITEM(20)), 0);
	ck_assert_ptr_eq(ql__deque_steal(&d), ITEM(20));
	ck_assert_ptr_null(ql__deque_pop_local(&d));
	ck_assert_int_eq(ql__deque_push_local(&d, ITEM(21)), 0);
	ck_assert_uint_eq(ql__deque_len(&d), 1);
	ck_assert_ptr_eq(ql__deque_pop_local(&d), ITEM(21));
	ql__deque_fini(&d);
}
END_TEST

START_TEST(test_deque_pop_half)
{
	static struct ql_deque d;
	void *out[256];

	ck_assert_int_eq(ql__deque_init(&d, 256), 0);
	ck_assert_uint_eq(ql__deque_pop_half_local(&d, out, 256), 0);
	for (uintptr_t i = 1; i <= 256; i++)
		ck_assert_int_eq(ql__deque_push_local(&d, ITEM(i)), 0);
	ck_assert_int_eq(ql__deque_push_local(&d, ITEM(257)), -ENOSPC);
	/* Overflow: half, from the top, oldest first. */
	ck_assert_uint_eq(ql__deque_pop_half_local(&d, out, 256), 128);
	for (uintptr_t i = 0; i < 128; i++)
		ck_assert_ptr_eq(out[i], ITEM(i + 1));
	ck_assert_uint_eq(ql__deque_len(&d), 128);
	ck_assert_int_eq(ql__deque_push_local(&d, ITEM(257)), 0);
	ck_assert_ptr_eq(ql__deque_pop_local(&d), ITEM(257));
	ck_assert_ptr_eq(ql__deque_steal(&d), ITEM(129));
	/* max caps it. */
	ck_assert_uint_eq(ql__deque_pop_half_local(&d, out, 3), 3);
	ck_assert_ptr_eq(out[0], ITEM(130));
	ck_assert_ptr_eq(out[2], ITEM(132));
	ck_assert_uint_eq(ql__deque_pop_half_local(&d, out, 0), 0);
	ck_assert_uint_eq(ql__deque_pop_half_local(&d, NULL, 5), 0);
	/* Drain to 5 items: floor(5 / 2) = 2. */
	while (ql__deque_len(&d) > 5)
		ck_assert_ptr_nonnull(ql__deque_pop_local(&d));
	ck_assert_uint_eq(ql__deque_pop_half_local(&d, out, 256), 2);
	ck_assert_ptr_eq(out[0], ITEM(133));
	ck_assert_ptr_eq(out[1], ITEM(134));
	ck_assert_uint_eq(ql__deque_len(&d), 3);
	ck_assert_uint_eq(ql__deque_pop_half_local(&d, out, 256), 1);
	ck_assert_ptr_eq(out[0], ITEM(135));
	ck_assert_uint_eq(ql__deque_pop_half_local(&d, out, 256), 1);
	ck_assert_ptr_eq(out[0], ITEM(136));
	/* Fewer than 2 items: nothing. */
	ck_assert_uint_eq(ql__deque_len(&d), 1);
	ck_assert_uint_eq(ql__deque_pop_half_local(&d, out, 256), 0);
	ck_assert_ptr_eq(ql__deque_pop_local(&d), ITEM(137));
	ql__deque_fini(&d);
}
END_TEST

START_TEST(test_deque_steal_half)
{
	static struct ql_deque v, dst;

	ck_assert_int_eq(ql__deque_init(&v, 16), 0);
	ck_assert_int_eq(ql__deque_init(&dst, 8), 0);
	ck_assert_uint_eq(ql__deque_steal_half(&v, &dst), 0);
	for (uintptr_t i = 1; i <= 10; i++)
		ck_assert_int_eq(ql__deque_push_local(&v, ITEM(i)), 0);
	/* ceil(10 / 2) = 5, oldest first, pushed in that order into dst. */
	ck_assert_uint_eq(ql__deque_steal_half(&v, &dst), 5);
	ck_assert_uint_eq(ql__deque_len(&v), 5);
	ck_assert_uint_eq(ql__deque_len(&dst), 5);
	ck_assert_ptr_eq(ql__deque_steal(&v), ITEM(6));
	ck_assert_ptr_eq(ql__deque_steal(&dst), ITEM(1));
	ck_assert_ptr_eq(ql__deque_pop_local(&dst), ITEM(5));
	/* dst has 3 and room for 5: v's 4 give ceil(4 / 2) = 2. */
	ck_assert_uint_eq(ql__deque_steal_half(&v, &dst), 2);
	ck_assert_ptr_eq(ql__deque_pop_local(&dst), ITEM(8));
	ck_assert_ptr_eq(ql__deque_pop_local(&dst), ITEM(7));
	/* One item left: steal-half takes it. */
	ck_assert_ptr_eq(ql__deque_pop_local(&v), ITEM(10));
	ck_assert_uint_eq(ql__deque_steal_half(&v, &dst), 1);
	ck_assert_uint_eq(ql__deque_len(&v), 0);
	ck_assert_ptr_eq(ql__deque_pop_local(&dst), ITEM(9));
	/* dst's room bounds it: dst holds 3 of 8, v 12: 5 move, not 6. */
	for (uintptr_t i = 100; i < 112; i++)
		ck_assert_int_eq(ql__deque_push_local(&v, ITEM(i)), 0);
	ck_assert_uint_eq(ql__deque_len(&dst), 3);
	ck_assert_uint_eq(ql__deque_steal_half(&v, &dst), 5);
	ck_assert_uint_eq(ql__deque_len(&dst), 8);
	ck_assert_uint_eq(ql__deque_steal_half(&v, &dst), 0);
	ck_assert_uint_eq(ql__deque_len(&v), 7);
	ql__deque_fini(&v);
	ql__deque_fini(&dst);
}
END_TEST

/* A reference deque: an array and two indices. */
struct model {
	uintptr_t v[64];
	unsigned head, tail, cap; /* items in v[head..tail), cap <= 64 */
};

static unsigned m_len(const struct model *m)
{
	return m->tail - m->head;
}

static void m_compact(struct model *m)
{
	memmove(m->v, m->v + m->head, m_len(m) * sizeof(m->v[0]));
	m->tail -= m->head;
	m->head = 0;
}

/*
 * Random operations on two deques of different capacities, each compared
 * with its model after every step; the indices run far past the capacity,
 * so the slot array wraps many times.
 */
START_TEST(test_deque_model)
{
	static struct ql_deque d[2];
	static struct model m[2];
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	uintptr_t next = 1;
	void *out[64];

	memset(m, 0, sizeof(m));
	m[0].cap = 8;
	m[1].cap = 32;
	ck_assert_int_eq(ql__deque_init(&d[0], m[0].cap), 0);
	ck_assert_int_eq(ql__deque_init(&d[1], m[1].cap), 0);
	for (int step = 0; step < 200000; step++) {
		uint64_t r = rnd(&seed);
		int w = r & 1, o = !w;
		struct model *a = &m[w], *b = &m[o];
		unsigned n, want, room;
		void *x;

		m_compact(a);
		m_compact(b);
		switch ((r >> 1) % 7) {
		case 0:
		case 1: /* push */
			if (m_len(a) == a->cap) {
				T_REQUIRE(ql__deque_push_local(&d[w], ITEM(next)) == -ENOSPC,
					  "step %d: push", step);
			} else {
				T_REQUIRE(ql__deque_push_local(&d[w], ITEM(next)) == 0,
					  "step %d: push", step);
				a->v[a->tail++] = next;
			}
			next++;
			break;
		case 2: /* pop */
			x = ql__deque_pop_local(&d[w]);
			T_REQUIRE(x == (m_len(a) ? ITEM(a->v[--a->tail]) : NULL), "step %d: pop",
				  step);
			break;
		case 3: /* steal */
			x = ql__deque_steal(&d[w]);
			T_REQUIRE(x == (m_len(a) ? ITEM(a->v[a->head++]) : NULL), "step %d: steal",
				  step);
			break;
		case 4: /* pop half, with a random cap */
			want = 1 + (unsigned)((r >> 8) % 40);
			n = ql__deque_pop_half_local(&d[w], out, want);
			T_REQUIRE(n == (m_len(a) / 2 < want ? m_len(a) / 2 : want),
				  "step %d: pop-half gave %u", step, n);
			for (unsigned i = 0; i < n; i++)
				T_REQUIRE(out[i] == ITEM(a->v[a->head++]), "step %d: pop-half",
					  step);
			break;
		default: /* steal half from w into o */
			want = m_len(a) - m_len(a) / 2;
			if (!want)
				want = 1;
			room = b->cap - m_len(b);
			if (want > room)
				want = room;
			if (want > m_len(a))
				want = m_len(a);
			n = ql__deque_steal_half(&d[w], &d[o]);
			T_REQUIRE(n == want, "step %d: steal-half gave %u, not %u", step, n, want);
			for (unsigned i = 0; i < n; i++)
				b->v[b->tail++] = a->v[a->head++];
			break;
		}
		T_REQUIRE(ql__deque_len(&d[0]) == m_len(&m[0]) &&
				  ql__deque_len(&d[1]) == m_len(&m[1]),
			  "step %d: len", step);
	}
	ql__deque_fini(&d[0]);
	ql__deque_fini(&d[1]);
}
END_TEST

/* ------------------------------------------------------------- deque: stress */

#define NTHIEVES 3
#define STRESS_CAP 256

/* One thief: its own deque, filled by steal-half, stolen from by the others. */
struct thief {
	struct ql_deque dq;
	pthread_t th;
	int id;
	uint64_t consumed;
	uint64_t steals, halves, halved_items, empty;
};

static struct {
	struct ql_deque owner;
	struct thief thieves[NTHIEVES];
	_Atomic(uint32_t) *seen; /* per item: times consumed */
	unsigned n;		 /* items 1..n */
	atomic_int owner_done;
	atomic_uint bad; /* items out of range */
	pthread_barrier_t start;
} ds;

static void ds_consume(void *item, uint64_t *count)
{
	uintptr_t i = IDX(item);

	if (i < 1 || i > ds.n) {
		/* relaxed: a test counter, read after join. */
		atomic_fetch_add_explicit(&ds.bad, 1, memory_order_relaxed);
		return;
	}
	/* relaxed: a counter, read after join (which orders it). */
	atomic_fetch_add_explicit(&ds.seen[i - 1], 1, memory_order_relaxed);
	(*count)++;
}

static void *ds_thief(void *arg)
{
	struct thief *me = arg;
	uint64_t seed = 0x1234567ull * (uint64_t)(me->id + 1);
	unsigned idle = 0;

	pthread_barrier_wait(&ds.start);
	for (;;) {
		uint64_t r = rnd(&seed);
		struct ql_deque *victim = &ds.owner;
		int found = 0;
		void *x;

		/* Work on our own items half of the time, a few at once. */
		if (r & 1) {
			for (int i = 0; i < 4 && (x = ql__deque_pop_local(&me->dq)); i++) {
				ds_consume(x, &me->consumed);
				found = 1;
			}
		}
		/* A quarter of the steals go to another thief. */
		if (((r >> 1) & 3) == 0) {
			int other = (me->id + 1 + (int)((r >> 3) % (NTHIEVES - 1))) % NTHIEVES;

			victim = &ds.thieves[other].dq;
		}
		if ((r >> 8) & 1) {
			x = ql__deque_steal(victim);
			if (x) {
				ds_consume(x, &me->consumed);
				me->steals++;
				found = 1;
			}
		} else {
			unsigned n = ql__deque_steal_half(victim, &me->dq);

			if (n) {
				me->halves++;
				me->halved_items += n;
				found = 1;
			}
		}
		if (found) {
			idle = 0;
			continue;
		}
		me->empty++;
		/*
		 * acquire: pairs with the owner's release store; after it the
		 * owner's deque is empty for good. Our own deque only grows by
		 * our own steal-half, so once it is empty too we are done.
		 */
		if (atomic_load_explicit(&ds.owner_done, memory_order_acquire)) {
			while ((x = ql__deque_pop_local(&me->dq)))
				ds_consume(x, &me->consumed);
			break;
		}
		/*
		 * Mostly spin: with a CPU each, owner and thieves then overlap
		 * all the time, which is what finds races. Yield now and then
		 * for machines with fewer free CPUs than threads, where the
		 * owner would otherwise wait out our time slices.
		 */
		if (++idle % 256 == 0)
			sched_yield();
	}
	return NULL;
}

START_TEST(test_deque_stress)
{
	uint64_t seed = 42, owner_consumed = 0, total = 0, sum = 0;
	uint64_t enospc = 0, halved = 0, pops = 0;
	uintptr_t next = 1;
	void *out[STRESS_CAP];
	uint64_t t0 = t_now_ns();

	ds.n = scaled(2000000);
	ds.seen = calloc(ds.n, sizeof(*ds.seen));
	ck_assert_ptr_nonnull(ds.seen);
	atomic_init(&ds.owner_done, 0);
	atomic_init(&ds.bad, 0);
	ck_assert_int_eq(ql__deque_init(&ds.owner, STRESS_CAP), 0);
	pthread_barrier_init(&ds.start, NULL, NTHIEVES + 1);
	for (int i = 0; i < NTHIEVES; i++) {
		struct thief *t = &ds.thieves[i];

		ck_assert_int_eq(ql__deque_init(&t->dq, STRESS_CAP), 0);
		t->id = i;
		ck_assert_int_eq(pthread_create(&t->th, NULL, ds_thief, t), 0);
	}
	pthread_barrier_wait(&ds.start);

	/*
	 * The owner: bursts of pushes (1 to 8, now and then 300 > 256) and
	 * fewer pops, so thieves must take most items, and the deque is often
	 * nearly empty: the pop / steal race for the last item. When full, it
	 * mostly waits for the thieves, and one time in 8 overflows with
	 * pop-half (consuming the items as if handed to the global queue).
	 * Sometimes a pop-half for no reason, to race it with thieves more.
	 * A little busy work per item stands for making a task, so that the
	 * thieves keep up even on a small machine.
	 */
	while (next <= ds.n) {
		uint64_t r = rnd(&seed);
		unsigned npush = (r & 255) == 0 ? 300 : 1 + (unsigned)((r >> 8) % 8);
		unsigned npop = (unsigned)((r >> 12) % 4);

		for (unsigned i = 0; i < npush && next <= ds.n; i++) {
			int ret;

			while ((ret = ql__deque_push_local(&ds.owner, ITEM(next))) == -ENOSPC) {
				enospc++;
				if ((rnd(&seed) & 7) == 0) {
					unsigned k = ql__deque_pop_half_local(&ds.owner, out,
									      STRESS_CAP);

					halved += k;
					for (unsigned j = 0; j < k; j++)
						ds_consume(out[j], &owner_consumed);
				} else {
					sched_yield();
				}
			}
			T_REQUIRE(ret == 0, "push: %d", ret);
			next++;
			for (volatile int w = 0; w < 16; w++)
				;
		}
		for (unsigned i = 0; i < npop; i++) {
			void *x = ql__deque_pop_local(&ds.owner);

			if (!x)
				break;
			pops++;
			ds_consume(x, &owner_consumed);
		}
		if (((r >> 16) & 63) == 0) {
			unsigned k = ql__deque_pop_half_local(&ds.owner, out,
							      1 + (unsigned)(r >> 32) % 64);

			halved += k;
			for (unsigned j = 0; j < k; j++)
				ds_consume(out[j], &owner_consumed);
		}
	}
	/* Drain: pop returns NULL only when the deque is empty for good. */
	for (void *x; (x = ql__deque_pop_local(&ds.owner));)
		ds_consume(x, &owner_consumed);
	ck_assert_uint_eq(ql__deque_len(&ds.owner), 0);
	/* release: the thieves' acquire load then sees an empty owner deque. */
	atomic_store_explicit(&ds.owner_done, 1, memory_order_release);

	total = owner_consumed;
	for (int i = 0; i < NTHIEVES; i++) {
		struct thief *t = &ds.thieves[i];

		ck_assert_int_eq(pthread_join(t->th, NULL), 0);
		ck_assert_uint_eq(ql__deque_len(&t->dq), 0);
		total += t->consumed;
		printf("deque stress: thief %d consumed %llu (steals %llu, steal-half %llu for "
		       "%llu items, idle %llu)\n",
		       i, (unsigned long long)t->consumed, (unsigned long long)t->steals,
		       (unsigned long long)t->halves, (unsigned long long)t->halved_items,
		       (unsigned long long)t->empty);
	}
	/* Only now: until every thief is joined, any of them may steal from any other. */
	for (int i = 0; i < NTHIEVES; i++)
		ql__deque_fini(&ds.thieves[i].dq);
	printf("deque stress: %u items in %.2f s; owner consumed %llu (pops %llu, pop-half "
	       "%llu items, %llu times full)\n",
	       ds.n, (double)(t_now_ns() - t0) / 1e9, (unsigned long long)owner_consumed,
	       (unsigned long long)pops, (unsigned long long)halved, (unsigned long long)enospc);
	ck_assert_uint_eq(atomic_load(&ds.bad), 0);
	for (unsigned i = 0; i < ds.n; i++) {
		/* relaxed: the threads were joined. */
		uint32_t c = atomic_load_explicit(&ds.seen[i], memory_order_relaxed);

		T_REQUIRE(c == 1, "item %u consumed %u times", i + 1, c);
		sum += c;
	}
	ck_assert_uint_eq(sum, ds.n);
	ck_assert_uint_eq(total, ds.n);
	pthread_barrier_destroy(&ds.start);
	ql__deque_fini(&ds.owner);
	free(ds.seen);
}
END_TEST

/* ------------------------------------------------------------- inbox */

struct inode {
	struct ql_qnode node;
	uint32_t producer;
	uint32_t seq;
};

#define INODE(n) ((struct inode *)(n))

START_TEST(test_inbox_basic)
{
	static struct ql_inbox q;
	struct inode n[8];
	struct ql_qnode *c;

	ql__inbox_init(&q);
	for (uint32_t i = 0; i < 8; i++)
		n[i] = (struct inode){ .seq = i };
	ck_assert_int_eq(ql__inbox_empty(&q), 1);
	ck_assert_ptr_null(ql__inbox_take_all_local(&q));
	/* Only the push that finds it empty says so. */
	ck_assert_int_eq(ql__inbox_push_mpsc(&q, &n[0].node), 1);
	ck_assert_int_eq(ql__inbox_empty(&q), 0);
	ck_assert_int_eq(ql__inbox_push_mpsc(&q, &n[1].node), 0);
	/* A chain 2 -> 3 -> 4, one CAS, in order after 0, 1. */
	n[2].node.next = &n[3].node;
	n[3].node.next = &n[4].node;
	n[4].node.next = &n[7].node; /* ignored */
	ck_assert_int_eq(ql__inbox_push_batch_mpsc(&q, &n[2].node, &n[4].node), 0);
	ck_assert_int_eq(ql__inbox_push_mpsc(&q, &n[5].node), 0);
	c = ql__inbox_take_all_local(&q);
	ck_assert_int_eq(ql__inbox_empty(&q), 1);
	for (uint32_t i = 0; i <= 5; i++) {
		ck_assert_ptr_nonnull(c);
		ck_assert_uint_eq(INODE(c)->seq, i);
		c = c->next;
	}
	ck_assert_ptr_null(c);
	ck_assert_ptr_null(ql__inbox_take_all_local(&q));
	/* Empty again: the next push says so, a batch one too. */
	n[6].node.next = &n[7].node;
	ck_assert_int_eq(ql__inbox_push_batch_mpsc(&q, &n[6].node, &n[7].node), 1);
	ck_assert_int_eq(ql__inbox_push_mpsc(&q, &n[0].node), 0);
	c = ql__inbox_take_all_local(&q);
	ck_assert_uint_eq(INODE(c)->seq, 6);
	ck_assert_uint_eq(INODE(c->next)->seq, 7);
	ck_assert_uint_eq(INODE(c->next->next)->seq, 0);
	ck_assert_ptr_null(c->next->next->next);
	/* A single-node batch. */
	ck_assert_int_eq(ql__inbox_push_batch_mpsc(&q, &n[1].node, &n[1].node), 1);
	c = ql__inbox_take_all_local(&q);
	ck_assert_ptr_eq(c, &n[1].node);
	ck_assert_ptr_null(c->next);
}
END_TEST

#define NPRODUCERS 8

static struct {
	struct ql_inbox q;
	struct inode *nodes[NPRODUCERS];
	unsigned per;		/* pushes per producer */
	atomic_ulong was_empty; /* pushes that returned 1 */
	pthread_barrier_t start;
} is;

static void *is_producer(void *arg)
{
	uint32_t p = (uint32_t)(uintptr_t)arg;
	struct inode *nodes = is.nodes[p];
	uint64_t seed = 0xabcdefull + p;
	unsigned long empties = 0;

	pthread_barrier_wait(&is.start);
	for (unsigned i = 0; i < is.per;) {
		unsigned k = 1;

		/* Odd producers push chains of 1 to 8 nodes as well. */
		if (p & 1)
			k = 1 + (unsigned)(rnd(&seed) % 8);
		if (k > is.per - i)
			k = is.per - i;
		if (k == 1) {
			empties += ql__inbox_push_mpsc(&is.q, &nodes[i].node);
		} else {
			for (unsigned j = 0; j < k - 1; j++)
				nodes[i + j].node.next = &nodes[i + j + 1].node;
			empties += ql__inbox_push_batch_mpsc(&is.q, &nodes[i].node,
							     &nodes[i + k - 1].node);
		}
		/* Let the consumer in now and then, even on one CPU. */
		if ((i & 1023) < k)
			sched_yield();
		i += k;
	}
	/* relaxed: read after join. */
	atomic_fetch_add_explicit(&is.was_empty, empties, memory_order_relaxed);
	return NULL;
}

START_TEST(test_inbox_stress)
{
	pthread_t th[NPRODUCERS];
	uint32_t expect[NPRODUCERS] = { 0 };
	uint64_t total, got = 0, batches = 0, spins = 0;
	uint64_t t0 = t_now_ns();

	is.per = scaled(250000);
	total = (uint64_t)is.per * NPRODUCERS;
	ql__inbox_init(&is.q);
	atomic_init(&is.was_empty, 0);
	pthread_barrier_init(&is.start, NULL, NPRODUCERS + 1);
	for (uint32_t p = 0; p < NPRODUCERS; p++) {
		is.nodes[p] = calloc(is.per, sizeof(struct inode));
		ck_assert_ptr_nonnull(is.nodes[p]);
		for (uint32_t i = 0; i < is.per; i++) {
			is.nodes[p][i].producer = p;
			is.nodes[p][i].seq = i;
		}
		ck_assert_int_eq(pthread_create(&th[p], NULL, is_producer, (void *)(uintptr_t)p),
				 0);
	}
	pthread_barrier_wait(&is.start);
	/* The consumer: every node once, each producer's in its order. */
	while (got < total) {
		struct ql_qnode *c = ql__inbox_take_all_local(&is.q);

		if (!c) {
			if (++spins % 64 == 0)
				sched_yield();
			continue;
		}
		batches++;
		for (; c; c = c->next) {
			struct inode *n = INODE(c);

			T_REQUIRE(n->producer < NPRODUCERS, "bad producer %u", n->producer);
			T_REQUIRE(n->seq == expect[n->producer],
				  "producer %u: got seq %u, expected %u", n->producer, n->seq,
				  expect[n->producer]);
			expect[n->producer]++;
			got++;
		}
	}
	for (uint32_t p = 0; p < NPRODUCERS; p++)
		ck_assert_int_eq(pthread_join(th[p], NULL), 0);
	ck_assert_int_eq(ql__inbox_empty(&is.q), 1);
	ck_assert_ptr_null(ql__inbox_take_all_local(&is.q));
	for (uint32_t p = 0; p < NPRODUCERS; p++)
		ck_assert_uint_eq(expect[p], is.per);
	/*
	 * Each batch taken holds exactly one node whose push found the inbox
	 * empty (its first): the "was empty" answers are exact.
	 */
	ck_assert_uint_eq(atomic_load(&is.was_empty), batches);
	printf("inbox stress: %llu nodes from %d producers in %.2f s, %llu batches\n",
	       (unsigned long long)total, NPRODUCERS, (double)(t_now_ns() - t0) / 1e9,
	       (unsigned long long)batches);
	for (uint32_t p = 0; p < NPRODUCERS; p++)
		free(is.nodes[p]);
	pthread_barrier_destroy(&is.start);
}
END_TEST

/* ------------------------------------------------------------- global */

struct gnode {
	struct ql_qnode node;
	uint32_t id;
};

#define GNODE(n) ((struct gnode *)(n))

START_TEST(test_global_basic)
{
	static struct ql_global q;
	struct gnode n[6];
	struct ql_qnode *c;
	unsigned count = 99;

	ql__global_init(&q);
	for (uint32_t i = 0; i < 6; i++)
		n[i] = (struct gnode){ .id = i };
	ck_assert_uint_eq(ql__global_len(&q), 0);
	ck_assert_ptr_null(ql__global_take(&q, &count));
	ck_assert_uint_eq(count, 0);
	ql__global_push_batch(&q, NULL, NULL, 0);
	ck_assert_uint_eq(ql__global_len(&q), 0);
	n[0].node.next = &n[1].node;
	n[1].node.next = &n[2].node;
	ql__global_push_batch(&q, &n[0].node, &n[2].node, 3);
	n[3].node.next = &n[4].node;
	ql__global_push_batch(&q, &n[3].node, &n[4].node, 2);
	ql__global_push_batch(&q, &n[5].node, &n[5].node, 1);
	ck_assert_uint_eq(ql__global_len(&q), 6);
	c = ql__global_take(&q, &count);
	ck_assert_uint_eq(count, 6);
	ck_assert_uint_eq(ql__global_len(&q), 0);
	for (uint32_t i = 0; i < 6; i++) {
		ck_assert_ptr_nonnull(c);
		ck_assert_uint_eq(GNODE(c)->id, i);
		c = c->next;
	}
	ck_assert_ptr_null(c);
	ck_assert_ptr_null(ql__global_take(&q, NULL));
	/* Push back what did not fit: it follows what came in between. */
	n[0].node.next = &n[1].node;
	ql__global_push_batch(&q, &n[0].node, &n[1].node, 2);
	ql__global_push_batch(&q, &n[2].node, &n[2].node, 1);
	c = ql__global_take(&q, &count);
	ck_assert_uint_eq(count, 3);
	ck_assert_uint_eq(GNODE(c)->id, 0);
	ck_assert_uint_eq(GNODE(c->next)->id, 1);
	ck_assert_uint_eq(GNODE(c->next->next)->id, 2);
	ck_assert_ptr_null(c->next->next->next);
}
END_TEST

#define GPUSHERS 4
#define GTAKERS 4

static struct {
	struct ql_global q;
	struct gnode *nodes;
	unsigned per; /* nodes per pusher */
	unsigned n;   /* all nodes */
	_Atomic(uint32_t) *seen;
	atomic_ulong consumed;
	atomic_uint bad;
	pthread_barrier_t start;
} gs;

static void *gs_pusher(void *arg)
{
	unsigned p = (unsigned)(uintptr_t)arg;
	struct gnode *nodes = gs.nodes + (size_t)p * gs.per;
	uint64_t seed = 0x5555ull + p;

	pthread_barrier_wait(&gs.start);
	for (unsigned i = 0; i < gs.per;) {
		unsigned k = 1 + (unsigned)(rnd(&seed) % 16);

		if (k > gs.per - i)
			k = gs.per - i;
		for (unsigned j = 0; j < k - 1; j++)
			nodes[i + j].node.next = &nodes[i + j + 1].node;
		ql__global_push_batch(&gs.q, &nodes[i].node, &nodes[i + k - 1].node, k);
		/* Let the takers in now and then, even on one CPU. */
		if ((i & 1023) < k)
			sched_yield();
		i += k;
	}
	return NULL;
}

static void *gs_taker(void *arg)
{
	uint64_t seed = 0x7777ull + (uintptr_t)arg;
	unsigned idle = 0;

	pthread_barrier_wait(&gs.start);
	/* relaxed: the loop's exit test only; join orders the rest. */
	while (atomic_load_explicit(&gs.consumed, memory_order_relaxed) < gs.n) {
		unsigned count, len = 0, keep;
		struct ql_qnode *c = ql__global_take(&gs.q, &count), *last = NULL, *rest;

		if (!c) {
			if (++idle % 16 == 0)
				sched_yield();
			continue;
		}
		for (struct ql_qnode *x = c; x; x = x->next)
			len++;
		if (len != count)
			atomic_fetch_add_explicit(&gs.bad, 1,
						  memory_order_relaxed); /* read after join */
		/*
		 * Keep everything a quarter of the time, else the first half
		 * (what "fits in the deque") and push the rest back.
		 */
		keep = (rnd(&seed) & 3) == 0 ? len : len - len / 2;
		rest = c;
		for (unsigned i = 0; i < keep; i++) {
			struct gnode *g = GNODE(rest);

			last = rest;
			rest = rest->next;
			if (g->id >= gs.n)
				atomic_fetch_add_explicit(&gs.bad, 1, memory_order_relaxed);
			else /* relaxed: a counter, read after join. */
				atomic_fetch_add_explicit(&gs.seen[g->id], 1, memory_order_relaxed);
		}
		last->next = NULL;
		if (rest) {
			struct ql_qnode *tail = rest;

			while (tail->next)
				tail = tail->next;
			ql__global_push_batch(&gs.q, rest, tail, len - keep);
		}
		/* relaxed: an exit test for the takers; join orders the rest. */
		atomic_fetch_add_explicit(&gs.consumed, keep, memory_order_relaxed);
	}
	return NULL;
}

START_TEST(test_global_stress)
{
	pthread_t th[GPUSHERS + GTAKERS];
	uint64_t sum = 0, t0 = t_now_ns();

	gs.per = scaled(250000);
	gs.n = gs.per * GPUSHERS;
	gs.nodes = calloc(gs.n, sizeof(*gs.nodes));
	gs.seen = calloc(gs.n, sizeof(*gs.seen));
	ck_assert_ptr_nonnull(gs.nodes);
	ck_assert_ptr_nonnull(gs.seen);
	for (unsigned i = 0; i < gs.n; i++)
		gs.nodes[i].id = i;
	ql__global_init(&gs.q);
	atomic_init(&gs.consumed, 0);
	atomic_init(&gs.bad, 0);
	pthread_barrier_init(&gs.start, NULL, GPUSHERS + GTAKERS);
	for (uintptr_t i = 0; i < GPUSHERS; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, gs_pusher, (void *)i), 0);
	for (uintptr_t i = 0; i < GTAKERS; i++)
		ck_assert_int_eq(pthread_create(&th[GPUSHERS + i], NULL, gs_taker, (void *)i), 0);
	for (int i = 0; i < GPUSHERS + GTAKERS; i++)
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
	ck_assert_uint_eq(atomic_load(&gs.bad), 0);
	ck_assert_uint_eq(atomic_load(&gs.consumed), gs.n);
	ck_assert_uint_eq(ql__global_len(&gs.q), 0);
	ck_assert_ptr_null(ql__global_take(&gs.q, NULL));
	for (unsigned i = 0; i < gs.n; i++) {
		uint32_t c = atomic_load_explicit(&gs.seen[i], memory_order_relaxed);

		T_REQUIRE(c == 1, "node %u consumed %u times", i, c);
		sum += c;
	}
	ck_assert_uint_eq(sum, gs.n);
	printf("global stress: %u nodes, %d pushers, %d takers in %.2f s\n", gs.n, GPUSHERS,
	       GTAKERS, (double)(t_now_ns() - t0) / 1e9);
	pthread_barrier_destroy(&gs.start);
	free(gs.nodes);
	free(gs.seen);
}
END_TEST

/* ------------------------------------------------------------- suite */

static Suite *queue_suite(void)
{
	Suite *s = suite_create("queue");
	const char *enomem_skip = T_RESERVES_VM ? "a sanitizer reserves more address space "
						  "than RLIMIT_AS would leave"
						: NULL;
	const struct t_case cases[] = {
		{ "deque_init_args", test_deque_init_args, 10, NULL },
		{ "deque_enomem", test_deque_enomem, 10, enomem_skip },
		{ "deque_lifo_fifo", test_deque_lifo_fifo, 10, NULL },
		{ "deque_pop_half", test_deque_pop_half, 10, NULL },
		{ "deque_steal_half", test_deque_steal_half, 10, NULL },
		{ "deque_model", test_deque_model, 30, NULL },
		{ "deque_stress", test_deque_stress, 120, NULL },
		{ "inbox_basic", test_inbox_basic, 10, NULL },
		{ "inbox_stress", test_inbox_stress, 120, NULL },
		{ "global_basic", test_global_basic, 10, NULL },
		{ "global_stress", test_global_stress, 120, NULL },
	};

	t_add_cases(s, "queue", cases, sizeof(cases) / sizeof(cases[0]));
	return s;
}

int main(void)
{
	return t_run_suite(queue_suite());
}
