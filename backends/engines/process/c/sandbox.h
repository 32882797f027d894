/*
 * What every sandbox does in C, whichever zygote forked it: shared by the Python zygote's
 * sandboxes (lockdown.c, in the _sandboxc extension) and the native zygote's
 * (native_zygote.c), so that both lock down, report a fatal signal and run native code the
 * same way.
 *
 *  - sandbox_close_all_but(fd): close every descriptor but the channel;
 *  - sandbox_report_fatal(fd, stack, size): report fatal signals on the channel before
 *    dying (a GONE report: SIGSYS from the filter carries the number of the forbidden
 *    system call, SIGSEGV/SIGBUS/... the faulting address), on an alternate stack so that a
 *    stack overflow is reported too;
 *  - sandbox_limit(cpu): RLIMIT_CORE/FSIZE/NPROC = 0, RLIMIT_CPU, no_new_privs;
 *  - sandbox_populate(context, capacity): fault in a context's inputs and as much room again;
 *  - sandbox_call_native(fd, entry, context): seccomp strict mode, call the function, report
 *    its return code (NATV) and exit.
 *
 * Once in strict mode only read, write, exit and rt_sigreturn are allowed: everything here
 * that may run then (the fatal-signal handler, the exit) makes raw system calls.  Each C
 * file that includes this header has its own copy of the two variables below: in the
 * extension, what sets them (a sandbox's lockdown, native calls) is all in lockdown.c.
 */
#ifndef DANDELION_SANDBOX_H
#define DANDELION_SANDBOX_H

#include <linux/seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "protocol.h"

#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

static int sandbox_report_fd = -1;       /* where a fatal signal is reported */
static volatile int sandbox_strict = 0;  /* in seccomp strict mode: exit, not exit_group */

/* Exit with a raw system call; in strict mode only exit (not exit_group) is allowed. */
static inline void sandbox_exit(int status) {
    if (sandbox_strict)
        syscall(SYS_exit, status);
    syscall(SYS_exit_group, status);
    for (;;) {}
}

/* Write all of p with raw system calls (allowed in strict mode and in a signal handler). */
static inline void sandbox_write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t k = syscall(SYS_write, fd, c, n);
        if (k <= 0)
            return;
        c += k;
        n -= (size_t)k;
    }
}

static inline void sandbox_on_fatal(int signo, siginfo_t *info, void *uctx) {
    (void)uctx;
    struct wire_gone r;
    memset(&r, 0, sizeof r);
    memcpy(r.tag, WIRE_GONE_TAG, 4);
    r.signo = signo;
    r.code = info->si_code;
    if (signo == SIGSYS) {
        r.syscall_nr = info->si_syscall;
        r.addr = (uint64_t)(uintptr_t)info->si_call_addr;
    } else {
        r.syscall_nr = -1;
        r.addr = (uint64_t)(uintptr_t)info->si_addr;
    }
    if (sandbox_report_fd >= 0)
        sandbox_write_all(sandbox_report_fd, &r, sizeof r);
    sandbox_exit(128 + signo);
}

/*
 * Report fatal signals on fd from now on, the handler running on `stack` (NULL: the
 * current alternate stack, if any).  The signals it reports are unblocked.  0, or -1 with
 * errno set (the handlers may be installed; the signals are unblocked only on success).
 */
static inline int sandbox_report_fatal(int fd, void *stack, size_t stack_size) {
    sandbox_report_fd = fd;
    int rc = 0;
    if (stack != NULL) {
        stack_t ss = {.ss_sp = stack, .ss_size = stack_size, .ss_flags = 0};
        rc = sigaltstack(&ss, NULL);
    }
    static const int signals[] = {SIGSYS, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGXCPU, SIGABRT,
                                  SIGTRAP};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = sandbox_on_fatal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigfillset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) {
        if (sigaction(signals[i], &sa, NULL) != 0)
            return -1;
    }
    if (rc != 0)
        return -1;
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        sigaddset(&set, signals[i]);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    return 0;
}

/* Close every descriptor but fd: 0, or -1 with errno set. */
static inline int sandbox_close_all_but(int fd) {
    if (fd > 0 && syscall(SYS_close_range, 0, fd - 1, 0) != 0)
        return -1;
    return syscall(SYS_close_range, fd + 1, ~0U, 0) != 0 ? -1 : 0;
}

/* No core files, no files written, no processes; at most cpu_seconds of CPU time (0: no
 * limit); no_new_privs.  0, or -1 with errno set if no_new_privs could not be set. */
static inline int sandbox_limit(int cpu_seconds) {
    struct rlimit zero = {0, 0};
    setrlimit(RLIMIT_CORE, &zero);
    setrlimit(RLIMIT_FSIZE, &zero);
    setrlimit(RLIMIT_NPROC, &zero);
    if (cpu_seconds > 0) {
        struct rlimit cpu = {(rlim_t)cpu_seconds, (rlim_t)cpu_seconds + 1};
        setrlimit(RLIMIT_CPU, &cpu);
    }
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ? -1 : 0;
}

/*
 * Fault in, with one call each rather than a page fault a page, what a sandbox will write
 * of a mapped context: the header's page and room for outputs after the inputs (heap_cur,
 * at offset 56 of the context header, ends them): as much room as the inputs take, at
 * most SANDBOX_OUTPUT_ROOM.  The inputs themselves are only read: their read faults map 16
 * pages each (fault-around), which costs less than populating them for writing (0.3 ms
 * against 0.7 ms for 4 MiB here), and the room is bounded since a function that reduces
 * a large input writes little (populating 4 MiB it never touched cost another 0.7 ms).
 * Populated for reading, not writing: the context is shared memory, which the kernel maps
 * writable on a read fault (it keeps no dirty accounting for it), so the writes that
 * follow take no fault either way; but a write fault runs once a page (and updates the
 * file's times), while a read fault maps up to 16 pages at once (fault-around): 34 pages
 * of room cost 3 faults instead of 34, and the whole mapping ~14 us less on the machine
 * measured (docs/performance.rst).  Best effort: older kernels lack MADV_POPULATE_READ.
 */
#define SANDBOX_OUTPUT_ROOM (1ULL << 20)

static inline void sandbox_populate(uint8_t *context, uint64_t capacity) {
    capacity &= ~(uint64_t)4095;
    if (capacity == 0)
        return;
    uint64_t used;
    memcpy(&used, context + 56, 8);
    uint64_t from = used & ~(uint64_t)4095;
    if (from >= capacity)
        from = 0;  /* a malformed header: the worker's own reading of it will say so */
    uint64_t room = used < SANDBOX_OUTPUT_ROOM ? used : SANDBOX_OUTPUT_ROOM;
    uint64_t to = (used + room + 4096 + 4095) & ~(uint64_t)4095;
    if (to > capacity || to < from)
        to = capacity;
    if (from > 0)
        madvise(context, 4096, MADV_POPULATE_READ);
    if (to > from)
        madvise(context + from, to - from, MADV_POPULATE_READ);
}

/*
 * Enter seccomp strict mode, call ``int entry(void *context)``, report its return code on
 * fd (NATV), wait until the worker hangs up or kills the sandbox (not exiting while it
 * wakes up for the report) and exit.  Returns -1 with errno set only if strict mode
 * cannot be entered.
 */
static inline int sandbox_call_native(int fd, uint64_t entry, void *context) {
    sandbox_report_fd = fd;
    int (*fn)(void *) = (int (*)(void *))(uintptr_t)entry;
    sandbox_strict = 1;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0) != 0) {
        sandbox_strict = 0;
        return -1;
    }
    struct wire_natv r;
    memcpy(r.tag, WIRE_NATV_TAG, 4);
    r.rc = fn(context);
    sandbox_write_all(fd, &r, sizeof r);
    char c;
    syscall(SYS_read, fd, &c, 1);
    syscall(SYS_exit, 0);
    for (;;) {}
}

#endif
