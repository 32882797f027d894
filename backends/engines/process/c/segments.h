/*
 * Loading a native function's segments into a sandbox.  Shared by the C zygote's sandboxes
 * (native_zygote.c) and the Python zygote's (lockdown.c: native functions where no C
 * compiler built the C zygote), so that both map an ELF the same way.
 *
 * After its assignment header the worker sends the segment table (one struct wire_segment
 * per segment, already validated: page-aligned bounds inside the user range, no two segments
 * on one page; see dandelion.runtime.artifacts.validate_elf) and then the segments' file
 * bytes one after the other, which are read straight into place.
 */
#ifndef DANDELION_SEGMENTS_H
#define DANDELION_SEGMENTS_H

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "protocol.h"

static int read_all(int fd, void *p, size_t n) {
    char *c = p;
    while (n) {
        ssize_t k = read(fd, c, n);
        if (k <= 0) return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

/* The pages a segment occupies: [*start, *end). */
static void segment_pages(const struct wire_segment *s, uint64_t *start, uint64_t *end) {
    *start = s->vaddr & ~(uint64_t)4095;
    *end = (s->vaddr + s->memsz + 4095) & ~(uint64_t)4095;
}

/*
 * Read n segments' table and their payload_len bytes from fd and map them at their
 * addresses (never over an existing mapping); 0, or -1 with nothing to undo (the sandbox
 * then exits).  The pages are mapped with one call where the segments lie close together
 * (the holes between them stay ordinary memory of this process), and only segments that
 * are not read-write are reprotected: on a VM every mapping call is expensive.
 */
static int load_segments(int fd, uint32_t n, uint64_t payload_len) {
    struct wire_segment segs[WIRE_MAX_SEGMENTS];
    if (n > WIRE_MAX_SEGMENTS || read_all(fd, segs, sizeof(struct wire_segment) * n))
        return -1;
    uint64_t lo = UINT64_MAX, hi = 0, size = 0, next = 0, start, end;
    for (uint32_t i = 0; i < n; i++) {
        struct wire_segment *s = &segs[i];
        segment_pages(s, &start, &end);
        if (s->filesz > s->memsz || s->offset != next) return -1;
        next += s->filesz;
        size += end - start;
        if (start < lo) lo = start;
        if (end > hi) hi = end;
    }
    if (next != payload_len) return -1;
    int together = n > 0 && hi - lo <= 2 * size + (1 << 20);
    if (together && mmap((void *)(uintptr_t)lo, hi - lo, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) !=
                        (void *)(uintptr_t)lo)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        struct wire_segment *s = &segs[i];
        segment_pages(s, &start, &end);
        if (!together && mmap((void *)(uintptr_t)start, end - start, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) !=
                             (void *)(uintptr_t)start)
            return -1;
        if (read_all(fd, (void *)(uintptr_t)s->vaddr, s->filesz)) return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct wire_segment *s = &segs[i];
        segment_pages(s, &start, &end);
        if (s->prot != (PROT_READ | PROT_WRITE) &&
            mprotect((void *)(uintptr_t)start, end - start, s->prot) != 0)
            return -1;
    }
    return 0;
}

#endif
