/* SPDX-License-Identifier: MIT */
/*
 * tests/helpers.c - shared test helpers; see helpers.h.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

const struct t_config t_configs[] = {
	{ "none", 0 },
	{ "defer_taskrun", QL_RING_F_DEFER_TASKRUN },
	{ "single_issuer", QL_RING_F_SINGLE_ISSUER | QL_RING_F_DEFER_TASKRUN },
	{ "coop_taskrun", QL_RING_F_COOP_TASKRUN },
	{ "submit_all", QL_RING_F_SUBMIT_ALL },
	{ "multishot", QL_RING_F_MULTISHOT },
	{ "msg_ring", QL_RING_F_MSG_RING },
	{ "bufring", QL_RING_F_BUFRING },
	{ "ext_arg", QL_RING_F_EXT_ARG },
	{ "reg_ring", QL_RING_F_REG_RING },
	{ "all", QL_RING_F_ALL },
};
const unsigned t_nconfigs = sizeof(t_configs) / sizeof(t_configs[0]);

void t_ring_init(struct ql_ring *r, const struct t_config *cfg, unsigned sq, unsigned flags)
{
	/*
	 * QILIN_URING_DISABLE, when set (tests/run.sh sets it for a second
	 * pass), applies on top of the configuration, the way a user's would.
	 */
	struct ql_ring_opts o = {
		.sz = sizeof(o),
		.sq_entries = sq,
		.disable = cfg->disable,
		.flags = flags | (t_env_disable() ? 0 : QL_RING_O_NO_ENV),
	};
	int ret = ql__ring_init(r, &o);

	ck_assert_msg(ret == 0, "ring init (config %s): %d %s", cfg->name, ret,
		      ql__ring_last_error());
	ck_assert_msg((r->features & cfg->disable) == 0,
		      "config %s: disabled features granted anyway (0x%x)", cfg->name,
		      r->features & cfg->disable);
}

unsigned t_env_disable(void)
{
	unsigned mask = 0;

	ql__ring_parse_features(getenv(QL_RING_DISABLE_ENV), &mask);
	return mask;
}

uint64_t t_now_ns(void)
{
	return ql__now_ns();
}

int t_fd_count(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own fd */
}

int t_listen_tcp(uint16_t *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(fd, 128), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

int t_connect_tcp(uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

void t_add_cases(Suite *s, const char *suite, const struct t_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		TCase *tc;

		if (cases[i].skip) {
			printf("SKIP: %s/%s: %s\n", suite, cases[i].name, cases[i].skip);
			continue;
		}
		tc = tcase_create(cases[i].name);
		tcase_set_timeout(tc, cases[i].timeout);
		tcase_add_test(tc, cases[i].test);
		suite_add_tcase(s, tc);
	}
	fflush(stdout);
}

int t_run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
