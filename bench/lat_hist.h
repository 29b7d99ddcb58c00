/* SPDX-License-Identifier: MIT */
/*
 * bench/lat_hist.h - the latency histogram of the benchmark clients
 * (bench/file_bench.c, bench/peers/loadgen.c): exact buckets below
 * LAT_SUB nanoseconds, then LAT_SUB sub-buckets per power of two, so every
 * quantile is within 1/LAT_SUB (under 1%) of the true value. Header-only
 * and free of qilin, so a peer that does not link the library can use it.
 * Not thread-safe: each thread fills its own array, summed at the end.
 */
#ifndef QL_BENCH_LAT_HIST_H
#define QL_BENCH_LAT_HIST_H

#include <stdint.h>

#define LAT_SUB_BITS 7
#define LAT_SUB (1u << LAT_SUB_BITS)
#define LAT_NBUCKETS ((64 - LAT_SUB_BITS) * LAT_SUB + LAT_SUB)

/* Histogram bucket of v nanoseconds. */
static inline unsigned lat_bucket_of(uint64_t v)
{
	unsigned msb;

	if (v < LAT_SUB)
		return (unsigned)v;
	msb = 63u - (unsigned)__builtin_clzll(v);
	return ((msb - LAT_SUB_BITS + 1) << LAT_SUB_BITS) +
	       (unsigned)((v >> (msb - LAT_SUB_BITS)) & (LAT_SUB - 1));
}

/* The upper bound of bucket b (the inverse of lat_bucket_of, rounding up). */
static inline uint64_t lat_bucket_top(unsigned b)
{
	unsigned msb;

	if (b < LAT_SUB)
		return b;
	msb = (b >> LAT_SUB_BITS) + LAT_SUB_BITS - 1;
	return ((uint64_t)(LAT_SUB + (b & (LAT_SUB - 1))) << (msb - LAT_SUB_BITS)) +
	       ((1ull << (msb - LAT_SUB_BITS)) - 1);
}

/* The q-quantile (0..1) of hist (LAT_NBUCKETS counts, total in all) in microseconds. */
static inline double lat_quantile_us(const uint64_t *hist, uint64_t total, double q)
{
	uint64_t want = (uint64_t)(q * (double)total + 0.5), seen = 0;
	unsigned b;

	if (!total)
		return 0;
	if (want < 1)
		want = 1;
	for (b = 0; b < LAT_NBUCKETS; b++) {
		seen += hist[b];
		if (seen >= want)
			return (double)lat_bucket_top(b) / 1000.0;
	}
	return 0;
}

#endif
