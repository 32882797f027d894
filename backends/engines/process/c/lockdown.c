/*
 * A sandbox's lockdown, in C so that it touches no Python objects (and so copies none of
 * the pages it shares with its zygote): close every descriptor but the channel, report
 * fatal signals on it, rlimits, no_new_privs, the seccomp-bpf filter (sandbox.h has what
 * the native zygote's sandboxes do alike).  Also the zygote's control loop, which forks
 * the sandboxes (zygote_loop.h), and native functions run under seccomp strict mode.
 */
#include "sandboxc.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "sandbox.h"
#include "segments.h"
#define ZYGOTE_SNAPSHOTS  /* this zygote's sandboxes may be reset (snapshot.h) */
#include "zygote_loop.h"

/* track(): make this sandbox reusable (snapshot_track()), before its filter; whether it
 * is. */
PyObject *track(PyObject *self, PyObject *noargs) {
    return PyBool_FromLong(snapshot_track() == 0);
}

/* install_filter(program): no_new_privs, then the seccomp-bpf program (bytes). */
PyObject *install_filter(PyObject *self, PyObject *args) {
    Py_buffer prog;
    if (!PyArg_ParseTuple(args, "y*", &prog))
        return NULL;
    if (prog.len % sizeof(struct sock_filter) != 0 || prog.len == 0) {
        PyBuffer_Release(&prog);
        PyErr_SetString(PyExc_ValueError, "a BPF program is a non-empty array of 8-byte "
                                          "instructions");
        return NULL;
    }
    struct sock_fprog fprog = {
        .len = (unsigned short)(prog.len / sizeof(struct sock_filter)),
        .filter = (struct sock_filter *)prog.buf,
    };
    int rc = prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    if (rc == 0)
        rc = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0);
    PyBuffer_Release(&prog);
    if (rc != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* The alternate stack fatal signals are handled on: mapped once per process.  A zygote maps
 * it before it forks, so that its sandboxes inherit the (untouched) mapping instead of each
 * making one; each sandbox writes only its own copy. */
#define ALT_STACK_SIZE (256 * 1024)
static char *alt_stack = NULL;

static int map_alt_stack(void) {
    if (alt_stack == NULL) {
        char *p = mmap(NULL, ALT_STACK_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return -1;
        alt_stack = p;
    }
    return 0;
}

/* Report fatal signals on fd, on an alternate stack: 0, or -1 with errno set. */
static int fatal_handlers(int fd) {
    if (map_alt_stack() != 0) {
        sandbox_report_fd = fd;
        return -1;
    }
    return sandbox_report_fatal(fd, alt_stack, ALT_STACK_SIZE);
}

/* Address-space bytes in use, from /proc/self/statm (first field, pages); 0 if unknown. */
static long long address_space(void) {
    long long vm = 0;
    int sfd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (sfd >= 0) {
        char buf[64];
        ssize_t n = read(sfd, buf, sizeof buf - 1);
        close(sfd);
        if (n > 0) {
            buf[n] = 0;
            vm = atoll(buf) * sysconf(_SC_PAGESIZE);
        }
    }
    return vm;
}

/*
 * prepare_fd(channel, cpu_seconds, vm) -> address-space bytes in use, or -1 with errno set:
 * everything a sandbox does before it waits, in C so that it touches no Python objects:
 * close every descriptor but the channel, report fatal signals on it, RLIMIT_CORE/FSIZE/
 * NPROC = 0, RLIMIT_CPU, no_new_privs.  `vm` > 0 is the address space in use, known
 * already (see zygote_loop()); otherwise it is read from /proc.
 */
static long long prepare_fd(int fd, int cpu, long long vm) {
    if (sandbox_close_all_but(fd) != 0 || fatal_handlers(fd) != 0 || sandbox_limit(cpu) != 0)
        return -1;
    return vm > 0 ? vm : address_space();
}

/* prepare(channel, cpu_seconds) -> address-space bytes in use (see prepare_fd()). */
PyObject *prepare(PyObject *self, PyObject *args) {
    int fd, cpu;
    if (!PyArg_ParseTuple(args, "ii", &fd, &cpu))
        return NULL;
    long long vm = prepare_fd(fd, cpu, 0);
    return vm < 0 ? PyErr_SetFromErrno(PyExc_OSError) : PyLong_FromLongLong(vm);
}

/*
 * A Python sandbox's side of zygote_loop(), before any Python code runs in it (its
 * channel already on descriptor 3): prepare it (prepare_fd()) and, unless it warms up
 * first, cap its address space at baseline + memory_limit and install the filter
 * `prog`.  Doing this in C keeps the child from touching (and so copying) Python objects.
 * Returns the baseline; exits the process on failure.
 */
static long long lock_down(int cpu, long long memory, const Py_buffer *prog, int warm,
                           long long vm, int reuse) {
    long long baseline = prepare_fd(WIRE_CHANNEL_FD, cpu, vm);
    if (baseline < 0)
        _exit(1);
    (void)reuse;  /* a sandbox that skips its warm-up is not made reusable: its first
                   * invocation would map what the warm-up maps (a reset then discards it) */
    if (!warm && prog->len > 0) {
        if (memory > 0) {
            struct rlimit as = {(rlim_t)(baseline + memory), (rlim_t)(baseline + memory)};
            setrlimit(RLIMIT_AS, &as);
        }
        struct sock_fprog fprog = {
            .len = (unsigned short)(prog->len / sizeof(struct sock_filter)),
            .filter = (struct sock_filter *)prog->buf,
        };
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0) != 0)
            _exit(1);
    }
    return baseline;
}

/*
 * zygote_loop(ctrl, cap, cpu_seconds, memory_limit, program, warm) -> None | (baseline,
 * warm): run a zygote's control loop (zygote_loop.h) on `ctrl` until the worker goes
 * away; then it returns None, its sandboxes killed.  In a forked sandbox it returns with
 * the sandbox's channel on descriptor 3, and `warm` saying whether this sandbox is to warm
 * up (the initial `warm`, or what the worker last set with 'H').  With a `program` (a
 * sandbox for Python functions only) the child has been locked down in C (lock_down())
 * before any Python code runs in it, and `baseline` is the address space it had then;
 * without one (it may run native code, and prepares itself once assigned) it is 0.  The
 * zygote itself runs no Python code between forks, so it writes to none of the pages it
 * shares with its sandboxes.
 */
PyObject *zygote_loop(PyObject *self, PyObject *args) {
    static struct zygote z;
    int ctrl, cap, cpu, warm, reuse = 0;
    long long memory;
    Py_buffer prog = {0};
    if (!PyArg_ParseTuple(args, "iiiLz*p|p", &ctrl, &cap, &cpu, &memory, &prog, &warm, &reuse))
        return NULL;
    memset(&z, 0, sizeof z);
    z.ctrl = ctrl;
    z.cap = cap;
    z.warm = warm;
    z.cpu_ns = cpu > 0 ? cpu * 1000000000LL / 8 : 0;
    /* What a sandbox's lockdown needs to know of its address space, found once here: the
     * zygote's, with the alternate signal stack mapped already (the loop maps nothing, and
     * a sandbox maps nothing before it is locked down), instead of each sandbox opening
     * /proc (some 40 us of path walk and procfs inodes in each). */
    long long vm = map_alt_stack() == 0 ? address_space() : 0;
    if (zygote_run(&z) < 0) {
        PyBuffer_Release(&prog);
        Py_RETURN_NONE;
    }
    /* a sandbox (its other descriptors are closed by prepare_fd(), here or once assigned) */
    if (z.channel != WIRE_CHANNEL_FD && dup2(z.channel, WIRE_CHANNEL_FD) != WIRE_CHANNEL_FD)
        _exit(1);
    long long baseline = prog.buf != NULL ? lock_down(cpu, memory, &prog, z.warm, vm, reuse)
                                          : 0;
    PyBuffer_Release(&prog);
    return Py_BuildValue("(Li)", baseline, z.warm);
}

/*
 * load_segments(fd, n_segments, payload_len): read a native function's segment table and
 * segments from the channel and map them (segments.h, as the C zygote's sandboxes do).
 */
PyObject *py_load_segments(PyObject *self, PyObject *args) {
    int fd;
    unsigned int n;
    unsigned long long length;
    if (!PyArg_ParseTuple(args, "iIK", &fd, &n, &length))
        return NULL;
    if (load_segments(fd, n, length) != 0) {
        PyErr_SetString(PyExc_OSError, "cannot load the native function's segments");
        return NULL;
    }
    Py_RETURN_NONE;
}

/*
 * run_native(entry, context_address, fd): enter seccomp strict mode, call
 * ``int entry(void *context)`` and report its return code on ``fd``; then exit.  Never
 * returns: after strict mode the Python interpreter could not go on anyway.
 */
PyObject *run_native(PyObject *self, PyObject *args) {
    unsigned long long entry, ctx;
    int fd;
    if (!PyArg_ParseTuple(args, "KKi", &entry, &ctx, &fd))
        return NULL;
    sandbox_call_native(fd, entry, (void *)(uintptr_t)ctx);
    return PyErr_SetFromErrno(PyExc_OSError);
}

/* address_of(writable buffer) -> the address of its first byte. */
PyObject *address_of(PyObject *self, PyObject *args) {
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "w*", &buf))
        return NULL;
    unsigned long long a = (unsigned long long)(uintptr_t)buf.buf;
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLongLong(a);
}
