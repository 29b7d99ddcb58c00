/* SPDX-License-Identifier: MIT */
/*
 * qilin.h - the whole public API of qilin, a task executor on io_uring.
 *
 * What is not declared in this header is not API: internal headers
 * (lib/internal.h, uring/ring.h) and every symbol not named ql_* may change
 * or disappear in any release. Only ql_* symbols are exported from
 * libqilin.so.
 *
 * Conventions: every function returns 0 or a count on success and a
 * negative errno on failure; each says whether it may be called from outside
 * a task. Link with `pkg-config --cflags --libs qilin`.
 *
 * This release contains the ring layer and its diagnostics; the executor,
 * tasks, defer chains and scopes described in docs/ arrive in later
 * releases under the names reserved in docs/api.md.
 */
#ifndef QILIN_H
#define QILIN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define QL_API __attribute__((visibility("default")))
#else
#define QL_API
#endif

#define QL_VERSION_MAJOR 0
#define QL_VERSION_MINOR 1
#define QL_VERSION_PATCH 0

/*
 * The library's version, "MAJOR.MINOR.PATCH". Any thread, any time.
 */
QL_API const char *ql_version(void);

/*
 * Can this process use io_uring? Creates and destroys a small ring, with
 * the same probing and fallbacks the executor uses. Returns 0 if io_uring
 * works, or the negative errno of the failure: -ENOSYS (no io_uring in the
 * kernel, or a seccomp filter answering ENOSYS), -EPERM (seccomp, as in
 * Docker's default profile, or the kernel.io_uring_disabled sysctl), -ENOMEM
 * (RLIMIT_MEMLOCK on kernels before 5.12), -EINVAL (a bad QILIN_URING_DISABLE
 * value). If why is not NULL, writes one sentence naming the cause there
 * (or, on success, the features the kernel granted), truncated to len bytes
 * and always NUL-terminated when len > 0. Any thread, outside tasks too.
 */
QL_API int ql_uring_diagnose(char *why, size_t len);

#ifdef __cplusplus
}
#endif

#endif
