/* netns_batch.c - let finished sandboxes' network namespaces go in batches.
 *
 * A network namespace dies in a kernel worker (cleanup_net), which takes
 * every namespace queued so far and tears them down together: one pass of
 * the pernet exit methods, one unregister of all their lo devices, one set
 * of RCU grace periods. One namespace at a time, as each sandbox ends,
 * costs ~0.8 ms of CPU apiece on a 2-CPU VM (perf over 300 namespaces);
 * sixteen at a time ~0.45 ms, thirty ~0.3 ms. A service that runs many
 * sandboxes therefore holds an fd to each finished sandbox's namespace and
 * closes them together (docs/sandbox.md "Network namespaces in batches").
 *
 * Holding is safe: when a run hands its fd here, every process of the
 * sandbox is gone, so the namespace has no task and no open socket, and
 * nothing but this fd can reach it (setns needs the fd, and nobody else
 * gets it). What it still holds is kernel memory, ~150 KB per namespace,
 * so the batch is bounded in count (SANDBOX_NETNS_BATCH_MAX) and in age
 * (a namespace held longer than NETNS_HOLD_MAX_NS goes with the next put),
 * and a worker with nothing to do lets the batch go at once
 * (sandbox_netns_flush). Off by default: `clearbox run` ends one sandbox
 * per process, whose exit lets its namespace go anyway.
 */
#include "sandbox/internal.h"
#include "util/timeutil.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#define NETNS_HOLD_MAX_NS (2ull * 1000 * 1000 * 1000)

static pthread_mutex_t nb_mu = PTHREAD_MUTEX_INITIALIZER;
static int nb_fd[SANDBOX_NETNS_BATCH_MAX];
static unsigned nb_n;        /* held now */
static unsigned nb_max;      /* 0: off (a run closes its own) */
static uint64_t nb_first_ns; /* when the oldest held one came */

/* Take the held fds out under the lock; close them outside it, in one
 * burst, so that the kernel worker finds them all queued together. */
static unsigned take_locked(int *out)
{
    unsigned k = nb_n;
    for (unsigned i = 0; i < k; i++)
        out[i] = nb_fd[i];
    nb_n = 0;
    return k;
}

static void close_all(const int *fds, unsigned k)
{
    for (unsigned i = 0; i < k; i++)
        close(fds[i]);
}

void sandbox_netns_flush(void)
{
    int out[SANDBOX_NETNS_BATCH_MAX];
    pthread_mutex_lock(&nb_mu);
    unsigned k = take_locked(out);
    pthread_mutex_unlock(&nb_mu);
    close_all(out, k);
}

void sandbox_netns_batch(unsigned max)
{
    if (max > SANDBOX_NETNS_BATCH_MAX)
        max = SANDBOX_NETNS_BATCH_MAX;
    pthread_mutex_lock(&nb_mu);
    nb_max = max > 1 ? max : 0;
    pthread_mutex_unlock(&nb_mu);
    sandbox_netns_flush();
}

bool sandbox__netns_batching(void)
{
    pthread_mutex_lock(&nb_mu);
    bool on = nb_max > 0;
    pthread_mutex_unlock(&nb_mu);
    return on;
}

void sandbox__netns_put(int fd)
{
    if (fd < 0)
        return;
    int out[SANDBOX_NETNS_BATCH_MAX];
    unsigned k = 0;
    uint64_t now = time_mono_ns();
    pthread_mutex_lock(&nb_mu);
    if (nb_max == 0) {
        out[k++] = fd; /* batching stopped meanwhile */
    } else {
        if (nb_n == 0)
            nb_first_ns = now;
        nb_fd[nb_n++] = fd;
        if (nb_n >= nb_max || now - nb_first_ns >= NETNS_HOLD_MAX_NS)
            k = take_locked(out);
    }
    pthread_mutex_unlock(&nb_mu);
    close_all(out, k);
}
