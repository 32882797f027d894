/*
 * The .npy encoding of a plain ndarray, in C (dandelion.codec is the definition: npy_parts,
 * npy_header, decode_npy).  A plain array is exactly numpy.ndarray, C-contiguous, of a
 * dtype without Python objects whose descr is a plain type ("<i8", "|b1", ...); its .npy
 * is version 1.0 with the header npy_header writes.  Those are encoded and decoded here,
 * with no Python code run per item: a function's ndarray input inside its sandbox, its
 * output, and the worker's side of both.  Anything else returns "not plain" (0 or NULL
 * without an exception) and takes the general path in Python, which decides what it is
 * and raises the errors a malformed item deserves: the bytes written are identical
 * either way, and nothing here raises for a malformed item.
 *
 * numpy is never imported here: its classes are taken from sys.modules once it is
 * loaded; the dtypes met are kept (by descr for decoding, by identity for encoding).
 */
#include "sandboxc.h"

#include <string.h>

#define NPY_MAGIC "\x93NUMPY\x01\x00"
#define MAX_DESCR 16  /* a plain descr's bytes, with its NUL */
#define MAX_DIMS 64   /* numpy's own limit */
#define KEPT 16       /* dtypes kept, each way */
/* the longest header written: the fixed text, a descr, 64 dimensions of 20 digits */
#define NPY_HEADER_MAX (10 + 64 + MAX_DESCR + MAX_DIMS * 22 + 64)

static PyObject *np_ndarray, *np_dtype;
static PyObject *str_dtype, *str_str, *str_isbuiltin, *str_hasobject, *str_itemsize;

/* A dtype met, with its plain descr (decoding: the descr read; encoding: its str). */
typedef struct {
    PyObject *dtype;
    char descr[MAX_DESCR];
    Py_ssize_t descr_len, itemsize;
} kept_dtype;

static kept_dtype by_descr[KEPT], by_identity[KEPT];
static unsigned n_by_descr, n_by_identity;

/* numpy's ndarray and dtype classes once numpy is loaded (never imports it): 1, or 0. */
static int numpy_loaded(void) {
    if (np_ndarray != NULL)
        return 1;
    PyObject *np = PyDict_GetItemString(PyImport_GetModuleDict(), "numpy");  /* borrowed */
    if (np == NULL)
        return 0;
    PyObject *nd = PyObject_GetAttrString(np, "ndarray");
    PyObject *dt = nd ? PyObject_GetAttrString(np, "dtype") : NULL;
    if (dt == NULL || !PyType_Check(nd) || !PyType_Check(dt)) {  /* half imported */
        PyErr_Clear();
        Py_XDECREF(nd);
        Py_XDECREF(dt);
        return 0;
    }
    np_dtype = dt;
    np_ndarray = nd;
    return 1;
}

/* A plain descr: [<>|=] a letter, digits (the only ones the fast header reader takes). */
static int plain_descr(const char *s, Py_ssize_t n) {
    if (n < 2 || n >= MAX_DESCR || strchr("<>|=", s[0]) == NULL || s[0] == 0 ||
        !((s[1] >= 'a' && s[1] <= 'z') || (s[1] >= 'A' && s[1] <= 'Z')))
        return 0;
    for (Py_ssize_t i = 2; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* Keep `dtype` with its descr in `table` (the oldest entry goes): the entry, or NULL.  The
 * entry is whole before its dtype is set (a lookup matches on it), and a caller copies
 * what it needs out of it before it runs anything that may let another thread in. */
static kept_dtype *keep(kept_dtype *table, unsigned *n, PyObject *dtype, const char *descr,
                        Py_ssize_t descr_len) {
    PyObject *size = PyObject_GetAttr(dtype, str_itemsize);
    Py_ssize_t itemsize = size ? PyLong_AsSsize_t(size) : -1;
    Py_XDECREF(size);
    if (itemsize < 0)
        return NULL;
    kept_dtype *k = &table[(*n)++ % KEPT];
    PyObject *old = k->dtype;
    k->dtype = NULL;
    memcpy(k->descr, descr, (size_t)descr_len);
    k->descr[descr_len] = 0;
    k->descr_len = descr_len;
    k->itemsize = itemsize;
    k->dtype = Py_NewRef(dtype);
    Py_XDECREF(old);
    return k;
}

/* 1 when `dtype` holds Python objects (or asking failed), else 0. */
static int holds_objects(PyObject *dtype) {
    PyObject *h = PyObject_GetAttr(dtype, str_hasobject);
    int objects = h == NULL || PyObject_IsTrue(h) != 0;
    Py_XDECREF(h);
    return objects;
}

/* The dtype of a plain descr read from a header (kept), or NULL (no exception). */
static kept_dtype *dtype_of_descr(const char *descr, Py_ssize_t n) {
    for (unsigned i = 0; i < KEPT; i++)
        if (by_descr[i].dtype != NULL && by_descr[i].descr_len == n &&
            memcmp(by_descr[i].descr, descr, (size_t)n) == 0)
            return &by_descr[i];
    PyObject *dtype = PyObject_CallFunction(np_dtype, "s#", descr, n);
    kept_dtype *k = NULL;
    if (dtype != NULL && !holds_objects(dtype))
        k = keep(by_descr, &n_by_descr, dtype, descr, n);
    Py_XDECREF(dtype);
    PyErr_Clear();
    return k;
}

/* The descr of an array's dtype if it is plain, native and holds no objects (kept), or
 * NULL (no exception). */
static kept_dtype *descr_of_dtype(PyObject *dtype) {
    for (unsigned i = 0; i < KEPT; i++)
        if (by_identity[i].dtype == dtype)
            return &by_identity[i];
    PyObject *builtin = PyObject_GetAttr(dtype, str_isbuiltin);
    PyObject *str = builtin ? PyObject_GetAttr(dtype, str_str) : NULL;
    kept_dtype *k = NULL;
    Py_ssize_t n;
    const char *s = str && PyUnicode_Check(str) ? PyUnicode_AsUTF8AndSize(str, &n) : NULL;
    if (s != NULL && PyLong_Check(builtin) && PyLong_AsLong(builtin) == 1 &&
        plain_descr(s, n) && !holds_objects(dtype))
        k = keep(by_identity, &n_by_identity, dtype, s, n);
    Py_XDECREF(builtin);
    Py_XDECREF(str);
    PyErr_Clear();
    return k;
}

/* Skip the literal `lit` at *p (before `end`): 1, or 0 where it is not there. */
static int literal(const char **p, const char *end, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return 0;
    *p += n;
    return 1;
}

/* What a plain .npy header says: its dtype (a new reference), shape and where its data
 * starts and how long it is (checked to lie within the `n` bytes at `p`).  1, or 0 for
 * anything else. */
static int read_header(const uint8_t *p, uint64_t n, PyObject **dtype, Py_ssize_t *dims,
                       int *ndim, uint64_t *data_at, uint64_t *data_len) {
    /* Read from a copy: the worker reads a sandbox's outputs while a sandbox that forged
     * its report may still write them, and what is checked must be what is used (a descr
     * changed between its check and numpy's reading of it would be kept under another
     * descr, and decode other invocations' arrays with the wrong dtype). */
    char copy[NPY_HEADER_MAX];
    if (n < 10)
        return 0;
    memcpy(copy, p, 10);
    uint64_t hlen = (uint64_t)(uint8_t)copy[8] | (uint64_t)(uint8_t)copy[9] << 8;
    if (memcmp(copy, NPY_MAGIC, 8) != 0 || hlen > n - 10 || hlen > sizeof copy - 10)
        return 0;  /* (no plain header is longer) */
    memcpy(copy + 10, p + 10, (size_t)hlen);
    const char *h = copy + 10, *end = h + hlen;
    if (!literal(&h, end, "{'descr': '"))
        return 0;
    const char *descr = h;
    while (h < end && *h != '\'')
        h++;
    if (h == end || !plain_descr(descr, h - descr))
        return 0;
    Py_ssize_t descr_len = h - descr;
    if (!literal(&h, end, "', 'fortran_order': False, 'shape': ("))
        return 0;
    *ndim = 0;
    while (h < end && *h != ')') {
        if (*h == ',' || *h == ' ') {
            h++;
            continue;
        }
        if (*h < '0' || *h > '9' || *ndim == MAX_DIMS)
            return 0;
        uint64_t d = 0;
        for (; h < end && *h >= '0' && *h <= '9'; h++)
            if ((d = d * 10 + (uint64_t)(*h - '0')) > ((uint64_t)1 << 48))
                return 0;  /* no array has such a dimension: Python says why */
        dims[(*ndim)++] = (Py_ssize_t)d;
    }
    if (!literal(&h, end, "), }"))
        return 0;
    for (; h < end; h++)
        if (*h != ' ' && *h != '\n')
            return 0;
    kept_dtype *k = dtype_of_descr(descr, descr_len);
    if (k == NULL)
        return 0;
    uint64_t bytes = (uint64_t)k->itemsize;
    for (int i = 0; i < *ndim; i++)
        if (__builtin_mul_overflow(bytes, (uint64_t)dims[i], &bytes))
            return 0;
    *data_at = 10 + hlen;
    *data_len = bytes;
    if (bytes > n - *data_at)
        return 0;
    *dtype = Py_NewRef(k->dtype);
    return 1;
}

/* A tuple of the `ndim` dimensions; NULL with an exception set. */
static PyObject *shape_tuple(const Py_ssize_t *dims, int ndim) {
    PyObject *shape = PyTuple_New(ndim);
    for (int i = 0; shape != NULL && i < ndim; i++) {
        PyObject *d = PyLong_FromSsize_t(dims[i]);
        if (d == NULL)
            Py_CLEAR(shape);
        else
            PyTuple_SET_ITEM(shape, i, d);
    }
    return shape;
}

/* A copy of `n` bytes at `p` as an array of `dtype` and `shape`. */
static PyObject *array_copy(PyObject *shape, PyObject *dtype, const uint8_t *p, uint64_t n) {
    PyObject *arr = PyObject_CallFunctionObjArgs(np_ndarray, shape, dtype, NULL);
    Py_buffer b;
    if (arr == NULL || PyObject_GetBuffer(arr, &b, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0) {
        Py_XDECREF(arr);
        return NULL;
    }
    if ((uint64_t)b.len == n)
        memcpy(b.buf, p, n);
    else
        Py_CLEAR(arr);
    PyBuffer_Release(&b);
    return arr;
}

/*
 * The array of the .npy item of `n` bytes at `p`, which lies at `off` in `buffer` (a
 * memoryview): a view of `buffer` (as decode_npy(copy=False)) or, `copy`, an array of its
 * own.  NULL without an exception for an item that is not plain (or any failure: the
 * general path tries again and says why).
 */
PyObject *npy_decode(const uint8_t *p, uint64_t n, PyObject *buffer, uint64_t off, int copy) {
    PyObject *dtype;
    Py_ssize_t dims[MAX_DIMS];
    int ndim;
    uint64_t data_at, data_len;
    if (!numpy_loaded() || !read_header(p, n, &dtype, dims, &ndim, &data_at, &data_len))
        return NULL;
    PyObject *arr = NULL, *shape = shape_tuple(dims, ndim);
    if (shape != NULL && copy) {
        arr = array_copy(shape, dtype, p + data_at, data_len);
    } else if (shape != NULL) {
        PyObject *at = PyLong_FromUnsignedLongLong(off + data_at);
        if (at != NULL)
            arr = PyObject_CallFunctionObjArgs(np_ndarray, shape, dtype, buffer, at, NULL);
        Py_XDECREF(at);
    }
    Py_DECREF(dtype);
    Py_XDECREF(shape);
    PyErr_Clear();
    return arr;
}

/* The header npy_header writes for `descr` (plain) and `shape`, into `out` (at least
 * NPY_HEADER_MAX bytes): its length. */
static Py_ssize_t write_header(char *out, const char *descr, const Py_ssize_t *shape,
                               int ndim) {
    char *t = out + 10;
    t += sprintf(t, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int i = 0; i < ndim; i++)
        t += sprintf(t, i ? ", %zd" : "%zd", shape[i]);
    t += sprintf(t, ndim == 1 ? ",), }" : "), }");
    Py_ssize_t total = (t - out) + 1;
    Py_ssize_t pad = (64 - total % 64) % 64;
    memset(t, ' ', (size_t)pad);
    t += pad;
    *t++ = '\n';
    uint16_t hlen = (uint16_t)(t - out - 10);
    memcpy(out, NPY_MAGIC, 8);
    out[8] = (char)(hlen & 0xff);
    out[9] = (char)(hlen >> 8);
    return t - out;
}

/* The headers written last, by dtype and shape: an invocation's outputs (and a worker's
 * inputs) have the shapes of the last ones, and formatting a header is the dearest part
 * of encoding a small array after a rest (cold code). */
#define KEPT_HEADERS 4
#define KEPT_HEADER_DIMS 8
typedef struct {
    PyObject *dtype, *header;
    int ndim;
    Py_ssize_t dims[KEPT_HEADER_DIMS];
} kept_header;

static kept_header headers[KEPT_HEADERS];
static unsigned n_headers;

/* The header of an array of `dtype` (plain: `descr`) and `shape` (a new reference), or
 * NULL with an exception set. */
static PyObject *header_of(PyObject *dtype, const char *descr, const Py_ssize_t *shape,
                           int ndim) {
    size_t dims_size = (size_t)ndim * sizeof *shape;
    for (unsigned i = 0; i < KEPT_HEADERS; i++)
        if (headers[i].header != NULL && headers[i].dtype == dtype && headers[i].ndim == ndim &&
            (ndim == 0 || memcmp(headers[i].dims, shape, dims_size) == 0))
            return Py_NewRef(headers[i].header);
    char text[NPY_HEADER_MAX];
    PyObject *h = PyBytes_FromStringAndSize(text, write_header(text, descr, shape, ndim));
    if (h != NULL && ndim <= KEPT_HEADER_DIMS) {
        kept_header *k = &headers[n_headers++ % KEPT_HEADERS];
        PyObject *old_dtype = k->dtype, *old_header = k->header;
        k->header = NULL;
        k->ndim = ndim;
        if (ndim > 0)
            memcpy(k->dims, shape, dims_size);
        k->dtype = Py_NewRef(dtype);
        k->header = Py_NewRef(h);
        Py_XDECREF(old_dtype);
        Py_XDECREF(old_header);
    }
    return h;
}

/*
 * Encode `value` into *e as npy_parts would (its header, then its data, pointed to) if it
 * is a plain array: 1; 0 (nothing held, no exception) for anything else.
 */
int npy_encode(PyObject *value, encoded *e) {
    if (!numpy_loaded() || Py_TYPE(value) != (PyTypeObject *)np_ndarray)
        return 0;
    PyObject *dtype = PyObject_GetAttr(value, str_dtype);
    kept_dtype *k = dtype ? descr_of_dtype(dtype) : NULL;
    char descr[MAX_DESCR];
    if (k != NULL)
        memcpy(descr, k->descr, sizeof descr);
    memset(e, 0, sizeof *e);
    if (k == NULL || PyObject_GetBuffer(value, &e->views[1], PyBUF_C_CONTIGUOUS) != 0 ||
        e->views[1].ndim > MAX_DIMS || (e->views[1].ndim && e->views[1].shape == NULL)) {
        if (e->views[1].obj != NULL)
            PyBuffer_Release(&e->views[1]);
        Py_XDECREF(dtype);
        PyErr_Clear();
        return 0;
    }
    PyObject *h = header_of(dtype, descr, e->views[1].shape, e->views[1].ndim);
    Py_DECREF(dtype);
    if (h == NULL || PyObject_GetBuffer(h, &e->views[0], PyBUF_SIMPLE) != 0) {
        Py_XDECREF(h);
        PyBuffer_Release(&e->views[1]);
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(h);  /* the view holds it */
    e->n_views = 2;
    e->size = (uint64_t)e->views[0].len + (uint64_t)e->views[1].len;
    return 1;
}

/* The names npy.c asks numpy objects for: 0, or -1 with an exception set. */
int npy_init(void) {
    str_dtype = PyUnicode_InternFromString("dtype");
    str_str = PyUnicode_InternFromString("str");
    str_isbuiltin = PyUnicode_InternFromString("isbuiltin");
    str_hasobject = PyUnicode_InternFromString("hasobject");
    str_itemsize = PyUnicode_InternFromString("itemsize");
    return str_dtype && str_str && str_isbuiltin && str_hasobject && str_itemsize ? 0 : -1;
}
