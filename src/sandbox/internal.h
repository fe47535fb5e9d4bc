/* internal.h - helpers shared inside src/sandbox/ (not a public interface). */
#ifndef CLEARBOX_SANDBOX_INTERNAL_H
#define CLEARBOX_SANDBOX_INTERNAL_H

#include "sandbox/sandbox.h"

/* The native engine (native.c). */
int sandbox__native_run(const struct sandbox_spec *spec, struct sandbox_result *out, char *err,
                        size_t errlen);

/* Set status error with reason and message (also copied into err). Returns code. */
int sandbox__fail(struct sandbox_result *r, int code, const char *reason, char *err, size_t errlen,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* netns_batch.c: is batching on; hand over a finished run's namespace fd
 * (closed now, or held for its batch). native.c: find init's namespace
 * through /proc/<pid>/ns/net even where the pidfd could tell (tests: the
 * way kernels before 6.11 take). */
bool sandbox__netns_batching(void);
void sandbox__netns_put(int fd);
extern bool sandbox__netns_via_proc;

/* "SIGKILL" etc., or NULL for 0. */
const char *sandbox__signal_name(int sig);

/* Default state directory. */
#define SANDBOX_STATE_DIR_DEFAULT "/run/clearbox"
#define SANDBOX_CGROUP_PARENT_DEFAULT "clearbox"

#endif
