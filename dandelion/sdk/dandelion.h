/*
 * dandelion.h — the C SDK of Dandelion native compute functions.
 *
 * A native function is a static, freestanding x86-64 program with no C library and no
 * system calls.  Write
 *
 *     #include <dandelion.h>
 *
 *     int dandelion_main(void) {
 *         dd_item in;
 *         if (dd_input_item(0, 0, &in) != 0) return 1;     // first item of first input
 *         uint8_t *out = dd_alloc(in.size);                 // room in the context
 *         if (!out) return 2;
 *         for (uint64_t i = 0; i < in.size; i++) out[i] = in.data[i] ^ 0x20;
 *         return dd_add_output(0, out, in.size, in.key, 0); // item of the first result
 *     }
 *
 * and build it with `dandelion build func.c -o func.elf`.  The process engine maps the ELF
 * into a fresh sandbox and calls the entry point under seccomp strict mode: the function can
 * only compute on its context (inputs, its heap, outputs) and return.  A non-zero return
 * value fails the invocation.
 *
 * Items are bytes encoded as `dandelion.codec` says: int = 8-byte little-endian int64,
 * float = little-endian double, ndarray = .npy (see dd_npy_data / dd_npy_alloc).
 *
 * The context layout is documented in docs/isolation.rst and backends/engines/process/layout.py.
 */
#ifndef DANDELION_H
#define DANDELION_H

#include <stddef.h>
#include <stdint.h>

/* ---- context layout (little-endian, offsets from the context's start) ---- */
typedef struct {
    char magic[8];
    uint64_t capacity;
    uint32_t n_in_sets, n_in_items;
    uint64_t in_sets, in_items;
    uint32_t n_out_sets, n_out_items;
    uint64_t out_sets, heap_cur, heap_end;
} dd_header;

typedef struct {
    uint64_t name_off;
    uint32_t name_len, element, first_item, n_items;
    uint64_t reserved;
} dd_set_desc;

typedef struct {
    uint64_t data_off, data_len;
    int64_t key;
    uint64_t name_off;
    uint32_t name_len, element, set, reserved;
} dd_item_desc;

/* One item as a function sees it. */
typedef struct {
    const uint8_t *data;  /* its bytes, inside the context */
    uint64_t size;
    int64_t key;
    const char *name;     /* not NUL-terminated */
    uint32_t name_len;
} dd_item;

extern uint8_t *dd__context;

static inline dd_header *dd__hdr(void) { return (dd_header *)dd__context; }

/* Number of input sets (one per parameter, in declaration order). */
static inline uint32_t dd_input_sets(void) { return dd__hdr()->n_in_sets; }

/* Number of items in input set `set` (0 if there is no such set). */
static inline uint32_t dd_input_count(uint32_t set) {
    if (set >= dd__hdr()->n_in_sets) return 0;
    return ((dd_set_desc *)(dd__context + dd__hdr()->in_sets))[set].n_items;
}

/* Item `index` of input set `set` into *item; 0 on success, -1 if out of range. */
static inline int dd_input_item(uint32_t set, uint32_t index, dd_item *item) {
    if (index >= dd_input_count(set)) return -1;
    dd_set_desc *s = (dd_set_desc *)(dd__context + dd__hdr()->in_sets) + set;
    dd_item_desc *d = (dd_item_desc *)(dd__context + dd__hdr()->in_items) + s->first_item + index;
    item->data = dd__context + d->data_off;
    item->size = d->data_len;
    item->key = d->key;
    item->name = (const char *)(dd__context + d->name_off);
    item->name_len = d->name_len;
    return 0;
}

/* Number of output sets (one per declared result). */
static inline uint32_t dd_output_sets(void) { return dd__hdr()->n_out_sets; }

/* `size` bytes from the context's heap, 16-byte aligned; NULL when the context is full. */
static inline void *dd_alloc(uint64_t size) {
    dd_header *h = dd__hdr();
    uint64_t start = (h->heap_cur + 15) & ~(uint64_t)15;
    if (start > h->heap_end || size > h->heap_end - start) return 0;
    h->heap_cur = start + size;
    return dd__context + start;
}

static inline void dd__copy(uint8_t *dst, const uint8_t *src, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) dst[i] = src[i];
}

/*
 * Add an item to output set `set` (0-based result index).  `data` from dd_alloc is used in
 * place; anything else is copied into the heap.  `name` may be NULL.  0 on success, -1 if
 * `set` is out of range, -2 when the context is full.
 */
static inline int dd_add_output(uint32_t set, const void *data, uint64_t size, int64_t key,
                                const char *name) {
    dd_header *h = dd__hdr();
    if (set >= h->n_out_sets) return -1;
    const uint8_t *p = (const uint8_t *)data;
    uint64_t off;
    if (p >= dd__context + h->in_items && p + size <= dd__context + h->heap_cur &&
        p >= dd__context) {
        off = (uint64_t)(p - dd__context);
    } else {
        uint8_t *copy = (uint8_t *)dd_alloc(size);
        if (!copy) return -2;
        dd__copy(copy, p, size);
        off = (uint64_t)(copy - dd__context);
    }
    uint64_t name_len = 0, name_off = 0;
    if (name) {
        while (name[name_len]) name_len++;
        uint8_t *n = (uint8_t *)dd_alloc(name_len);
        if (!n) return -2;
        dd__copy(n, (const uint8_t *)name, name_len);
        name_off = (uint64_t)(n - dd__context);
    }
    if (h->heap_end - h->heap_cur < sizeof(dd_item_desc)) return -2;
    h->heap_end -= sizeof(dd_item_desc);
    dd_item_desc *d = (dd_item_desc *)(dd__context + h->heap_end);
    d->data_off = off;
    d->data_len = size;
    d->key = key;
    d->name_off = name_off;
    d->name_len = (uint32_t)name_len;
    d->element = 0; /* as declared */
    d->set = set;
    d->reserved = 0;
    h->n_out_items++;
    return 0;
}

/* ---- .npy helpers (ndarray items) ---- */

/* The array data of a .npy item (after its header); NULL if malformed. */
static inline const uint8_t *dd_npy_data(const dd_item *item, uint64_t *size) {
    if (item->size < 10 || item->data[0] != 0x93 || item->data[1] != 'N') return 0;
    uint64_t hlen, start;
    if (item->data[6] == 1) {
        hlen = item->data[8] | ((uint64_t)item->data[9] << 8);
        start = 10;
    } else {
        if (item->size < 12) return 0;
        hlen = item->data[8] | ((uint64_t)item->data[9] << 8) | ((uint64_t)item->data[10] << 16) |
               ((uint64_t)item->data[11] << 24);
        start = 12;
    }
    if (start + hlen > item->size) return 0;
    if (size) *size = item->size - start - hlen;
    return item->data + start + hlen;
}

static inline uint64_t dd__utoa(char *out, uint64_t v) {
    char tmp[24];
    uint64_t n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (uint64_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

/*
 * Allocate a .npy item for a C-ordered array of dtype `descr` (e.g. "<i8", "<f8") and the
 * given shape; *item_size receives the whole item's size and the returned pointer is where
 * the array data goes.  Pass `*item` to dd_add_output(set, item, item_size, key, name).
 */
static inline uint8_t *dd_npy_alloc(const char *descr, const uint64_t *shape, int ndim,
                                    uint64_t itemsize, uint8_t **item, uint64_t *item_size) {
    char text[256];
    uint64_t n = 0;
    const char *a = "{'descr': '";
    while (*a) text[n++] = *a++;
    while (*descr && n < 32) text[n++] = *descr++;
    a = "', 'fortran_order': False, 'shape': (";
    while (*a) text[n++] = *a++;
    uint64_t count = 1;
    for (int i = 0; i < ndim && n < 200; i++) {
        n += dd__utoa(text + n, shape[i]);
        text[n++] = ',';
        if (i + 1 < ndim) text[n++] = ' ';
        count *= shape[i];
    }
    a = "), }";
    while (*a) text[n++] = *a++;
    uint64_t total = 10 + n + 1;
    uint64_t pad = (64 - total % 64) % 64;
    uint64_t hlen = n + pad + 1;
    uint64_t size = 10 + hlen + count * itemsize;
    uint8_t *buf = (uint8_t *)dd_alloc(size);
    if (!buf) return 0;
    const uint8_t magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    dd__copy(buf, magic, 8);
    buf[8] = (uint8_t)(hlen & 0xff);
    buf[9] = (uint8_t)(hlen >> 8);
    dd__copy(buf + 10, (const uint8_t *)text, n);
    for (uint64_t i = 0; i < pad; i++) buf[10 + n + i] = ' ';
    buf[10 + n + pad] = '\n';
    *item = buf;
    *item_size = size;
    return buf + 10 + hlen;
}

/* ---- entry point (define DANDELION_NO_ENTRY in all but one file of a function) ---- */
int dandelion_main(void);

#ifndef DANDELION_NO_ENTRY
uint8_t *dd__context;

/* Called by the sandbox with the context's address. */
int dandelion_entry(void *context) {
    dd__context = (uint8_t *)context;
    return dandelion_main();
}

/* The compiler may emit calls to these even in freestanding code. */
__attribute__((weak)) void *memcpy(void *d, const void *s, size_t n) {
    uint8_t *dp = (uint8_t *)d;
    const uint8_t *sp = (const uint8_t *)s;
    while (n--) *dp++ = *sp++;
    return d;
}
__attribute__((weak)) void *memmove(void *d, const void *s, size_t n) {
    uint8_t *dp = (uint8_t *)d;
    const uint8_t *sp = (const uint8_t *)s;
    if (dp < sp) {
        while (n--) *dp++ = *sp++;
    } else {
        while (n--) dp[n] = sp[n];
    }
    return d;
}
__attribute__((weak)) void *memset(void *d, int c, size_t n) {
    uint8_t *dp = (uint8_t *)d;
    while (n--) *dp++ = (uint8_t)c;
    return d;
}
__attribute__((weak)) int memcmp(const void *a, const void *b, size_t n) {
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
    for (; n; n--, x++, y++)
        if (*x != *y) return *x - *y;
    return 0;
}
#endif

#endif /* DANDELION_H */
