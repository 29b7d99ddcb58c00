/* SPDX-License-Identifier: MIT */
/*
 * tests/check_bpf.c - the ring layer's counters against the kernel's.
 *
 * bpf/uring_count loads real BPF programs on the io_uring tracepoints and
 * counts, for one process, the SQEs the kernel consumed, the CQEs it posted
 * and the io_uring_enter calls made. tests/prog_ring_counts runs a workload
 * through the ring layer and prints its own counters. They must be equal,
 * exactly, under every ring configuration and with either kind of BPF
 * program (tp_btf, or the classic tracepoint fallback). Needs root (or
 * CAP_BPF and CAP_PERFMON) and kernel BTF; otherwise the cases are reported
 * as skipped with the reason.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

static char counter[PATH_MAX];	/* build/bpf/uring_count */
static char workload[PATH_MAX]; /* build/tests/prog_ring_counts */

struct counts {
	unsigned long long sqes, cqes, enters;
};

static int parse_counts(const char *line, struct counts *c)
{
	const char *j = strchr(line, '{');

	return j && sscanf(j, "{\"sqes\":%llu,\"cqes\":%llu,\"enters\":%llu}", &c->sqes, &c->cqes,
			   &c->enters) == 3;
}

/* Run the workload under the counter with QILIN_URING_DISABLE=disable. */
static void compare(const char *disable, const char *mode)
{
	char cmd[3 * PATH_MAX], line[512];
	struct counts self = { 0 }, kernel = { 0 };
	int have_self = 0, have_kernel = 0;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "QILIN_URING_DISABLE='%s' '%s' %s -- '%s'", disable, counter,
		 mode, workload);
	f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "self ", 5) == 0)
			have_self = parse_counts(line, &self);
		else if (line[0] == '{')
			have_kernel = parse_counts(line, &kernel);
	}
	int status = pclose(f);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: exit status %d", cmd,
		      status);
	ck_assert_msg(have_self && have_kernel, "%s: missing output", cmd);
	ck_assert_msg(self.sqes == kernel.sqes && self.cqes == kernel.cqes &&
			      self.enters == kernel.enters,
		      "disable=%s %s: ring layer counted sqes %llu cqes %llu enters %llu, the kernel "
		      "%llu %llu %llu",
		      disable, mode, self.sqes, self.cqes, self.enters, kernel.sqes, kernel.cqes,
		      kernel.enters);
	ck_assert_uint_ge(self.sqes, 1000);
}

START_TEST(test_counts_match_kernel)
{
	T_FOR_ALL_CONFIGS(cfg)
	{
		char names[256];

		ql__ring_features_str(cfg->disable, names, sizeof(names));
		compare(cfg->disable ? names : "", "");
	}
}
END_TEST

START_TEST(test_counts_match_kernel_classic_tracepoints)
{
	/* The fallback BPF programs, as an older kernel would need them. */
	compare("", "--only-classic");
	compare("all", "--only-classic");
}
END_TEST

/* Why this suite cannot run here, or NULL. */
static const char *unavailable(void)
{
	static char why[256];
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n <= 0)
		return "cannot find the test binary's folder";
	self[n] = '\0';
	char *tests = dirname(self);
	snprintf(workload, sizeof(workload), "%s/prog_ring_counts", tests);
	snprintf(counter, sizeof(counter), "%s/../bpf/uring_count", tests);
	if (access(workload, X_OK) != 0)
		return "tests/prog_ring_counts is not built";
	if (access(counter, X_OK) != 0)
		return "bpf/uring_count is not built (make bpf)";
	if (geteuid() != 0) {
		snprintf(why, sizeof(why), "loading BPF programs needs root (uid %d)",
			 (int)geteuid());
		return why;
	}
	if (access("/sys/kernel/btf/vmlinux", R_OK) != 0)
		return "no kernel BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF)";
	return NULL;
}

int main(void)
{
	Suite *s = suite_create("bpf");
	const char *why = unavailable();
	TCase *tc;

	if (why) {
		/* tests/run.sh counts these lines as skipped tests. */
		printf("SKIP: bpf/counts_match_kernel: %s\n", why);
		printf("SKIP: bpf/counts_match_kernel_classic: %s\n", why);
		fflush(stdout);
		return t_run_suite(s); /* an empty suite: "Checks: 0" */
	}
	tc = tcase_create("counts");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_counts_match_kernel);
	tcase_add_test(tc, test_counts_match_kernel_classic_tracepoints);
	suite_add_tcase(s, tc);
	return t_run_suite(s);
}
