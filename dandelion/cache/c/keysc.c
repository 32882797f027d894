/*
 * _keysc: the cache keys of many function instances in one call (dandelion/cache/key.py),
 * and, for instances of one int item, the tails of their keys and their entries
 * (dandelion/cache/run.py, entry.py).
 *
 * The key of an instance is H(prefix || tail): the prefix is its application's (key.prefix),
 * the tail encodes the content ids of the instance's inputs (key.tail), H is the hash of
 * dandelion.cache.hashing (BLAKE3, or BLAKE2b where the blake3 package is not installed).
 * From Python, a hash object per key costs more than the hash itself on the short messages
 * of a fan-out; here one call makes the storage keys of all instances of an application,
 * "<namespace>/<hex digest>", with the same 32-byte digests as hashlib.blake2b(...,
 * digest_size=32) and blake3.blake3(...).digest().  BLAKE2b is written from RFC 7693
 * (unkeyed, 32-byte digests only), BLAKE3 from its specification (the hash mode, 32-byte
 * digests only; the reference implementation's structure, without SIMD).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#define BLOCK 128
#define OUT 32

static const uint64_t IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL,
    0xa54ff53a5f1d36f1ULL, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL,
    0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

/* RFC 7693 section 2.7: the message word permutation of each of the 12 rounds. */
static const uint8_t SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t rotr(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

#define G(a, b, c, d, x, y)                \
    do {                                   \
        v[a] = v[a] + v[b] + (x);          \
        v[d] = rotr(v[d] ^ v[a], 32);      \
        v[c] = v[c] + v[d];                \
        v[b] = rotr(v[b] ^ v[c], 24);      \
        v[a] = v[a] + v[b] + (y);          \
        v[d] = rotr(v[d] ^ v[a], 16);      \
        v[c] = v[c] + v[d];                \
        v[b] = rotr(v[b] ^ v[c], 63);      \
    } while (0)

/* One round, written out (r constant: the compiler keeps the words in registers). */
#define ROUND(r)                                                                \
    do {                                                                        \
        const uint8_t *s = SIGMA[r];                                            \
        G(0, 4, 8, 12, m[s[0]], m[s[1]]);                                       \
        G(1, 5, 9, 13, m[s[2]], m[s[3]]);                                       \
        G(2, 6, 10, 14, m[s[4]], m[s[5]]);                                      \
        G(3, 7, 11, 15, m[s[6]], m[s[7]]);                                      \
        G(0, 5, 10, 15, m[s[8]], m[s[9]]);                                      \
        G(1, 6, 11, 12, m[s[10]], m[s[11]]);                                    \
        G(2, 7, 8, 13, m[s[12]], m[s[13]]);                                     \
        G(3, 4, 9, 14, m[s[14]], m[s[15]]);                                     \
    } while (0)

/* RFC 7693 section 3.2: compress one block into h; t bytes hashed so far, last block? */
static void compress(uint64_t h[8], const uint8_t block[BLOCK], uint64_t t, int last) {
    uint64_t v[16], m[16];
    for (int i = 0; i < 16; i++)
        m[i] = load64(block + 8 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = IV[i];
    }
    v[12] ^= t; /* messages here are far shorter than 2**64 bytes: the high word stays 0 */
    if (last)
        v[14] = ~v[14];
    ROUND(0);
    ROUND(1);
    ROUND(2);
    ROUND(3);
    ROUND(4);
    ROUND(5);
    ROUND(6);
    ROUND(7);
    ROUND(8);
    ROUND(9);
    ROUND(10);
    ROUND(11);
    for (int i = 0; i < 8; i++)
        h[i] ^= v[i] ^ v[i + 8];
}

/* BLAKE2b-256 of a || b (unkeyed). */
static void blake2b_256(const uint8_t *a, size_t na, const uint8_t *b, size_t nb,
                        uint8_t out[OUT]) {
    uint64_t h[8];
    memcpy(h, IV, sizeof h);
    h[0] ^= 0x01010000ULL ^ OUT; /* parameter block: fanout 1, depth 1, no key */
    uint8_t block[BLOCK];
    size_t fill = 0;
    uint64_t t = 0;
    const uint8_t *parts[2] = {a, b};
    size_t sizes[2] = {na, nb};
    for (int k = 0; k < 2; k++) {
        const uint8_t *p = parts[k];
        size_t n = sizes[k];
        while (n > 0) {
            if (fill == BLOCK) { /* full, and more follows: not the last block */
                t += BLOCK;
                compress(h, block, t, 0);
                fill = 0;
            }
            size_t take = BLOCK - fill < n ? BLOCK - fill : n;
            memcpy(block + fill, p, take);
            fill += take;
            p += take;
            n -= take;
        }
    }
    memset(block + fill, 0, BLOCK - fill);
    compress(h, block, t + fill, 1);
    for (int i = 0; i < OUT; i++)
        out[i] = (uint8_t)(h[i / 8] >> (8 * (i % 8)));
}

/* ---- BLAKE3 (https://github.com/BLAKE3-team/BLAKE3-specs, the hash mode) ---------------- */

#define CHUNK 1024
#define BLOCK3 64
enum { CHUNK_START = 1, CHUNK_END = 2, PARENT = 4, ROOT = 8 };

static const uint32_t IV3[8] = {
    0x6A09E667UL, 0xBB67AE85UL, 0x3C6EF372UL, 0xA54FF53AUL,
    0x510E527FUL, 0x9B05688CUL, 0x1F83D9ABUL, 0x5BE0CD19UL,
};

/* The message words each of the 7 rounds takes, in order: round r + 1 takes those of round r
 * permuted by (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8). */
static const uint8_t SCHEDULE[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

static inline uint32_t rotr32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static inline uint32_t load32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#define G3(a, b, c, d, x, y)               \
    do {                                   \
        s[a] = s[a] + s[b] + (x);          \
        s[d] = rotr32(s[d] ^ s[a], 16);    \
        s[c] = s[c] + s[d];                \
        s[b] = rotr32(s[b] ^ s[c], 12);    \
        s[a] = s[a] + s[b] + (y);          \
        s[d] = rotr32(s[d] ^ s[a], 8);     \
        s[c] = s[c] + s[d];                \
        s[b] = rotr32(s[b] ^ s[c], 7);     \
    } while (0)

/* One round, written out (r constant: the compiler keeps the words in registers). */
#define ROUND3(r)                                                               \
    do {                                                                        \
        const uint8_t *w = SCHEDULE[r];                                         \
        G3(0, 4, 8, 12, m[w[0]], m[w[1]]);                                      \
        G3(1, 5, 9, 13, m[w[2]], m[w[3]]);                                      \
        G3(2, 6, 10, 14, m[w[4]], m[w[5]]);                                     \
        G3(3, 7, 11, 15, m[w[6]], m[w[7]]);                                     \
        G3(0, 5, 10, 15, m[w[8]], m[w[9]]);                                     \
        G3(1, 6, 11, 12, m[w[10]], m[w[11]]);                                   \
        G3(2, 7, 8, 13, m[w[12]], m[w[13]]);                                    \
        G3(3, 4, 9, 14, m[w[14]], m[w[15]]);                                    \
    } while (0)

/* The compression function: the 16 words of its output. */
static void compress3(const uint32_t cv[8], const uint32_t m[16], uint64_t counter,
                      uint32_t block_len, uint32_t flags, uint32_t out[16]) {
    uint32_t s[16];
    for (int i = 0; i < 8; i++)
        s[i] = cv[i];
    for (int i = 0; i < 4; i++)
        s[8 + i] = IV3[i];
    s[12] = (uint32_t)counter;
    s[13] = (uint32_t)(counter >> 32);
    s[14] = block_len;
    s[15] = flags;
    ROUND3(0);
    ROUND3(1);
    ROUND3(2);
    ROUND3(3);
    ROUND3(4);
    ROUND3(5);
    ROUND3(6);
    for (int i = 0; i < 8; i++) {
        out[i] = s[i] ^ s[i + 8];
        out[i + 8] = s[i + 8] ^ cv[i];
    }
}

/* What a chunk or a parent node gives: compressed without ROOT, its chaining value; with
 * ROOT, the hash. */
typedef struct {
    uint32_t cv[8];
    uint32_t block[16];
    uint64_t counter;
    uint32_t block_len;
    uint32_t flags;
} output3;

static void chaining_value(const output3 *o, uint32_t cv[8]) {
    uint32_t out[16];
    compress3(o->cv, o->block, o->counter, o->block_len, o->flags, out);
    memcpy(cv, out, 8 * sizeof(uint32_t));
}

static void parent_output(const uint32_t left[8], const uint32_t right[8], output3 *o) {
    memcpy(o->cv, IV3, sizeof o->cv);
    memcpy(o->block, left, 8 * sizeof(uint32_t));
    memcpy(o->block + 8, right, 8 * sizeof(uint32_t));
    o->counter = 0;
    o->block_len = BLOCK3;
    o->flags = PARENT;
}

/* The output of chunk number `counter`, whose n bytes (1 to CHUNK; 0 only for an empty
 * message) are at p. */
static void chunk_output(const uint8_t *p, size_t n, uint64_t counter, output3 *o) {
    uint32_t cv[8], out[16];
    memcpy(cv, IV3, sizeof cv);
    uint32_t start = CHUNK_START;
    while (n > BLOCK3) { /* every block but the last */
        for (int i = 0; i < 16; i++)
            o->block[i] = load32(p + 4 * i);
        compress3(cv, o->block, counter, BLOCK3, start, out);
        memcpy(cv, out, sizeof cv);
        start = 0;
        p += BLOCK3;
        n -= BLOCK3;
    }
    uint8_t last[BLOCK3] = {0};
    memcpy(last, p, n);
    for (int i = 0; i < 16; i++)
        o->block[i] = load32(last + 4 * i);
    memcpy(o->cv, cv, sizeof cv);
    o->counter = counter;
    o->block_len = (uint32_t)n;
    o->flags = start | CHUNK_END;
}

/* BLAKE3 (32-byte digest) of the n bytes at p. */
static void blake3_256(const uint8_t *p, size_t n, uint8_t digest[OUT]) {
    uint32_t stack[54][8]; /* the chaining values of complete subtrees: 2**54 chunks */
    int depth = 0;
    uint64_t chunks = 0;
    output3 o;
    while (n > CHUNK) { /* every chunk but the last: merged as the tree fills */
        uint32_t cv[8];
        chunk_output(p, CHUNK, chunks, &o);
        chaining_value(&o, cv);
        p += CHUNK;
        n -= CHUNK;
        chunks++;
        for (uint64_t total = chunks; (total & 1) == 0; total >>= 1) {
            parent_output(stack[--depth], cv, &o);
            chaining_value(&o, cv);
        }
        memcpy(stack[depth++], cv, sizeof cv);
    }
    chunk_output(p, n, chunks, &o);
    while (depth > 0) { /* the last chunk joins the subtrees on the stack, right to left */
        uint32_t cv[8];
        chaining_value(&o, cv);
        parent_output(stack[--depth], cv, &o);
    }
    uint32_t out[16];
    compress3(o.cv, o.block, 0, o.block_len, o.flags | ROOT, out);
    for (int i = 0; i < OUT; i++)
        digest[i] = (uint8_t)(out[i / 4] >> (8 * (i % 4)));
}

static const char HEX[] = "0123456789abcdef";

/* The hash of a key, of the message prefix || tail (a copy of it, for BLAKE3, in `scratch`
 * when it fits); -1 when out of memory. */
typedef int (*hash_fn)(const uint8_t *prefix, size_t np, const uint8_t *tail, size_t nt,
                       uint8_t *scratch, size_t room, uint8_t digest[OUT]);

static int hash_blake2b(const uint8_t *prefix, size_t np, const uint8_t *tail, size_t nt,
                        uint8_t *scratch, size_t room, uint8_t digest[OUT]) {
    blake2b_256(prefix, np, tail, nt, digest);
    return 0;
}

static int hash_blake3(const uint8_t *prefix, size_t np, const uint8_t *tail, size_t nt,
                       uint8_t *scratch, size_t room, uint8_t digest[OUT]) {
    if (nt == 0) {
        blake3_256(prefix, np, digest);
        return 0;
    }
    uint8_t *message = np + nt <= room ? scratch : PyMem_Malloc(np + nt);
    if (message == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(message, prefix, np);
    memcpy(message + np, tail, nt);
    blake3_256(message, np + nt, digest);
    if (message != scratch)
        PyMem_Free(message);
    return 0;
}

/* The hash named `algorithm` ("blake3" or "blake2b"); NULL with ValueError for another. */
static hash_fn hash_named(const char *algorithm) {
    if (strcmp(algorithm, "blake3") == 0)
        return hash_blake3;
    if (strcmp(algorithm, "blake2b") == 0)
        return hash_blake2b;
    PyErr_Format(PyExc_ValueError, "unknown hash algorithm '%s' (blake3 or blake2b)",
                 algorithm);
    return NULL;
}

/* The storage key "<namespace>/<hex digest>" (the namespace's nslen ASCII bytes at nsutf), or
 * NULL with an exception set. */
static PyObject *hex_key(const char *nsutf, Py_ssize_t nslen, const uint8_t digest[OUT]) {
    PyObject *key = PyUnicode_New(nslen + 1 + 2 * OUT, 127);
    if (key == NULL)
        return NULL;
    Py_UCS1 *k = PyUnicode_1BYTE_DATA(key);
    memcpy(k, nsutf, (size_t)nslen);
    k[nslen] = '/';
    for (int j = 0; j < OUT; j++) {
        k[nslen + 1 + 2 * j] = HEX[digest[j] >> 4];
        k[nslen + 2 + 2 * j] = HEX[digest[j] & 15];
    }
    return key;
}

/* storage_keys(prefix, namespace, tails, algorithm) -> list of "<namespace>/<hex digest>",
 * one per tail, the digest being H(prefix || tail); a tail None gives None. */
static PyObject *storage_keys(PyObject *self, PyObject *args) {
    Py_buffer prefix;
    PyObject *ns, *tails;
    const char *algorithm;
    if (!PyArg_ParseTuple(args, "y*UOs", &prefix, &ns, &tails, &algorithm))
        return NULL;
    hash_fn hash = hash_named(algorithm);
    PyObject *seq = hash == NULL ? NULL :
        PySequence_Fast(tails, "tails must be a sequence of bytes");
    PyObject *out = NULL;
    Py_ssize_t nslen;
    const char *nsutf = seq == NULL ? NULL : PyUnicode_AsUTF8AndSize(ns, &nslen);
    if (nsutf == NULL)
        goto done;
    if (!PyUnicode_IS_ASCII(ns)) { /* namespaces are ASCII (cache.Cache checks) */
        PyErr_SetString(PyExc_ValueError, "the namespace must be ASCII");
        goto done;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    out = PyList_New(n);
    if (out == NULL)
        goto done;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    uint8_t scratch[512];
    for (Py_ssize_t i = 0; i < n; i++) {
        if (items[i] == Py_None) { /* an uncacheable instance: no key */
            Py_INCREF(Py_None);
            PyList_SET_ITEM(out, i, Py_None);
            continue;
        }
        char *tail;
        Py_ssize_t tlen;
        uint8_t digest[OUT];
        if (PyBytes_AsStringAndSize(items[i], &tail, &tlen) < 0 ||
            hash(prefix.buf, (size_t)prefix.len, (const uint8_t *)tail, (size_t)tlen,
                 scratch, sizeof scratch, digest) < 0) {
            Py_CLEAR(out);
            goto done;
        }
        PyObject *key = hex_key(nsutf, nslen, digest);
        if (key == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, key);
    }
done:
    Py_XDECREF(seq);
    PyBuffer_Release(&prefix);
    return out;
}

/* digest(data, algorithm) -> bytes: the 32-byte digest of data (to check this against
 * hashlib and blake3). */
static PyObject *digest(PyObject *self, PyObject *args) {
    Py_buffer data;
    const char *algorithm;
    if (!PyArg_ParseTuple(args, "y*s", &data, &algorithm))
        return NULL;
    hash_fn hash = hash_named(algorithm);
    uint8_t out[OUT];
    int failed = hash == NULL || hash(data.buf, (size_t)data.len, NULL, 0, NULL, 0, out) < 0;
    PyBuffer_Release(&data);
    return failed ? NULL : PyBytes_FromStringAndSize((const char *)out, OUT);
}

/* ---- a large entry's bytes (dandelion/cache/entry.py) ----------------------------------- */

/* From this many pages on, join() checks whether the new bytes' pages are fresh. */
#define FRESH_PAGES 16

/* Fault in the whole pages of [p, p + n) in one call when some are fresh (not resident:
 * memory the C library just took from the system, as it does for each entry of a store that
 * grows), instead of one fault per page as they are written: 32 faults cost about 80 µs on
 * a virtual machine, one MADV_POPULATE_WRITE about 55.  Memory reused from freed blocks is
 * resident and left alone (populating it would cost a walk of its pages, about 5 µs;
 * asking whether it is resident, one mincore, well under one).  A kernel without
 * MADV_POPULATE_WRITE (before 5.14) refuses it, and the pages fault as they are written. */
static void populate(char *p, size_t n) {
#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
    static size_t page = 0;
    if (page == 0) {
        long got = sysconf(_SC_PAGESIZE);
        page = got > 0 ? (size_t)got : 4096;
    }
    uintptr_t start = ((uintptr_t)p + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t end = ((uintptr_t)p + n) & ~(uintptr_t)(page - 1);
    if (end <= start || (end - start) / page < FRESH_PAGES)
        return;
    unsigned char resident[256]; /* (a larger entry: its first 256 pages tell) */
    size_t pages = (end - start) / page;
    size_t asked = pages < sizeof resident ? pages : sizeof resident;
    if (mincore((void *)start, asked * page, resident) != 0)
        return;
    size_t i = 0;
    while (i < asked && (resident[i] & 1))
        i++;
    if (i == asked)
        return; /* all resident: reused memory */
    (void)madvise((void *)start, end - start, MADV_POPULATE_WRITE); /* else: faults, as before */
#else
    (void)p;
    (void)n;
#endif
}

/* The next large entry's bytes, made and faulted in ahead by reserve(): a bytes object
 * that no Python code has seen (this module holds its one reference), so join() may write it
 * once and hand it out as a new bytes, as PyBytes_FromStringAndSize(NULL, n) would be. */
static PyObject *reserved = NULL;
/* The size of the last large entry join() made (0: none yet, or beyond RESERVE_MAX). */
static Py_ssize_t last_size = 0;
/* reserve() makes no bytes larger than this (a process keeping huge entries pays for their
 * memory on the path, as before, rather than holding a second one idle). */
#define RESERVE_MAX ((Py_ssize_t)16 << 20)

/* reserve() -> bool: make and fault in (with the GIL released) the bytes of an entry as large
 * as the last large one join() made, for the next join() of that size to write into instead
 * of new memory; False when there is nothing to reserve (no large entry yet, or one of that
 * size is reserved already). */
static PyObject *reserve(PyObject *self, PyObject *unused) {
    Py_ssize_t size = last_size;
    if (size == 0 || (reserved != NULL && PyBytes_GET_SIZE(reserved) == size))
        Py_RETURN_FALSE;
    /* The memory freed last at the top of the heap (the output array of the run before,
     * dropped by its caller) is where this run's own output array would go, faulted in
     * already: held by a placeholder while the new bytes are made, the bytes take new
     * memory instead (faulted in here, off the run's path), and the output array gets the
     * old memory back.  Made without it, the bytes took the old memory and the output
     * array the new, faulted in on the run's path (32 faults of 128 KiB, 40 µs). */
    void *volatile placeholder = malloc((size_t)size);
    PyObject *made = PyBytes_FromStringAndSize(NULL, size);
    free(placeholder);
    if (made == NULL)
        return NULL;
    char *at = PyBytes_AS_STRING(made);
    Py_BEGIN_ALLOW_THREADS
    populate(at, (size_t)size); /* (nobody else references it: no lock needed) */
    Py_END_ALLOW_THREADS
    Py_XSETREF(reserved, made); /* (one another thread reserved meanwhile is dropped) */
    Py_RETURN_TRUE;
}

/* New bytes of `total` bytes for an entry: those reserve() made where they have the size,
 * else new ones whose pages are faulted in one call where they are fresh (populate); the
 * size is remembered for the next reserve() when the entry is large. */
static PyObject *new_entry(Py_ssize_t total) {
    PyObject *out;
    if (reserved != NULL && PyBytes_GET_SIZE(reserved) == total && Py_REFCNT(reserved) == 1) {
        out = reserved; /* made ahead, never seen: now this entry's new bytes */
        reserved = NULL;
    } else {
        out = PyBytes_FromStringAndSize(NULL, total);
        if (out == NULL)
            return NULL;
        populate(PyBytes_AS_STRING(out), (size_t)total);
    }
    if (total >= FRESH_PAGES * 4096)
        last_size = total <= RESERVE_MAX ? total : 0;
    return out;
}

/* join(parts) -> bytes: b"".join(parts) (an iterable of buffers), written into the bytes
 * reserve() made where it has the size, else into new bytes whose pages are faulted in one
 * call where they are fresh (populate). */
static PyObject *join(PyObject *self, PyObject *parts) {
    PyObject *seq = PySequence_Fast(parts, "can only join an iterable");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_buffer few[8]; /* (an entry has a few parts: no allocation for them) */
    Py_buffer *views = n <= 8 ? few : PyMem_Calloc((size_t)n, sizeof(Py_buffer));
    PyObject *out = NULL;
    Py_ssize_t got = 0, total = 0;
    if (views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        if (PyObject_GetBuffer(items[got], &views[got], PyBUF_SIMPLE) < 0) {
            PyErr_Format(PyExc_TypeError, /* (as bytes.join says it) */
                         "sequence item %zd: expected a bytes-like object, %.80s found", got,
                         Py_TYPE(items[got])->tp_name);
            goto done;
        }
        if (views[got].len > PY_SSIZE_T_MAX - total) {
            PyBuffer_Release(&views[got]);
            PyErr_SetString(PyExc_OverflowError, "join() of more bytes than fit");
            goto done;
        }
        total += views[got].len;
    }
    if ((out = new_entry(total)) == NULL)
        goto done;
    char *at = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        memcpy(at, views[i].buf, (size_t)views[i].len);
        at += views[i].len;
    }
done:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    if (views != few)
        PyMem_Free(views);
    Py_DECREF(seq);
    return out;
}

/* ---- int items in one step (dandelion/cache/run.py, entry.py) ------------------------- */

static PyObject *S_INPUTS, *S_VALUE, *S_KEY, *S_NAME;

static inline void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* The only element of a tuple or list of one, else NULL (borrowed; no error set). */
static PyObject *only(PyObject *seq) {
    if (PyTuple_CheckExact(seq))
        return PyTuple_GET_SIZE(seq) == 1 ? PyTuple_GET_ITEM(seq, 0) : NULL;
    if (PyList_CheckExact(seq))
        return PyList_GET_SIZE(seq) == 1 ? PyList_GET_ITEM(seq, 0) : NULL;
    return NULL;
}

static int int_record_of(PyObject *item, uint8_t *p) {
    PyObject *value = PyObject_GetAttr(item, S_VALUE);
    if (value == NULL)
        return -1;
    int fits = 0;
    if (PyLong_CheckExact(value)) {
        PyObject *name = PyObject_GetAttr(item, S_NAME);
        PyObject *key = name == NULL ? NULL : PyObject_GetAttr(item, S_KEY);
        if (key == NULL) {
            Py_XDECREF(name);
            Py_DECREF(value);
            return -1;
        }
        if (PyUnicode_Check(name) && PyUnicode_GET_LENGTH(name) == 0 && PyLong_Check(key)) {
            int over_key, over_value;
            long long k = PyLong_AsLongLongAndOverflow(key, &over_key);
            long long v = PyLong_AsLongLongAndOverflow(value, &over_value);
            if ((k == -1 || v == -1) && PyErr_Occurred())
                fits = -1;
            else if (!over_key && !over_value) {
                p[0] = 3;
                put64(p + 1, (uint64_t)k);
                put32(p + 9, 0);
                put64(p + 13, (uint64_t)v);
                fits = 1;
            }
        }
        Py_DECREF(name);
        Py_DECREF(key);
    }
    Py_DECREF(value);
    return fits;
}

/* An item's int record (element 3, key, no name, value: content.py's <BqIq>) at p when the
 * item's value is an int (not a subclass), its name empty, and key and value fit in 64
 * bits: 1; else 0; -1 with an exception set.  (The item is held meanwhile: it may be
 * borrowed from a list.) */
static int int_record(PyObject *item, uint8_t *p) {
    Py_INCREF(item);
    int fits = int_record_of(item, p);
    Py_DECREF(item);
    return fits;
}

/* seq as a tuple (a new reference: itself, or a list's items as they are now: what C code
 * reads is not changed under it), else NULL, with an exception set or, for another type,
 * none. */
static PyObject *as_tuple(PyObject *seq) {
    if (PyTuple_CheckExact(seq))
        return Py_NewRef(seq);
    if (PyList_CheckExact(seq))
        return PyList_AsTuple(seq);
    return NULL;
}

#define RECORD 21 /* an int record: element u8, key i64, name length u32, value i64 */

/* int_tails(instances) -> per instance, the tail of its key (key.py's tail of one parameter
 * of one item whose content id is 0x00 + its int record) when its inputs are one parameter
 * of one int item without a name, else None. */
static PyObject *int_tails(PyObject *self, PyObject *instances) {
    PyObject *seq = PySequence_Tuple(instances);
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    PyObject *out = PyList_New(n);
    PyObject **insts = ((PyTupleObject *)seq)->ob_item;
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *inputs = PyObject_GetAttr(insts[i], S_INPUTS);
        if (inputs == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyObject *items = only(inputs), *item = items == NULL ? NULL : only(items);
        uint8_t tail[4 + 4 + 1 + RECORD]; /* 1 parameter, 1 item, the id's length, the id */
        int fits = item == NULL ? 0 : int_record(item, tail + 9);
        Py_DECREF(inputs);
        PyObject *made = NULL;
        if (fits == 1) {
            put32(tail, 1);
            put32(tail + 4, 1 + RECORD);
            tail[8] = 0;
            made = PyBytes_FromStringAndSize((const char *)tail, sizeof tail);
        } else if (fits == 0) {
            made = Py_NewRef(Py_None);
        }
        if (made == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, made);
    }
    Py_DECREF(seq);
    return out;
}

static const char MAGIC[6] = {'D', 'D', 'C', 'E', '1', 0}; /* entry.py's MAGIC */

/* int_entries(outputs) -> the entries (entry.py's pack) of many instances' outputs when
 * each is one result of one int item without a name, else None. */
static PyObject *int_entries(PyObject *self, PyObject *outputs) {
    PyObject *seq = PySequence_Tuple(outputs);
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    PyObject *out = PyList_New(n);
    PyObject **outs = ((PyTupleObject *)seq)->ob_item;
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *items = only(outs[i]), *item = items == NULL ? NULL : only(items);
        uint8_t entry[6 + 4 + 4 + 8 + RECORD]; /* magic, 1 result, 1 item, its size */
        int fits = item == NULL ? 0 : int_record(item, entry + 22);
        if (fits != 1) {
            Py_CLEAR(out);
            if (fits == 0)
                out = Py_NewRef(Py_None);
            break;
        }
        memcpy(entry, MAGIC, 6);
        put32(entry + 6, 1);
        put32(entry + 10, 1);
        put64(entry + 14, RECORD);
        PyObject *made = PyBytes_FromStringAndSize((const char *)entry, sizeof entry);
        if (made == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, made);
    }
    Py_DECREF(seq);
    return out;
}

/* int_tail(inputs) -> the tail of a key (key.py's tail of the items' content ids) when the
 * inputs (per parameter, a tuple or list of items) are all int items without a name, else
 * None. */
static PyObject *int_tail(PyObject *self, PyObject *inputs) {
    PyObject *given = as_tuple(inputs);
    if (given == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    Py_ssize_t n_params = PyTuple_GET_SIZE(given), total = 0;
    PyObject *params = PyTuple_New(n_params), *out = NULL;
    for (Py_ssize_t p = 0; params != NULL && p < n_params; p++) {
        PyObject *items = as_tuple(PyTuple_GET_ITEM(given, p));
        if (items == NULL) {
            Py_CLEAR(params);
            break;
        }
        PyTuple_SET_ITEM(params, p, items);
        total += 4 + PyTuple_GET_SIZE(items) * (4 + 1 + RECORD);
    }
    Py_DECREF(given);
    if (params == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    uint8_t *at = out == NULL ? NULL : (uint8_t *)PyBytes_AS_STRING(out);
    for (Py_ssize_t p = 0; out != NULL && p < n_params; p++) {
        PyObject *items = PyTuple_GET_ITEM(params, p);
        Py_ssize_t n = PyTuple_GET_SIZE(items);
        put32(at, (uint32_t)n);
        at += 4;
        for (Py_ssize_t i = 0; i < n; i++) {
            int fits = int_record(PyTuple_GET_ITEM(items, i), at + 5);
            if (fits != 1) {
                Py_CLEAR(out);
                if (fits == 0)
                    out = Py_NewRef(Py_None);
                break;
            }
            put32(at, 1 + RECORD);
            at[4] = 0;
            at += 4 + 1 + RECORD;
        }
        if (out == Py_None)
            break;
    }
    Py_DECREF(params);
    return out;
}

/* int_result(items) -> (the bytes of one result in an entry: entry.py's pack of its items,
 * the content id of each item) when the items (a tuple or list) are all int items without
 * a name, else None. */
static PyObject *int_result(PyObject *self, PyObject *seq) {
    PyObject *items = as_tuple(seq);
    if (items == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    PyObject *chunk = PyBytes_FromStringAndSize(NULL, 4 + n * (8 + RECORD));
    PyObject *ids = chunk == NULL ? NULL : PyList_New(n);
    PyObject *out = NULL;
    if (ids == NULL)
        goto done;
    uint8_t *at = (uint8_t *)PyBytes_AS_STRING(chunk);
    put32(at, (uint32_t)n);
    at += 4;
    for (Py_ssize_t i = 0; i < n; i++) {
        int fits = int_record(PyTuple_GET_ITEM(items, i), at + 8);
        PyObject *id = NULL;
        if (fits != 1 || (id = PyBytes_FromStringAndSize(NULL, 1 + RECORD)) == NULL) {
            if (fits == 0)
                out = Py_NewRef(Py_None);
            goto done;
        }
        PyBytes_AS_STRING(id)[0] = 0;
        memcpy(PyBytes_AS_STRING(id) + 1, at + 8, RECORD);
        PyList_SET_ITEM(ids, i, id);
        put64(at, RECORD);
        at += 8 + RECORD;
    }
    out = PyTuple_Pack(2, chunk, ids);
done:
    Py_DECREF(items);
    Py_XDECREF(chunk);
    Py_XDECREF(ids);
    return out;
}

/* ---- a run of one plain array in one call (dandelion/runtime/array_rerun.py) ---------- */

static PyObject *S_DTYPE, *S_SHAPE, *S_DIGEST, *S_RELEASE;

/* The digest `hasher(bytes).digest()` of the n bytes at p (hasher: hashing.new, whose
 * digests are 32 bytes); -1 with an exception set. */
static int bulk_digest(PyObject *hasher, void *p, Py_ssize_t n, uint8_t digest[OUT]) {
    Py_buffer flat;
    if (PyBuffer_FillInfo(&flat, NULL, p, n, 1, PyBUF_SIMPLE) < 0)
        return -1;
    PyObject *view = PyMemoryView_FromBuffer(&flat); /* one dimension of bytes, read-only */
    if (view == NULL)
        return -1;
    PyObject *h = PyObject_CallOneArg(hasher, view);
    PyObject *made = h == NULL ? NULL : PyObject_CallMethodNoArgs(h, S_DIGEST);
    Py_XDECREF(h);
    /* the view points at memory its exporter keeps only while this call holds it */
    PyObject *released = PyObject_CallMethodNoArgs(view, S_RELEASE);
    Py_DECREF(view);
    int ok = made != NULL && released != NULL && PyBytes_Check(made) &&
             PyBytes_GET_SIZE(made) == OUT;
    if (ok)
        memcpy(digest, PyBytes_AS_STRING(made), OUT);
    else if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "the hash did not give a 32-byte digest");
    Py_XDECREF(made);
    Py_XDECREF(released);
    return ok ? 0 : -1;
}

/* array_key(value, layout, prefix, namespace, hasher, algorithm) -> (storage key, content
 * id), or None when value is not an array of exactly the type, dtype (the object) and
 * shape `layout` names (a tuple: the array type, the dtype, the shape, the part of the
 * record of such an array with key 0 and no name before its bulk), C-contiguous and not
 * empty.
 *
 * The content id is content.array_id's: 0x01 + H(record head || H(bulk)), the bulk hashed by
 * `hasher` (hashing.new) straight from the array's buffer; the storage key is
 * "<namespace>/<hex H(prefix || tail)>", tail being key.py's of one parameter of one item
 * with that id (run_memo.RunMemo.key of a run of one input of one item). */
static PyObject *array_key(PyObject *self, PyObject *args) {
    PyObject *value, *layout, *ns, *hasher;
    Py_buffer prefix;
    const char *algorithm;
    if (!PyArg_ParseTuple(args, "OO!y*UOs", &value, &PyTuple_Type, &layout, &prefix, &ns,
                          &hasher, &algorithm))
        return NULL;
    PyObject *out = NULL, *dtype = NULL, *shape = NULL;
    Py_buffer bulk = {0};
    hash_fn hash = hash_named(algorithm);
    if (hash == NULL)
        goto done;
    if (PyTuple_GET_SIZE(layout) != 4 || !PyBytes_Check(PyTuple_GET_ITEM(layout, 3))) {
        PyErr_SetString(PyExc_ValueError, "layout: (array type, dtype, shape, head bytes)");
        goto done;
    }
    if ((PyObject *)Py_TYPE(value) != PyTuple_GET_ITEM(layout, 0))
        goto none;
    if ((dtype = PyObject_GetAttr(value, S_DTYPE)) == NULL ||
        (shape = PyObject_GetAttr(value, S_SHAPE)) == NULL)
        goto done;
    int same = dtype == PyTuple_GET_ITEM(layout, 1) ?
        PyObject_RichCompareBool(shape, PyTuple_GET_ITEM(layout, 2), Py_EQ) : 0;
    if (same < 0)
        goto done;
    if (!same)
        goto none;
    if (PyObject_GetBuffer(value, &bulk, PyBUF_C_CONTIGUOUS) < 0) { /* e.g. not contiguous */
        PyErr_Clear();
        goto none;
    }
    if (bulk.len <= 0)
        goto none;
    Py_ssize_t nslen;
    const char *nsutf = PyUnicode_AsUTF8AndSize(ns, &nslen);
    if (nsutf == NULL)
        goto done;
    if (!PyUnicode_IS_ASCII(ns)) { /* namespaces are ASCII (cache.Cache checks) */
        PyErr_SetString(PyExc_ValueError, "the namespace must be ASCII");
        goto done;
    }
    uint8_t inner[OUT], tail[4 + 4 + 1 + OUT], digest[OUT], scratch[1024];
    if (bulk_digest(hasher, bulk.buf, bulk.len, inner) < 0)
        goto done;
    PyObject *head = PyTuple_GET_ITEM(layout, 3);
    put32(tail, 1);
    put32(tail + 4, 1 + OUT);
    tail[8] = 1;
    if (hash((const uint8_t *)PyBytes_AS_STRING(head), (size_t)PyBytes_GET_SIZE(head), inner,
             OUT, scratch, sizeof scratch, tail + 9) < 0 ||
        hash(prefix.buf, (size_t)prefix.len, tail, sizeof tail, scratch, sizeof scratch,
             digest) < 0)
        goto done;
    PyObject *key = hex_key(nsutf, nslen, digest);
    if (key == NULL)
        goto done;
    PyObject *id = PyBytes_FromStringAndSize((const char *)tail + 8, 1 + OUT);
    out = id == NULL ? NULL : PyTuple_Pack(2, key, id);
    Py_DECREF(key);
    Py_XDECREF(id);
    goto done;
none:
    out = Py_NewRef(Py_None);
done:
    if (bulk.obj != NULL)
        PyBuffer_Release(&bulk);
    PyBuffer_Release(&prefix);
    Py_XDECREF(dtype);
    Py_XDECREF(shape);
    return out;
}

#define ONE_RECORD_AT 22 /* entry.py: MAGIC, 1 result, 1 item, the record's size (u64) */
#define BARE (1ULL << 63)

/* array_entry(item, layout, id) -> the entry (entry.py's pack) of one result of the one
 * `item`, or None when its value is not an array of exactly the type, dtype (the object) and
 * shape `layout` names, C-contiguous and not empty, or its key or name is not the layout's
 * (a tuple: the array type, the dtype, the shape, the key, the name, and the record of such
 * an item before its bulk, as content.array_record makes it).  `id` is the item's content id
 * when known (0x01 + digest: the entry keeps the digest; any other id, a short record's, is
 * not an array's: None), else None (a bare record).  The entry's bytes are new_entry()'s. */
static PyObject *array_entry(PyObject *self, PyObject *args) {
    PyObject *item, *layout, *id;
    if (!PyArg_ParseTuple(args, "OO!O", &item, &PyTuple_Type, &layout, &id))
        return NULL;
    if (PyTuple_GET_SIZE(layout) != 6 || !PyBytes_Check(PyTuple_GET_ITEM(layout, 5))) {
        PyErr_SetString(PyExc_ValueError,
                        "layout: (array type, dtype, shape, key, name, head bytes)");
        return NULL;
    }
    if (id != Py_None && (!PyBytes_Check(id) || PyBytes_GET_SIZE(id) != 1 + OUT ||
                          PyBytes_AS_STRING(id)[0] != 1))
        Py_RETURN_NONE; /* a short record's id (0x00 + the record): not an array's */
    PyObject *out = NULL, *value = NULL, *dtype = NULL, *shape = NULL, *key = NULL,
             *name = NULL;
    Py_buffer bulk = {0};
    if ((value = PyObject_GetAttr(item, S_VALUE)) == NULL)
        goto done;
    if ((PyObject *)Py_TYPE(value) != PyTuple_GET_ITEM(layout, 0))
        goto none;
    if ((dtype = PyObject_GetAttr(value, S_DTYPE)) == NULL ||
        (shape = PyObject_GetAttr(value, S_SHAPE)) == NULL ||
        (key = PyObject_GetAttr(item, S_KEY)) == NULL ||
        (name = PyObject_GetAttr(item, S_NAME)) == NULL)
        goto done;
    if (dtype != PyTuple_GET_ITEM(layout, 1))
        goto none;
    PyObject *want[3] = {shape, key, name};
    for (int i = 0; i < 3; i++) {
        int same = PyObject_RichCompareBool(want[i], PyTuple_GET_ITEM(layout, 2 + i), Py_EQ);
        if (same < 0)
            goto done;
        if (!same)
            goto none;
    }
    if (!PyLong_CheckExact(key) || !PyUnicode_CheckExact(name))
        goto none; /* (a subclass equal to the layout's: the Python path says) */
    if (PyObject_GetBuffer(value, &bulk, PyBUF_C_CONTIGUOUS) < 0) { /* e.g. not contiguous */
        PyErr_Clear();
        goto none;
    }
    if (bulk.len <= 0)
        goto none;
    PyObject *head = PyTuple_GET_ITEM(layout, 5);
    Py_ssize_t hlen = PyBytes_GET_SIZE(head);
    if (bulk.len > PY_SSIZE_T_MAX / 2 - hlen - ONE_RECORD_AT - OUT) {
        PyErr_SetString(PyExc_OverflowError, "an entry of more bytes than fit");
        goto done;
    }
    Py_ssize_t size = hlen + bulk.len;
    Py_ssize_t total = ONE_RECORD_AT + size + (id != Py_None ? OUT : 0);
    if ((out = new_entry(total)) == NULL)
        goto done;
    uint8_t *at = (uint8_t *)PyBytes_AS_STRING(out);
    memcpy(at, "DDCE1\0", 6); /* entry.py's MAGIC */
    put32(at + 6, 1);
    put32(at + 10, 1);
    put64(at + 14, (uint64_t)size | (id == Py_None ? BARE : 0));
    memcpy(at + ONE_RECORD_AT, PyBytes_AS_STRING(head), (size_t)hlen);
    memcpy(at + ONE_RECORD_AT + hlen, bulk.buf, (size_t)bulk.len);
    if (id != Py_None)
        memcpy(at + ONE_RECORD_AT + size, PyBytes_AS_STRING(id) + 1, OUT);
    goto done;
none:
    out = Py_NewRef(Py_None);
done:
    if (bulk.obj != NULL)
        PyBuffer_Release(&bulk);
    Py_XDECREF(value);
    Py_XDECREF(dtype);
    Py_XDECREF(shape);
    Py_XDECREF(key);
    Py_XDECREF(name);
    return out;
}

/* array_value(data, layout) -> a new array holding the value of the entry `data` when it
 * is an entry (entry.py's pack) of one result of one item whose record starts as `layout`
 * says (a tuple: the part of the record before the bulk, the record's size, a function
 * making an empty array of a shape and dtype (numpy.empty), the shape, the dtype), else
 * None: the same array entry.unpack gives, in one copy. */
static PyObject *array_value(PyObject *self, PyObject *args) {
    PyObject *layout;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*O!", &data, &PyTuple_Type, &layout))
        return NULL;
    PyObject *out = NULL;
    if (PyTuple_GET_SIZE(layout) != 5 || !PyBytes_Check(PyTuple_GET_ITEM(layout, 0)) ||
        !PyLong_Check(PyTuple_GET_ITEM(layout, 1))) {
        PyErr_SetString(PyExc_ValueError,
                        "layout: (head bytes, record size, empty, shape, dtype)");
        goto done;
    }
    PyObject *head = PyTuple_GET_ITEM(layout, 0);
    size_t nh = (size_t)PyBytes_GET_SIZE(head);
    unsigned long long size = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(layout, 1));
    if (size == (unsigned long long)-1 && PyErr_Occurred())
        goto done;
    const uint8_t *p = data.buf;
    size_t n = (size_t)data.len;
    if (n < ONE_RECORD_AT || memcmp(p, MAGIC, 6) != 0 || p[6] != 1 || p[7] | p[8] | p[9] ||
        p[10] != 1 || p[11] | p[12] | p[13] || size <= nh)
        goto none;
    uint64_t given = 0;
    for (int i = 7; i >= 0; i--)
        given = (given << 8) | p[14 + i];
    uint64_t bare = given & BARE;
    if ((given ^ bare) != size || n != ONE_RECORD_AT + size + (bare ? 0 : OUT) ||
        memcmp(p + ONE_RECORD_AT, PyBytes_AS_STRING(head), nh) != 0)
        goto none;
    PyObject *array = PyObject_CallFunctionObjArgs(PyTuple_GET_ITEM(layout, 2),
                                                   PyTuple_GET_ITEM(layout, 3),
                                                   PyTuple_GET_ITEM(layout, 4), NULL);
    if (array == NULL)
        goto done;
    Py_buffer into;
    if (PyObject_GetBuffer(array, &into, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        Py_DECREF(array);
        goto done;
    }
    if ((size_t)into.len == size - nh) {
        memcpy(into.buf, p + ONE_RECORD_AT + nh, (size_t)into.len);
        out = array;
    } else {
        Py_DECREF(array);
        out = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&into);
    goto done;
none:
    out = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&data);
    return out;
}

/* Whether every item of sets[i] holds a value of exactly the type types[i] (None: none
 * does), for i below both lengths: an inline engine's inputs or outputs that cross a
 * sandbox unchanged (backends/engines/inline.py), checked in one call. */
static PyObject *exact_items(PyObject *self, PyObject *args) {
    PyObject *sets, *types;
    if (!PyArg_ParseTuple(args, "OO!", &sets, &PyTuple_Type, &types))
        return NULL;
    PyObject *outer = PySequence_Fast(sets, "sets must be a sequence");
    if (outer == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(outer);
    if (n > PyTuple_GET_SIZE(types))
        n = PyTuple_GET_SIZE(types);
    int exact = 1;
    for (Py_ssize_t i = 0; i < n && exact; i++) {
        PyObject *want = PyTuple_GET_ITEM(types, i);
        PyObject *items = PySequence_Fast(PySequence_Fast_GET_ITEM(outer, i),
                                          "a set must be a sequence");
        if (items == NULL) {
            Py_DECREF(outer);
            return NULL;
        }
        for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(items) && exact; j++) {
            PyObject *value = PyObject_GetAttr(PySequence_Fast_GET_ITEM(items, j), S_VALUE);
            if (value == NULL) {
                Py_DECREF(items);
                Py_DECREF(outer);
                return NULL;
            }
            exact = (PyObject *)Py_TYPE(value) == want;
            Py_DECREF(value);
        }
        Py_DECREF(items);
    }
    Py_DECREF(outer);
    return PyBool_FromLong(exact);
}

static PyMethodDef methods[] = {
    {"storage_keys", storage_keys, METH_VARARGS,
     "storage_keys(prefix, namespace, tails, algorithm) -> ['<namespace>/<hex "
     "H(prefix || tail)>' for each tail; None for a tail None], H: 'blake3' or 'blake2b' "
     "(32-byte digests)."},
    {"exact_items", exact_items, METH_VARARGS,
     "exact_items(sets, types) -> bool: whether each item of sets[i] holds a value of "
     "exactly type types[i] (None: none does)."},
    {"digest", digest, METH_VARARGS,
     "digest(data, algorithm) -> the 32-byte 'blake3' or 'blake2b' digest of data."},
    {"join", join, METH_O,
     "join(parts) -> b''.join(parts), the new bytes' pages faulted in one call where they "
     "are fresh (a large entry of a store that grows)."},
    {"reserve", reserve, METH_NOARGS,
     "reserve() -> bool: make and fault in, with the GIL released, the bytes of an entry as "
     "large as the last large one join() made, for the next join() of that size to write "
     "into (False: nothing to reserve)."},
    {"int_tails", int_tails, METH_O,
     "int_tails(instances) -> per instance, the tail of its key when its inputs are one "
     "parameter of one int item without a name, else None."},
    {"int_tail", int_tail, METH_O,
     "int_tail(inputs) -> the tail of a key when the inputs (per parameter, its items) are "
     "all int items without a name, else None."},
    {"int_result", int_result, METH_O,
     "int_result(items) -> (the bytes of one result in an entry, the content id of each "
     "item) when the items are all int items without a name, else None."},
    {"int_entries", int_entries, METH_O,
     "int_entries(outputs) -> the entries of many instances' outputs when each is one result "
     "of one int item without a name, else None."},
    {"array_key", array_key, METH_VARARGS,
     "array_key(value, layout, prefix, namespace, hasher, algorithm) -> (the storage key of "
     "a run of one array item, its content id) when value is a C-contiguous array of the "
     "layout's type, dtype and shape, not empty, else None."},
    {"array_entry", array_entry, METH_VARARGS,
     "array_entry(item, layout, id) -> the entry of one result of the one item when its value "
     "is a C-contiguous, non-empty array of the layout's type, dtype and shape and its key and "
     "name are the layout's, else None."},
    {"array_value", array_value, METH_VARARGS,
     "array_value(data, layout) -> a new array holding the value of an entry of one array "
     "item whose record starts as the layout says, else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_keysc",
    "The cache keys of many function instances in one call (BLAKE3 or BLAKE2b-256).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__keysc(void) {
    if ((S_INPUTS = PyUnicode_InternFromString("inputs")) == NULL ||
        (S_VALUE = PyUnicode_InternFromString("value")) == NULL ||
        (S_KEY = PyUnicode_InternFromString("key")) == NULL ||
        (S_NAME = PyUnicode_InternFromString("name")) == NULL ||
        (S_DTYPE = PyUnicode_InternFromString("dtype")) == NULL ||
        (S_SHAPE = PyUnicode_InternFromString("shape")) == NULL ||
        (S_DIGEST = PyUnicode_InternFromString("digest")) == NULL ||
        (S_RELEASE = PyUnicode_InternFromString("release")) == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    /* the hashes storage_keys makes (a build of an older keysc.c has fewer, or none) */
    PyObject *algorithms = m == NULL ? NULL : Py_BuildValue("(ss)", "blake3", "blake2b");
    if (algorithms == NULL || PyModule_AddObjectRef(m, "ALGORITHMS", algorithms) < 0)
        Py_CLEAR(m);
    Py_XDECREF(algorithms);
    return m;
}
