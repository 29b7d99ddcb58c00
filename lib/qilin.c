/* SPDX-License-Identifier: MIT */
/*
 * lib/qilin.c - library-wide entry points that belong to no subsystem:
 * the version string and the io_uring diagnosis. Both may be called from
 * any thread at any time; neither keeps state.
 */
#include <errno.h>
#include <stdio.h>

#include "qilin.h"
#include "ring.h"

#define QL_STR2(x) #x
#define QL_STR(x) QL_STR2(x)

const char *ql_version(void)
{
	return QL_STR(QL_VERSION_MAJOR) "." QL_STR(QL_VERSION_MINOR) "." QL_STR(QL_VERSION_PATCH);
}

int ql_uring_diagnose(char *why, size_t len)
{
	struct ql_ring_opts opts = { .sz = sizeof(opts), .sq_entries = 8,
				     .flags = QL_RING_O_NO_WAKE };
	struct ql_ring ring;
	char feats[256];
	int ret;

	if (!why && len)
		return -EINVAL;
	ret = ql__ring_init(&ring, &opts);
	if (ret < 0) {
		if (why && len)
			snprintf(why, len, "%s", ql__ring_last_error());
		return ret;
	}
	if (why && len) {
		ql__ring_features_str(ring.features, feats, sizeof(feats));
		snprintf(why, len, "io_uring is usable; features: %s", feats);
	}
	ql__ring_exit(&ring, 0);
	return 0;
}
