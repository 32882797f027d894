/* Issue 19, step 1: what one numpy sandbox cycle costs when a used sandbox is reset to a
 * snapshot, against forking a fresh one from a zygote per invocation (the process
 * engine's way today).  A prototype of the mechanism, not of the engine: no seccomp
 * filter, no runtime, no context protocol; the same function (M @ M.T, 128x128 int64,
 * inputs and outputs in a shared memfd) in both.
 *
 *   gcc -O2 -o /tmp/reset_cycle benchmarks/reset_cycle.c
 *   /tmp/reset_cycle PYTHON [ROUNDS] [CYCLES] [WP_IN_SCAN] [MAPS: 0 query, 1 text, 2 both]   (python benchmarks/bench_reset.py runs it)
 *
 * reset: one long-lived Python process.  At its snapshot point (numpy imported, the
 *   function warmed up once, gc frozen) it creates a userfaultfd in async write-protect
 *   mode, registers every private mapping (special ones aside) and waits on its pipe.  The
 *   parent seizes it (ptrace), takes the descriptor (pidfd_getfd), and records the
 *   snapshot: /proc/PID/maps, the contents of the writable private mappings, registers,
 *   extended FP state, signal mask; one PAGEMAP_SCAN write-protects everything.  Each
 *   cycle: run the function, then stop it (PTRACE_INTERRUPT), PAGEMAP_SCAN (checking every
 *   tracked mapping is still registered) for the pages written since, write the snapshot's
 *   contents back (process_vm_writev), write-protect those pages again, compare the maps,
 *   restore registers/FP state/signal mask, continue.  Any difference: "discard".
 * fork: a long-lived Python zygote (the same imports and warm-up) forks a child per
 *   invocation that runs the function, answers and exits; the zygote reaps it and reports
 *   its CPU time and minor faults (wait4).
 * Rounds alternate the two; CPU per invocation counts every process involved (this one,
 * the zygote or the reset process, and the forked children).
 */
#define _GNU_SOURCE
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

#include "../backends/engines/process/c/kernel_abi.h"

static const char *SCRIPT =
    "import ctypes, gc, mmap, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "# glibc keeps its heap and serves every size from it: no trim, no mmap per chunk\n"
    "libc.mallopt(-1, 1 << 30); libc.mallopt(-2, 16 << 20); libc.mallopt(-3, 1 << 30)\n"
    "import numpy as np\n"
    "ctx = mmap.mmap(3, 1 << 20)\n"
    "N = 128\n"
    "def f(m):\n"
    "    return m @ m.T\n"
    "def invoke():\n"
    "    m = np.frombuffer(ctx, dtype=np.int64, count=N * N).reshape(N, N)\n"
    "    out = f(m)\n"
    "    np.frombuffer(ctx, dtype=np.int64, count=N * N, offset=1 << 19)[:] = out.ravel()\n"
    "# state a function may change (probe mode): each invocation reports it\n"
    "counter, lst, arr, cache = 0, [], np.zeros(4, dtype=np.int64), {}\n"
    "keep = np.arange(1 << 16, dtype=np.int64)  # 512 KiB on glibc's heap\n"
    "libc.mmap.restype = ctypes.c_void_p\n"
    "libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]\n"
    "own = libc.mmap(None, 1 << 20, 3, 0x22, -1, 0)  # private anonymous, 1 MiB of 7s\n"
    "ctypes.memset(own, 7, 1 << 20)\n"
    "ro = next(int(l.split('-')[0], 16) for l in open('/proc/self/maps') if 'libc.so' in l and ' r--p ' in l)\n"
    "def act(b):\n"
    "    global counter\n"
    "    if b == b'c':  # module-level state mutated\n"
    "        counter += 1; lst.append(1); arr[0] += 1; cache[len(cache)] = 1\n"
    "    elif b in b'zZ':  # a heap page dropped (and read back as zeros: z)\n"
    "        libc.madvise(ctypes.c_void_p((keep.ctypes.data + 8191) & ~4095), 4096, 4)\n"
    "    elif b == b'p':  # a read-only page made writable, written, made read-only again\n"
    "        libc.mprotect(ctypes.c_void_p(ro), 4096, 3); ctypes.memset(ro + 64, 1, 1)\n"
    "        libc.mprotect(ctypes.c_void_p(ro), 4096, 1)\n"
    "    elif b == b'u':  # a mapping replaced by a new one at the same place\n"
    "        libc.munmap(ctypes.c_void_p(own), 1 << 20)\n"
    "        libc.mmap(own, 1 << 20, 3, 0x32, -1, 0); ctypes.memset(own, 9, 1)\n"
    "    elif b == b'n':  # a new mapping, written\n"
    "        ctypes.memset(libc.mmap(None, 1 << 20, 3, 0x22, -1, 0), 1, 4096)\n"
    "    elif b == b'h':  # the heap grown by 100 MB\n"
    "        big = np.ones(100 << 17, dtype=np.int64); del big\n"
    "    stats = np.frombuffer(ctx, dtype=np.int64, count=6, offset=1 << 18)\n"
    "    stats[:] = (counter, len(lst), arr[0], len(cache), -1 if b == b'Z' else keep.sum(), ctypes.c_ubyte.from_address(own).value)\n"
    "invoke(); act(b'x')\n"
    "gc.collect(); gc.freeze()\n"
    "if sys.argv[1] == 'reset':\n"
    "    uffd = libc.syscall(323, os.O_CLOEXEC | os.O_NONBLOCK | 1)  # UFFD_USER_MODE_ONLY\n"
    "    api = (ctypes.c_uint64 * 3)(0xAA, (1 << 13) | (1 << 15), 0)  # WP_UNPOPULATED|WP_ASYNC\n"
    "    assert uffd >= 0 and libc.ioctl(uffd, 0xc018aa3f, api) == 0, ctypes.get_errno()\n"
    "    import time; t0 = time.perf_counter()\n"
    "    for _ in range(2):  # again: reading the maps may have mapped a new arena\n"
    "        for line in open('/proc/self/maps').read().splitlines():\n"
    "            f_ = line.split()\n"
    "            lo, hi = (int(x, 16) for x in f_[0].split('-'))\n"
    "            if (len(f_) > 5 and f_[5] in ('[vsyscall]', '[vvar]', '[vdso]', '[vvar_vclock]')):\n"
    "                continue\n"
    "            reg = (ctypes.c_uint64 * 4)(lo, hi - lo, 2, 0)  # UFFDIO_REGISTER_MODE_WP\n"
    "            libc.ioctl(uffd, 0xc020aa00, reg)  # fails for a shared, read-only file\n"
    "    os.write(1, b'%d %d\\n' % (uffd, (time.perf_counter() - t0) * 1e6))\n"
    "    while True:\n"
    "        act(os.read(0, 1))\n"
    "        invoke()\n"
    "        os.write(1, b'd')\n"
    "else:\n"
    "    while True:\n"
    "        if not os.read(0, 1):\n"
    "            os._exit(0)\n"
    "        pid = os.fork()\n"
    "        if pid == 0:\n"
    "            invoke()\n"
    "            os.write(1, b'd')\n"
    "            os._exit(0)\n"
    "        _, _, ru = os.wait4(pid, 0)\n"
    "        os.write(4, b'%d %d\\n' % (int((ru.ru_utime + ru.ru_stime) * 1e6), ru.ru_minflt))\n";

#define N_IOV 1024
#define MAX_RANGES 1024
#define MAX_REGIONS 8192
#define TOP ((1ULL << 47) - 4096)  /* TASK_SIZE_MAX, 4-level paging */

static double now_us(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}
static void die(const char *what) { perror(what); exit(1); }

struct range { uint64_t lo, hi; int writable, shared; char *saved; };

struct snapshot {
    pid_t pid;
    int pagemap, maps, uffd;
    char *maps_text;
    size_t maps_len;
    struct range ranges[MAX_RANGES];
    int n_ranges;
    struct { uint64_t lo, hi; } spans[9];  /* the address space but unregistered mappings */
    int n_spans;
    struct vma { uint64_t start, end, flags, offset, inode, dev; } *vmas;  /* PROCMAP_QUERY's */
    int n_vmas;
    struct user_regs_struct regs;
    char xstate[8192];
    size_t xstate_len;
    uint64_t sigmask;
};

static size_t read_all(int fd, char *buf, size_t cap) {
    size_t n = 0;
    ssize_t r;
    if (lseek(fd, 0, SEEK_SET) < 0) die("lseek maps");
    while ((r = read(fd, buf + n, cap - n)) > 0) n += r;
    if (r < 0) die("read maps");
    return n;
}

static int is_special(const char *line) {
    return strstr(line, "[vsyscall]") || strstr(line, "[vvar]") || strstr(line, "[vdso]") ||
           strstr(line, "[vvar_vclock]");
}

/* 1: the scan write-protects the pages it reports (one walk), and the write-back marks
 * them written again, so each reset rewrites every page written since the snapshot;
 * 0: the scan only reports, and the pages written back are protected again after */
static int wp_in_scan;
static int probing;
/* 1: compare the text of /proc/PID/maps; 0: PROCMAP_QUERY where the kernel has it */
static int query_text;

static void stop(pid_t pid) {
    int st;
    if (ptrace(PTRACE_INTERRUPT, pid, 0, 0)) die("PTRACE_INTERRUPT");
    if (waitpid(pid, &st, __WALL) != pid || !WIFSTOPPED(st)) die("waitpid stop");
}

static long scan(struct snapshot *s, uint64_t lo, uint64_t hi, uint64_t flags,
                 struct page_region *out, size_t cap) {
    struct pm_scan_arg a = {.size = sizeof a, .flags = flags, .start = lo, .end = hi,
                            .vec = (uint64_t)(uintptr_t)out, .vec_len = cap,
                            .category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN};
    return ioctl(s->pagemap, PAGEMAP_SCAN, &a);
}

/* The memory map as PROCMAP_QUERY gives it (no text, no paths): each mapping's range,
 * permissions, offset and file; compared with `want` (NULL: stored in out), -1 on a
 * difference.  The number of mappings, or -1. */
static int query_maps(int maps, struct vma *out, const struct vma *want, int n_want) {
    struct procmap_query q = {.size = sizeof q, .query_flags = PROCMAP_QUERY_COVERING_OR_NEXT_VMA};
    int n = 0;
    for (uint64_t addr = 0;; addr = q.vma_end) {
        q.query_addr = addr;
        q.vma_name_size = q.build_id_size = 0;
        if (ioctl(maps, PROCMAP_QUERY, &q)) return errno == ENOENT ? n : -1;
        struct vma v = {q.vma_start, q.vma_end, q.vma_flags, q.vma_offset, q.inode,
                        (uint64_t)q.dev_major << 32 | q.dev_minor};
        if (want) {
            if (n >= n_want || memcmp(&v, &want[n], sizeof v)) return -1;
        } else {
            out[n] = v;
        }
        n++;
    }
}

static void take_snapshot(struct snapshot *s, pid_t pid, int child_uffd) {
    static char text[1 << 20];
    static struct page_region regions[MAX_REGIONS];
    char path[64];
    s->pid = pid;
    if (ptrace(PTRACE_SEIZE, pid, 0, 0)) die("PTRACE_SEIZE");
    stop(pid);
    int pidfd = syscall(SYS_pidfd_open, pid, 0);
    s->uffd = syscall(SYS_pidfd_getfd, pidfd, child_uffd, 0);
    if (s->uffd < 0) die("pidfd_getfd");
    close(pidfd);
    snprintf(path, sizeof path, "/proc/%d/pagemap", pid);
    if ((s->pagemap = open(path, O_RDONLY)) < 0) die("pagemap");
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    if ((s->maps = open(path, O_RDONLY)) < 0) die("maps");
    s->maps_len = read_all(s->maps, text, sizeof text);
    s->maps_text = malloc(s->maps_len);
    s->vmas = malloc(sizeof *s->vmas * 4096);
    s->n_vmas = query_maps(s->maps, s->vmas, NULL, 0);
    if (s->n_vmas < 0) perror("PROCMAP_QUERY (the text of the map is compared instead)");
    memcpy(s->maps_text, text, s->maps_len);
    size_t saved = 0, writable = 0;
    for (char *line = text; line < text + s->maps_len;) {
        char *eol = memchr(line, '\n', text + s->maps_len - line);
        *eol = 0;
        unsigned long lo, hi, offset, inode;
        char perms[5], dev[16];
        sscanf(line, "%lx-%lx %4s %lx %15s %lu", &lo, &hi, perms, &offset, dev, &inode);
        struct pm_scan_arg probe = {.size = sizeof probe, .flags = PM_SCAN_CHECK_WPASYNC,
                                    .start = lo, .end = hi, .vec = (uint64_t)(uintptr_t)regions,
                                    .vec_len = 1, .max_pages = 1,
                                    .category_mask = PAGE_IS_WRITTEN,
                                    .return_mask = PAGE_IS_WRITTEN};
        if (is_special(line) || ioctl(s->pagemap, PAGEMAP_SCAN, &probe) < 0) {
            /* not registered (special, or shared and never writable): the spans that are
             * checked each reset leave it out, and cover everything else, holes included */
            if (s->n_spans == 8) die("too many unregistered mappings");
            s->spans[s->n_spans++].hi = lo;
            s->spans[s->n_spans].lo = hi;
        } else {
            struct range *r = &s->ranges[s->n_ranges++];
            r->lo = lo, r->hi = hi, r->writable = perms[1] == 'w' && perms[3] == 'p';
            r->shared = perms[3] == 's', r->saved = NULL;
            if (r->writable) {
                /* kept in memory of our own that reads as zeros until written: of an
                 * anonymous mapping only the pages present (or swapped out) are copied,
                 * the others being zeros; a file's private mapping is copied whole */
                r->saved = mmap(NULL, hi - lo, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
                if (r->saved == MAP_FAILED) die("mmap");
                struct page_region runs[512];
                long n_runs = 1;
                runs[0] = (struct page_region){lo, hi, 0};
                if (!inode) {
                    struct pm_scan_arg a = {.size = sizeof a, .start = lo, .end = hi,
                                            .vec = (uint64_t)(uintptr_t)runs, .vec_len = 512,
                                            .category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
                                            .return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED};
                    n_runs = ioctl(s->pagemap, PAGEMAP_SCAN, &a);
                    if (n_runs < 0 || a.walk_end != hi) die("PAGEMAP_SCAN (present)");
                }
                for (long k = 0; k < n_runs; k++) {
                    size_t len = runs[k].end - runs[k].start;
                    struct iovec l = {r->saved + (runs[k].start - lo), len},
                                 rv = {(void *)(uintptr_t)runs[k].start, len};
                    if (process_vm_readv(pid, &l, 1, &rv, 1, 0) != (ssize_t)len)
                        die("process_vm_readv");
                    saved += len;
                }
                writable += hi - lo;
            }
        }
        line = eol + 1;
    }
    s->spans[s->n_spans++].hi = TOP;
    int k = 0;
    for (int i = 0; i < s->n_spans; i++) {  /* adjacent unregistered mappings: no span between */
        if (s->spans[i].hi > TOP) s->spans[i].hi = TOP;  /* [vsyscall] */
        if (s->spans[i].lo < s->spans[i].hi) s->spans[k++] = s->spans[i];
    }
    s->n_spans = k;
    for (int i = 0; i < s->n_spans; i++)  /* write-protect everything; checks registration */
        if (scan(s, s->spans[i].lo, s->spans[i].hi, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                 regions, MAX_REGIONS) < 0)
            die("PAGEMAP_SCAN (first)");
    if (ptrace(PTRACE_GETREGS, pid, 0, &s->regs)) die("GETREGS");
    struct iovec x = {s->xstate, sizeof s->xstate};
    if (ptrace(PTRACE_GETREGSET, pid, NT_X86_XSTATE, &x)) die("GETREGSET");
    s->xstate_len = x.iov_len;
    if (ptrace(PTRACE_GETSIGMASK, pid, sizeof s->sigmask, &s->sigmask)) die("GETSIGMASK");
    if (!probing) printf("snapshot: %d tracked mappings in %d spans, %zu of %zu KiB writable kept, maps %zu bytes, "
            "xstate %zu bytes\n", s->n_ranges, s->n_spans, saved >> 10, writable >> 10, s->maps_len, s->xstate_len);
    if (ptrace(PTRACE_CONT, pid, 0, 0)) die("CONT");
}


struct phase { double stop, scan, write, protect, maps, regs; long pages, regions, discards; };

/* Reset the stopped-after-use process to the snapshot; 0, or -1: discard it. */
static int reset(struct snapshot *s, struct phase *ph) {
    static struct page_region regions[MAX_REGIONS];
    static struct iovec local[N_IOV], remote[N_IOV];
    static char text[1 << 20];
    static struct { uint64_t lo, hi; } dirty[MAX_RANGES];
    double t0 = now_us(CLOCK_MONOTONIC);
    stop(s->pid);
    double t1 = now_us(CLOCK_MONOTONIC);
    int n_iov = 0, n_dirty = 0, ri = 0;
    for (int i = 0; i < s->n_spans; i++) {
        uint64_t from = s->spans[i].lo;
        while (from < s->spans[i].hi) {
            /* every mapping in the span still registered (a new, moved or replaced one is
             * not), and the pages written since the last reset */
            struct pm_scan_arg a = {.size = sizeof a,
                                    .flags = PM_SCAN_CHECK_WPASYNC |
                                             (wp_in_scan ? PM_SCAN_WP_MATCHING : 0),
                                    .start = from, .end = s->spans[i].hi,
                                    .vec = (uint64_t)(uintptr_t)regions, .vec_len = MAX_REGIONS,
                                    .category_mask = PAGE_IS_WRITTEN,
                                    .return_mask = PAGE_IS_WRITTEN};
            long n = ioctl(s->pagemap, PAGEMAP_SCAN, &a);
            if (n < 0) return -1;
            for (long k = 0; k < n; k++) {
                uint64_t lo = regions[k].start, hi = regions[k].end;
                if (n_dirty && dirty[n_dirty - 1].hi == lo) dirty[n_dirty - 1].hi = hi;
                else if (n_dirty < MAX_RANGES) dirty[n_dirty].lo = lo, dirty[n_dirty++].hi = hi;
                else return -1;
                ph->pages += (hi - lo) >> 12;
                ph->regions++;
                while (lo < hi) {  /* the mappings the run lies in: writable ones only */
                    while (ri < s->n_ranges && s->ranges[ri].hi <= lo) ri++;
                    struct range *r = &s->ranges[ri];
                    if (ri == s->n_ranges || r->lo > lo) return -1;
                    uint64_t end = hi < r->hi ? hi : r->hi;
                    if (r->shared) {  /* this prototype's context (the engine unmaps it) */
                        lo = end;
                        continue;
                    }
                    if (!r->writable) return -1;  /* made writable, written: not restorable */
                    local[n_iov] = (struct iovec){r->saved + (lo - r->lo), end - lo};
                    remote[n_iov] = (struct iovec){(void *)(uintptr_t)lo, end - lo};
                    lo = end;
                    if (++n_iov == N_IOV) {
                        if (process_vm_writev(s->pid, local, n_iov, remote, n_iov, 0) < 0)
                            return -1;
                        n_iov = 0;
                    }
                }
            }
            from = a.walk_end;
        }
    }
    double t2 = now_us(CLOCK_MONOTONIC);
    if (n_iov && process_vm_writev(s->pid, local, n_iov, remote, n_iov, 0) < 0) return -1;
    double t3 = now_us(CLOCK_MONOTONIC);
    for (int i = 0; i < n_dirty && !wp_in_scan; i++) {  /* written back: protect them again */
        struct uffdio_writeprotect wp = {{dirty[i].lo, dirty[i].hi - dirty[i].lo},
                                         UFFDIO_WRITEPROTECT_MODE_WP};
        if (ioctl(s->uffd, UFFDIO_WRITEPROTECT, &wp)) return -1;
    }
    double t4 = now_us(CLOCK_MONOTONIC);
    if (s->n_vmas < 0 || query_text) {
        size_t len = read_all(s->maps, text, sizeof text);
        if (len != s->maps_len || memcmp(text, s->maps_text, len)) return -1;
    } else if (query_maps(s->maps, NULL, s->vmas, s->n_vmas) != s->n_vmas) {
        return -1;
    }
    double t5 = now_us(CLOCK_MONOTONIC);
    struct iovec x = {s->xstate, s->xstate_len};
    if (ptrace(PTRACE_SETREGS, s->pid, 0, &s->regs) ||
        ptrace(PTRACE_SETREGSET, s->pid, NT_X86_XSTATE, &x) ||
        ptrace(PTRACE_SETSIGMASK, s->pid, sizeof s->sigmask, &s->sigmask) ||
        ptrace(PTRACE_CONT, s->pid, 0, 0))
        return -1;
    double t6 = now_us(CLOCK_MONOTONIC);
    ph->stop += t1 - t0, ph->scan += t2 - t1, ph->write += t3 - t2, ph->protect += t4 - t3;
    ph->maps += t5 - t4, ph->regs += t6 - t5;
    return 0;
}

struct proc { pid_t pid; int req, resp, stats; };

static struct proc spawn(const char *python, const char *mode, int memfd) {
    int req[2], resp[2], stats[2];
    if (pipe(req) || pipe(resp) || pipe(stats)) die("pipe");
    pid_t pid = fork();
    if (pid == 0) {
        dup2(req[0], 0), dup2(resp[1], 1), dup2(memfd, 3), dup2(stats[1], 4);
        for (int fd = 5; fd < 64; fd++) close(fd);
        execl(python, python, "-c", SCRIPT, mode, (char *)NULL);
        _exit(127);
    }
    close(req[0]), close(resp[1]), close(stats[1]);
    return (struct proc){pid, req[1], resp[0], stats[0]};
}

static double cpu_of(pid_t pid) {
    clockid_t c;
    if (clock_getcpuclockid(pid, &c)) die("clock_getcpuclockid");
    return now_us(c);
}

static long minflt_of(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    char *p = strrchr(buf, ')') + 2;
    long v[8];
    /* state ppid pgrp session tty tpgid flags minflt */
    sscanf(p, "%*c %ld %ld %ld %ld %ld %ld %ld", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]);
    return v[6];
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void check_output(const int64_t *ctx, const char *mode) {
    static int64_t want[128 * 128];
    static int ready;
    if (!ready) {
        for (int i = 0; i < 128; i++)
            for (int j = 0; j < 128; j++) {
                int64_t acc = 0;
                for (int k = 0; k < 128; k++) acc += ctx[i * 128 + k] * ctx[j * 128 + k];
                want[i * 128 + j] = acc;
            }
        ready = 1;
    }
    if (memcmp(want, ctx + (1 << 16), sizeof want)) {
        fprintf(stderr, "%s: wrong output\n", mode);
        exit(1);
    }
    memset((void *)(ctx + (1 << 16)), 0, sizeof want);
}

static void drop(struct snapshot *s, struct proc *p) {
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, __WALL);
    for (int i = 0; i < s->n_ranges; i++)
        if (s->ranges[i].saved) munmap(s->ranges[i].saved, s->ranges[i].hi - s->ranges[i].lo);
    free(s->maps_text);
    free(s->vmas);
    close(s->pagemap), close(s->maps), close(s->uffd);
    close(p->req), close(p->resp), close(p->stats);
    memset(s, 0, sizeof *s);
}

static void start(struct snapshot *s, struct proc *p, const char *python, int memfd) {
    char line[64];
    *p = spawn(python, "reset", memfd);
    ssize_t n = read(p->resp, line, sizeof line - 1);
    if (n <= 0) die("reset child start");
    line[n] = 0;
    take_snapshot(s, p->pid, atoi(line));
}

/* Invocations that change the process's state in the ways isolation.rst lists, each
 * followed by a reset; every plain invocation ('x') must see exactly the snapshot's state. */
static int probe(const char *python, int memfd, int64_t *ctx) {
    static const char seq[] = "xcxcxzxZxpxuxnxhxx";
    static const char *what[128] = {['x'] = "plain", ['c'] = "globals mutated",
        ['z'] = "madvise(DONTNEED) heap page, read",
        ['Z'] = "madvise(DONTNEED) heap page", ['p'] = "mprotect rw, write, mprotect ro",
        ['u'] = "munmap + mmap at the same place", ['n'] = "new mapping",
        ['h'] = "heap grown by 100 MB"};
    static struct snapshot s;
    struct proc p;
    probing = 1;
    const int64_t *stats = ctx + (1 << 15);
    int64_t base[6];
    int failed = 0;
    start(&s, &p, python, memfd);
    for (const char *b = seq; *b; b++) {
        char d;
        if (write(p.req, b, 1) != 1 || read(p.resp, &d, 1) != 1) die("probe cycle");
        check_output(ctx, "probe");
        if (b == seq) memcpy(base, stats, sizeof base);
        int same = !memcmp(base, stats, sizeof base);
        if (*b == 'x' && !same) failed = 1;
        printf("%-34s counter,len,arr[0],len(cache),keep.sum,own[0] = %ld %ld %ld %ld %ld %ld%s",
               what[(int)*b], (long)stats[0], (long)stats[1], (long)stats[2], (long)stats[3],
               (long)stats[4], (long)stats[5], *b == 'x' ? (same ? "  (as snapshot)" : "  WRONG") : "");
        static struct phase ph;
        if (reset(&s, &ph)) {
            printf("  -> discarded, a fresh one\n");
            drop(&s, &p);
            start(&s, &p, python, memfd);
        } else {
            printf("  -> reset\n");
        }
    }
    drop(&s, &p);
    printf(failed ? "probe: FAILED\n" : "probe: every plain invocation saw the snapshot\n");
    return failed;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PYTHON [ROUNDS] [CYCLES]\n", argv[0]);
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 5, cycles = argc > 3 ? atoi(argv[3]) : 100;
    wp_in_scan = argc > 4 && atoi(argv[4]);
    int maps_mode = argc > 5 ? atoi(argv[5]) : 2;  /* 2: alternate by round */
    int memfd = memfd_create("ctx", 0);
    if (ftruncate(memfd, 1 << 20)) die("ftruncate");
    int64_t *ctx = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    for (int i = 0; i < 128 * 128; i++) ctx[i] = (i * 7919) % 13 - 6;
    if (argc > 2 && !strcmp(argv[2], "probe")) return probe(argv[1], memfd, ctx);
    struct proc rp = spawn(argv[1], "reset", memfd), zp = spawn(argv[1], "fork", memfd);
    char line[64];
    ssize_t n = read(rp.resp, line, sizeof line - 1);
    if (n <= 0) die("reset child start");
    line[n] = 0;
    static struct snapshot s;
    double t0 = now_us(CLOCK_MONOTONIC);
    take_snapshot(&s, rp.pid, atoi(line));
    printf("the process registered its mappings (two passes, through ctypes) in %ld us; "
           "the snapshot took %.0f us\n", atol(strchr(line, ' ') + 1),
           now_us(CLOCK_MONOTONIC) - t0);
    double *lat = malloc(sizeof(double) * rounds * cycles * 2);
    printf("%-6s %5s %9s %9s %9s %9s %7s %9s\n", "round", "mode", "cpu/inv", "this", "other",
           "children", "faults", "p50 wall");
    for (int round = 0; round < rounds; round++) {
        for (int m = 0; m < 2; m++) {
            int resetting = m == 1;
            query_text = maps_mode == 2 ? round % 2 : maps_mode;
            struct proc *p = resetting ? &rp : &zp;
            double self0 = now_us(CLOCK_PROCESS_CPUTIME_ID), other0 = cpu_of(p->pid);
            long flt0 = minflt_of(p->pid), kids = 0, kid_faults = 0;
            struct phase ph = {0};
            int nl = 0;
            for (int c = 0; c < cycles; c++) {
                char b = 'x';
                double t0 = now_us(CLOCK_MONOTONIC);
                if (write(p->req, &b, 1) != 1 || read(p->resp, &b, 1) != 1) die("cycle");
                lat[nl++] = now_us(CLOCK_MONOTONIC) - t0;
                check_output(ctx, resetting ? "reset" : "fork");
                if (resetting) {
                    if (reset(&s, &ph)) {
                        fprintf(stderr, "discard at cycle %d\n", c);
                        return 1;
                    }
                } else {
                    long us, fl;
                    FILE *f = fdopen(dup(p->stats), "r");
                    if (fscanf(f, "%ld %ld", &us, &fl) != 2) die("stats");
                    fclose(f);
                    kids += us, kid_faults += fl;
                }
            }
            double self = now_us(CLOCK_PROCESS_CPUTIME_ID) - self0;
            double other = cpu_of(p->pid) - other0;
            long flt = minflt_of(p->pid) - flt0 + kid_faults;
            qsort(lat, nl, sizeof *lat, cmp_double);
            printf("%-6d %5s %7.3f ms %6.3f ms %6.3f ms %6.3f ms %7.1f %6.3f ms\n", round,
                   resetting ? "reset" : "fork", (self + other + kids) / cycles / 1e3,
                   self / cycles / 1e3, other / cycles / 1e3, kids / (double)cycles / 1e3,
                   (double)flt / cycles, lat[nl / 2] / 1e3);
            if (resetting)
                printf("       reset phases (us/inv): stop %.1f, scan %.1f, write back %.1f, "
                       "protect %.1f, maps (%s) %.1f, registers+continue %.1f; %.1f pages in "
                       "%.1f runs\n", ph.stop / cycles, ph.scan / cycles, ph.write / cycles,
                       ph.protect / cycles,
                       query_text || s.n_vmas < 0 ? "text" : "PROCMAP_QUERY", ph.maps / cycles, ph.regs / cycles,
                       (double)ph.pages / cycles, (double)ph.regions / cycles);
            fflush(stdout);
        }
    }
    kill(rp.pid, SIGKILL);
    close(zp.req);
    return 0;
}
