/*
 * The native zygote: a tiny C process that forks sandboxes for native functions.
 *
 * Same control protocol as the Python zygote (zygote.py), same channel
 * protocol as a Python sandbox running a native function (child.py), but
 * no interpreter: a fork copies a few pages instead of a Python heap, and a sandbox touches
 * almost none of them.  Built on first use by native.py.
 *
 *     native-zygote CONTROL_FD CPU_SECONDS CAP
 *
 * A sandbox: channel on fd 3, every other descriptor closed, fatal signals reported on the
 * channel, RLIMIT_CORE/FSIZE/NPROC = 0, RLIMIT_CPU, no_new_privs; then it waits for an
 * assignment (header + context memfd), maps the context, reads the worker-validated
 * segment table and image, maps the segments, enters seccomp strict mode and calls the
 * entry point; it reports the return code and exits.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "protocol.h"
#include "sandbox.h"
#include "segments.h"
#include "zygote_loop.h"

static void sandbox(int cpu_seconds) {
    static char altstack[64 * 1024];
    sandbox_report_fatal(WIRE_CHANNEL_FD, altstack, sizeof altstack);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    sandbox_limit(cpu_seconds);

    struct wire_assign a;
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {.iov_base = &a, .iov_len = sizeof a};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                        .msg_controllen = sizeof cbuf};
    ssize_t got = recvmsg(WIRE_CHANNEL_FD, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    if (got != (ssize_t)sizeof a || cm == NULL || cm->cmsg_type != SCM_RIGHTS ||
        a.kind != WIRE_KIND_NATIVE || a.n_segments > WIRE_MAX_SEGMENTS)
        _exit(0);  /* unused, or not for us */
    int memfd;
    memcpy(&memfd, CMSG_DATA(cm), sizeof memfd);
    uint8_t *ctx = mmap(NULL, a.capacity, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    close(memfd);
    if (ctx != MAP_FAILED)
        sandbox_populate(ctx, a.capacity);
    if (ctx == MAP_FAILED || load_segments(WIRE_CHANNEL_FD, a.n_segments, a.payload_len))
        _exit(1);
    if (sandbox_call_native(WIRE_CHANNEL_FD, a.entry, ctx) != 0)
        _exit(1);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    static struct zygote z;  /* static: zeroed */
    z.ctrl = atoi(argv[1]);
    int cpu = atoi(argv[2]);
    z.cap = argc > 3 ? atoi(argv[3]) : 16;
    signal(SIGPIPE, SIG_IGN);
    if (zygote_send(z.ctrl, WIRE_STARTED, getpid(), 0, -1, -1) < 0 || zygote_run(&z) < 0)
        return 0;
    /* a sandbox */
    dup2(z.channel, WIRE_CHANNEL_FD);  /* dup2 clears close-on-exec; nothing is exec'd */
    sandbox_close_all_but(WIRE_CHANNEL_FD);
    sandbox(cpu);
    _exit(0);
}
