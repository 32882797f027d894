/*
 * Reusing a Python sandbox: reset it to a snapshot after an invocation instead of forking
 * another (docs/isolation.rst, reusing a sandbox; benchmarks/reset_cycle.c is the
 * prototype this follows).
 *
 * In the sandbox, before its filter is installed: snapshot_track() creates a userfaultfd
 * in asynchronous write-protect mode at descriptor WIRE_UFFD_FD and registers every mapping
 * but the kernel's special ones, so that from the first scan on the kernel marks each page
 * written to.  In the zygote (the sandbox's parent, its tracer): snapshot_take() seizes a
 * sandbox that waits for work (blocked in recvmsg on its channel), takes the userfaultfd,
 * and records its memory map, descriptors, the present pages of its writable private
 * mappings, its registers, FP state and signal mask; snapshot_reset() stops it after an
 * invocation and puts all of that back, or fails (the caller then kills it).
 */
#ifndef DANDELION_SNAPSHOT_H
#define DANDELION_SNAPSHOT_H

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "protocol.h"

#include "kernel_abi.h"

#define SNAPSHOT_TOP ((1ULL << 47) - 4096)  /* TASK_SIZE_MAX with 4-level paging */
#define SNAPSHOT_MAX_RANGES 2048
#define SNAPSHOT_MAX_SPANS 16
#define SNAPSHOT_MAX_FDS 8
#define SNAPSHOT_RUNS 4096
#define SNAPSHOT_IOV 1024
#define SNAPSHOT_MAPS (1 << 20)
#define SNAPSHOT_MAX_VMAS 4096
/* every this many resets, the pages written back are protected again (so that those no
 * longer written leave the hot set); in between they stay writable */
#define SNAPSHOT_TRIM 32

static int snapshot_special(const char *line) {
    return strstr(line, "[vsyscall]") || strstr(line, "[vvar]") || strstr(line, "[vdso]") ||
           strstr(line, "[vvar_vclock]");
}

static size_t snapshot_read_all(int fd, char *buf, size_t cap) {
    size_t n = 0;
    ssize_t r;
    if (lseek(fd, 0, SEEK_SET) < 0)
        return 0;
    while (n < cap && (r = read(fd, buf + n, cap - n)) > 0)
        n += (size_t)r;
    return n < cap ? n : 0;
}

/*
 * In a sandbox, before its filter: a userfaultfd at WIRE_UFFD_FD, asynchronous
 * write-protection, every mapping but the special ones registered.  0, or -1 (then no
 * descriptor is left: the zygote's snapshot of it fails, and it serves one invocation).
 */
static int snapshot_track(void) {
    static char text[SNAPSHOT_MAPS];
    int maps = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (maps < 0)
        return -1;
    size_t len = snapshot_read_all(maps, text, sizeof text - 1);
    close(maps);
    if (len == 0)
        return -1;
    text[len] = 0;
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0)
        return -1;
    if (fd != WIRE_UFFD_FD) {
        if (dup2(fd, WIRE_UFFD_FD) != WIRE_UFFD_FD) {
            close(fd);
            return -1;
        }
        close(fd);
    }
    struct uffdio_api api = {.api = UFFD_API,
                             .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED};
    if (ioctl(WIRE_UFFD_FD, UFFDIO_API, &api) != 0)
        goto fail;
    for (char *line = text; *line;) {
        char *eol = strchr(line, '\n');
        if (eol == NULL)
            break;
        *eol = 0;
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && !snapshot_special(line)) {
            struct uffdio_register reg = {.range = {lo, hi - lo},
                                          .mode = UFFDIO_REGISTER_MODE_WP};
            ioctl(WIRE_UFFD_FD, UFFDIO_REGISTER, &reg);  /* a shared read-only file: fails */
        }
        line = eol + 1;
    }
    return 0;
fail:
    close(WIRE_UFFD_FD);
    return -1;
}

struct snapshot_range { uint64_t lo, hi; int writable, shared; char *saved; };
/* A mapping as PROCMAP_QUERY gives it: its range, permissions, offset and file. */
struct snapshot_vma { uint64_t start, end, flags, offset, inode, dev; };

struct snapshot_run { uint64_t lo, hi; };

struct snapshot {
    pid_t pid;
    int pagemap, maps, uffd, fdlist;
    int uses;
    /* the pages written back by the last reset and left writable (not protected again):
     * the next reset writes them back whatever the scan says, so that the invocations in
     * between write them without a fault each (SNAPSHOT_TRIM) */
    struct snapshot_run *hot;
    int n_hot;
    long long cpu_ns;  /* discard once the sandbox has used this much CPU (0: never) */
    /* the memory map at the snapshot: its mappings (PROCMAP_QUERY), or where the kernel
     * cannot query them (before 6.11), the text of /proc/PID/maps */
    struct snapshot_vma *vmas;
    int n_vmas;
    char *maps_text;
    size_t maps_len;
    struct snapshot_range *ranges;
    int n_ranges;
    struct { uint64_t lo, hi; } spans[SNAPSHOT_MAX_SPANS];
    int n_spans;
    int fds[SNAPSHOT_MAX_FDS];
    int n_fds;
    struct user_regs_struct regs;
    char xstate[16384];
    size_t xstate_len;
    uint64_t sigmask;
};

/* Stop a seized sandbox.  0; -1 if it stopped for anything else (a signal: it is
 * violating, or crashing); -2 if it ended (*status set). */
static int snapshot_stop(pid_t pid, int *status) {
    if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) != 0)
        return -1;
    for (;;) {
        pid_t r = waitpid(pid, status, __WALL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r != pid)
            return -1;
        if (WIFEXITED(*status) || WIFSIGNALED(*status))
            return -2;
        return WIFSTOPPED(*status) && (*status >> 16) == PTRACE_EVENT_STOP ? 0 : -1;
    }
}

/* Tries, SNAPSHOT_SETTLE_NS apart, that a reset gives a sandbox to be back in its wait */
#define SNAPSHOT_SETTLE_TRIES 40
#define SNAPSHOT_SETTLE_NS 25000

/*
 * Stop a seized sandbox once it is blocked in system call nr on its channel: recvmsg,
 * where it waits for its assignment (a snapshot), or read, where finish() waits to be
 * ended after its report and after unmapping its context (a reset).  It writes READY, or
 * its report, first (the worker wakes sooner), so a snapshot or a reset may come before it
 * is back in that wait — on a busy machine it may be preempted between the write and the
 * call: then it is let go on and stopped again, SNAPSHOT_SETTLE_TRIES times at most (1 ms
 * of sleeps).  Only a wait: wherever it was stopped, the caller checks (a snapshot is
 * refused, and the sandbox killed, if it is not in recvmsg) or restores everything (a
 * function that forged its report and runs on is stopped where it is, and reset or
 * discarded as any).  As snapshot_stop.
 */
static int snapshot_settled(pid_t pid, int *status, long nr) {
    for (int i = 0;; i++) {
        int r = snapshot_stop(pid, status);
        if (r != 0)
            return r;
        struct user_regs_struct regs;
        if (i == SNAPSHOT_SETTLE_TRIES || ptrace(PTRACE_GETREGS, pid, 0, &regs) != 0 ||
            (regs.orig_rax == (unsigned long long)nr && regs.rdi == WIRE_CHANNEL_FD))
            return 0;
        if (ptrace(PTRACE_CONT, pid, 0, 0) != 0)
            return -1;
        struct timespec t = {0, SNAPSHOT_SETTLE_NS};
        nanosleep(&t, NULL);
    }
}

/* The descriptor numbers a process holds, ascending; -1 if more than fit. */
static int snapshot_fds(int dirfd, int *out) {
    int dup = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0)
        return -1;
    DIR *d = fdopendir(dup);
    if (d == NULL) {
        close(dup);
        return -1;
    }
    rewinddir(d);  /* the duplicate shares its offset with dirfd, read before */
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == SNAPSHOT_MAX_FDS) {
            n = -1;
            break;
        }
        int fd = atoi(e->d_name), k = n++;
        while (k > 0 && out[k - 1] > fd) {
            out[k] = out[k - 1];
            k--;
        }
        out[k] = fd;
    }
    closedir(d);
    return n;
}

/* Memory of the zygote's own that reads as zeros until written and that no sandbox it
 * forks inherits (each would map, and its fork copy the page tables of, every snapshot). */
static void *snapshot_alloc(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (madvise(p, size, MADV_DONTFORK) != 0) {
        munmap(p, size);
        return NULL;
    }
    return p;
}

static void snapshot_free(struct snapshot *s) {
    if (s == NULL)
        return;
    for (int i = 0; i < s->n_ranges; i++)
        if (s->ranges[i].saved != NULL)
            munmap(s->ranges[i].saved, s->ranges[i].hi - s->ranges[i].lo);
    if (s->ranges != NULL)
        munmap(s->ranges, SNAPSHOT_MAX_RANGES * sizeof *s->ranges);
    if (s->hot != NULL)
        munmap(s->hot, SNAPSHOT_RUNS * sizeof *s->hot);
    if (s->vmas != NULL)
        munmap(s->vmas, SNAPSHOT_MAX_VMAS * sizeof *s->vmas);
    free(s->maps_text);
    if (s->pagemap >= 0) close(s->pagemap);
    if (s->maps >= 0) close(s->maps);
    if (s->uffd >= 0) close(s->uffd);
    if (s->fdlist >= 0) close(s->fdlist);
    free(s);
}

static int snapshot_open(pid_t pid, const char *what, int flags) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, what);
    return open(path, flags | O_CLOEXEC);
}

/*
 * The memory map that `maps` (a /proc/PID/maps) describes, one PROCMAP_QUERY per mapping
 * (Linux 6.11; no text is made: reading and comparing the text was the largest step of a
 * reset, its paths made each time): stored in out (want NULL, room for SNAPSHOT_MAX_VMAS),
 * or compared with want's n_want mappings.  The number of mappings; -1 on the first
 * difference, past SNAPSHOT_MAX_VMAS, or where the kernel cannot query.
 */
static int snapshot_query(int maps, struct snapshot_vma *out, const struct snapshot_vma *want,
                          int n_want) {
    int n = 0;
    for (uint64_t addr = 0;;) {
        struct procmap_query q = {.size = sizeof q,
                                  .query_flags = PROCMAP_QUERY_COVERING_OR_NEXT_VMA,
                                  .query_addr = addr};
        if (ioctl(maps, PROCMAP_QUERY, &q) != 0)
            return errno == ENOENT ? n : -1;  /* ENOENT: no mapping at or above addr */
        struct snapshot_vma v = {q.vma_start, q.vma_end, q.vma_flags, q.vma_offset, q.inode,
                                 (uint64_t)q.dev_major << 32 | q.dev_minor};
        if (want != NULL && (n >= n_want || memcmp(&v, &want[n], sizeof v) != 0))
            return -1;
        if (want == NULL) {
            if (n == SNAPSHOT_MAX_VMAS)
                return -1;
            out[n] = v;
        }
        n++;
        addr = q.vma_end;
    }
}

/*
 * Snapshot sandbox pid, which waits for work (blocked in recvmsg on its channel, nothing
 * sent to it yet) and was tracked (snapshot_track()).  The snapshot, or NULL: then *ended
 * is 1 if it ended meanwhile (*status its wait status), 0 if it was left as it was (not
 * tracked: it serves one invocation), -1 if it must be killed.
 */
static struct snapshot *snapshot_take(pid_t pid, long long cpu_ns, int *ended, int *status) {
    static char text[SNAPSHOT_MAPS];
    static struct page_region runs[SNAPSHOT_RUNS];
    *ended = -1;
    struct snapshot *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->pid = pid, s->pagemap = s->maps = s->uffd = s->fdlist = -1, s->cpu_ns = cpu_ns;
    s->ranges = snapshot_alloc(SNAPSHOT_MAX_RANGES * sizeof *s->ranges);
    s->hot = snapshot_alloc(SNAPSHOT_RUNS * sizeof *s->hot);
    if (s->ranges == NULL || s->hot == NULL || ptrace(PTRACE_SEIZE, pid, 0, 0) != 0) {
        *ended = 0;  /* untouched (no memory, or no ptrace here): left as it was */
        goto fail;
    }
    int r = snapshot_settled(pid, status, SYS_recvmsg);
    if (r != 0) {
        if (r == -2)
            *ended = 1;
        goto fail;
    }
    if (ptrace(PTRACE_GETREGS, pid, 0, &s->regs) != 0 ||
        s->regs.orig_rax != SYS_recvmsg || s->regs.rdi != WIRE_CHANNEL_FD)
        goto fail;  /* not waiting for its assignment */
    struct iovec x = {s->xstate, sizeof s->xstate};
    if (ptrace(PTRACE_GETREGSET, pid, NT_X86_XSTATE, &x) != 0)
        goto fail;
    s->xstate_len = x.iov_len;
    if (ptrace(PTRACE_GETSIGMASK, pid, sizeof s->sigmask, &s->sigmask) != 0)
        goto fail;
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0)
        goto fail;
    s->uffd = (int)syscall(SYS_pidfd_getfd, pidfd, WIRE_UFFD_FD, 0);
    close(pidfd);
    if (s->uffd < 0 && errno == EBADF) {  /* not tracked: let it go on as it was */
        *ended = ptrace(PTRACE_DETACH, pid, 0, 0) == 0 ? 0 : -1;
        goto fail;
    }
    s->pagemap = snapshot_open(pid, "pagemap", O_RDONLY);
    s->maps = snapshot_open(pid, "maps", O_RDONLY);
    s->fdlist = snapshot_open(pid, "fd", O_RDONLY | O_DIRECTORY);
    if (s->uffd < 0 || s->pagemap < 0 || s->maps < 0 || s->fdlist < 0)
        goto fail;
    s->n_fds = snapshot_fds(s->fdlist, s->fds);
    if (s->n_fds < 0)
        goto fail;
    s->maps_len = snapshot_read_all(s->maps, text, sizeof text);
    if (s->maps_len == 0)
        goto fail;
    s->vmas = snapshot_alloc(SNAPSHOT_MAX_VMAS * sizeof *s->vmas);
    if (s->vmas != NULL && (s->n_vmas = snapshot_query(s->maps, s->vmas, NULL, 0)) <= 0) {
        munmap(s->vmas, SNAPSHOT_MAX_VMAS * sizeof *s->vmas);  /* no PROCMAP_QUERY: the text */
        s->vmas = NULL;
    }
    if (s->vmas == NULL) {
        if ((s->maps_text = malloc(s->maps_len)) == NULL)
            goto fail;
        memcpy(s->maps_text, text, s->maps_len);
    }
    for (char *line = text; line < text + s->maps_len;) {
        char *eol = memchr(line, '\n', text + s->maps_len - line);
        if (eol == NULL)
            goto fail;
        *eol = 0;
        unsigned long lo, hi, offset, inode;
        char perms[5], dev[16];
        if (sscanf(line, "%lx-%lx %4s %lx %15s %lu", &lo, &hi, perms, &offset, dev, &inode) != 6)
            goto fail;
        struct pm_scan_arg probe = {.size = sizeof probe, .flags = PM_SCAN_CHECK_WPASYNC,
                                    .start = lo, .end = hi, .vec = (uint64_t)(uintptr_t)runs,
                                    .vec_len = 1, .max_pages = 1,
                                    .category_mask = PAGE_IS_WRITTEN,
                                    .return_mask = PAGE_IS_WRITTEN};
        if (snapshot_special(line) || ioctl(s->pagemap, PAGEMAP_SCAN, &probe) < 0) {
            /* not registered (special, or shared and never writable): the spans checked at
             * each reset leave it out, and cover the rest, holes included */
            if (s->n_spans + 1 >= SNAPSHOT_MAX_SPANS)
                goto fail;
            s->spans[s->n_spans++].hi = lo;
            s->spans[s->n_spans].lo = hi;
        } else {
            if (s->n_ranges == SNAPSHOT_MAX_RANGES)
                goto fail;
            struct snapshot_range *g = &s->ranges[s->n_ranges++];
            g->lo = lo, g->hi = hi, g->writable = perms[1] == 'w' && perms[3] == 'p';
            g->shared = perms[3] == 's';
            if (g->writable) {  /* the present pages of an anonymous one; a file's whole */
                g->saved = snapshot_alloc(hi - lo);
                if (g->saved == NULL)
                    goto fail;
                long n = 1;
                runs[0] = (struct page_region){lo, hi, 0};
                if (inode == 0) {
                    struct pm_scan_arg a = {.size = sizeof a, .start = lo, .end = hi,
                                            .vec = (uint64_t)(uintptr_t)runs,
                                            .vec_len = SNAPSHOT_RUNS,
                                            .category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                                            .return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED};
                    n = ioctl(s->pagemap, PAGEMAP_SCAN, &a);
                    if (n < 0 || a.walk_end != hi)
                        goto fail;
                }
                for (long k = 0; k < n; k++) {
                    size_t len = runs[k].end - runs[k].start;
                    struct iovec l = {g->saved + (runs[k].start - lo), len},
                                 rv = {(void *)(uintptr_t)runs[k].start, len};
                    if (process_vm_readv(pid, &l, 1, &rv, 1, 0) != (ssize_t)len)
                        goto fail;
                }
            }
        }
        line = eol + 1;
    }
    s->spans[s->n_spans++].hi = SNAPSHOT_TOP;
    int k = 0;
    for (int i = 0; i < s->n_spans; i++) {
        if (s->spans[i].hi > SNAPSHOT_TOP)
            s->spans[i].hi = SNAPSHOT_TOP;  /* [vsyscall] */
        if (s->spans[i].lo < s->spans[i].hi)
            s->spans[k++] = s->spans[i];
    }
    s->n_spans = k;
    for (int i = 0; i < s->n_spans; i++) {  /* write-protect everything, every mapping registered */
        struct pm_scan_arg a = {.size = sizeof a,
                                .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                                .start = s->spans[i].lo, .end = s->spans[i].hi,
                                .category_mask = PAGE_IS_WRITTEN};
        if (ioctl(s->pagemap, PAGEMAP_SCAN, &a) < 0)
            goto fail;
    }
    if (ptrace(PTRACE_CONT, pid, 0, 0) != 0)
        goto fail;
    return s;
fail:
    snapshot_free(s);
    return NULL;
}

/*
 * Put sandbox s->pid, after an invocation, back into its snapshot's state: 0, or -1 (the
 * caller kills it), or -2 if it ended (*status set).  Fails on any difference it cannot
 * undo: a mapping added, removed, replaced or changed, a page written that was not
 * writable at the snapshot, a descriptor closed, too many uses or too much CPU used.
 */
static int snapshot_reset(struct snapshot *s, int *status) {
    static struct page_region runs[SNAPSHOT_RUNS];
    static struct iovec local[SNAPSHOT_IOV], remote[SNAPSHOT_IOV];
    static char text[SNAPSHOT_MAPS];
    static struct snapshot_run dirty[SNAPSHOT_RUNS], all[SNAPSHOT_RUNS];
    int r = snapshot_settled(s->pid, status, SYS_read);
    if (r != 0)
        return r;
    if (++s->uses > WIRE_MAX_USES)
        return -1;
    if (s->cpu_ns > 0) {
        clockid_t c;
        struct timespec t;
        if (clock_getcpuclockid(s->pid, &c) != 0 || clock_gettime(c, &t) != 0 ||
            t.tv_sec * 1000000000LL + t.tv_nsec > s->cpu_ns)
            return -1;
    }
    int n_dirty = 0;
    for (int i = 0; i < s->n_spans; i++) {  /* the pages written (or dropped) since */
        uint64_t from = s->spans[i].lo;
        while (from < s->spans[i].hi) {
            struct pm_scan_arg a = {.size = sizeof a, .flags = PM_SCAN_CHECK_WPASYNC,
                                    .start = from, .end = s->spans[i].hi,
                                    .vec = (uint64_t)(uintptr_t)runs, .vec_len = SNAPSHOT_RUNS,
                                    .category_mask = PAGE_IS_WRITTEN,
                                    .return_mask = PAGE_IS_WRITTEN};
            long n = ioctl(s->pagemap, PAGEMAP_SCAN, &a);
            if (n < 0)
                return -1;  /* a mapping not registered: added, replaced or moved */
            for (long k = 0; k < n; k++) {
                if (n_dirty && dirty[n_dirty - 1].hi == runs[k].start)
                    dirty[n_dirty - 1].hi = runs[k].end;
                else if (n_dirty < SNAPSHOT_RUNS)
                    dirty[n_dirty].lo = runs[k].start, dirty[n_dirty++].hi = runs[k].end;
                else
                    return -1;
            }
            if (a.walk_end <= from)
                return -1;
            from = a.walk_end;
        }
    }
    /* and the hot pages, left writable by the last reset, whatever the scan says of them
     * (one dropped since reads as never written): the union, in order */
    int n_all = 0;
    for (int i = 0, h = 0; i < n_dirty || h < s->n_hot;) {
        struct snapshot_run next = h == s->n_hot || (i < n_dirty && dirty[i].lo < s->hot[h].lo)
                                   ? (struct snapshot_run){dirty[i].lo, dirty[i++].hi}
                                   : s->hot[h++];
        if (n_all && all[n_all - 1].hi >= next.lo) {
            if (next.hi > all[n_all - 1].hi)
                all[n_all - 1].hi = next.hi;
        } else if (n_all < SNAPSHOT_RUNS) {
            all[n_all++] = next;
        } else {
            return -1;
        }
    }
    int n_iov = 0, ri = 0;
    for (int i = 0; i < n_all; i++) {
        uint64_t lo = all[i].lo, hi = all[i].hi;
        while (lo < hi) {  /* the mappings the run lies in */
            while (ri < s->n_ranges && s->ranges[ri].hi <= lo)
                ri++;
            struct snapshot_range *g = &s->ranges[ri];
            if (ri == s->n_ranges || g->lo > lo || !g->writable)
                return -1;  /* written, but not writable at the snapshot */
            uint64_t end = hi < g->hi ? hi : g->hi;
            local[n_iov] = (struct iovec){g->saved + (lo - g->lo), end - lo};
            remote[n_iov] = (struct iovec){(void *)(uintptr_t)lo, end - lo};
            lo = end;
            if (++n_iov == SNAPSHOT_IOV) {
                if (process_vm_writev(s->pid, local, n_iov, remote, n_iov, 0) < 0)
                    return -1;
                n_iov = 0;
            }
        }
    }
    if (n_iov && process_vm_writev(s->pid, local, n_iov, remote, n_iov, 0) < 0)
        return -1;
    if (s->uses % SNAPSHOT_TRIM == 0) {  /* written back: protect them again */
        for (int i = 0; i < n_all; i++) {
            struct uffdio_writeprotect wp = {{all[i].lo, all[i].hi - all[i].lo},
                                             UFFDIO_WRITEPROTECT_MODE_WP};
            if (ioctl(s->uffd, UFFDIO_WRITEPROTECT, &wp) != 0)
                return -1;
        }
        n_all = 0;
    }
    memcpy(s->hot, all, n_all * sizeof *all);
    s->n_hot = n_all;
    if (s->vmas != NULL) {
        if (snapshot_query(s->maps, NULL, s->vmas, s->n_vmas) != s->n_vmas)
            return -1;  /* the memory map changed */
    } else {
        size_t len = snapshot_read_all(s->maps, text, sizeof text);
        if (len != s->maps_len || memcmp(text, s->maps_text, len) != 0)
            return -1;  /* the memory map changed */
    }
    int fds[SNAPSHOT_MAX_FDS];
    if (snapshot_fds(s->fdlist, fds) != s->n_fds || memcmp(fds, s->fds, s->n_fds * sizeof(int)))
        return -1;  /* a descriptor closed */
    struct iovec x = {s->xstate, s->xstate_len};
    if (ptrace(PTRACE_SETREGS, s->pid, 0, &s->regs) != 0 ||
        ptrace(PTRACE_SETREGSET, s->pid, NT_X86_XSTATE, &x) != 0 ||
        ptrace(PTRACE_SETSIGMASK, s->pid, sizeof s->sigmask, &s->sigmask) != 0 ||
        ptrace(PTRACE_CONT, s->pid, 0, 0) != 0)
        return -1;
    return 0;
}

#endif
