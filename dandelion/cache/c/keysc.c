/*
 * _keysc: the cache keys of many function instances in one call (dandelion/cache/key.py).
 *
 * The key of an instance is BLAKE2b-256(prefix || tail): the prefix is its application's
 * (key.prefix), the tail encodes the content ids of the instance's inputs (key.tail).  From
 * Python, hashlib makes one hash object per key, which costs more than the hash itself on
 * the short messages of a fan-out; here one call makes the storage keys of all instances of
 * an application, "<namespace>/<hex digest>", with the same digests as hashlib.blake2b(...,
 * digest_size=32).  BLAKE2b is written from RFC 7693 (unkeyed, 32-byte digests only).
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
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = SIGMA[r];
        G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
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

static const char HEX[] = "0123456789abcdef";

/* storage_keys(prefix, namespace, tails) -> list of "<namespace>/<hex digest>", one per
 * tail, the digest being BLAKE2b-256(prefix || tail); a tail None gives None. */
static PyObject *storage_keys(PyObject *self, PyObject *args) {
    Py_buffer prefix;
    PyObject *ns, *tails;
    if (!PyArg_ParseTuple(args, "y*UO", &prefix, &ns, &tails))
        return NULL;
    PyObject *seq = PySequence_Fast(tails, "tails must be a sequence of bytes");
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
    for (Py_ssize_t i = 0; i < n; i++) {
        if (items[i] == Py_None) { /* an uncacheable instance: no key */
            Py_INCREF(Py_None);
            PyList_SET_ITEM(out, i, Py_None);
            continue;
        }
        char *tail;
        Py_ssize_t tlen;
        if (PyBytes_AsStringAndSize(items[i], &tail, &tlen) < 0) {
            Py_CLEAR(out);
            goto done;
        }
        uint8_t digest[OUT];
        blake2b_256(prefix.buf, (size_t)prefix.len, (const uint8_t *)tail, (size_t)tlen,
                    digest);
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

/* digest(data) -> bytes: BLAKE2b-256 of data (to check this against hashlib). */
static PyObject *digest(PyObject *self, PyObject *args) {
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data))
        return NULL;
    uint8_t out[OUT];
    blake2b_256(data.buf, (size_t)data.len, NULL, 0, out);
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)out, OUT);
}

static PyMethodDef methods[] = {
    {"storage_keys", storage_keys, METH_VARARGS,
     "storage_keys(prefix, namespace, tails) -> ['<namespace>/<hex BLAKE2b-256(prefix || "
     "tail)>' for each tail; None for a tail None]."},
    {"digest", digest, METH_VARARGS, "digest(data) -> BLAKE2b-256 of data (32 bytes)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_keysc",
    "The cache keys of many function instances in one call (BLAKE2b-256, RFC 7693).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__keysc(void) { return PyModule_Create(&module); }
