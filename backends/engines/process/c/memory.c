/*
 * Memory: a context's pages zeroed or given back for its reuse (wipe), and the zygote's
 * heap laid out for huge pages (heap_arenas, huge_pages) and made immortal (immortalize),
 * so that forking a sandbox and running it copy as few pages as they can.
 */
#include "sandboxc.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000  /* Linux 4.17; older kernels take it as a hint */
#endif

/*
 * wipe(fd, mapping, limit): make every byte of a context read as zero.  Pages that were
 * written (the file's data extents, found with SEEK_DATA/SEEK_HOLE) are zeroed in place when
 * they add up to at most `limit` bytes, so they stay allocated and mapped for the next
 * invocation; otherwise the whole file is punched out.  Returns the bytes zeroed in place
 * (-1 for a punch).
 */
PyObject *wipe(PyObject *self, PyObject *args) {
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
PyObject *heap_arenas(PyObject *self, PyObject *noargs) {
    PyObjectArenaAllocator a = {NULL, arena_alloc, arena_free};
    PyObject_SetArenaAllocator(&a);
    Py_RETURN_NONE;
}

/* huge_pages() -> bytes now backed by huge pages: collapse the private writable memory
 * (heap, arenas) that covers whole 2 MiB ranges.  Best effort: 0 where the kernel has no
 * MADV_COLLAPSE (before Linux 6.1) or transparent huge pages are off. */
PyObject *huge_pages(PyObject *self, PyObject *noargs) {
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
PyObject *immortalize(PyObject *self, PyObject *objects) {
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
