/*
 * _watchc: whether the memory of a buffer has been written since it was protected
 * (dandelion/cache/watch.py), with the kernel interfaces the process engine's reset uses
 * (backends/engines/process/c/kernel_abi.h): userfaultfd's asynchronous write-protection
 * (Linux 6.7) and PAGEMAP_SCAN, and PROCMAP_QUERY (6.11) to see that the memory is private
 * and anonymous.
 *
 * protect(buffer) write-protects the whole pages in a buffer (registering them with this
 * process's userfaultfd the first time) and copies its bytes in the pages it shares with
 * other memory, at its start and end.  A write to a protected page, by any thread, or by
 * the kernel on this process's behalf (read(2) into it, process_vm_writev from another
 * process), takes one minor fault in which the kernel clears the protection and marks the
 * page written; no message, no waiting.  unwritten(buffer, watch) then compares the bytes
 * copied and asks PAGEMAP_SCAN whether any of the pages is written, or no longer present
 * (dropped with MADV_DONTNEED: it would read as zeros), or in a mapping no longer
 * registered (unmapped and mapped again, moved): one system call over the buffer's page
 * tables.  The shared pages are compared rather than watched because the C library writes
 * its bookkeeping there when a neighbour is allocated or freed.
 *
 * Only private anonymous memory is protected: a shared mapping can be written through
 * another process's page tables, and a private file mapping shows the file's changes in the
 * pages it has not copied.  Everything is per process: a forked child finds its parent's
 * registrations gone, and makes its own descriptor the first time it needs one.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "kernel_abi.h"

#define PROCMAP_QUERY_VMA_SHARED 0x08

static int uffd = -1, pagemap = -1, maps = -1;
static pid_t owner;     /* the process the three descriptors were made by */
static int unusable;    /* the kernel refused them in this process: never ask again */
static uint64_t page;

/* The descriptors of this process (made in it the first time): 0, or -1. */
static int ready(void) {
    pid_t pid = getpid();
    if (owner != pid) {  /* first use, or a child of the process that made them */
        if (uffd >= 0)
            close(uffd), close(pagemap), close(maps);
        uffd = pagemap = maps = -1, unusable = 0, owner = pid;
        page = (uint64_t)sysconf(_SC_PAGESIZE);
        int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
        struct uffdio_api api = {.api = UFFD_API,
                                 .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED};
        if (fd < 0 || ioctl(fd, UFFDIO_API, &api) != 0) {
            if (fd >= 0)
                close(fd);
            unusable = 1;
            return -1;
        }
        pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        maps = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
        if (pagemap < 0 || maps < 0) {
            close(fd);
            if (pagemap >= 0)
                close(pagemap);
            if (maps >= 0)
                close(maps);
            pagemap = maps = -1, unusable = 1;
            return -1;
        }
        uffd = fd;
    }
    return unusable ? -1 : 0;
}

/* The buffer of obj as [*start, *end), and the whole pages in it as [*lo, *hi): 0, or -1
 * (error set: not a contiguous buffer, or an empty one). */
static int pages_of(PyObject *obj, uint64_t *start, uint64_t *end, uint64_t *lo, uint64_t *hi) {
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
        return -1;
    *start = (uint64_t)(uintptr_t)view.buf, *end = *start + (uint64_t)view.len;
    PyBuffer_Release(&view);
    if (*end == *start) {
        PyErr_SetString(PyExc_ValueError, "an empty buffer");
        return -1;
    }
    *lo = (*start + page - 1) & ~(page - 1);
    *hi = *end & ~(page - 1);
    return 0;
}

/* Whether [lo, hi) lies wholly in private anonymous mappings. */
static int private_anonymous(uint64_t lo, uint64_t hi) {
    while (lo < hi) {
        struct procmap_query q = {.size = sizeof q, .query_addr = lo};
        if (ioctl(maps, PROCMAP_QUERY, &q) != 0 || q.vma_start > lo ||
            (q.vma_flags & PROCMAP_QUERY_VMA_SHARED) || q.inode != 0 || q.dev_major != 0 ||
            q.dev_minor != 0)
            return 0;
        lo = q.vma_end;
    }
    return 1;
}

static PyObject *protect(PyObject *self, PyObject *obj) {
    uint64_t start, end, lo, hi;
    if (ready() < 0)
        Py_RETURN_FALSE;
    if (pages_of(obj, &start, &end, &lo, &hi) < 0) {
        PyErr_Clear();  /* not a contiguous buffer */
        Py_RETURN_FALSE;
    }
    if (lo >= hi || !private_anonymous(lo, hi))
        Py_RETURN_FALSE;
    struct uffdio_register reg = {.range = {lo, hi - lo}, .mode = UFFDIO_REGISTER_MODE_WP};
    struct uffdio_writeprotect wp = {.range = {lo, hi - lo},
                                     .mode = UFFDIO_WRITEPROTECT_MODE_WP};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0 || ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) != 0)
        Py_RETURN_FALSE;
    /* the bytes in the pages it shares with other memory, copied after the protection and
     * so before the caller's hash: compared, not watched (a neighbour's allocation writes
     * those pages) */
    return Py_BuildValue("(KKy#y#)", (unsigned long long)lo, (unsigned long long)hi,
                         (const char *)(uintptr_t)start, (Py_ssize_t)(lo - start),
                         (const char *)(uintptr_t)hi, (Py_ssize_t)(end - hi));
}

static PyObject *unwritten(PyObject *self, PyObject *args) {
    PyObject *obj;
    unsigned long long was_lo, was_hi;
    const char *head, *tail;
    Py_ssize_t n_head, n_tail;
    uint64_t start, end, lo, hi;
    if (!PyArg_ParseTuple(args, "O(KKy#y#)", &obj, &was_lo, &was_hi, &head, &n_head, &tail,
                          &n_tail))
        return NULL;
    if (ready() < 0)
        Py_RETURN_FALSE;
    if (pages_of(obj, &start, &end, &lo, &hi) < 0) {
        PyErr_Clear();  /* not a contiguous buffer now */
        Py_RETURN_FALSE;
    }
    if (lo != was_lo || hi != was_hi || (Py_ssize_t)(lo - start) != n_head ||
        (Py_ssize_t)(end - hi) != n_tail)  /* its memory moved (or, under numpy 1, was swapped) */
        Py_RETURN_FALSE;
    if (memcmp((const void *)(uintptr_t)start, head, n_head) != 0 ||
        memcmp((const void *)(uintptr_t)hi, tail, n_tail) != 0)
        Py_RETURN_FALSE;
    struct page_region found;
    /* a page written, or not present (a dropped page reads as zeros; one swapped out
     * counts too: rare, and then the caller only hashes again) */
    struct pm_scan_arg a = {.size = sizeof a, .flags = PM_SCAN_CHECK_WPASYNC,
                            .start = lo, .end = hi, .vec = (uint64_t)(uintptr_t)&found,
                            .vec_len = 1, .max_pages = 1,
                            .category_inverted = PAGE_IS_PRESENT,
                            .category_anyof_mask = PAGE_IS_WRITTEN | PAGE_IS_PRESENT,
                            .return_mask = PAGE_IS_WRITTEN | PAGE_IS_PRESENT};
    long n = ioctl(pagemap, PAGEMAP_SCAN, &a);
    return PyBool_FromLong(n == 0 && a.walk_end == hi);
}

static PyObject *release(PyObject *self, PyObject *args) {
    unsigned long long lo, hi;
    if (!PyArg_ParseTuple(args, "KK", &lo, &hi))
        return NULL;
    if (ready() == 0 && hi > lo) {
        struct uffdio_range range = {lo, hi - lo};
        ioctl(uffd, UFFDIO_UNREGISTER, &range);  /* unmapped already: nothing to undo */
    }
    Py_RETURN_NONE;
}

static PyObject *available(PyObject *self, PyObject *unused) {
    return PyBool_FromLong(ready() == 0);
}

static PyMethodDef methods[] = {
    {"protect", protect, METH_O,
     "protect(buffer) -> (lo, hi, head, tail) | False: write-protect the whole pages [lo, hi) "
     "in buffer (private anonymous memory only), and copy its bytes before and after them, "
     "for unwritten() to say whether any was written since; False where that cannot be done "
     "(not a contiguous buffer, no whole page, another kind of memory, a kernel without the "
     "interfaces)."},
    {"unwritten", unwritten, METH_VARARGS,
     "unwritten(buffer, watch) -> bool: whether buffer is where protect() found it, the pages "
     "[lo, hi) are each registered, present and not written since, and its bytes outside "
     "them are the ones copied."},
    {"release", release, METH_VARARGS,
     "release(lo, hi): stop watching the pages [lo, hi) (their writes fault no more)."},
    {"available", available, METH_NOARGS,
     "available() -> bool: whether this kernel lets this process watch its memory."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_watchc",
    "Whether a buffer's memory was written since it was write-protected (Linux 6.11+).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__watchc(void) { return PyModule_Create(&module); }
