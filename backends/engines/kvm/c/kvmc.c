/*
 * _kvmc: the kvm engine's virtual machines, driven by ioctls on /dev/kvm.
 *
 * A Vm is one KVM virtual machine with one vCPU in 64-bit long mode and no guest OS.  The
 * host builds everything the CPU needs in the VM's system memory (guest-physical 0, 2 MiB,
 * identity-mapped where the CPU reads it): page tables, a GDT with user segments and a TSS,
 * an IDT whose 32 exception gates lead to stubs that report the vector on I/O port
 * PORT_FAULT (at CPL0).  The function runs at CPL3 (on nested KVM, guest CPL0 is emulated and about
 * ten times slower): it is entered at its ELF entry point with the context's address in
 * rdi and a return address on its stack that leads to the exit stub, a user page holding
 * `mov [DONE_PAGE], eax` (eax: the function's return value): DONE_PAGE is a page of no
 * memory slot, so the write exits to the host (KVM_EXIT_MMIO) straight from CPL3.
 *
 * The function's memory is one slot at guest-physical = guest-virtual USER_BASE (where
 * `dandelion build` links): the image's pages with their ELF permissions (W^X, NX), then
 * the context, then its stack at the top below a guard, everything else not present.
 *
 * After an invocation `reset` restores every page the guest wrote, as KVM's dirty log of
 * the slot says, and the inputs the host wrote: zeros, or the image's bytes for its data.
 * On nested KVM the write fault that logs a page costs ~25 us, so with manual protection
 * (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) pages written again and again are left writable
 * ("hot": they stay logged as dirty, so every reset restores them) and only the others are
 * write-protected again.  Long dirty runs are dropped (MADV_DONTNEED on the private
 * anonymous slot: they read as zeros again).  Without a dirty log, everything writable is
 * dropped.  The image's read-only pages, which the guest cannot write, stay for the next
 * invocation of the same function; loading another image protects every page again.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096ULL
#define HUGE (2ULL << 20)
#define USER_BASE 0x10000000ULL
#define SYS_SIZE HUGE
/* system memory, guest-physical = guest-virtual */
#define GDT_ADDR 0x1000ULL
#define TSS_ADDR 0x1080ULL
#define IDT_ADDR 0x2000ULL
#define HANDLERS 0x3000ULL
#define EXIT_STUB 0x4000ULL
#define KSTACK_LO 0x5000ULL
#define KSTACK_TOP 0x7000ULL
#define PML4_ADDR 0x8000ULL
#define PDPT_ADDR 0x9000ULL
#define PD_ADDR 0xA000ULL   /* four PDs: the first 4 GiB */
#define PT_SYS 0xE000ULL
#define PT_IMAGE 0x10000ULL /* page tables of the image, one per 2 MiB */
#define MAX_IMAGE_PTS ((SYS_SIZE - PT_IMAGE) / PAGE)
#define STACK_SIZE (8ULL << 20)
#define DONE_PAGE 0x100000ULL /* guest-virtual, user: guest-physical DONE_GPA */
#define DONE_GPA 0x200000ULL  /* in no memory slot: a write there exits to the host */
#define PORT_FAULT 0xde
/* page table bits */
#define P_PRESENT 1ULL
#define P_WRITE 2ULL
#define P_USER 4ULL
#define P_ACCESSED 0x20ULL
#define P_DIRTY 0x40ULL
#define P_HUGE 0x80ULL
#define P_NX (1ULL << 63)
/* run outcomes */
enum { DONE, FAULT, IO, TIMEOUT, SHUTDOWN, OTHER };

static int kvm_fd = -1;
static int run_size;
static struct kvm_cpuid2 *cpuid;
static int timer_signal;

typedef struct {
    PyObject_HEAD
    int vm, vcpu;
    struct kvm_run *run;
    uint8_t *sys, *user;
    uint64_t memory;      /* bytes of the user slot */
    struct kvm_sregs sregs;
    struct kvm_xsave *xsave; /* the pristine FPU/SSE/AVX state */
    int has_xsave;
    PyObject *loaded;     /* the key of the image mapped now, or NULL */
    uint64_t image_end;   /* first byte after the image's pages */
    uint64_t ctx_base, ctx_end, stack_top;
    struct { uint64_t lo, hi, vaddr; PyObject *data; } writable[64]; /* data, bss */
    int n_writable;
    int stale;            /* the writable segments were reset: copy them in again */
    int broken;           /* the vCPU's state is unknown: sregs and events are reset */
    uint64_t *bitmap;     /* KVM's dirty log of the user slot, or NULL: no logging */
    int manual;           /* the log is write-protected again only where reset says */
    uint64_t *protect;    /* the pages reset write-protects again (KVM_CLEAR_DIRTY_LOG) */
    uint64_t *hot;        /* pages left writable: restored at every reset, no fault */
    uint8_t *idle;        /* per hot page: resets since it was last found written */
    int n_hot;
    int exports;          /* buffers of its memory alive: close waits for them */
    int closing;
} Vm;

static __thread volatile sig_atomic_t timed_out;
static __thread struct kvm_run *volatile running;
static __thread timer_t thread_timer;
static __thread int has_timer;
static pthread_key_t timer_key;

static void on_timer(int sig) {
    (void)sig;
    timed_out = 1;
    struct kvm_run *r = running;
    if (r) r->immediate_exit = 1;
}

static void drop_timer(void *p) {
    (void)p;
    if (has_timer) timer_delete(thread_timer);
}

static PyObject *os_error(const char *what) {
    int e = errno;
    PyErr_Format(PyExc_OSError, "%s: %s", what, strerror(e));
    return NULL;
}

static int init_kvm(void) {
    if (kvm_fd >= 0) return 0;
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) return os_error("open /dev/kvm"), -1;
    if (ioctl(fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        close(fd);
        PyErr_SetString(PyExc_OSError, "/dev/kvm speaks another API version");
        return -1;
    }
    run_size = ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    int n = 256;
    cpuid = calloc(1, sizeof(*cpuid) + n * sizeof(struct kvm_cpuid_entry2));
    cpuid->nent = n;
    if (run_size <= 0 || ioctl(fd, KVM_GET_SUPPORTED_CPUID, cpuid) < 0) {
        close(fd);
        return os_error("KVM_GET_SUPPORTED_CPUID"), -1;
    }
    timer_signal = SIGRTMIN + 3;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_timer;  /* no SA_RESTART: KVM_RUN returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(timer_signal, &sa, NULL);
    pthread_key_create(&timer_key, drop_timer);
    kvm_fd = fd;
    return 0;
}

static uint64_t *pte(Vm *v, uint64_t table) { return (uint64_t *)(v->sys + table); }

static void set_segment(struct kvm_segment *s, uint16_t sel, uint8_t type, uint8_t dpl,
                        uint8_t code) {
    memset(s, 0, sizeof *s);
    s->selector = sel;
    s->limit = 0xffffffff;
    s->type = type;
    s->present = 1;
    s->dpl = dpl;
    s->s = 1;
    s->l = code;
    s->db = !code;
    s->g = 1;
}

/* The system memory: GDT, TSS, IDT, stubs, page tables of everything but the image. */
static void build_system(Vm *v) {
    uint8_t *m = v->sys;
    uint64_t *gdt = (uint64_t *)(m + GDT_ADDR);
    gdt[0] = 0;
    gdt[1] = 0x00af9b000000ffffULL; /* 0x08 kernel code, 64-bit */
    gdt[2] = 0x00cf93000000ffffULL; /* 0x10 kernel data */
    gdt[3] = 0x00cff3000000ffffULL; /* 0x18 user data, DPL3 */
    gdt[4] = 0x00affb000000ffffULL; /* 0x20 user code, 64-bit, DPL3 */
    uint64_t tss_limit = 104 - 1, base = TSS_ADDR;
    gdt[5] = (tss_limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ULL << 40) |
             ((base >> 24 & 0xff) << 56);  /* 0x28 available 64-bit TSS */
    gdt[6] = base >> 32;
    uint8_t *tss = m + TSS_ADDR;
    memset(tss, 0, 104);
    *(uint64_t *)(tss + 4) = KSTACK_TOP;  /* rsp0 */
    *(uint16_t *)(tss + 102) = 104;       /* no I/O bitmap: port I/O at CPL3 is #GP */
    /* IDT: vectors 0-31 to the stubs, kernel code, DPL0 (an `int n` from CPL3 is #GP) */
    uint64_t *idt = (uint64_t *)(m + IDT_ADDR);
    memset(idt, 0, 4096);
    for (int i = 0; i < 34; i++) {  /* 32: syscall's target, 33: sysenter's */
        uint64_t h = HANDLERS + 8 * i;
        if (i < 32) {
            idt[2 * i] = (h & 0xffff) | (0x08ULL << 16) | (0x8eULL << 40) |
                         ((h >> 16 & 0xffff) << 48);
            idt[2 * i + 1] = h >> 32;
        }
        uint8_t *s = m + h;  /* mov al, i; out PORT_FAULT, al; hlt; jmp $ */
        s[0] = 0xb0; s[1] = (uint8_t)i; s[2] = 0xe6; s[3] = PORT_FAULT; s[4] = 0xf4;
        s[5] = 0xeb; s[6] = 0xfe; s[7] = 0x90;
    }
    /* mov [DONE_PAGE], eax; ud2.  Port I/O at CPL3 is #GP on nested KVM (kvm_pvm ignores
     * IOPL), so the function's return value is written to a page of no memory slot */
    static const uint8_t stub[] = {0x89, 0x04, 0x25, DONE_PAGE & 0xff, DONE_PAGE >> 8 & 0xff,
                                   DONE_PAGE >> 16 & 0xff, DONE_PAGE >> 24, 0x0f, 0x0b};
    memcpy(m + EXIT_STUB, stub, sizeof stub);
    /* page tables */
    pte(v, PML4_ADDR)[0] = PDPT_ADDR | P_PRESENT | P_WRITE | P_USER | P_ACCESSED;
    for (int i = 0; i < 4; i++)
        pte(v, PDPT_ADDR)[i] = (PD_ADDR + PAGE * i) | P_PRESENT | P_WRITE | P_USER | P_ACCESSED;
    pte(v, PD_ADDR)[0] = PT_SYS | P_PRESENT | P_WRITE | P_USER | P_ACCESSED;
    uint64_t *pt = pte(v, PT_SYS);
    uint64_t sup = P_PRESENT | P_ACCESSED | P_DIRTY;
    pt[GDT_ADDR / PAGE] = GDT_ADDR | sup | P_WRITE | P_NX;
    pt[IDT_ADDR / PAGE] = IDT_ADDR | sup | P_NX;
    pt[HANDLERS / PAGE] = HANDLERS | sup;
    pt[EXIT_STUB / PAGE] = EXIT_STUB | sup | P_USER;
    for (uint64_t a = KSTACK_LO; a < KSTACK_TOP; a += PAGE) pt[a / PAGE] = a | sup | P_WRITE | P_NX;
    pt[DONE_PAGE / PAGE] = DONE_GPA | sup | P_USER | P_WRITE | P_NX;
}

static int set_sregs(Vm *v) {
    if (ioctl(v->vcpu, KVM_SET_SREGS, &v->sregs) < 0) return -1;
    struct kvm_vcpu_events ev;
    memset(&ev, 0, sizeof ev);
    return ioctl(v->vcpu, KVM_SET_VCPU_EVENTS, &ev);
}

static int init_vcpu(Vm *v) {
    if (ioctl(v->vcpu, KVM_SET_CPUID2, cpuid) < 0) return -1;
    struct kvm_sregs *s = &v->sregs;
    if (ioctl(v->vcpu, KVM_GET_SREGS, s) < 0) return -1;
    set_segment(&s->cs, 0x23, 0xb, 3, 1);
    set_segment(&s->ss, 0x1b, 0x3, 3, 0);
    set_segment(&s->ds, 0x1b, 0x3, 3, 0);
    set_segment(&s->es, 0x1b, 0x3, 3, 0);
    set_segment(&s->fs, 0x1b, 0x3, 3, 0);
    set_segment(&s->gs, 0x1b, 0x3, 3, 0);
    memset(&s->tr, 0, sizeof s->tr);
    s->tr.base = TSS_ADDR;
    s->tr.limit = 103;
    s->tr.selector = 0x28;
    s->tr.type = 0xb;  /* busy 64-bit TSS */
    s->tr.present = 1;
    memset(&s->ldt, 0, sizeof s->ldt);
    s->ldt.unusable = 1;
    s->gdt.base = GDT_ADDR;
    s->gdt.limit = 7 * 8 - 1;
    s->idt.base = IDT_ADDR;
    s->idt.limit = 32 * 16 - 1;
    s->cr3 = PML4_ADDR;
    s->cr4 = (1 << 5) | (1 << 9) | (1 << 10);  /* PAE, OSFXSR, OSXMMEXCPT */
    s->cr0 = 0x80000033;                        /* PG, NE, ET, MP, PE */
    s->efer = (1 << 8) | (1 << 10) | (1 << 11); /* LME, LMA, NXE; no SCE: syscall is #UD */
    int xsave = 0;
    for (uint32_t i = 0; i < cpuid->nent; i++)
        if (cpuid->entries[i].function == 1) xsave = !!(cpuid->entries[i].ecx & (1 << 26));
    if (xsave) s->cr4 |= 1 << 18;  /* OSXSAVE */
    if (set_sregs(v) < 0) return -1;
    if (xsave) {
        uint32_t lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        struct kvm_xcrs xcrs;
        memset(&xcrs, 0, sizeof xcrs);
        xcrs.nr_xcrs = 1;
        xcrs.xcrs[0].xcr = 0;
        xcrs.xcrs[0].value = (((uint64_t)hi << 32) | lo) & 0xe7;  /* x87 SSE AVX AVX-512 */
        if (ioctl(v->vcpu, KVM_SET_XCRS, &xcrs) < 0) return -1;
    }
    /* syscall and sysenter lead to stubs that report them (with EFER.SCE clear and no
     * SYSENTER_CS they fault on hardware; nested KVM may follow LSTAR regardless) */
    struct { struct kvm_msrs h; struct kvm_msr_entry e[6]; } msrs;
    memset(&msrs, 0, sizeof msrs);
    uint32_t index[6] = {0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0x174, 0x175};
    uint64_t value[6] = {0x08ULL << 32, HANDLERS + 8 * 32, HANDLERS + 8 * 32, 0x700,
                         0x08, KSTACK_TOP};
    for (int i = 0; i < 6; i++) {
        msrs.e[i].index = index[i];
        msrs.e[i].data = value[i];
    }
    msrs.h.nmsrs = 6;
    if (ioctl(v->vcpu, KVM_SET_MSRS, &msrs) != 6) return -1;
    struct { struct kvm_msrs h; struct kvm_msr_entry e[1]; } eip;
    memset(&eip, 0, sizeof eip);
    eip.h.nmsrs = 1;
    eip.e[0].index = 0x176;  /* SYSENTER_EIP */
    eip.e[0].data = HANDLERS + 8 * 33;
    if (ioctl(v->vcpu, KVM_SET_MSRS, &eip) != 1) return -1;
    struct kvm_fpu fpu;
    memset(&fpu, 0, sizeof fpu);
    fpu.fcw = 0x37f;
    fpu.mxcsr = 0x1f80;
    if (ioctl(v->vcpu, KVM_SET_FPU, &fpu) < 0) return -1;
    v->xsave = calloc(1, 1 << 16);
    v->has_xsave = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0 &&
                   ioctl(v->vcpu, KVM_GET_XSAVE, v->xsave) == 0;
    return 0;
}

static void vm_free(Vm *v) {
    if (v->run) munmap(v->run, run_size);
    if (v->vcpu >= 0) close(v->vcpu);
    if (v->vm >= 0) close(v->vm);
    if (v->sys) munmap(v->sys, SYS_SIZE);
    if (v->user) munmap(v->user, v->memory);
    free(v->xsave);
    free(v->bitmap);
    free(v->protect);
    free(v->hot);
    free(v->idle);
    v->protect = v->hot = NULL;
    v->idle = NULL;
    v->run = NULL; v->sys = v->user = NULL; v->xsave = NULL; v->bitmap = NULL;
    v->vcpu = v->vm = -1;
}

static int vm_init(Vm *v, PyObject *args, PyObject *kw) {
    unsigned long long memory;
    static char *names[] = {"memory", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "K", names, &memory)) return -1;
    v->vm = v->vcpu = -1;
    memory = (memory + HUGE - 1) & ~(HUGE - 1);
    if (memory < 3 * HUGE + STACK_SIZE || USER_BASE + memory > (4ULL << 30)) {
        PyErr_SetString(PyExc_ValueError, "memory must be at least 14 MiB and at most 3.75 GiB");
        return -1;
    }
    if (init_kvm() < 0) return -1;
    v->memory = memory;
    v->vm = ioctl(kvm_fd, KVM_CREATE_VM, 0);
    if (v->vm < 0) return os_error("KVM_CREATE_VM"), -1;
    v->sys = mmap(NULL, SYS_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    v->user = mmap(NULL, memory, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (v->sys == MAP_FAILED || v->user == MAP_FAILED) {
        v->sys = v->sys == MAP_FAILED ? NULL : v->sys;
        v->user = v->user == MAP_FAILED ? NULL : v->user;
        os_error("mmap");
        vm_free(v);
        return -1;
    }
    build_system(v);
    struct kvm_userspace_memory_region r0 = {0, 0, 0, SYS_SIZE, (uint64_t)(uintptr_t)v->sys};
    struct kvm_userspace_memory_region r1 = {1, KVM_MEM_LOG_DIRTY_PAGES, USER_BASE, memory,
                                             (uint64_t)(uintptr_t)v->user};
    const char *what = NULL;
    struct kvm_enable_cap cap;
    memset(&cap, 0, sizeof cap);
    cap.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2;
    cap.args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
    v->manual = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) > 0 &&
                ioctl(v->vm, KVM_ENABLE_CAP, &cap) == 0;
    v->bitmap = calloc(1, memory / PAGE / 8);
    if (v->manual) {
        v->protect = calloc(1, memory / PAGE / 8);
        v->hot = calloc(1, memory / PAGE / 8);
        v->idle = calloc(1, memory / PAGE);
        if (!v->protect || !v->hot || !v->idle) v->manual = 0;
    }
    if (v->bitmap && ioctl(v->vm, KVM_SET_USER_MEMORY_REGION, &r1) < 0) {
        free(v->bitmap);  /* no dirty log: reset drops everything writable */
        v->bitmap = NULL;
    }
    r1.flags = 0;
    if (ioctl(v->vm, KVM_SET_USER_MEMORY_REGION, &r0) < 0 ||
        (!v->bitmap && ioctl(v->vm, KVM_SET_USER_MEMORY_REGION, &r1) < 0))
        what = "KVM_SET_USER_MEMORY_REGION";
    else if ((v->vcpu = ioctl(v->vm, KVM_CREATE_VCPU, 0)) < 0) what = "KVM_CREATE_VCPU";
    else if ((v->run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0)) ==
             MAP_FAILED) {
        v->run = NULL;
        what = "mmap vcpu";
    } else if (init_vcpu(v) < 0) what = "setting up the vCPU";
    if (what) {
        os_error(what);
        vm_free(v);
        return -1;
    }
    v->stack_top = USER_BASE + memory;
    return 0;
}

static void vm_dealloc(Vm *v) {
    vm_free(v);
    Py_CLEAR(v->loaded);
    for (int i = 0; i < v->n_writable; i++) Py_CLEAR(v->writable[i].data);
    Py_TYPE(v)->tp_free((PyObject *)v);
}

/* Map a user range of whole 2 MiB pages in the PDs (flags), or unmap it (flags 0). */
static void map_huge(Vm *v, uint64_t lo, uint64_t hi, uint64_t flags) {
    uint64_t *pd = pte(v, PD_ADDR);
    for (uint64_t a = lo; a < hi; a += HUGE)
        pd[a / HUGE] = flags ? a | flags | P_HUGE | P_PRESENT | P_ACCESSED | P_DIRTY : 0;
}

/*
 * load(key, segments): map an image: segments are (vaddr, memsz, prot, data) with prot
 * PROT_READ|WRITE|EXEC bits, validated by the caller (page-aligned apart, inside
 * [USER_BASE, USER_BASE + 1 GiB)).  Returns (context address, bytes the context may use).
 */
static PyObject *vm_load(Vm *v, PyObject *args) {
    PyObject *key, *segs;
    if (!PyArg_ParseTuple(args, "OO!", &key, &PyTuple_Type, &segs)) return NULL;
    if (v->loaded && PyObject_RichCompareBool(v->loaded, key, Py_EQ) == 1) goto done;
    /* forget the old image: its pages and page tables */
    if (v->image_end > USER_BASE) {
        madvise(v->user, v->image_end - USER_BASE, MADV_DONTNEED);
        if (v->manual) {  /* nothing is dirty now (reset ran): protect every page again */
            uint64_t pages = v->memory / PAGE;
            memset(v->protect, 0xff, pages / 8);
            struct kvm_clear_dirty_log clear;
            memset(&clear, 0, sizeof clear);
            clear.slot = 1;
            clear.num_pages = (uint32_t)pages;
            clear.dirty_bitmap = v->protect;
            ioctl(v->vm, KVM_CLEAR_DIRTY_LOG, &clear);
            memset(v->protect, 0, pages / 8);
            memset(v->hot, 0, pages / 8);
            v->n_hot = 0;
        }
        uint64_t *pd = pte(v, PD_ADDR);
        for (uint64_t a = USER_BASE; a < v->stack_top; a += HUGE) pd[a / HUGE] = 0;
        memset(v->sys + PT_IMAGE, 0, SYS_SIZE - PT_IMAGE);
    }
    Py_CLEAR(v->loaded);
    v->image_end = USER_BASE;
    for (int i = 0; i < v->n_writable; i++) Py_CLEAR(v->writable[i].data);
    v->n_writable = 0;
    v->stale = 0;
    Py_ssize_t n = PyTuple_GET_SIZE(segs);
    if (n > 64) {
        PyErr_SetString(PyExc_ValueError, "more than 64 segments");
        return NULL;
    }
    uint64_t end = USER_BASE;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long vaddr, memsz;
        int prot;
        Py_buffer data;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(segs, i), "KKiy*", &vaddr, &memsz, &prot, &data))
            return NULL;
        uint64_t lo = vaddr & ~(PAGE - 1), hi = (vaddr + memsz + PAGE - 1) & ~(PAGE - 1);
        if (lo < USER_BASE || hi > v->stack_top || (uint64_t)data.len > memsz ||
            (hi - USER_BASE + HUGE - 1) / HUGE > MAX_IMAGE_PTS) {
            PyBuffer_Release(&data);
            PyErr_SetString(PyExc_ValueError, "a segment does not fit this VM");
            return NULL;
        }
        memcpy(v->user + (vaddr - USER_BASE), data.buf, data.len);
        uint64_t flags = P_PRESENT | P_USER | P_ACCESSED | P_DIRTY;
        if (prot & 2) flags |= P_WRITE;
        if (!(prot & 4)) flags |= P_NX;
        if (prot & 2) {
            PyObject *copy = PyBytes_FromStringAndSize(data.buf, data.len);
            if (!copy) {
                PyBuffer_Release(&data);
                return NULL;
            }
            v->writable[v->n_writable].lo = lo;
            v->writable[v->n_writable].hi = hi;
            v->writable[v->n_writable].vaddr = vaddr;
            v->writable[v->n_writable].data = copy;
            v->n_writable++;
        }
        PyBuffer_Release(&data);
        for (uint64_t a = lo; a < hi; a += PAGE) {
            uint64_t slot = (a - USER_BASE) / HUGE, pt = PT_IMAGE + slot * PAGE;
            pte(v, PD_ADDR)[a / HUGE] = pt | P_PRESENT | P_WRITE | P_USER | P_ACCESSED;
            pte(v, pt)[(a / PAGE) % 512] = a | flags;
        }
        if (hi > end) end = hi;
    }
    v->image_end = end;
    /* the context from the next 2 MiB page on, after a guard page of 2 MiB; the stack at the
     * top, below a guard of 2 MiB */
    v->ctx_base = ((end + HUGE - 1) & ~(HUGE - 1)) + HUGE;
    v->ctx_end = v->stack_top - STACK_SIZE - HUGE;
    if (v->ctx_base + HUGE > v->ctx_end) {
        PyErr_SetString(PyExc_ValueError, "the image leaves no room for a context");
        v->image_end = USER_BASE;  /* (its pages are dropped by the next load) */
        return NULL;
    }
    map_huge(v, v->ctx_base, v->ctx_end, P_USER | P_WRITE | P_NX);
    map_huge(v, v->stack_top - STACK_SIZE, v->stack_top, P_USER | P_WRITE | P_NX);
    Py_INCREF(key);
    v->loaded = key;
done:
    if (v->stale) {  /* the writable segments as the image has them */
        for (int i = 0; i < v->n_writable; i++)
            memcpy(v->user + (v->writable[i].vaddr - USER_BASE),
                   PyBytes_AS_STRING(v->writable[i].data), PyBytes_GET_SIZE(v->writable[i].data));
        v->stale = 0;
    }
    return Py_BuildValue("KK", (unsigned long long)v->ctx_base,
                         (unsigned long long)(v->ctx_end - v->ctx_base));
}

static int arm(double seconds) {
    if (!has_timer) {
        struct sigevent ev;
        memset(&ev, 0, sizeof ev);
        ev.sigev_notify = SIGEV_THREAD_ID;
        ev.sigev_signo = timer_signal;
        ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
        if (timer_create(CLOCK_MONOTONIC, &ev, &thread_timer) < 0) return -1;
        has_timer = 1;
        pthread_setspecific(timer_key, (void *)1);
    }
    struct itimerspec t;
    memset(&t, 0, sizeof t);
    if (seconds > 0) {
        t.it_value.tv_sec = (time_t)seconds;
        t.it_value.tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9);
        if (t.it_value.tv_sec == 0 && t.it_value.tv_nsec == 0) t.it_value.tv_nsec = 1;
        t.it_interval.tv_nsec = 10000000;  /* again every 10 ms should one be missed */
    }
    return timer_settime(thread_timer, 0, &t, NULL);
}

/*
 * run(entry, timeout) -> (outcome, a, b, c, d): runs the loaded image once on the context
 * at its place.  DONE: a = return value.  FAULT: a = vector, b = error code, c = rip,
 * d = cr2.  IO: a = port, b = 1 for out, c = size, d = rip.  TIMEOUT.  SHUTDOWN (triple
 * fault).  OTHER: a = exit reason, b = detail.
 */
static PyObject *vm_run(Vm *v, PyObject *args) {
    unsigned long long entry;
    double timeout;
    if (!PyArg_ParseTuple(args, "Kd", &entry, &timeout)) return NULL;
    if (!v->loaded) {
        PyErr_SetString(PyExc_ValueError, "no image loaded");
        return NULL;
    }
    struct kvm_regs regs;
    memset(&regs, 0, sizeof regs);
    regs.rip = entry;
    regs.rsp = v->stack_top - 8;
    regs.rdi = v->ctx_base;
    regs.rflags = 0x2;  /* IOPL 0: port I/O, cli and sti are #GP at CPL3 */
    *(uint64_t *)(v->user + (regs.rsp - USER_BASE)) = EXIT_STUB;
    int outcome = OTHER;
    unsigned long long a = 0, b = 0, c = 0, d = 0;
    int err = 0;
    const char *what = NULL;
    Py_BEGIN_ALLOW_THREADS
    if (v->broken && set_sregs(v) < 0) what = "KVM_SET_SREGS";
    else if (ioctl(v->vcpu, KVM_SET_REGS, &regs) < 0) what = "KVM_SET_REGS";
    else if (v->has_xsave && ioctl(v->vcpu, KVM_SET_XSAVE, v->xsave) < 0) what = "KVM_SET_XSAVE";
    else if (arm(timeout) < 0) what = "timer_settime";
    if (!what) {
        v->broken = 1;
        timed_out = 0;
        v->run->immediate_exit = 0;
        running = v->run;
        for (;;) {
            int r = ioctl(v->vcpu, KVM_RUN, 0);
            if (r < 0 && (errno == EINTR || errno == EAGAIN)) {
                if (timed_out) {
                    outcome = TIMEOUT;
                    break;
                }
                v->run->immediate_exit = 0;
                continue;
            }
            if (r < 0) {
                err = errno;
                what = "KVM_RUN";
                break;
            }
            struct kvm_run *k = v->run;
            if (k->exit_reason == KVM_EXIT_IO) {
                uint8_t *data = (uint8_t *)k + k->io.data_offset;
                if (k->io.port == PORT_FAULT && k->io.direction == KVM_EXIT_IO_OUT &&
                           k->io.size == 1) {
                    outcome = FAULT;
                    a = data[0];
                } else {
                    outcome = IO;
                    a = k->io.port;
                    b = k->io.direction == KVM_EXIT_IO_OUT;
                    c = k->io.size;
                }
            } else if (k->exit_reason == KVM_EXIT_MMIO && k->mmio.phys_addr == DONE_GPA &&
                       k->mmio.is_write && k->mmio.len == 4) {
                outcome = DONE;
                a = (unsigned long long)(int64_t)*(int32_t *)k->mmio.data;
                v->broken = 0;
            } else if (k->exit_reason == KVM_EXIT_SHUTDOWN) {
                outcome = SHUTDOWN;
            } else if (k->exit_reason == KVM_EXIT_INTR) {
                if (timed_out) {
                    outcome = TIMEOUT;
                    break;
                }
                continue;
            } else {
                outcome = OTHER;
                a = k->exit_reason;
                if (k->exit_reason == KVM_EXIT_MMIO) b = k->mmio.phys_addr;
                else if (k->exit_reason == KVM_EXIT_FAIL_ENTRY)
                    b = k->fail_entry.hardware_entry_failure_reason;
                else if (k->exit_reason == KVM_EXIT_INTERNAL_ERROR) b = k->internal.suberror;
            }
            break;
        }
        running = NULL;
        if (!err) err = errno;
        arm(0);
        if (outcome == FAULT || outcome == IO) {
            struct kvm_regs after;
            struct kvm_sregs sregs;
            if (ioctl(v->vcpu, KVM_GET_REGS, &after) == 0 &&
                ioctl(v->vcpu, KVM_GET_SREGS, &sregs) == 0) {
                if (outcome == IO) {
                    d = after.rip;
                } else if (a == 32) {
                    c = after.rcx - 2;  /* syscall left the return address in rcx */
                } else if (a < 32) {
                    /* the exception frame on the kernel stack: [error code,] rip, cs, ... */
                    int has_code = a == 8 || (a >= 10 && a <= 14) || a == 17 || a == 21 ||
                                   a == 29 || a == 30;
                    uint64_t sp = after.rsp;
                    if (sp >= KSTACK_LO && sp + 16 <= KSTACK_TOP) {
                        uint64_t *frame = (uint64_t *)(v->sys + sp);
                        b = has_code ? frame[0] : 0;
                        c = frame[has_code ? 1 : 0];
                    }
                    d = sregs.cr2;
                }
            }
        }
    }
    Py_END_ALLOW_THREADS
    if (what) {
        errno = err;
        return os_error(what);
    }
    return Py_BuildValue("iKKKK", outcome, a, b, c, d);
}

/* The page at guest address a as the image has it: zeros, and any writable segment's bytes. */
static void restore_page(Vm *v, uint64_t a) {
    memset(v->user + (a - USER_BASE), 0, PAGE);
    for (int i = 0; i < v->n_writable; i++) {
        uint64_t lo = v->writable[i].vaddr, n = (uint64_t)PyBytes_GET_SIZE(v->writable[i].data);
        uint64_t from = a > lo ? a : lo, to = a + PAGE < lo + n ? a + PAGE : lo + n;
        if (from < to)
            memcpy(v->user + (from - USER_BASE),
                   PyBytes_AS_STRING(v->writable[i].data) + (from - lo), to - from);
    }
}

static int in_image(Vm *v, uint64_t lo, uint64_t hi) {
    for (int i = 0; i < v->n_writable; i++)
        if (lo < v->writable[i].hi && v->writable[i].lo < hi) return 1;
    return 0;
}

/* Dirty runs up to this many pages are zeroed in place (they stay mapped, in the host and in
 * KVM); longer ones are dropped (MADV_DONTNEED), giving their memory back. */
#define ZERO_RUN 512
/* Pages a VM leaves writable (hot): on nested KVM the write fault that logs a page costs
 * ~25 us, zeroing it ~0.3 us, so pages written again and again stay writable and are
 * restored at every reset; one found unwritten for HOT_IDLE resets is protected again. */
#define HOT_MAX 512
#define HOT_IDLE 8

static int page_is_zero(const uint8_t *p) {
    const uint64_t *w = (const uint64_t *)p;
    uint64_t any = 0;
    for (size_t i = 0; i < PAGE / 8; i++) any |= w[i];
    return any == 0;
}

/* Restore one dirty page at guest address a (page number p); with a manual log, decide
 * whether it stays writable (hot) or is write-protected again. */
static void restore_dirty(Vm *v, uint64_t p, uint64_t a) {
    uint8_t *host = v->user + (a - USER_BASE);
    int image = in_image(v, a, a + PAGE);
    if (!v->manual) {
        if (image) restore_page(v, a);
        else memset(host, 0, PAGE);
        return;
    }
    uint64_t bit = 1ULL << (p % 64);
    if (v->hot[p / 64] & bit) {
        if (image) {
            restore_page(v, a);
        } else if (!page_is_zero(host)) {
            memset(host, 0, PAGE);
            v->idle[p] = 0;
        } else if (++v->idle[p] >= HOT_IDLE) {  /* unwritten for a while: protect it */
            v->hot[p / 64] &= ~bit;
            v->n_hot--;
            v->protect[p / 64] |= bit;
        }
        return;
    }
    if (image) restore_page(v, a);
    else memset(host, 0, PAGE);
    if (v->n_hot < HOT_MAX) {
        v->hot[p / 64] |= bit;
        v->n_hot++;
        v->idle[p] = 0;
    } else {
        v->protect[p / 64] |= bit;
    }
}

/*
 * reset(written): every page the guest could have written reads as it did before the run:
 * the image's data as the image has it, everything else zeros.  `written`: bytes of the
 * context the host wrote (the inputs), which KVM's dirty log does not see.  With a dirty
 * log, only the pages the guest wrote are restored; without, everything writable is dropped.
 */
static PyObject *vm_reset(Vm *v, PyObject *args) {
    unsigned long long written = 0;
    if (!PyArg_ParseTuple(args, "|K", &written)) return NULL;
    if (!v->loaded) Py_RETURN_NONE;
    int logged = 0;
    Py_BEGIN_ALLOW_THREADS
    struct kvm_dirty_log log;
    memset(&log, 0, sizeof log);
    log.slot = 1;
    log.dirty_bitmap = v->bitmap;
    if (v->bitmap && ioctl(v->vm, KVM_GET_DIRTY_LOG, &log) == 0) {
        logged = 1;
        if (written > v->ctx_end - v->ctx_base) written = v->ctx_end - v->ctx_base;
        memset(v->user + (v->ctx_base - USER_BASE), 0, written);
        uint64_t pages = v->memory / PAGE, run = 0;
        for (uint64_t p = 0; p <= pages; p++) {
            int dirty = p < pages && (v->bitmap[p / 64] >> (p % 64) & 1);
            if (dirty) {
                run++;
                continue;
            }
            if (!run) {
                if (p % 64 == 0 && p + 64 <= pages && v->bitmap[p / 64] == 0) p += 63;
                continue;
            }
            uint64_t lo = USER_BASE + (p - run) * PAGE, hi = USER_BASE + p * PAGE;
            if (run <= ZERO_RUN || in_image(v, lo, hi)) {
                for (uint64_t q = p - run, a = lo; a < hi; q++, a += PAGE) restore_dirty(v, q, a);
            } else {
                madvise(v->user + (lo - USER_BASE), hi - lo, MADV_DONTNEED);
                for (uint64_t q = p - run; q < p; q++) {
                    uint64_t bit = 1ULL << (q % 64);
                    if (v->manual && (v->hot[q / 64] & bit)) {
                        v->hot[q / 64] &= ~bit;
                        v->n_hot--;
                    }
                    if (v->manual) v->protect[q / 64] |= bit;
                }
            }
            run = 0;
        }
        if (v->manual) {  /* write-protect again what is not left writable */
            struct kvm_clear_dirty_log clear;
            memset(&clear, 0, sizeof clear);
            clear.slot = 1;
            clear.first_page = 0;
            clear.num_pages = (uint32_t)pages;
            clear.dirty_bitmap = v->protect;
            int any = 0;
            for (uint64_t w = 0; w < pages / 64 && !any; w++) any = v->protect[w] != 0;
            /* should this fail, the pages stay logged as dirty: restored at every reset */
            if (any) ioctl(v->vm, KVM_CLEAR_DIRTY_LOG, &clear);
            memset(v->protect, 0, pages / 8);
        }
    } else {
        uint64_t lo = v->ctx_base - HUGE;  /* the guard page: nothing there */
        madvise(v->user + (lo - USER_BASE), v->stack_top - lo, MADV_DONTNEED);
    }
    Py_END_ALLOW_THREADS
    if (!logged) {  /* the image's writable pages: the next load copies their bytes again */
        for (int i = 0; i < v->n_writable; i++)
            madvise(v->user + (v->writable[i].lo - USER_BASE),
                    v->writable[i].hi - v->writable[i].lo, MADV_DONTNEED);
        v->stale = v->n_writable > 0;
    }
    Py_RETURN_NONE;
}

static PyObject *vm_logged(Vm *v, PyObject *unused) {
    (void)unused;
    return PyBool_FromLong(v->bitmap != NULL);
}

/* read(address, size) -> bytes of guest memory (for messages: the faulting instruction). */
static PyObject *vm_read(Vm *v, PyObject *args) {
    unsigned long long addr, size;
    if (!PyArg_ParseTuple(args, "KK", &addr, &size)) return NULL;
    if (addr >= USER_BASE && size <= v->memory && addr - USER_BASE <= v->memory - size)
        return PyBytes_FromStringAndSize((char *)v->user + (addr - USER_BASE), size);
    return PyBytes_FromStringAndSize(NULL, 0);
}

/* stack_guard(address) -> whether address lies in the guard below the stack. */
static PyObject *vm_stack_guard(Vm *v, PyObject *arg) {
    unsigned long long addr = PyLong_AsUnsignedLongLongMask(arg);
    if (PyErr_Occurred()) return NULL;
    uint64_t lo = v->stack_top - STACK_SIZE - HUGE;
    return PyBool_FromLong(addr >= lo && addr < lo + HUGE);
}

static int vm_getbuffer(Vm *v, Py_buffer *view, int flags) {
    if (!v->loaded || !v->user || v->closing) {
        PyErr_SetString(PyExc_BufferError, "no image loaded");
        return -1;
    }
    int r = PyBuffer_FillInfo(view, (PyObject *)v, v->user + (v->ctx_base - USER_BASE),
                              (Py_ssize_t)(v->ctx_end - v->ctx_base), 0, flags);
    if (r == 0) v->exports++;
    return r;
}

static void vm_releasebuffer(Vm *v, Py_buffer *view) {
    (void)view;
    if (--v->exports == 0 && v->closing) vm_free(v);
}

static PyBufferProcs vm_buffer = {(getbufferproc)vm_getbuffer, (releasebufferproc)vm_releasebuffer};

static PyObject *vm_close(Vm *v, PyObject *unused) {
    (void)unused;
    if (v->exports) v->closing = 1;  /* freed when the last buffer is released */
    else vm_free(v);
    Py_CLEAR(v->loaded);
    Py_RETURN_NONE;
}

static PyObject *vm_resident(Vm *v, PyObject *unused) {
    (void)unused;
    size_t pages = (v->memory + SYS_SIZE) / PAGE, n = 0;
    unsigned char *vec = malloc(pages);
    if (!vec) return PyErr_NoMemory();
    if (mincore(v->sys, SYS_SIZE, vec) == 0)
        for (size_t i = 0; i < SYS_SIZE / PAGE; i++) n += vec[i] & 1;
    if (mincore(v->user, v->memory, vec) == 0)
        for (size_t i = 0; i < v->memory / PAGE; i++) n += vec[i] & 1;
    free(vec);
    return PyLong_FromSize_t(n * PAGE);
}

static PyMethodDef vm_methods[] = {
    {"load", (PyCFunction)vm_load, METH_VARARGS,
     "load(key, segments) -> (context address, room): map an image (kept while key is)."},
    {"run", (PyCFunction)vm_run, METH_VARARGS,
     "run(entry, timeout) -> (outcome, a, b, c, d): run the loaded image once."},
    {"reset", (PyCFunction)vm_reset, METH_VARARGS,
     "reset(written): forget everything the last run and the host's `written` bytes of "
     "inputs wrote."},
    {"logged", (PyCFunction)vm_logged, METH_NOARGS,
     "logged() -> whether KVM logs the pages the guest writes (reset restores only those)."},
    {"read", (PyCFunction)vm_read, METH_VARARGS, "read(address, size) -> bytes of guest memory."},
    {"resident", (PyCFunction)vm_resident, METH_NOARGS,
     "resident() -> bytes of the VM's memory resident now."},
    {"stack_guard", (PyCFunction)vm_stack_guard, METH_O,
     "stack_guard(address) -> whether it lies in the guard page below the stack."},
    {"close", (PyCFunction)vm_close, METH_NOARGS, "close(): release the VM."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject VmType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_kvmc.Vm",
    .tp_basicsize = sizeof(Vm),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Vm(memory): a KVM virtual machine for native functions; its buffer is the "
              "context's room.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)vm_init,
    .tp_dealloc = (destructor)vm_dealloc,
    .tp_methods = vm_methods,
    .tp_as_buffer = &vm_buffer,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kvmc",
    "KVM virtual machines for native functions (the kvm engine).", -1, NULL,
};

PyMODINIT_FUNC PyInit__kvmc(void) {
    if (PyType_Ready(&VmType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&VmType);
    PyModule_AddObject(m, "Vm", (PyObject *)&VmType);
    PyModule_AddIntConstant(m, "DONE", DONE);
    PyModule_AddIntConstant(m, "FAULT", FAULT);
    PyModule_AddIntConstant(m, "IO", IO);
    PyModule_AddIntConstant(m, "TIMEOUT", TIMEOUT);
    PyModule_AddIntConstant(m, "SHUTDOWN", SHUTDOWN);
    PyModule_AddIntConstant(m, "OTHER", OTHER);
    PyModule_AddIntConstant(m, "USER_BASE", (long long)USER_BASE);
    PyModule_AddIntConstant(m, "SYSCALL_STUB", (long long)(HANDLERS + 8 * 32));
    PyModule_AddIntConstant(m, "SYSENTER_STUB", (long long)(HANDLERS + 8 * 33));
    PyModule_AddIntConstant(m, "STACK_SIZE", (long long)STACK_SIZE);
    return m;
}
