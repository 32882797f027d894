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
#include <errno.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "segments.h"
#include "zygote_loop.h"

#define CHANNEL 3

#pragma pack(push, 1)
struct assign {
    char magic[4];
    uint32_t kind;
    uint64_t capacity, memory_limit, payload_len, entry;
    uint32_t n_segments;
};
#pragma pack(pop)

struct fatal_report { char tag[4]; int32_t signo, syscall_nr, code; uint64_t addr; };
struct native_report { char tag[4]; int32_t rc; };

static volatile int strict = 0;

static void write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t k = syscall(SYS_write, fd, c, n);
        if (k <= 0) return;
        c += k;
        n -= (size_t)k;
    }
}

static void die(int status) {
    if (strict) syscall(SYS_exit, status);
    syscall(SYS_exit_group, status);
    for (;;) {}
}

static void on_fatal(int signo, siginfo_t *info, void *uc) {
    (void)uc;
    struct fatal_report r;
    memset(&r, 0, sizeof r);
    memcpy(r.tag, "GONE", 4);
    r.signo = signo;
    r.code = info->si_code;
    r.syscall_nr = signo == SIGSYS ? info->si_syscall : -1;
    r.addr = (uint64_t)(uintptr_t)info->si_addr;
    write_all(CHANNEL, &r, sizeof r);
    die(128 + signo);
}

static void sandbox(int cpu_seconds) {
    static char altstack[64 * 1024];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fatal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigfillset(&sa.sa_mask);
    int sigs[] = {SIGSYS, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGXCPU, SIGABRT, SIGTRAP};
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct rlimit zero = {0, 0};
    setrlimit(RLIMIT_CORE, &zero);
    setrlimit(RLIMIT_FSIZE, &zero);
    setrlimit(RLIMIT_NPROC, &zero);
    if (cpu_seconds > 0) {
        struct rlimit cpu = {(rlim_t)cpu_seconds, (rlim_t)cpu_seconds + 1};
        setrlimit(RLIMIT_CPU, &cpu);
    }
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);

    struct assign a;
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {.iov_base = &a, .iov_len = sizeof a};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                        .msg_controllen = sizeof cbuf};
    ssize_t got = recvmsg(CHANNEL, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    if (got != (ssize_t)sizeof a || cm == NULL || cm->cmsg_type != SCM_RIGHTS ||
        a.kind != 2 || a.n_segments > MAX_SEGMENTS)
        _exit(0);  /* unused, or not for us */
    int memfd;
    memcpy(&memfd, CMSG_DATA(cm), sizeof memfd);
    uint8_t *ctx = mmap(NULL, a.capacity, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    close(memfd);
    if (ctx != MAP_FAILED && a.capacity >= 64) {
        /* fault in the inputs and as much again for outputs with one call (heap_cur, at
         * offset 56 of the context header, ends the inputs); best effort */
        uint64_t used;
        memcpy(&used, ctx + 56, 8);
        uint64_t want = used < a.capacity / 2 ? used * 2 + 4096 : a.capacity;
        if (want > a.capacity) want = a.capacity;
        want &= ~(uint64_t)4095;
        if (want) madvise(ctx, want, 23 /* MADV_POPULATE_WRITE */);
    }
    if (ctx == MAP_FAILED || load_segments(CHANNEL, a.n_segments, a.payload_len))
        _exit(1);
    int (*entry)(void *) = (int (*)(void *))(uintptr_t)a.entry;
    strict = 1;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0) != 0) _exit(1);
    struct native_report r;
    memcpy(r.tag, "NATV", 4);
    r.rc = entry(ctx);
    write_all(CHANNEL, &r, sizeof r);
    /* exit once the worker hangs up or kills us, not while it wakes up for the report */
    char c;
    syscall(SYS_read, CHANNEL, &c, 1);
    syscall(SYS_exit, 0);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    static struct zygote z;  /* static: zeroed */
    z.ctrl = atoi(argv[1]);
    int cpu = atoi(argv[2]);
    z.cap = argc > 3 ? atoi(argv[3]) : 16;
    signal(SIGPIPE, SIG_IGN);
    if (zygote_send(z.ctrl, 'R', getpid(), 0, -1, -1) < 0 || zygote_run(&z) < 0)
        return 0;
    /* a sandbox */
    dup2(z.channel, CHANNEL);  /* dup2 clears close-on-exec; nothing is exec'd */
    syscall(SYS_close_range, 0, CHANNEL - 1, 0);
    syscall(SYS_close_range, CHANNEL + 1, ~0U, 0);
    sandbox(cpu);
    _exit(0);
}
