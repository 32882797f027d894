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
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

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

static PyObject *install_fatal_handlers(PyObject *self, PyObject *args) {
    int fd;
    Py_ssize_t stack_size = 256 * 1024;
    if (!PyArg_ParseTuple(args, "i|n", &fd, &stack_size))
        return NULL;
    report_fd = fd;
    if (alt_stack == NULL) {
        alt_stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (alt_stack == MAP_FAILED) {
            alt_stack = NULL;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        stack_t ss = {.ss_sp = alt_stack, .ss_size = (size_t)stack_size, .ss_flags = 0};
        if (sigaltstack(&ss, NULL) != 0)
            return PyErr_SetFromErrno(PyExc_OSError);
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
            return PyErr_SetFromErrno(PyExc_OSError);
    }
    /* The signals the handler reports must not stay blocked. */
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
        sigaddset(&set, signals[i]);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    Py_RETURN_NONE;
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
 * map_segments(segments, blob): segments is a sequence of (vaddr, memsz, prot, offset, filesz)
 * already validated by the worker (page-aligned bounds, no overlap, inside the user range,
 * offset+filesz inside blob).  Maps each one fixed (never replacing an existing mapping),
 * copies its bytes and sets its protection.
 */
static PyObject *map_segments(PyObject *self, PyObject *args) {
    PyObject *segs;
    Py_buffer blob;
    if (!PyArg_ParseTuple(args, "Oy*", &segs, &blob))
        return NULL;
    PyObject *seq = PySequence_Fast(segs, "segments must be a sequence");
    if (seq == NULL) {
        PyBuffer_Release(&blob);
        return NULL;
    }
    long page = sysconf(_SC_PAGESIZE);
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        unsigned long long vaddr, memsz, offset, filesz;
        int prot;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "KKiKK", &vaddr, &memsz, &prot,
                              &offset, &filesz))
            goto fail;
        unsigned long long start = vaddr & ~(unsigned long long)(page - 1);
        unsigned long long end = (vaddr + memsz + page - 1) & ~(unsigned long long)(page - 1);
        if (offset + filesz > (unsigned long long)blob.len || filesz > memsz) {
            PyErr_SetString(PyExc_ValueError, "segment outside the image");
            goto fail;
        }
        void *p = mmap((void *)(uintptr_t)start, end - start, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (p == MAP_FAILED || p != (void *)(uintptr_t)start) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
        memcpy((void *)(uintptr_t)vaddr, (const char *)blob.buf + offset, filesz);
        if (mprotect(p, end - start, prot) != 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto fail;
        }
    }
    Py_DECREF(seq);
    PyBuffer_Release(&blob);
    Py_RETURN_NONE;
fail:
    Py_DECREF(seq);
    PyBuffer_Release(&blob);
    return NULL;
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
    char c;  /* exit once the worker hangs up or kills us (see _sandbox_child._end) */
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
 * fork_raw(): fork() without Python's at-fork machinery (no after-fork hooks, no random
 * reseed, no thread bookkeeping).  Only for a single-threaded zygote whose child goes
 * straight into sandbox preparation: those hooks are what make a Python fork expensive,
 * touching (and so copying) hundreds of pages.  Returns the pid, 0 in the child.
 */
static PyObject *fork_raw(PyObject *self, PyObject *noargs) {
    pid_t pid = fork();
    if (pid < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(pid);
}

/*
 * prepare(channel, cpu_seconds) -> address-space bytes in use: everything a sandbox does
 * before it waits, in C so that it touches no Python objects: close every descriptor but
 * the channel, report fatal signals on it, RLIMIT_CORE/FSIZE/NPROC = 0, RLIMIT_CPU,
 * no_new_privs.
 */
static PyObject *prepare(PyObject *self, PyObject *args) {
    int fd, cpu;
    if (!PyArg_ParseTuple(args, "ii", &fd, &cpu))
        return NULL;
    if (fd > 0 && syscall(SYS_close_range, 0, fd - 1, 0) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (syscall(SYS_close_range, fd + 1, ~0U, 0) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    PyObject *fargs = Py_BuildValue("(i)", fd);
    if (fargs == NULL)
        return NULL;
    PyObject *r = install_fatal_handlers(self, fargs);
    Py_DECREF(fargs);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    struct rlimit zero = {0, 0};
    setrlimit(RLIMIT_CORE, &zero);
    setrlimit(RLIMIT_FSIZE, &zero);
    setrlimit(RLIMIT_NPROC, &zero);
    if (cpu > 0) {
        struct rlimit lim = {(rlim_t)cpu, (rlim_t)cpu + 1};
        setrlimit(RLIMIT_CPU, &lim);
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
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
    return PyLong_FromLongLong(vm);
}

static PyObject *prepare(PyObject *self, PyObject *args);

/*
 * The child's side of spawn_sandbox(), before any Python code runs in it: `channel` becomes
 * descriptor 3, the process is prepared (see prepare()), and with a `program` its address
 * space is capped at baseline + memory_limit and the filter installed.  Doing this in C
 * keeps the child from touching (and so copying) Python objects.
 */
static PyObject *lock_down(PyObject *self, int channel, int cpu, long long memory,
                           Py_buffer *prog) {
    signal(SIGCHLD, SIG_DFL);
    if (channel != 3 && dup2(channel, 3) != 3)
        _exit(1);
    PyObject *pargs = Py_BuildValue("(ii)", 3, cpu);
    PyObject *base = pargs ? prepare(self, pargs) : NULL;
    Py_XDECREF(pargs);
    if (base == NULL)
        _exit(1);
    long long baseline = PyLong_AsLongLong(base);
    Py_DECREF(base);
    if (prog->buf != NULL && prog->len > 0) {
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
    PyBuffer_Release(prog);
    return Py_BuildValue("(iL)", 0, baseline);
}

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/*
 * spawn_sandbox(ctrl, cpu_seconds, memory_limit, program) -> (pid, baseline): a new channel
 * (socket pair), a fork that locks the child down on one end (lock_down()), and in the zygote: hand the other end and a
 * pidfd of the sandbox to the worker over `ctrl` as a 'C' control message (<cii: 'C', pid,
 * 0), keeping neither.  All in C, so that forking touches no Python object in the zygote
 * (whose pages are shared copy-on-write with every sandbox it has forked: each Python
 * write there after a fork is a page copy).  In the child: (0, baseline).
 */
static PyObject *spawn_sandbox(PyObject *self, PyObject *args) {
    int ctrl, cpu;
    long long memory;
    Py_buffer prog = {0};
    if (!PyArg_ParseTuple(args, "iiLz*", &ctrl, &cpu, &memory, &prog))
        return NULL;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        PyBuffer_Release(&prog);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        return lock_down(self, sv[1], cpu, memory, &prog);
    }
    PyBuffer_Release(&prog);
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    int fds[2] = {sv[0], (int)syscall(SYS_pidfd_open, pid, 0)};
    int nfds = fds[1] >= 0 ? 2 : 1;
    char msg[9] = {'C'};
    int32_t ipid = (int32_t)pid, zero = 0;
    memcpy(msg + 1, &ipid, 4);
    memcpy(msg + 5, &zero, 4);
    char cbuf[CMSG_SPACE(2 * sizeof(int))];
    memset(cbuf, 0, sizeof cbuf);
    struct iovec iov = {.iov_base = msg, .iov_len = sizeof msg};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                        .msg_controllen = CMSG_SPACE(nfds * sizeof(int))};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
    ssize_t sent = sendmsg(ctrl, &mh, MSG_NOSIGNAL);
    int err = errno;
    close(sv[0]);
    if (nfds == 2)
        close(fds[1]);
    if (sent < 0) {  /* the worker is gone: the caller winds down (and kills pid) */
        errno = err;
        PyObject *e = PyErr_SetFromErrno(PyExc_OSError);
        (void)e;
        kill(pid, SIGKILL);
        return NULL;
    }
    return Py_BuildValue("(iL)", (int)pid, 0LL);
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

static PyMethodDef methods[] = {
    {"receive", receive, METH_VARARGS,
     "receive(channel, header_size, capacity_offset, length_offset) -> (header, view, payload)."},
    {"fork_raw", fork_raw, METH_NOARGS, "fork() without Python's at-fork hooks."},
    {"spawn_sandbox", spawn_sandbox, METH_VARARGS,
     "spawn_sandbox(ctrl, cpu, memory_limit, program) -> (pid, baseline)."},
    {"prepare", prepare, METH_VARARGS,
     "prepare(channel, cpu_seconds) -> bytes of address space in use."},
    {"wait_assignment", wait_assignment, METH_VARARGS,
     "wait_assignment(channel, size) -> (header, memfd)."},
    {"install_filter", install_filter, METH_VARARGS,
     "install_filter(program): no_new_privs, then the seccomp-bpf program (bytes)."},
    {"wipe", wipe, METH_VARARGS,
     "wipe(fd, mapping, limit): zero a context in place (or punch it out if large)."},
    {"map_segments", map_segments, METH_VARARGS,
     "map_segments(segments, image): map validated ELF segments at their addresses."},
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

PyMODINIT_FUNC PyInit__sandboxc(void) { return PyModule_Create(&module); }
