/*
 * The few things a sandbox needs that Python cannot do by itself:
 *
 *  - install a prebuilt seccomp-bpf program (after PR_SET_NO_NEW_PRIVS);
 *  - report fatal signals on the channel before dying: SIGSYS from the filter carries the
 *    number of the forbidden system call, SIGSEGV/SIGBUS/... the faulting address; the
 *    handler runs on an alternate stack so that a stack overflow is reported too;
 *  - close every descriptor but a few (close_range);
 *  - map a validated native function's segments at their fixed addresses and call it under
 *    seccomp strict mode (read, write, exit, rt_sigreturn only);
 *  - punch holes into a context's memfd so that a wiped context gives its pages back.
 *
 * Everything that parses untrusted data (ELF headers, pickles, items) lives elsewhere: the
 * ELF is validated by the trusted worker, pickles and items are read only after the filter.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000  /* Linux 4.17; older kernels take it as a hint */
#endif

#define DANDELION_NO_ENTRY /* only the structs of the context layout, not a function */
#include "dandelion.h"
#include "segments.h"
#include "zygote_loop.h"

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

/* Message a dying sandbox writes on its channel: 'G', signal, syscall, address. */
struct fatal_report {
    char tag[4];
    int32_t signo;
    int32_t syscall_nr;
    int32_t code;
    uint64_t addr;
};

static int report_fd = -1;
static volatile int strict_mode = 0;
static char *alt_stack = NULL;

static void raw_exit(int status) {
    /* In strict mode only exit (not exit_group) is allowed. */
    if (strict_mode)
        syscall(SYS_exit, status);
    syscall(SYS_exit_group, status);
    for (;;) {}
}

static void fatal_handler(int signo, siginfo_t *info, void *uctx) {
    (void)uctx;
    struct fatal_report r;
    memset(&r, 0, sizeof r);
    memcpy(r.tag, "GONE", 4);
    r.signo = signo;
    r.code = info->si_code;
    if (signo == SIGSYS) {
        r.syscall_nr = info->si_syscall;
        r.addr = (uint64_t)(uintptr_t)info->si_call_addr;
    } else {
        r.syscall_nr = -1;
        r.addr = (uint64_t)(uintptr_t)info->si_addr;
    }
    if (report_fd >= 0) {
        ssize_t left = sizeof r;
        const char *p = (const char *)&r;
        while (left > 0) {
            ssize_t n = syscall(SYS_write, report_fd, p, left);
            if (n <= 0)
                break;
            p += n;
            left -= n;
        }
    }
    raw_exit(128 + signo);
}

static int fatal_handlers(int fd) {  /* 0, or -1 with errno set */
    size_t stack_size = 256 * 1024;
    report_fd = fd;
    if (alt_stack == NULL) {
        alt_stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (alt_stack == MAP_FAILED) {
            alt_stack = NULL;
            return -1;
        }
        stack_t ss = {.ss_sp = alt_stack, .ss_size = stack_size, .ss_flags = 0};
        if (sigaltstack(&ss, NULL) != 0)
            return -1;
    }
    static const int signals[] = {SIGSYS, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGXCPU, SIGABRT,
                                  SIGTRAP};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fatal_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigfillset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) {
        if (sigaction(signals[i], &sa, NULL) != 0)
            return -1;
    }
    /* The signals the handler reports must not stay blocked. */
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        sigaddset(&set, signals[i]);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    return 0;
}

static PyObject *install_filter(PyObject *self, PyObject *args) {
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

/*
 * wipe(fd, mapping, limit): make every byte of a context read as zero.  Pages that were
 * written (the file's data extents, found with SEEK_DATA/SEEK_HOLE) are zeroed in place when
 * they add up to at most `limit` bytes, so they stay allocated and mapped for the next
 * invocation; otherwise the whole file is punched out.  Returns the bytes zeroed in place
 * (-1 for a punch).
 */
static PyObject *wipe(PyObject *self, PyObject *args) {
    int fd;
    Py_buffer map;
    long long limit;
    if (!PyArg_ParseTuple(args, "iw*L", &fd, &map, &limit))
        return NULL;
    off_t size = (off_t)map.len, pos = 0, total = 0;
    off_t starts[64], ends[64];
    int n = 0, punch = 0;
    while (pos < size) {
        off_t data = lseek(fd, pos, SEEK_DATA);
        if (data < 0 || data >= size)
            break;
        off_t hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0 || hole > size)
            hole = size;
        if (n == 64 || (total += hole - data) > limit) {
            punch = 1;
            break;
        }
        starts[n] = data;
        ends[n++] = hole;
        pos = hole;
    }
    if (punch) {
        PyBuffer_Release(&map);
        if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, size) != 0)
            return PyErr_SetFromErrno(PyExc_OSError);
        return PyLong_FromLong(-1);
    }
    for (int i = 0; i < n; i++)
        memset((char *)map.buf + starts[i], 0, (size_t)(ends[i] - starts[i]));
    PyBuffer_Release(&map);
    return PyLong_FromLongLong((long long)total);
}

/*
 * load_segments(fd, n_segments, payload_len): read a native function's segment table and
 * segments from the channel and map them (segments.h, as the C zygote's sandboxes do).
 */
static PyObject *py_load_segments(PyObject *self, PyObject *args) {
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

/* The message a native run leaves on the channel: 'NATV', return code. */
struct native_report {
    char tag[4];
    int32_t rc;
};

/*
 * run_native(entry, context_address, fd): enter seccomp strict mode, call
 * ``int entry(void *context)`` and report its return code on ``fd``; then exit.  Never
 * returns: after strict mode the Python interpreter could not go on anyway.
 */
static PyObject *run_native(PyObject *self, PyObject *args) {
    unsigned long long entry, ctx;
    int fd;
    if (!PyArg_ParseTuple(args, "KKi", &entry, &ctx, &fd))
        return NULL;
    report_fd = fd;
    int (*fn)(void *) = (int (*)(void *))(uintptr_t)entry;
    strict_mode = 1;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0) != 0) {
        strict_mode = 0;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    struct native_report r;
    memcpy(r.tag, "NATV", 4);
    r.rc = fn((void *)(uintptr_t)ctx);
    const char *p = (const char *)&r;
    ssize_t left = sizeof r;
    while (left > 0) {
        ssize_t n = syscall(SYS_write, fd, p, left);
        if (n <= 0)
            break;
        p += n;
        left -= n;
    }
    char c;  /* exit once the worker hangs up or kills us (see child.py, _end) */
    syscall(SYS_read, fd, &c, 1);
    syscall(SYS_exit, 0);
    for (;;) {}
}

static PyObject *address_of(PyObject *self, PyObject *args) {
    Py_buffer buf;
    if (!PyArg_ParseTuple(args, "w*", &buf))
        return NULL;
    unsigned long long a = (unsigned long long)(uintptr_t)buf.buf;
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLongLong(a);
}

/*
 * prepare_fd(channel, cpu_seconds) -> address-space bytes in use, or -1 with errno set:
 * everything a sandbox does before it waits, in C so that it touches no Python objects:
 * close every descriptor but the channel, report fatal signals on it, RLIMIT_CORE/FSIZE/
 * NPROC = 0, RLIMIT_CPU, no_new_privs.
 */
static long long prepare_fd(int fd, int cpu) {
    if (fd > 0 && syscall(SYS_close_range, 0, fd - 1, 0) != 0)
        return -1;
    if (syscall(SYS_close_range, fd + 1, ~0U, 0) != 0)
        return -1;
    if (fatal_handlers(fd) != 0)
        return -1;
    struct rlimit zero = {0, 0};
    setrlimit(RLIMIT_CORE, &zero);
    setrlimit(RLIMIT_FSIZE, &zero);
    setrlimit(RLIMIT_NPROC, &zero);
    if (cpu > 0) {
        struct rlimit lim = {(rlim_t)cpu, (rlim_t)cpu + 1};
        setrlimit(RLIMIT_CPU, &lim);
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    /* address space in use, from /proc/self/statm (first field, pages) */
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

/* prepare(channel, cpu_seconds) -> address-space bytes in use (see prepare_fd()). */
static PyObject *prepare(PyObject *self, PyObject *args) {
    int fd, cpu;
    if (!PyArg_ParseTuple(args, "ii", &fd, &cpu))
        return NULL;
    long long vm = prepare_fd(fd, cpu);
    return vm < 0 ? PyErr_SetFromErrno(PyExc_OSError) : PyLong_FromLongLong(vm);
}


/*
 * A Python sandbox's side of zygote_loop(), before any Python code runs in it (its
 * channel already on descriptor 3): prepare it (prepare_fd()) and, unless it warms up
 * first, cap its address space at baseline + memory_limit and install the filter
 * `prog`.  Doing this in C keeps the child from touching (and so copying) Python objects.
 * Returns the baseline; exits the process on failure.
 */
static long long lock_down(int cpu, long long memory, const Py_buffer *prog, int warm) {
    long long baseline = prepare_fd(3, cpu);
    if (baseline < 0)
        _exit(1);
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
static PyObject *zygote_loop(PyObject *self, PyObject *args) {
    static struct zygote z;
    int ctrl, cap, cpu, warm;
    long long memory;
    Py_buffer prog = {0};
    if (!PyArg_ParseTuple(args, "iiiLz*p", &ctrl, &cap, &cpu, &memory, &prog, &warm))
        return NULL;
    memset(&z, 0, sizeof z);
    z.ctrl = ctrl;
    z.cap = cap;
    z.warm = warm;
    if (zygote_run(&z) < 0) {
        PyBuffer_Release(&prog);
        Py_RETURN_NONE;
    }
    /* a sandbox (its other descriptors are closed by prepare_fd(), here or once assigned) */
    if (z.channel != 3 && dup2(z.channel, 3) != 3)
        _exit(1);
    long long baseline = prog.buf != NULL ? lock_down(cpu, memory, &prog, z.warm) : 0;
    PyBuffer_Release(&prog);
    return Py_BuildValue("(Li)", baseline, z.warm);
}

/* wait_assignment(channel, size) -> (header bytes, memfd or -1): block for the worker. */
static PyObject *wait_assignment(PyObject *self, PyObject *args) {
    int fd;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "in", &fd, &size))
        return NULL;
    if (size <= 0 || size > 4096) {
        PyErr_SetString(PyExc_ValueError, "bad header size");
        return NULL;
    }
    char head[4096];
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {.iov_base = head, .iov_len = (size_t)size};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                        .msg_controllen = sizeof cbuf};
    ssize_t got;
    Py_BEGIN_ALLOW_THREADS
    got = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    Py_END_ALLOW_THREADS
    if (got < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    int memfd = -1;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    if (cm != NULL && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
        memcpy(&memfd, CMSG_DATA(cm), sizeof memfd);
    return Py_BuildValue("(y#i)", head, (Py_ssize_t)got, memfd);
}

/*
 * map_context(channel, header_size, capacity_offset) -> (header bytes, writable memoryview):
 * wait for the assignment, map the context it carries (its size is the u64 at
 * `capacity_offset` of the header) and close the memfd.  Works under the sandbox's filter
 * (recvmsg on the channel, mmap, close).  The mapping lives until the process exits.
 */
static PyObject *map_context(PyObject *self, PyObject *args) {
    PyObject *first = PyTuple_GetSlice(args, 0, 2);
    if (first == NULL)
        return NULL;
    PyObject *t = wait_assignment(self, first);
    Py_DECREF(first);
    if (t == NULL)
        return NULL;
    int fd;
    Py_ssize_t size, off;
    if (!PyArg_ParseTuple(args, "inn", &fd, &size, &off)) {
        Py_DECREF(t);
        return NULL;
    }
    PyObject *head = PyTuple_GET_ITEM(t, 0);
    int memfd = (int)PyLong_AsLong(PyTuple_GET_ITEM(t, 1));
    if (memfd < 0 || PyBytes_GET_SIZE(head) != size || off < 0 || off + 8 > size) {
        if (memfd >= 0)
            close(memfd);
        PyObject *r = Py_BuildValue("(OO)", head, Py_None);
        Py_DECREF(t);
        return r;
    }
    uint64_t capacity;
    memcpy(&capacity, PyBytes_AS_STRING(head) + off, 8);
    void *p = mmap(NULL, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    close(memfd);
    if (p == MAP_FAILED) {
        Py_DECREF(t);
        return PyErr_SetFromErrno(PyExc_MemoryError);
    }
    /*
     * Fault in the inputs and as much room again for outputs with one call rather than a
     * page fault each (heap_cur, at offset 56 of the context header, ends the inputs).
     * Best effort: older kernels lack MADV_POPULATE_WRITE.
     */
    if (capacity >= 64) {
        uint64_t used;
        memcpy(&used, (char *)p + 56, 8);
        uint64_t want = used * 2 + 4096;
        if (want > capacity)
            want = capacity;
        want = (want + 4095) & ~(uint64_t)4095;
        if (want > capacity)
            want = capacity & ~(uint64_t)4095;
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
        if (want > 0)
            madvise(p, want, MADV_POPULATE_WRITE);
    }
    PyObject *view = PyMemoryView_FromMemory(p, (Py_ssize_t)capacity, PyBUF_WRITE);
    if (view == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    PyObject *r = Py_BuildValue("(ON)", head, view);
    Py_DECREF(t);
    return r;
}

/*
 * receive(channel, header_size, capacity_offset, length_offset) -> (header, memoryview or
 * None, payload bytes or None): map_context(), then read the payload that follows the
 * header on the channel (its length is the u64 at `length_offset` of the header) into one
 * bytes object.  The worker sends header and payload in one message, so this is one wake-up
 * and no Python between the two reads.  Works under the sandbox's filter (read on the
 * channel).
 */
static PyObject *receive(PyObject *self, PyObject *args) {
    int fd;
    Py_ssize_t size, off, len_off;
    if (!PyArg_ParseTuple(args, "innn", &fd, &size, &off, &len_off))
        return NULL;
    PyObject *margs = Py_BuildValue("(inn)", fd, size, off);
    if (margs == NULL)
        return NULL;
    PyObject *t = map_context(self, margs);
    Py_DECREF(margs);
    if (t == NULL)
        return NULL;
    PyObject *head = PyTuple_GET_ITEM(t, 0);
    PyObject *view = PyTuple_GET_ITEM(t, 1);
    if (view == Py_None || len_off < 0 || len_off + 8 > PyBytes_GET_SIZE(head)) {
        PyObject *r = Py_BuildValue("(OOO)", head, view, Py_None);
        Py_DECREF(t);
        return r;
    }
    uint64_t length;
    memcpy(&length, PyBytes_AS_STRING(head) + len_off, 8);
    if (length > (uint64_t)PY_SSIZE_T_MAX / 2) {
        Py_DECREF(t);
        PyErr_SetString(PyExc_ValueError, "payload too large");
        return NULL;
    }
    PyObject *payload = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)length);
    if (payload == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    char *p = PyBytes_AS_STRING(payload);
    size_t got = 0;
    while (got < length) {
        ssize_t n;
        Py_BEGIN_ALLOW_THREADS
        n = read(fd, p + got, length - got);
        Py_END_ALLOW_THREADS
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {  /* the worker went away mid-message */
            Py_DECREF(payload);
            PyObject *r = Py_BuildValue("(OOO)", head, Py_None, Py_None);
            Py_DECREF(t);
            return r;
        }
        got += (size_t)n;
    }
    PyObject *r = Py_BuildValue("(OON)", head, view, payload);
    Py_DECREF(t);
    return r;
}


/* ======================================================================================
 * Context layout (layout.py documents it; dandelion.h declares its
 * structs): writing inputs (worker), reading items (both sides), adding outputs (sandbox).
 * Scalars are encoded and decoded here as dandelion.codec says; json and ndarray items
 * travel as bytes that Python encodes and decodes.
 * ==================================================================================== */

enum { EL_ANY = 0, EL_BYTES = 1, EL_STR = 2, EL_INT = 3, EL_FLOAT = 4, EL_BOOL = 5,
       EL_JSON = 6, EL_NDARRAY = 7, EL_COUNT = 8 };
static const char CTX_MAGIC[8] = "DDCTX01";
_Static_assert(sizeof(dd_header) <= 128, "the header fits its 128 bytes");
_Static_assert(sizeof(dd_set_desc) == 32 && sizeof(dd_item_desc) == 48, "table entries");
static const char *element_names[EL_COUNT] = {"any", "bytes", "str", "int", "float", "bool",
                                              "json", "ndarray"};
#define ALIGN16(n) (((n) + 15) & ~(uint64_t)15)

/* One value as bytes: scalars in `small`, text and buffers pointed to (`views` hold the
 * buffers of a tuple of parts, concatenated). */
typedef struct {
    uint8_t small[8];
    const uint8_t *data;
    uint64_t size;
    PyObject *text;            /* a UTF-8 bytes object for a str with surrogates */
    Py_buffer views[4];
    int n_views;
} encoded;

static void encoded_release(encoded *e) {
    for (int i = 0; i < e->n_views; i++)
        PyBuffer_Release(&e->views[i]);
    e->n_views = 0;
    Py_CLEAR(e->text);
}

/* Encode `value` as element `code` into *e (release with encoded_release).  0 or -1 with
 * TypeError / OverflowError set. */
static int encode_value(int code, PyObject *value, encoded *e) {
    memset(e, 0, sizeof *e);
    switch (code) {
    case EL_INT: {
        if (!PyLong_Check(value) || PyBool_Check(value)) {
            PyErr_SetString(PyExc_TypeError, "expected int");
            return -1;
        }
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow) {
            PyErr_SetString(PyExc_OverflowError, "does not fit in 64 bits");
            return -1;
        }
        if (v == -1 && PyErr_Occurred())
            return -1;
        int64_t le = (int64_t)v;
        memcpy(e->small, &le, 8);  /* x86-64 and arm64 are little-endian */
        e->data = e->small;
        e->size = 8;
        return 0;
    }
    case EL_FLOAT: {
        if (!(PyFloat_Check(value) || PyLong_Check(value)) || PyBool_Check(value)) {
            PyErr_SetString(PyExc_TypeError, "expected float");
            return -1;
        }
        double d = PyFloat_AsDouble(value);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        memcpy(e->small, &d, 8);
        e->data = e->small;
        e->size = 8;
        return 0;
    }
    case EL_BOOL:
        if (!PyBool_Check(value)) {
            PyErr_SetString(PyExc_TypeError, "expected bool");
            return -1;
        }
        e->small[0] = value == Py_True;
        e->data = e->small;
        e->size = 1;
        return 0;
    case EL_STR: {
        if (!PyUnicode_Check(value)) {
            PyErr_SetString(PyExc_TypeError, "expected str");
            return -1;
        }
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(value, &n);
        if (s == NULL) {  /* lone surrogates: as dandelion.codec, surrogatepass */
            PyErr_Clear();
            e->text = PyUnicode_AsEncodedString(value, "utf-8", "surrogatepass");
            if (e->text == NULL)
                return -1;
            s = PyBytes_AS_STRING(e->text);
            n = PyBytes_GET_SIZE(e->text);
        }
        e->data = (const uint8_t *)s;
        e->size = (uint64_t)n;
        return 0;
    }
    default:
        break;
    }
    /* bytes-like, or a tuple of bytes-like parts written one after the other */
    if (PyTuple_Check(value)) {
        Py_ssize_t n = PyTuple_GET_SIZE(value);
        if (n > 4) {
            PyErr_SetString(PyExc_TypeError, "at most 4 parts");
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            if (PyObject_GetBuffer(PyTuple_GET_ITEM(value, i), &e->views[i], PyBUF_SIMPLE) != 0) {
                encoded_release(e);
                return -1;
            }
            e->n_views++;
            e->size += (uint64_t)e->views[i].len;
        }
        return 0;
    }
    if (PyObject_GetBuffer(value, &e->views[0], PyBUF_SIMPLE) != 0)
        return -1;
    e->n_views = 1;
    e->data = e->views[0].buf;
    e->size = (uint64_t)e->views[0].len;
    return 0;
}

static void encoded_copy(const encoded *e, uint8_t *dst) {
    if (e->n_views == 0) {
        memcpy(dst, e->data, e->size);
        return;
    }
    for (int i = 0; i < e->n_views; i++) {
        memcpy(dst, e->views[i].buf, (size_t)e->views[i].len);
        dst += e->views[i].len;
    }
}

/* The UTF-8 of a name (NULL and 0 for None or ""). */
static int name_bytes(PyObject *name, const char **s, Py_ssize_t *n) {
    *s = NULL;
    *n = 0;
    if (name == Py_None)
        return 0;
    if (PyBytes_Check(name)) {
        *s = PyBytes_AS_STRING(name);
        *n = PyBytes_GET_SIZE(name);
        return 0;
    }
    *s = PyUnicode_AsUTF8AndSize(name, n);
    return *s == NULL ? -1 : 0;
}

static PyObject *str_value, *str_key, *str_name, *empty_str;

/* An element code from a Python int: 0 <= code < EL_COUNT, or -1 with an exception set. */
static int element_code(PyObject *obj) {
    long code = PyLong_AsLong(obj);
    if (code >= 0 && code < EL_COUNT)
        return (int)code;
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "unknown element code");
    return -1;
}

/*
 * The element code and the object to encode for an item's value declared `declared`:
 * scalars and bytes as they are; json, ndarray and untyped values other than those by
 * encoder(code, value) -> (code, bytes-like or tuple of parts).  *owned: a new reference
 * to release (NULL when `value` itself is encoded).  0 or -1 with an exception set.
 */
static int item_payload(PyObject *value, int declared, PyObject *encoder, int *code,
                        PyObject **obj, PyObject **owned) {
    *owned = NULL;
    *obj = value;
    *code = declared;
    if (declared == EL_ANY) {
        if (PyBytes_Check(value) || PyByteArray_Check(value) || PyMemoryView_Check(value))
            *code = EL_BYTES;
        else if (PyUnicode_Check(value))
            *code = EL_STR;
        else if (PyBool_Check(value))
            *code = EL_BOOL;
        else if (PyLong_Check(value))
            *code = EL_INT;
        else if (PyFloat_Check(value))
            *code = EL_FLOAT;
    }
    if (*code != EL_ANY && *code != EL_JSON && *code != EL_NDARRAY)
        return 0;
    PyObject *r = PyObject_CallFunction(encoder, "iO", declared, value);
    if (r == NULL)
        return -1;
    int c = PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2 ? element_code(PyTuple_GET_ITEM(r, 0))
                                                          : -1;
    if (c < 0) {
        Py_DECREF(r);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "an encoder returns (element code, data)");
        return -1;
    }
    *code = c;
    *obj = PyTuple_GET_ITEM(r, 1);
    *owned = r;
    return 0;
}

/* An item's value, key and name attributes (new references). */
static int item_fields(PyObject *item, PyObject **value, long long *key, PyObject **name) {
    *value = PyObject_GetAttr(item, str_value);
    if (*value == NULL)
        return -1;
    PyObject *k = PyObject_GetAttr(item, str_key);
    if (k == NULL)
        goto fail;
    *key = PyLong_AsLongLong(k);
    Py_DECREF(k);
    if (*key == -1 && PyErr_Occurred())
        goto fail;
    *name = PyObject_GetAttr(item, str_name);
    if (*name != NULL)
        return 0;
fail:
    Py_CLEAR(*value);
    return -1;
}

/* Bytes an item's data and name take in the heap. */
static uint64_t item_room(uint64_t size, Py_ssize_t name_len) {
    return ALIGN16(size) + ALIGN16((uint64_t)name_len);
}

/* Write an item's data and name at *cur (advanced) and fill its entry. */
static void item_write(uint8_t *base, uint64_t *cur, dd_item_desc *d, const encoded *e,
                       int code, long long key, const char *nm, Py_ssize_t nl,
                       uint32_t set) {
    d->data_off = *cur;
    d->data_len = e->size;
    d->key = key;
    d->element = (uint32_t)code;
    d->set = set;
    d->reserved = 0;
    encoded_copy(e, base + *cur);
    *cur = ALIGN16(*cur + e->size);
    d->name_off = nl ? *cur : 0;
    d->name_len = (uint32_t)nl;
    if (nl)
        memcpy(base + *cur, nm, (size_t)nl);
    *cur = ALIGN16(*cur + (uint64_t)nl);
}

/* Encode one item (its fields from item_fields) into *e; *code its element code. */
static int item_encode(PyObject *value, int declared, PyObject *encoder, int *code,
                       encoded *e, PyObject **owned) {
    PyObject *obj;
    if (item_payload(value, declared, encoder, code, &obj, owned) != 0)
        return -1;
    if (encode_value(*code, obj, e) != 0) {
        Py_CLEAR(*owned);
        return -1;
    }
    return 0;
}

/* Fill a set's entry and write its name at *cur (advanced). */
static void set_write(uint8_t *base, uint64_t *cur, dd_set_desc *sd, const char *nm,
                      Py_ssize_t nl, int element, uint32_t first_item, uint32_t n_items) {
    sd->name_off = nl ? *cur : 0;
    sd->name_len = (uint32_t)nl;
    sd->element = (uint32_t)element;
    sd->first_item = first_item;
    sd->n_items = n_items;
    sd->reserved = 0;
    if (nl)
        memcpy(base + *cur, nm, (size_t)nl);
    *cur = ALIGN16(*cur + (uint64_t)nl);
}

/* One item, ready to be written: its fields, element code, encoding and name. */
typedef struct {
    PyObject *value, *name, *owned;
    long long key;
    int code, is_encoded;
    encoded e;
    const char *nm;
    Py_ssize_t nl;
} item_bytes;

/* Read, encode and name `item` (declared `declared`) into *ib: 0, or -1 with an exception
 * set.  item_close() it either way. */
static int item_open(PyObject *item, int declared, PyObject *encoder, item_bytes *ib) {
    memset(ib, 0, sizeof *ib);
    if (item_fields(item, &ib->value, &ib->key, &ib->name) != 0)
        return -1;
    if (item_encode(ib->value, declared, encoder, &ib->code, &ib->e, &ib->owned) != 0)
        return -1;
    ib->is_encoded = 1;
    return name_bytes(ib->name, &ib->nm, &ib->nl);
}

static void item_close(item_bytes *ib) {
    if (ib->is_encoded) {
        encoded_release(&ib->e);
        Py_XDECREF(ib->owned);
    }
    Py_XDECREF(ib->value);
    Py_XDECREF(ib->name);
}

/*
 * write_inputs(context, sets, results, output_limit, encoder) -> capacity: lay out the
 * inputs.  `sets` is a list of (name, element code, items) per parameter, the items
 * objects with `value`, `key` and `name`; `results` a list of (name, element code) per
 * result; `encoder` as item_payload() says.  The capacity is what the inputs take plus
 * `output_limit`, rounded to pages; when that is more than `context` holds, nothing is
 * written and the capacity needed is returned negated.  Each item is encoded once: the
 * first pass keeps what it encoded for the second to write.
 */
static PyObject *write_inputs(PyObject *self, PyObject *args) {
    Py_buffer ctx;
    PyObject *sets, *results, *encoder;
    unsigned long long output_limit;
    if (!PyArg_ParseTuple(args, "w*O!O!KO", &ctx, &PyList_Type, &sets, &PyList_Type, &results,
                          &output_limit, &encoder))
        return NULL;
    Py_ssize_t n_sets = PyList_GET_SIZE(sets), n_results = PyList_GET_SIZE(results);
    Py_ssize_t n_items = 0, opened = 0;
    item_bytes *ibs = NULL;
    PyObject *ret = NULL, *fast = PyList_New(n_sets);
    if (fast == NULL)
        goto done;
    for (Py_ssize_t s = 0; s < n_sets; s++) {  /* shapes */
        PyObject *set = PyList_GET_ITEM(sets, s);
        if (!PyTuple_Check(set) || PyTuple_GET_SIZE(set) != 3) {
            PyErr_SetString(PyExc_TypeError, "a set is (name, element code, items)");
            goto done;
        }
        PyObject *items = PySequence_Fast(PyTuple_GET_ITEM(set, 2), "items are a sequence");
        if (items == NULL)
            goto done;
        PyList_SET_ITEM(fast, s, items);
        n_items += PySequence_Fast_GET_SIZE(items);
    }
    ibs = PyMem_Calloc(n_items ? (size_t)n_items : 1, sizeof *ibs);
    if (ibs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* first pass: encode every item, add up the sizes */
    uint64_t need = 0;
    for (Py_ssize_t s = 0; s < n_sets; s++) {
        PyObject *set = PyList_GET_ITEM(sets, s);
        PyObject *items = PyList_GET_ITEM(fast, s);
        const char *nm;
        Py_ssize_t nl;
        int declared = element_code(PyTuple_GET_ITEM(set, 1));
        if (declared < 0 || name_bytes(PyTuple_GET_ITEM(set, 0), &nm, &nl) != 0)
            goto done;
        need += ALIGN16((uint64_t)nl);
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(items); i++) {
            item_bytes *ib = &ibs[opened++];  /* item_close()d at the end, opened or not */
            if (item_open(PySequence_Fast_GET_ITEM(items, i), declared, encoder, ib) != 0)
                goto done;
            need += item_room(ib->e.size, ib->nl);
        }
    }
    for (Py_ssize_t r = 0; r < n_results; r++) {
        PyObject *res = PyList_GET_ITEM(results, r);
        const char *nm;
        Py_ssize_t nl;
        if (!PyTuple_Check(res) || PyTuple_GET_SIZE(res) != 2 ||
            name_bytes(PyTuple_GET_ITEM(res, 0), &nm, &nl) != 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "a result is (name, element code)");
            goto done;
        }
        if (element_code(PyTuple_GET_ITEM(res, 1)) < 0)
            goto done;
        need += ALIGN16((uint64_t)nl);
    }
    uint64_t in_sets = 128;  /* after the header */
    uint64_t out_sets = in_sets + sizeof(dd_set_desc) * (uint64_t)n_sets;
    uint64_t in_items = out_sets + sizeof(dd_set_desc) * (uint64_t)n_results;
    uint64_t cur = ALIGN16(in_items + sizeof(dd_item_desc) * (uint64_t)n_items);
    need += cur;
    uint64_t capacity = (need + output_limit + 4095) & ~(uint64_t)4095;
    if (capacity > (uint64_t)ctx.len) {
        ret = PyLong_FromLongLong(-(long long)capacity);
        goto done;
    }
    /* second pass: write what the first encoded */
    uint8_t *base = ctx.buf;
    memset(base, 0, (size_t)in_items);
    uint32_t item_index = 0;
    for (Py_ssize_t s = 0; s < n_sets; s++) {
        PyObject *set = PyList_GET_ITEM(sets, s);
        Py_ssize_t n = PySequence_Fast_GET_SIZE(PyList_GET_ITEM(fast, s));
        const char *nm;
        Py_ssize_t nl;
        name_bytes(PyTuple_GET_ITEM(set, 0), &nm, &nl);  /* checked above */
        set_write(base, &cur, (dd_set_desc *)(base + in_sets) + s, nm, nl,
                  element_code(PyTuple_GET_ITEM(set, 1)), item_index, (uint32_t)n);
        for (Py_ssize_t i = 0; i < n; i++, item_index++) {
            item_bytes *ib = &ibs[item_index];
            item_write(base, &cur, (dd_item_desc *)(base + in_items) + item_index, &ib->e,
                       ib->code, ib->key, ib->nm, ib->nl, (uint32_t)s);
        }
    }
    for (Py_ssize_t r = 0; r < n_results; r++) {
        PyObject *res = PyList_GET_ITEM(results, r);
        const char *nm;
        Py_ssize_t nl;
        name_bytes(PyTuple_GET_ITEM(res, 0), &nm, &nl);
        set_write(base, &cur, (dd_set_desc *)(base + out_sets) + r, nm, nl,
                  element_code(PyTuple_GET_ITEM(res, 1)), 0, 0);
    }
    dd_header *h = (dd_header *)base;
    memcpy(h->magic, CTX_MAGIC, 8);
    h->capacity = capacity;
    h->n_in_sets = (uint32_t)n_sets;
    h->n_in_items = (uint32_t)n_items;
    h->in_sets = in_sets;
    h->in_items = in_items;
    h->n_out_sets = (uint32_t)n_results;
    h->n_out_items = 0;
    h->out_sets = out_sets;
    h->heap_cur = cur;
    h->heap_end = capacity;
    ret = PyLong_FromUnsignedLongLong(capacity);
done:
    for (Py_ssize_t k = 0; k < opened; k++)
        item_close(&ibs[k]);
    PyMem_Free(ibs);
    Py_XDECREF(fast);
    PyBuffer_Release(&ctx);
    return ret;
}

/* The Python value of an item's bytes; json and ndarray items: decoder(code, memoryview
 * slice of `whole`). */
static PyObject *decode_value(int code, const uint8_t *p, uint64_t n, PyObject *whole,
                              uint64_t off, PyObject *decoder) {
    switch (code) {
    case EL_ANY:
    case EL_BYTES:
        return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
    case EL_STR:
        return PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)n, "surrogatepass");
    case EL_INT: {
        if (n != 8)
            break;
        int64_t v;
        memcpy(&v, p, 8);
        return PyLong_FromLongLong((long long)v);
    }
    case EL_FLOAT: {
        if (n != 8)
            break;
        double d;
        memcpy(&d, p, 8);
        return PyFloat_FromDouble(d != d ? Py_NAN : d);
    }
    case EL_BOOL:
        if (n != 1 || p[0] > 1)
            break;
        return PyBool_FromLong(p[0]);
    default: {
        PyObject *slice = PySequence_GetSlice(whole, (Py_ssize_t)off, (Py_ssize_t)(off + n));
        if (slice == NULL)
            return NULL;
        PyObject *v = PyObject_CallFunction(decoder, "iO", code, slice);
        Py_DECREF(slice);
        return v;
    }
    }
    PyErr_Format(PyExc_ValueError, "%llu bytes are not a valid %s",
                 (unsigned long long)n, element_names[code]);
    return NULL;
}

/*
 * item(value, key, name) for dandelion's Item (a frozen class with slots): its three slots
 * set directly, without running its __init__, whose checks hold by construction here (key
 * an int, name a str) — most of what building an item costs.  A class whose instances have
 * a __dict__ is called as usual.
 */
static PyObject *new_item(PyTypeObject *type, PyObject *value, PyObject *key, PyObject *name) {
    if (!PyType_Check((PyObject *)type) || type->tp_dictoffset != 0 ||
        type->tp_alloc == NULL)  /* not a slotted class: call it */
        return PyObject_CallFunctionObjArgs((PyObject *)type, value, key, name, NULL);
    PyObject *it = type->tp_alloc(type, 0);
    if (it == NULL)
        return NULL;
    if (PyObject_GenericSetAttr(it, str_value, value) != 0 ||
        PyObject_GenericSetAttr(it, str_key, key) != 0 ||
        PyObject_GenericSetAttr(it, str_name, name) != 0) {
        Py_DECREF(it);
        return NULL;
    }
    return it;
}

/*
 * read_items(context, capacity, outputs, declared, decoder, item) -> per set, a tuple of
 * item(value, key, name): the inputs (outputs false, inside a sandbox) or the outputs (in
 * the worker, where nothing in the context is trusted) of a context laid out with
 * `capacity`.  `declared` holds the element code of each parameter or result (bytes; for
 * inputs None takes them from the input set table, which the worker wrote); an item's own
 * code overrides 0 ("as declared"); for outputs the two must agree.  Scalars
 * and bytes are decoded here; json and ndarray items by decoder(code, memoryview slice of
 * the context).  Raises ValueError for anything malformed (and what the decoder raises).
 */
static PyObject *read_items(PyObject *self, PyObject *args) {
    PyObject *whole, *decoder, *item_type;
    unsigned long long capacity;
    int outputs;
    const char *declared;
    Py_ssize_t n_declared;
    if (!PyArg_ParseTuple(args, "OKpz#OO", &whole, &capacity, &outputs, &declared, &n_declared,
                          &decoder, &item_type))
        return NULL;
    Py_buffer ctx;
    if (PyObject_GetBuffer(whole, &ctx, PyBUF_SIMPLE) != 0)
        return NULL;
    PyObject *view = NULL, *sets = NULL, *result = NULL;
    char *from_table = NULL;
    const uint8_t *base = ctx.buf;
    if (capacity > (uint64_t)ctx.len || capacity < 128) {
        PyErr_SetString(PyExc_ValueError, "the context is smaller than its capacity");
        goto done;
    }
    const dd_header *h = (const dd_header *)base;
    uint64_t n_items, table;
    if (outputs) {
        if (memcmp(h->magic, CTX_MAGIC, 8) != 0 || h->capacity != capacity) {
            PyErr_SetString(PyExc_ValueError, "the sandbox overwrote the context header");
            goto done;
        }
        n_items = h->n_out_items;
        if (n_items > (capacity - 128) / sizeof(dd_item_desc)) {
            PyErr_Format(PyExc_ValueError, "the context claims %llu output items, more than "
                         "fit", (unsigned long long)n_items);
            goto done;
        }
        table = capacity - n_items * sizeof(dd_item_desc);
    } else {
        n_items = h->n_in_items;
        table = h->in_items;
        if (table < 128 || table > capacity ||
            n_items > (capacity - table) / sizeof(dd_item_desc)) {
            PyErr_SetString(PyExc_ValueError, "item table outside the context");
            goto done;
        }
        if (declared == NULL) {  /* the element codes of the input set table */
            uint64_t n = h->n_in_sets;
            if (h->in_sets < 128 || h->in_sets > capacity ||
                n > (capacity - h->in_sets) / sizeof(dd_set_desc)) {
                PyErr_SetString(PyExc_ValueError, "set table outside the context");
                goto done;
            }
            from_table = PyMem_Malloc(n ? n : 1);
            if (from_table == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            const dd_set_desc *sd = (const dd_set_desc *)(base + h->in_sets);
            for (uint64_t i = 0; i < n; i++)
                from_table[i] = (char)(sd[i].element < EL_COUNT ? sd[i].element : EL_COUNT);
            declared = from_table;
            n_declared = (Py_ssize_t)n;
        }
    }
    if (declared == NULL) {
        PyErr_SetString(PyExc_ValueError, "outputs are read with the declared element codes");
        goto done;
    }
    view = PyMemoryView_FromObject(whole);
    sets = PyList_New(n_declared);
    if (view == NULL || sets == NULL)
        goto done;
    for (Py_ssize_t s = 0; s < n_declared; s++) {
        PyObject *l = PyList_New(0);
        if (l == NULL)
            goto done;
        PyList_SET_ITEM(sets, s, l);
    }
    for (uint64_t k = 0; k < n_items; k++) {
        /* outputs: entry k is at capacity - 48 * (k + 1).  Copied once, checked and used
         * from the copy: a sandbox that still runs cannot change it in between. */
        const dd_item_desc entry = ((const dd_item_desc *)(base + table))
                                   [outputs ? n_items - 1 - k : k];
        const dd_item_desc *d = &entry;
        if (d->data_off > capacity || d->data_len > capacity - d->data_off ||
            d->name_off > capacity || d->name_len > capacity - d->name_off) {
            PyErr_Format(PyExc_ValueError, "item %llu points outside the context",
                         (unsigned long long)k);
            goto done;
        }
        if (d->element >= EL_COUNT) {
            PyErr_Format(PyExc_ValueError, "item %llu has unknown element code %u",
                         (unsigned long long)k, d->element);
            goto done;
        }
        if (d->set >= (uint64_t)n_declared) {
            if (outputs)
                PyErr_Format(PyExc_ValueError, "an output item names result %u, but the "
                             "function declares %zd", d->set, n_declared);
            else
                PyErr_Format(PyExc_ValueError, "item %llu names input set %u of %zd",
                             (unsigned long long)k, d->set, n_declared);
            goto done;
        }
        int want = (unsigned char)declared[d->set];
        if (want >= EL_COUNT) {
            PyErr_SetString(PyExc_ValueError, "unknown declared element code");
            goto done;
        }
        int code = d->element ? (int)d->element : want;
        if (outputs && want != EL_ANY && code != want) {
            PyErr_Format(PyExc_ValueError, "result %u is declared %s but the sandbox returned "
                         "%s", d->set, element_names[want], element_names[code]);
            goto done;
        }
        PyObject *value = decode_value(code, base + d->data_off, d->data_len, view,
                                       d->data_off, decoder);
        if (value == NULL)
            goto done;
        PyObject *name;
        if (d->name_len == 0) {
            name = Py_NewRef(empty_str);
        } else {
            name = PyUnicode_DecodeUTF8((const char *)base + d->name_off,
                                        (Py_ssize_t)d->name_len, "replace");
        }
        PyObject *key = name ? PyLong_FromLongLong((long long)d->key) : NULL;
        PyObject *it = key ? new_item((PyTypeObject *)item_type, value, key, name) : NULL;
        Py_DECREF(value);
        Py_XDECREF(name);
        Py_XDECREF(key);
        if (it == NULL)
            goto done;
        int rc = PyList_Append(PyList_GET_ITEM(sets, d->set), it);
        Py_DECREF(it);
        if (rc != 0)
            goto done;
    }
    result = PyTuple_New(n_declared);
    if (result == NULL)
        goto done;
    for (Py_ssize_t s = 0; s < n_declared; s++) {
        PyObject *t = PyList_AsTuple(PyList_GET_ITEM(sets, s));
        if (t == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyTuple_SET_ITEM(result, s, t);
    }
done:
    PyMem_Free(from_table);
    Py_XDECREF(sets);
    Py_XDECREF(view);
    PyBuffer_Release(&ctx);
    return result;
}

/*
 * add_outputs(context, result, element code, items, encoder) -> None, or (bytes needed,
 * bytes left) when the context is full: append a result's items (objects with `value`,
 * `key` and `name`) as output items (inside a sandbox): their data and names into the
 * heap, their entries below the output table.  Items added before one that does not fit
 * stay.
 */
static PyObject *add_outputs(PyObject *self, PyObject *args) {
    Py_buffer ctx;
    unsigned int set;
    int declared;
    PyObject *items, *encoder;
    if (!PyArg_ParseTuple(args, "w*IiOO", &ctx, &set, &declared, &items, &encoder))
        return NULL;
    PyObject *ret = NULL, *fast = NULL;
    uint8_t *base = ctx.buf;
    dd_header *h = (dd_header *)base;
    if ((uint64_t)ctx.len < 128 || declared < 0 || declared >= EL_COUNT ||
        set >= h->n_out_sets) {
        PyErr_SetString(PyExc_ValueError, "not a context, no such result, or an unknown "
                        "element code");
        goto done;
    }
    fast = PySequence_Fast(items, "items are a sequence");
    if (fast == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); i++) {
        item_bytes ib;
        int rc = item_open(PySequence_Fast_GET_ITEM(fast, i), declared, encoder, &ib);
        if (rc == 0) {
            uint64_t need = item_room(ib.e.size, ib.nl) + sizeof(dd_item_desc);
            uint64_t cur = h->heap_cur, end = h->heap_end;
            if (end > (uint64_t)ctx.len || cur > end || need > end - cur) {
                uint64_t left = end >= cur && end <= (uint64_t)ctx.len ? end - cur : 0;
                ret = Py_BuildValue("(KK)", (unsigned long long)need, (unsigned long long)left);
                rc = -1;
            } else {
                end -= sizeof(dd_item_desc);
                item_write(base, &cur, (dd_item_desc *)(base + end), &ib.e, ib.code, ib.key,
                           ib.nm, ib.nl, set);
                h->heap_cur = cur;
                h->heap_end = end;
                h->n_out_items++;
            }
        }
        item_close(&ib);
        if (rc != 0)
            goto done;
    }
    ret = Py_NewRef(Py_None);
done:
    Py_XDECREF(fast);
    PyBuffer_Release(&ctx);
    return ret;
}

#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Wait until fd is ready for `events` or the deadline passes (deadline 0: none).
 * 1 ready, 0 timed out, -1 error (errno). */
static int wait_fd(int fd, short events, double deadline) {
    for (;;) {
        int ms = -1;
        if (deadline > 0) {
            double left = deadline - now_s();
            if (left <= 0)
                return 0;
            ms = (int)(left * 1000) + 1;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, ms);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            return rc;
        return 1;
    }
}

/* Bytes a report needs in all, from its first 8 (0: not known yet; unknown tags: 4). */
static size_t report_size(const char *p, size_t have, size_t max_body) {
    if (have < 4)
        return 0;
    if (memcmp(p, "OKAY", 4) == 0)
        return 12;
    if (memcmp(p, "NATV", 4) == 0)
        return 8;
    if (memcmp(p, "GONE", 4) == 0)
        return 24;
    if (memcmp(p, "DONE", 4) == 0) {
        if (have < 8)
            return 0;
        uint32_t len;
        memcpy(&len, p + 4, 4);
        return len <= max_body ? 8 + (size_t)len : have;  /* malformed: what is there */
    }
    return have;
}

/*
 * exchange(channel, memfd, header, payload, timeout, skip_ready, max_body) -> report: hand
 * a sandbox its invocation (the header and `payload` in one message with the memfd
 * attached, the rest of a large payload after it) and wait for its whole report (OKAY,
 * NATV, GONE, or DONE with a body of at most `max_body` bytes; whatever arrived when the
 * sandbox is gone, or writes something else).  With `skip_ready` a leading READY byte ('R')
 * is dropped.  `timeout` <= 0: none; past it, TimeoutError.  The GIL is released while
 * sending and waiting.
 */
static PyObject *exchange(PyObject *self, PyObject *args) {
    int fd, memfd, skip_ready;
    Py_buffer head, payload;
    double timeout;
    Py_ssize_t max_body;
    if (!PyArg_ParseTuple(args, "iiy*y*dpn", &fd, &memfd, &head, &payload, &timeout,
                          &skip_ready, &max_body))
        return NULL;
    double deadline = timeout > 0 ? now_s() + timeout : 0;
    char small[4096];
    char *buf = small, *big = NULL;
    size_t cap = sizeof small, got = 0, want = 0;
    int timed_out = 0, nomem = 0;
    Py_BEGIN_ALLOW_THREADS
    struct iovec iov[2] = {{head.buf, (size_t)head.len}, {payload.buf, (size_t)payload.len}};
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof cbuf);
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2, .msg_control = cbuf,
                        .msg_controllen = sizeof cbuf};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &memfd, sizeof(int));
    size_t total = (size_t)head.len + (size_t)payload.len, sent = 0;
    while (sent < total) {
        ssize_t n;
        if (sent == 0) {
            n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        } else {
            const char *p = sent < (size_t)head.len ? (const char *)head.buf + sent
                            : (const char *)payload.buf + (sent - (size_t)head.len);
            size_t len = sent < (size_t)head.len ? (size_t)head.len - sent : total - sent;
            n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        if (n > 0) {
            sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int w = wait_fd(fd, POLLOUT, deadline);
            if (w == 0) {
                timed_out = 1;
                break;
            }
            if (w > 0)
                continue;
        }
        break;  /* EPIPE, ECONNRESET: the sandbox is gone; what it wrote is still readable */
    }
    while (!timed_out) {
        /* without a timeout a blocking receive is the wait: one system call, not two */
        int w = deadline > 0 ? wait_fd(fd, POLLIN, deadline) : 1;
        if (w == 0) {
            timed_out = 1;
            break;
        }
        ssize_t n = recv(fd, buf + got, (want ? want : cap) - got,
                         deadline > 0 ? MSG_DONTWAIT : 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (n <= 0)
            break;  /* end of stream or reset: whatever arrived is the report */
        if (skip_ready && got == 0 && buf[0] == 'R') {
            memmove(buf, buf + 1, (size_t)n - 1);
            n -= 1;
        }
        skip_ready = 0;
        got += (size_t)n;
        want = report_size(buf, got, (size_t)max_body);
        if (want && got >= want)
            break;
        if (want > cap) {  /* a long DONE report: room for all of it */
            big = malloc(want);
            if (big == NULL) {
                nomem = 1;
                break;
            }
            memcpy(big, buf, got);
            buf = big;
            cap = want;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&head);
    PyBuffer_Release(&payload);
    PyObject *r = NULL;
    if (timed_out)
        PyErr_SetString(PyExc_TimeoutError, "the sandbox did not report in time");
    else if (nomem)
        PyErr_NoMemory();
    else
        r = PyBytes_FromStringAndSize(buf, (Py_ssize_t)(want && got > want ? want : got));
    free(big);
    return r;
}

/*
 * finish(channel, report): a sandbox's last act: write its report, then block until the
 * worker hangs up or kills it, and exit.  In one call, so that no Python runs between the
 * write that wakes the worker and the read that gives the CPU back to it; and not exiting
 * at once, since tearing down the address space (a few hundred microseconds of page-table
 * work on a VM) would compete with the worker as it wakes up.  Never returns.
 */
static PyObject *finish(PyObject *self, PyObject *args) {
    int fd;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "iy*", &fd, &data))
        return NULL;
    const char *p = data.buf;
    size_t left = (size_t)data.len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        p += n;
        left -= (size_t)n;
    }
    char c;
    while (read(fd, &c, 1) < 0 && errno == EINTR) {}
    _exit(0);
}

/* ready(channel) -> 1 if a sandbox has written READY ('R', taken), 0 if not yet, -1 if it
 * wrote something else or is gone. */
static PyObject *ready(PyObject *self, PyObject *args) {
    int fd;
    if (!PyArg_ParseTuple(args, "i", &fd))
        return NULL;
    char c;
    ssize_t n;
    do {
        n = recv(fd, &c, 1, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return PyLong_FromLong(0);
    return PyLong_FromLong(n == 1 && c == 'R' ? 1 : -1);
}


/* ---- Huge pages for a zygote's heap ------------------------------------------------- */

/*
 * A fork copies a page-table entry for every page of the zygote's private memory, and a
 * sandbox's exit tears them down again: for a Python heap of 20-25 MiB that is the larger
 * part of what a sandbox costs the machine.  Backed by 2 MiB pages, the same memory is a
 * few dozen entries.  Python's small-object arenas are 1 MiB mappings wherever mmap puts
 * them, between libraries, so hardly any 2 MiB range is all heap; heap_arenas() makes the
 * arenas allocated from then on follow one another from a 2 MiB boundary, and
 * huge_pages() collapses whatever private memory covers whole 2 MiB ranges into huge
 * pages once the zygote has loaded everything.  A sandbox's first write into a huge page
 * splits it (in the sandbox only) and copies 4 KiB, as before.
 */
#define HUGE_PAGE (2UL << 20)
static char *arena_next;  /* where the next arena goes: right after the last one */

static void *arena_alloc(void *ctx, size_t size) {
    (void)ctx;
    char *p = MAP_FAILED;
    if (arena_next != NULL)
        p = mmap(arena_next, size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p != MAP_FAILED && p != arena_next) {  /* a kernel that took it as a hint */
        munmap(p, size);
        p = MAP_FAILED;
    }
    if (p == MAP_FAILED) {  /* a new run, from a 2 MiB boundary */
        char *q = mmap(NULL, size + HUGE_PAGE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (q == MAP_FAILED)
            return NULL;
        /* Mappings are placed top-down, each right below the last, so there is no room
         * above a new one: a run starts 8 GiB lower, where it can grow. */
        uintptr_t low = ((uintptr_t)q - (8UL << 30)) & ~(HUGE_PAGE - 1);
        if ((uintptr_t)q > (16UL << 30)) {
            char *r = mmap((void *)low, size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            if (r == (char *)low) {
                munmap(q, size + HUGE_PAGE);
                arena_next = r + size;
                return r;
            }
            if (r != MAP_FAILED)
                munmap(r, size);
        }
        p = (char *)(((uintptr_t)q + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1));
        if (p > q)
            munmap(q, (size_t)(p - q));
        if (q + size + HUGE_PAGE > p + size)
            munmap(p + size, (size_t)(q + size + HUGE_PAGE - (p + size)));
    }
    arena_next = p + size;
    return p;
}

static void arena_free(void *ctx, void *p, size_t size) {
    (void)ctx;
    munmap(p, size);
}

/* heap_arenas(): Python's arenas allocated from now on lie one after another. */
static PyObject *heap_arenas(PyObject *self, PyObject *noargs) {
    PyObjectArenaAllocator a = {NULL, arena_alloc, arena_free};
    PyObject_SetArenaAllocator(&a);
    Py_RETURN_NONE;
}

/* huge_pages() -> bytes now backed by huge pages: collapse the private writable memory
 * (heap, arenas) that covers whole 2 MiB ranges.  Best effort: 0 where the kernel has no
 * MADV_COLLAPSE (before Linux 6.1) or transparent huge pages are off. */
static PyObject *huge_pages(PyObject *self, PyObject *noargs) {
    FILE *maps = fopen("/proc/self/maps", "re");
    if (maps == NULL)
        return PyErr_SetFromErrno(PyExc_OSError);
    uintptr_t ranges[512][2];
    int n = 0;
    char line[512];
    while (n < 512 && fgets(line, sizeof line, maps)) {
        unsigned long lo, hi, offset, inode;
        char perms[8], dev[16], name[256] = "";
        if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %255s", &lo, &hi, perms, &offset, dev,
                   &inode, name) < 6)
            continue;
        if (strcmp(perms, "rw-p") != 0 || inode != 0 || (name[0] && strcmp(name, "[heap]")))
            continue;  /* private anonymous memory only (not the stack, not a file's) */
        ranges[n][0] = (lo + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
        ranges[n][1] = hi & ~(HUGE_PAGE - 1);
        if (ranges[n][1] > ranges[n][0])
            n++;
    }
    fclose(maps);
    unsigned long long done = 0;
    for (int i = 0; i < n; i++)  /* one range at a time: one that fails spoils no other */
        for (uintptr_t at = ranges[i][0]; at < ranges[i][1]; at += HUGE_PAGE)
            if (madvise((void *)at, HUGE_PAGE, 25 /* MADV_COLLAPSE */) == 0)
                done += HUGE_PAGE;
    return PyLong_FromUnsignedLongLong(done);
}

/* ---- Immortal heap (Python >= 3.12) ------------------------------------------------ */

/*
 * Before 3.12 every Py_INCREF writes the object, so a sandbox that merely uses an object it
 * inherited (a function, a module's dict, a type, a constant) copies the page it lies on:
 * about half of a numpy sandbox's copy-on-write faults.  Since 3.12 (PEP 683) a reference
 * count of the immortal value is never written.  immortalize() gives that value (None's,
 * whatever this version's constant is) to every object it can reach from `objects` (the
 * collector's tracked objects, gathered by the caller), so that a sandbox forked afterwards
 * reads them without writing.  Immortal objects are never freed: only for a zygote, which
 * runs no Python after this and whose sandboxes live for one invocation.
 */
#if PY_VERSION_HEX >= 0x030C0000 && !defined(Py_GIL_DISABLED)
#define HAVE_IMMORTAL 1
static int immortal_visit(PyObject *o, void *count) {
    if (o == NULL || _Py_IsImmortal(o))
        return 0;
    Py_SET_REFCNT(o, Py_REFCNT(Py_None));
    (*(Py_ssize_t *)count)++;
    /* a container the collector does not track (a dict of atoms, say) is in no list the
     * caller has: what it holds is reached through it */
    if (PyObject_IS_GC(o) && !PyObject_GC_IsTracked(o) && Py_TYPE(o)->tp_traverse != NULL)
        Py_TYPE(o)->tp_traverse(o, immortal_visit, count);
    return 0;
}
#endif

/* immortalize(objects) -> how many objects were made immortal (0 before Python 3.12). */
static PyObject *immortalize(PyObject *self, PyObject *objects) {
    if (!PyList_Check(objects))
        return PyErr_Format(PyExc_TypeError, "immortalize() takes a list");
    Py_ssize_t count = 0;
#ifdef HAVE_IMMORTAL
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(objects); i++) {
        PyObject *o = PyList_GET_ITEM(objects, i);
        if (!_Py_IsImmortal(o)) {
            Py_SET_REFCNT(o, Py_REFCNT(Py_None));
            count++;
        }  /* made immortal as a referent or not, what it holds is reached from here */
        if (PyObject_IS_GC(o) && Py_TYPE(o)->tp_traverse != NULL)
            Py_TYPE(o)->tp_traverse(o, immortal_visit, &count);
    }
#endif
    return PyLong_FromSsize_t(count);
}

static PyMethodDef methods[] = {
    {"receive", receive, METH_VARARGS,
     "receive(channel, header_size, capacity_offset, length_offset) -> (header, view, payload)."},
    {"write_inputs", write_inputs, METH_VARARGS,
     "write_inputs(context, sets, results, output_limit, encoder) -> capacity (< 0: too small)."},
    {"read_items", read_items, METH_VARARGS,
     "read_items(context, capacity, outputs, declared, decoder, item) -> per set a tuple."},
    {"add_outputs", add_outputs, METH_VARARGS,
     "add_outputs(context, result, code, items, encoder) -> None or (needed, left)."},
    {"exchange", exchange, METH_VARARGS,
     "exchange(channel, memfd, header, payload, timeout, skip_ready, max_body) -> report."},
    {"finish", finish, METH_VARARGS, "finish(channel, report): report, wait, exit."},
    {"ready", ready, METH_VARARGS, "ready(channel) -> 1 READY taken, 0 not yet, -1 neither."},
    {"heap_arenas", heap_arenas, METH_NOARGS,
     "heap_arenas(): Python arenas allocated from now on lie one after another."},
    {"huge_pages", huge_pages, METH_NOARGS,
     "huge_pages() -> bytes of private memory collapsed into 2 MiB pages."},
    {"immortalize", immortalize, METH_O,
     "immortalize(objects) -> objects made immortal (Python >= 3.12; else 0)."},
    {"zygote_loop", zygote_loop, METH_VARARGS,
     "zygote_loop(ctrl, cap, cpu, memory_limit, program, warm) -> None | (baseline, warm)."},
    {"prepare", prepare, METH_VARARGS,
     "prepare(channel, cpu_seconds) -> bytes of address space in use."},
    {"wait_assignment", wait_assignment, METH_VARARGS,
     "wait_assignment(channel, size) -> (header, memfd)."},
    {"install_filter", install_filter, METH_VARARGS,
     "install_filter(program): no_new_privs, then the seccomp-bpf program (bytes)."},
    {"wipe", wipe, METH_VARARGS,
     "wipe(fd, mapping, limit): zero a context in place (or punch it out if large)."},
    {"load_segments", py_load_segments, METH_VARARGS,
     "load_segments(fd, n_segments, payload_len): read a native function's validated "
     "segments from fd and map them at their addresses."},
    {"run_native", run_native, METH_VARARGS,
     "run_native(entry, context, fd): strict mode, call entry(context), report, exit."},
    {"address_of", address_of, METH_VARARGS, "address_of(writable buffer) -> int."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sandboxc",
    "Low-level sandbox primitives of the process engine (seccomp, signals, native code).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__sandboxc(void) {
    empty_str = PyUnicode_New(0, 0);
    str_value = PyUnicode_InternFromString("value");
    str_key = PyUnicode_InternFromString("key");
    str_name = PyUnicode_InternFromString("name");
    if (empty_str == NULL || str_value == NULL || str_key == NULL || str_name == NULL)
        return NULL;
    return PyModule_Create(&module);
}
