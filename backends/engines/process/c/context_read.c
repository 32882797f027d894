/*
 * Reading a context (layout.py documents the layout; dandelion.h declares its structs):
 * the inputs, inside a sandbox, and the outputs, in the worker, where nothing in the
 * context is trusted (read_items).  Scalars, bytes and plain ndarrays (npy.c) are decoded
 * here as dandelion.codec says; json and other ndarray items by Python (a decoder passed
 * in).
 */
#include "sandboxc.h"

#include <string.h>
#include <sys/mman.h>

static const char *element_names[WIRE_EL_COUNT] = {"any", "bytes", "str", "int", "float",
                                                   "bool", "json", "ndarray"};

#define HUGE_COPY (2UL << 20)

/*
 * A bytes object holding a copy of `n` bytes at `p`.  A function that declares `bytes` gets
 * a bytes object (a memoryview of the context would lack bytes' methods), so a sandbox pays
 * one copy of each bytes input; a large one lands in fresh memory (malloc maps it anew in a
 * just-forked sandbox), where each 4 KiB page costs a page fault, and faults are dear on a
 * virtual machine (~2.6 ms a 4 MiB copy here).  `huge` (inside a sandbox) asks for
 * transparent huge pages over the copy's whole 2 MiB ranges first: one fault per 2 MiB
 * (~0.7 ms).  Best effort: without THP (or `enabled` at never) nothing changes.  Not in the
 * worker, whose allocations come from its long-lived heap.
 */
static PyObject *bytes_copy(const uint8_t *p, uint64_t n, int huge) {
    if (!huge || n < HUGE_COPY)
        return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (b == NULL)
        return NULL;
    uintptr_t start = (uintptr_t)PyBytes_AS_STRING(b);
    uintptr_t lo = (start + HUGE_COPY - 1) & ~(HUGE_COPY - 1);
    uintptr_t hi = (start + n) & ~(HUGE_COPY - 1);
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
    memcpy(PyBytes_AS_STRING(b), p, n);
    return b;
}

/* The Python value of an item's bytes; a plain ndarray in C (npy.c: a view of `whole`,
 * or a copy with `copy`), json and other ndarray items: decoder(code, memoryview slice of
 * `whole`).  `huge`: as bytes_copy() takes it. */
static PyObject *decode_value(int code, const uint8_t *p, uint64_t n, PyObject *whole,
                              uint64_t off, PyObject *decoder, int huge, int copy) {
    if (code == WIRE_EL_NDARRAY) {
        PyObject *arr = npy_decode(p, n, whole, off, copy);
        if (arr != NULL)
            return arr;
    }
    switch (code) {
    case WIRE_EL_ANY:
    case WIRE_EL_BYTES:
        return bytes_copy(p, n, huge);
    case WIRE_EL_STR:
        return PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)n, "surrogatepass");
    case WIRE_EL_INT: {
        if (n != 8)
            break;
        int64_t v;
        memcpy(&v, p, 8);
        return PyLong_FromLongLong((long long)v);
    }
    case WIRE_EL_FLOAT: {
        if (n != 8)
            break;
        double d;
        memcpy(&d, p, 8);
        return PyFloat_FromDouble(d != d ? Py_NAN : d);
    }
    case WIRE_EL_BOOL:
        if (n != 1 || p[0] > 1)
            break;
        return PyBool_FromLong(p[0]);
    default: {
        PyObject *slice = PySequence_GetSlice(whole, (Py_ssize_t)off, (Py_ssize_t)(off + n));
        if (slice == NULL)
            return NULL;
        PyObject *v = PyObject_CallFunction(decoder, "iO", code, slice);
        Py_DECREF(slice);
        return v;
    }
    }
    PyErr_Format(PyExc_ValueError, "%llu bytes are not a valid %s",
                 (unsigned long long)n, element_names[code]);
    return NULL;
}

/*
 * item(value, key, name) for dandelion's Item (a frozen class with slots): its three slots
 * set directly, without running its __init__, whose checks hold by construction here (key
 * an int, name a str) — most of what building an item costs.  A class whose instances have
 * a __dict__ is called as usual.
 */
static PyObject *new_item(PyTypeObject *type, PyObject *value, PyObject *key, PyObject *name) {
    if (!PyType_Check((PyObject *)type) || type->tp_dictoffset != 0 ||
        type->tp_alloc == NULL)  /* not a slotted class: call it */
        return PyObject_CallFunctionObjArgs((PyObject *)type, value, key, name, NULL);
    PyObject *it = type->tp_alloc(type, 0);
    if (it == NULL)
        return NULL;
    if (PyObject_GenericSetAttr(it, str_value, value) != 0 ||
        PyObject_GenericSetAttr(it, str_key, key) != 0 ||
        PyObject_GenericSetAttr(it, str_name, name) != 0) {
        Py_DECREF(it);
        return NULL;
    }
    return it;
}

/*
 * Where a context laid out with `capacity` keeps its item table and how many entries it
 * has: the outputs' (growing down from the end) or the inputs' (where the header says),
 * checked to lie inside the context.  0, or -1 with ValueError set.
 */
static int item_table(const dd_header *h, uint64_t capacity, int outputs, uint64_t *n_items,
                      uint64_t *table) {
    if (outputs) {
        if (memcmp(h->magic, WIRE_CONTEXT_MAGIC, 8) != 0 || h->capacity != capacity) {
            PyErr_SetString(PyExc_ValueError, "the sandbox overwrote the context header");
            return -1;
        }
        *n_items = h->n_out_items;
        if (*n_items > (capacity - 128) / sizeof(dd_item_desc)) {
            PyErr_Format(PyExc_ValueError, "the context claims %llu output items, more than "
                         "fit", (unsigned long long)*n_items);
            return -1;
        }
        *table = capacity - *n_items * sizeof(dd_item_desc);
        return 0;
    }
    *n_items = h->n_in_items;
    *table = h->in_items;
    if (*table < 128 || *table > capacity ||
        *n_items > (capacity - *table) / sizeof(dd_item_desc)) {
        PyErr_SetString(PyExc_ValueError, "item table outside the context");
        return -1;
    }
    return 0;
}

/* The element codes of the input set table (to PyMem_Free), *n of them; NULL with an
 * exception set. */
static char *input_codes(const uint8_t *base, uint64_t capacity, Py_ssize_t *n) {
    const dd_header *h = (const dd_header *)base;
    uint64_t count = h->n_in_sets;
    if (h->in_sets < 128 || h->in_sets > capacity ||
        count > (capacity - h->in_sets) / sizeof(dd_set_desc)) {
        PyErr_SetString(PyExc_ValueError, "set table outside the context");
        return NULL;
    }
    char *codes = PyMem_Malloc(count ? count : 1);
    if (codes == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    const dd_set_desc *sd = (const dd_set_desc *)(base + h->in_sets);
    for (uint64_t i = 0; i < count; i++)
        codes[i] = (char)(sd[i].element < WIRE_EL_COUNT ? sd[i].element : WIRE_EL_COUNT);
    *n = (Py_ssize_t)count;
    return codes;
}

/* What the item table says of an item, checked: it lies in the context, its codes are
 * known, its set exists (and for outputs its code is the declared one).  Its element code,
 * or -1 with ValueError set. */
static int item_code(const dd_item_desc *d, uint64_t k, uint64_t capacity, int outputs,
                     const char *declared, Py_ssize_t n_declared) {
    if (d->data_off > capacity || d->data_len > capacity - d->data_off ||
        d->name_off > capacity || d->name_len > capacity - d->name_off) {
        PyErr_Format(PyExc_ValueError, "item %llu points outside the context",
                     (unsigned long long)k);
        return -1;
    }
    if (d->element >= WIRE_EL_COUNT) {
        PyErr_Format(PyExc_ValueError, "item %llu has unknown element code %u",
                     (unsigned long long)k, d->element);
        return -1;
    }
    if (d->set >= (uint64_t)n_declared) {
        if (outputs)
            PyErr_Format(PyExc_ValueError, "an output item names result %u, but the "
                         "function declares %zd", d->set, n_declared);
        else
            PyErr_Format(PyExc_ValueError, "item %llu names input set %u of %zd",
                         (unsigned long long)k, d->set, n_declared);
        return -1;
    }
    int want = (unsigned char)declared[d->set];
    if (want >= WIRE_EL_COUNT) {
        PyErr_SetString(PyExc_ValueError, "unknown declared element code");
        return -1;
    }
    int code = d->element ? (int)d->element : want;
    if (outputs && want != WIRE_EL_ANY && code != want) {
        PyErr_Format(PyExc_ValueError, "result %u is declared %s but the sandbox returned "
                     "%s", d->set, element_names[want], element_names[code]);
        return -1;
    }
    return code;
}

/* An item of the context at `base` (its entry `d`, checked, of element `code`):
 * item_type(value, key, name), or NULL with an exception set. */
static PyObject *item_read(const uint8_t *base, const dd_item_desc *d, int code,
                           PyObject *view, PyObject *decoder, PyObject *item_type, int huge,
                           int copy) {
    PyObject *value = decode_value(code, base + d->data_off, d->data_len, view, d->data_off,
                                   decoder, huge, copy);
    if (value == NULL)
        return NULL;
    PyObject *name;
    if (d->name_len == 0) {
        name = Py_NewRef(empty_str);
    } else {
        name = PyUnicode_DecodeUTF8((const char *)base + d->name_off,
                                    (Py_ssize_t)d->name_len, "replace");
    }
    PyObject *key = name ? PyLong_FromLongLong((long long)d->key) : NULL;
    PyObject *it = key ? new_item((PyTypeObject *)item_type, value, key, name) : NULL;
    Py_DECREF(value);
    Py_XDECREF(name);
    Py_XDECREF(key);
    return it;
}

/* A tuple of tuples from a list of n lists; NULL with an exception set. */
static PyObject *as_tuples(PyObject *lists, Py_ssize_t n) {
    PyObject *result = PyTuple_New(n);
    if (result == NULL)
        return NULL;
    for (Py_ssize_t s = 0; s < n; s++) {
        PyObject *t = PyList_AsTuple(PyList_GET_ITEM(lists, s));
        if (t == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyTuple_SET_ITEM(result, s, t);
    }
    return result;
}

/*
 * read_items(context, capacity, outputs, declared, decoder, item, copy) -> per set, a
 * tuple of item(value, key, name): the inputs (outputs false, inside a sandbox) or the
 * outputs (in the worker, where nothing in the context is trusted) of a context laid out
 * with `capacity`.  `declared` holds the element code of each parameter or result (bytes;
 * for inputs None takes them from the input set table, which the worker wrote); an item's
 * own code overrides 0 ("as declared"); for outputs the two must agree.  Scalars, bytes
 * and plain ndarrays (npy.c: views of the context, or copies with `copy`) are decoded
 * here; json and other ndarray items by decoder(code, memoryview slice of the context).
 * Raises ValueError for anything malformed (and what the decoder raises).
 */
PyObject *read_items(PyObject *self, PyObject *args) {
    PyObject *whole, *decoder, *item_type;
    unsigned long long capacity;
    int outputs, copy;
    const char *declared;
    Py_ssize_t n_declared;
    if (!PyArg_ParseTuple(args, "OKpz#OOp", &whole, &capacity, &outputs, &declared, &n_declared,
                          &decoder, &item_type, &copy))
        return NULL;
    Py_buffer ctx;
    if (PyObject_GetBuffer(whole, &ctx, PyBUF_SIMPLE) != 0)
        return NULL;
    PyObject *view = NULL, *sets = NULL, *result = NULL;
    char *from_table = NULL;
    const uint8_t *base = ctx.buf;
    if (capacity > (uint64_t)ctx.len || capacity < 128) {
        PyErr_SetString(PyExc_ValueError, "the context is smaller than its capacity");
        goto done;
    }
    uint64_t n_items, table;
    if (item_table((const dd_header *)base, capacity, outputs, &n_items, &table) != 0)
        goto done;
    if (!outputs && declared == NULL) {  /* the element codes of the input set table */
        if ((from_table = input_codes(base, capacity, &n_declared)) == NULL)
            goto done;
        declared = from_table;
    }
    if (declared == NULL) {
        PyErr_SetString(PyExc_ValueError, "outputs are read with the declared element codes");
        goto done;
    }
    view = PyMemoryView_FromObject(whole);
    sets = PyList_New(n_declared);
    if (view == NULL || sets == NULL)
        goto done;
    for (Py_ssize_t s = 0; s < n_declared; s++) {
        PyObject *l = PyList_New(0);
        if (l == NULL)
            goto done;
        PyList_SET_ITEM(sets, s, l);
    }
    for (uint64_t k = 0; k < n_items; k++) {
        /* outputs: entry k is at capacity - 48 * (k + 1).  Copied once, checked and used
         * from the copy: a sandbox that still runs cannot change it in between. */
        const dd_item_desc entry = ((const dd_item_desc *)(base + table))
                                   [outputs ? n_items - 1 - k : k];
        int code = item_code(&entry, k, capacity, outputs, declared, n_declared);
        if (code < 0)
            goto done;
        PyObject *it = item_read(base, &entry, code, view, decoder, item_type, !outputs,
                                 copy);
        if (it == NULL)
            goto done;
        int rc = PyList_Append(PyList_GET_ITEM(sets, entry.set), it);
        Py_DECREF(it);
        if (rc != 0)
            goto done;
    }
    result = as_tuples(sets, n_declared);
done:
    PyMem_Free(from_table);
    Py_XDECREF(sets);
    Py_XDECREF(view);
    PyBuffer_Release(&ctx);
    return result;
}
