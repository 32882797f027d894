/*
 * The channel between the worker and a sandbox (protocol.h): the sandbox waits for its
 * assignment and maps the context it carries (wait_assignment, receive), reports and
 * waits to be ended (finish); the worker hands a sandbox its assignment and waits for the
 * report (exchange; or assign, then report_size as the report arrives), and polls whether a
 * sandbox is ready (ready).
 */
#include "sandboxc.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sandbox.h"

/* wait_assignment(channel, size) -> (header bytes, memfd or -1): block for the worker. */
PyObject *wait_assignment(PyObject *self, PyObject *args) {
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
    sandbox_populate(p, capacity);
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
 * and no Python between the two reads.  A whole header that carries no context (the
 * function's code sent ahead of its invocation) gives (header, None, payload); a short one
 * (the worker let the sandbox go) (header, None, None).  Works under the sandbox's filter
 * (read on the channel).
 */
PyObject *receive(PyObject *self, PyObject *args) {
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
    /* a short header (the worker let the sandbox go) has no payload; a whole one has, with
     * or without a context (without: the function's code sent ahead of its invocation) */
    if (PyBytes_GET_SIZE(head) != size || len_off < 0 || len_off + 8 > size) {
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
    if (memcmp(p, WIRE_OKAY_TAG, 4) == 0)
        return WIRE_OKAY_SIZE;
    if (memcmp(p, WIRE_NATV_TAG, 4) == 0)
        return WIRE_NATV_SIZE;
    if (memcmp(p, WIRE_GONE_TAG, 4) == 0)
        return WIRE_GONE_SIZE;
    if (memcmp(p, WIRE_DONE_TAG, 4) == 0) {
        if (have < WIRE_DONE_SIZE)
            return 0;
        struct wire_done done;
        memcpy(&done, p, sizeof done);
        return done.length <= max_body ? WIRE_DONE_SIZE + (size_t)done.length
                                       : have;  /* malformed: what is there */
    }
    return have;
}

/* Send the header and payload, with memfd attached to the first message (none if memfd
 * < 0); 0 sent (or the sandbox is gone: what it wrote is still readable), 1 timed out.
 * Without the GIL. */
static int send_assignment(int fd, int memfd, const Py_buffer *head, const Py_buffer *payload,
                           double deadline) {
    struct iovec iov[2] = {{head->buf, (size_t)head->len}, {payload->buf, (size_t)payload->len}};
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof cbuf);
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2, .msg_control = cbuf,
                        .msg_controllen = sizeof cbuf};
    if (memfd >= 0) {
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &memfd, sizeof(int));
    } else {  /* code ahead of its context: no descriptor */
        mh.msg_control = NULL;
        mh.msg_controllen = 0;
    }
    size_t head_len = (size_t)head->len, total = head_len + (size_t)payload->len, sent = 0;
    while (sent < total) {
        ssize_t n;
        if (sent == 0) {
            n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        } else {
            const char *p = sent < head_len ? (const char *)head->buf + sent
                            : (const char *)payload->buf + (sent - head_len);
            size_t len = sent < head_len ? head_len - sent : total - sent;
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
            if (w == 0)
                return 1;
            if (w > 0)
                continue;
        }
        break;  /* EPIPE, ECONNRESET: the sandbox is gone; what it wrote is still readable */
    }
    return 0;
}

/* A report as it arrives: in `small` or, once it needs more room, in `big`. */
struct report {
    char small[4096];
    char *buf, *big;
    size_t cap, got, want;
};

/* Receive a whole report into *r (or whatever arrived before the sandbox was gone); 0,
 * 1 timed out, -1 out of memory.  Without the GIL. */
static int receive_report(int fd, double deadline, int skip_ready, size_t max_body,
                          struct report *r) {
    for (;;) {
        /* without a timeout a blocking receive is the wait: one system call, not two */
        int w = deadline > 0 ? wait_fd(fd, POLLIN, deadline) : 1;
        if (w == 0)
            return 1;
        ssize_t n = recv(fd, r->buf + r->got, (r->want ? r->want : r->cap) - r->got,
                         deadline > 0 ? MSG_DONTWAIT : 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (n <= 0)
            return 0;  /* end of stream or reset: whatever arrived is the report */
        if (skip_ready && r->got == 0 && r->buf[0] == WIRE_READY) {
            memmove(r->buf, r->buf + 1, (size_t)n - 1);
            n -= 1;
        }
        skip_ready = 0;
        r->got += (size_t)n;
        r->want = report_size(r->buf, r->got, max_body);
        if (r->want && r->got >= r->want)
            return 0;
        if (r->want > r->cap) {  /* a long DONE report: room for all of it */
            r->big = malloc(r->want);
            if (r->big == NULL)
                return -1;
            memcpy(r->big, r->buf, r->got);
            r->buf = r->big;
            r->cap = r->want;
        }
    }
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
PyObject *exchange(PyObject *self, PyObject *args) {
    int fd, memfd, skip_ready;
    Py_buffer head, payload;
    double timeout;
    Py_ssize_t max_body;
    if (!PyArg_ParseTuple(args, "iiy*y*dpn", &fd, &memfd, &head, &payload, &timeout,
                          &skip_ready, &max_body))
        return NULL;
    double deadline = timeout > 0 ? now_s() + timeout : 0;
    struct report r;
    r.buf = r.small;
    r.big = NULL;
    r.cap = sizeof r.small;
    r.got = r.want = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = send_assignment(fd, memfd, &head, &payload, deadline);
    if (rc == 0)
        rc = receive_report(fd, deadline, skip_ready, (size_t)max_body, &r);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&head);
    PyBuffer_Release(&payload);
    PyObject *result = NULL;
    if (rc > 0)
        PyErr_SetString(PyExc_TimeoutError, "the sandbox did not report in time");
    else if (rc < 0)
        PyErr_NoMemory();
    else
        result = PyBytes_FromStringAndSize(
            r.buf, (Py_ssize_t)(r.want && r.got > r.want ? r.want : r.got));
    free(r.big);
    return result;
}

/*
 * assign(channel, memfd, header, payload, timeout): exchange()'s first half, for a worker
 * that waits for the report itself (an event loop watching the channel): send the header
 * and `payload` with memfd attached (memfd -1: none, for a function's code sent ahead of
 * the assignment that brings its context).  It blocks only while the channel's buffer is
 * full, with the GIL released; `timeout` <= 0: no limit; past it, TimeoutError.  A sandbox that
 * is gone is no error here: its report (or its absence) is read from the channel.
 */
PyObject *assign(PyObject *self, PyObject *args) {
    int fd, memfd;
    Py_buffer head, payload;
    double timeout;
    if (!PyArg_ParseTuple(args, "iiy*y*d", &fd, &memfd, &head, &payload, &timeout))
        return NULL;
    double deadline = timeout > 0 ? now_s() + timeout : 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = send_assignment(fd, memfd, &head, &payload, deadline);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&head);
    PyBuffer_Release(&payload);
    if (rc > 0) {
        PyErr_SetString(PyExc_TimeoutError, "the sandbox did not take its assignment in time");
        return NULL;
    }
    Py_RETURN_NONE;
}

/*
 * report_size(data, max_body) -> bytes the report that begins with `data` has in all (0:
 * not known yet), as exchange() reads it: for a worker that reads a report as it arrives.
 */
PyObject *py_report_size(PyObject *self, PyObject *args) {
    Py_buffer data;
    Py_ssize_t max_body;
    if (!PyArg_ParseTuple(args, "y*n", &data, &max_body))
        return NULL;
    size_t n = report_size(data.buf, (size_t)data.len, (size_t)max_body);
    PyBuffer_Release(&data);
    return PyLong_FromSize_t(n);
}

/*
 * finish(channel, report[, context]): a sandbox's last act: write its report, unmap the
 * context (a reusable sandbox, which its zygote resets while it blocks here), then block
 * until the worker hangs up or kills it, and exit.  In one call, so that no Python runs
 * between the write that wakes the worker and the read that gives the CPU back to it; the
 * report first, so that the worker wakes before the unmapping (10-15 us of page-table work
 * on a VM) rather than after it: the zygote's reset, which needs the context unmapped,
 * waits for this read (snapshot_reset).  And not exiting at once, since tearing down the
 * address space (a few hundred microseconds of page-table work on a VM) would compete
 * with the worker as it wakes up.  Never returns.
 */
PyObject *finish(PyObject *self, PyObject *args) {
    int fd;
    Py_buffer data;
    PyObject *context = Py_None;
    if (!PyArg_ParseTuple(args, "iy*|O", &fd, &data, &context))
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
    if (context != Py_None) {  /* a reusable sandbox: its memory map as at its snapshot */
        Py_buffer ctx;
        if (PyObject_GetBuffer(context, &ctx, PyBUF_SIMPLE) == 0) {
            munmap(ctx.buf, (size_t)ctx.len);
            PyBuffer_Release(&ctx);
        }
    }
    char c;
    while (read(fd, &c, 1) < 0 && errno == EINTR) {}
    _exit(0);
}

/* ready(channel) -> 1 if a sandbox has written READY ('R', taken), 0 if not yet, -1 if it
 * wrote something else or is gone. */
PyObject *ready(PyObject *self, PyObject *args) {
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
    return PyLong_FromLong(n == 1 && c == WIRE_READY ? 1 : -1);
}
