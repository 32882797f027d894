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
        PyObject *key = PyUnicode_New(nslen + 1 + 2 * OUT, 127);
        if (key == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        Py_UCS1 *k = PyUnicode_1BYTE_DATA(key);
        memcpy(k, nsutf, (size_t)nslen);
        k[nslen] = '/';
        for (int j = 0; j < OUT; j++) {
            k[nslen + 1 + 2 * j] = HEX[digest[j] >> 4];
            k[nslen + 2 + 2 * j] = HEX[digest[j] & 15];
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

static PyMethodDef methods[] = {
    {"storage_keys", storage_keys, METH_VARARGS,
     "storage_keys(prefix, namespace, tails, algorithm) -> ['<namespace>/<hex "
     "H(prefix || tail)>' for each tail; None for a tail None], H: 'blake3' or 'blake2b' "
     "(32-byte digests)."},
    {"digest", digest, METH_VARARGS,
     "digest(data, algorithm) -> the 32-byte 'blake3' or 'blake2b' digest of data."},
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
        (S_NAME = PyUnicode_InternFromString("name")) == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    /* the hashes storage_keys makes (a build of an older keysc.c has fewer, or none) */
    PyObject *algorithms = m == NULL ? NULL : Py_BuildValue("(ss)", "blake3", "blake2b");
    if (algorithms == NULL || PyModule_AddObjectRef(m, "ALGORITHMS", algorithms) < 0)
        Py_CLEAR(m);
    Py_XDECREF(algorithms);
    return m;
}
