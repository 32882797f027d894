/*
 * Writing a context (layout.py documents the layout; dandelion.h declares its structs):
 * the inputs, by the worker (write_inputs), and a result's outputs, by a sandbox
 * (add_outputs).  Scalars and plain ndarrays (npy.c) are encoded here as dandelion.codec
 * says; json and other ndarray items travel as bytes that Python encodes (an encoder
 * passed in).
 */
#include "sandboxc.h"

#include <string.h>

_Static_assert(sizeof(dd_header) <= 128, "the header fits its 128 bytes");
_Static_assert(sizeof(dd_set_desc) == 32 && sizeof(dd_item_desc) == 48, "table entries");
#define ALIGN16(n) (((n) + 15) & ~(uint64_t)15)

/* The UTF-8 of a name (NULL and 0 for None or ""). */
static int name_bytes(PyObject *name, const char **s, Py_ssize_t *n) {
    *s = NULL;
    *n = 0;
    if (name == Py_None)
        return 0;
    if (PyBytes_Check(name)) {
        *s = PyBytes_AS_STRING(name);
        *n = PyBytes_GET_SIZE(name);
        return 0;
    }
    *s = PyUnicode_AsUTF8AndSize(name, n);
    return *s == NULL ? -1 : 0;
}


/* An element code from a Python int: 0 <= code < WIRE_EL_COUNT, or -1 with an exception set. */
static int element_code(PyObject *obj) {
    long code = PyLong_AsLong(obj);
    if (code >= 0 && code < WIRE_EL_COUNT)
        return (int)code;
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "unknown element code");
    return -1;
}

/*
 * The element code and the object to encode for an item's value declared `declared`:
 * scalars and bytes as they are; json, ndarray and untyped values other than those by
 * encoder(code, value) -> (code, bytes-like or tuple of parts).  *owned: a new reference
 * to release (NULL when `value` itself is encoded).  0 or -1 with an exception set.
 */
static int item_payload(PyObject *value, int declared, PyObject *encoder, int *code,
                        PyObject **obj, PyObject **owned) {
    *owned = NULL;
    *obj = value;
    *code = declared;
    if (declared == WIRE_EL_ANY) {
        if (PyBytes_Check(value) || PyByteArray_Check(value) || PyMemoryView_Check(value))
            *code = WIRE_EL_BYTES;
        else if (PyUnicode_Check(value))
            *code = WIRE_EL_STR;
        else if (PyBool_Check(value))
            *code = WIRE_EL_BOOL;
        else if (PyLong_Check(value))
            *code = WIRE_EL_INT;
        else if (PyFloat_Check(value))
            *code = WIRE_EL_FLOAT;
    }
    if (*code != WIRE_EL_ANY && *code != WIRE_EL_JSON && *code != WIRE_EL_NDARRAY)
        return 0;
    PyObject *r = PyObject_CallFunction(encoder, "iO", declared, value);
    if (r == NULL)
        return -1;
    int c = PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2 ? element_code(PyTuple_GET_ITEM(r, 0))
                                                          : -1;
    if (c < 0) {
        Py_DECREF(r);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "an encoder returns (element code, data)");
        return -1;
    }
    *code = c;
    *obj = PyTuple_GET_ITEM(r, 1);
    *owned = r;
    return 0;
}

/* An item's value, key and name attributes (new references). */
static int item_fields(PyObject *item, PyObject **value, long long *key, PyObject **name) {
    *value = PyObject_GetAttr(item, str_value);
    if (*value == NULL)
        return -1;
    PyObject *k = PyObject_GetAttr(item, str_key);
    if (k == NULL)
        goto fail;
    *key = PyLong_AsLongLong(k);
    Py_DECREF(k);
    if (*key == -1 && PyErr_Occurred())
        goto fail;
    *name = PyObject_GetAttr(item, str_name);
    if (*name != NULL)
        return 0;
fail:
    Py_CLEAR(*value);
    return -1;
}

/* Bytes an item's data and name take in the heap. */
static uint64_t item_room(uint64_t size, Py_ssize_t name_len) {
    return ALIGN16(size) + ALIGN16((uint64_t)name_len);
}

/* Write an item's data and name at *cur (advanced) and fill its entry. */
static void item_write(uint8_t *base, uint64_t *cur, dd_item_desc *d, const encoded *e,
                       int code, long long key, const char *nm, Py_ssize_t nl,
                       uint32_t set) {
    d->data_off = *cur;
    d->data_len = e->size;
    d->key = key;
    d->element = (uint32_t)code;
    d->set = set;
    d->reserved = 0;
    encoded_copy(e, base + *cur);
    *cur = ALIGN16(*cur + e->size);
    d->name_off = nl ? *cur : 0;
    d->name_len = (uint32_t)nl;
    if (nl)
        memcpy(base + *cur, nm, (size_t)nl);
    *cur = ALIGN16(*cur + (uint64_t)nl);
}

/* Encode one item (its fields from item_fields) into *e; *code its element code.  A plain
 * ndarray declared ndarray or untyped is encoded in C (npy.c), as the encoder would. */
static int item_encode(PyObject *value, int declared, PyObject *encoder, int *code,
                       encoded *e, PyObject **owned) {
    PyObject *obj;
    if ((declared == WIRE_EL_NDARRAY || declared == WIRE_EL_ANY) && npy_encode(value, e)) {
        *code = WIRE_EL_NDARRAY;
        *owned = NULL;
        return 0;
    }
    if (item_payload(value, declared, encoder, code, &obj, owned) != 0)
        return -1;
    if (encode_value(*code, obj, e) != 0) {
        Py_CLEAR(*owned);
        return -1;
    }
    return 0;
}

/* Fill a set's entry and write its name at *cur (advanced). */
static void set_write(uint8_t *base, uint64_t *cur, dd_set_desc *sd, const char *nm,
                      Py_ssize_t nl, int element, uint32_t first_item, uint32_t n_items) {
    sd->name_off = nl ? *cur : 0;
    sd->name_len = (uint32_t)nl;
    sd->element = (uint32_t)element;
    sd->first_item = first_item;
    sd->n_items = n_items;
    sd->reserved = 0;
    if (nl)
        memcpy(base + *cur, nm, (size_t)nl);
    *cur = ALIGN16(*cur + (uint64_t)nl);
}

/* One item, ready to be written: its fields, element code, encoding and name. */
typedef struct {
    PyObject *value, *name, *owned;
    long long key;
    int code, is_encoded;
    encoded e;
    const char *nm;
    Py_ssize_t nl;
} item_bytes;

/* Read, encode and name `item` (declared `declared`) into *ib: 0, or -1 with an exception
 * set.  item_close() it either way. */
static int item_open(PyObject *item, int declared, PyObject *encoder, item_bytes *ib) {
    memset(ib, 0, sizeof *ib);
    if (item_fields(item, &ib->value, &ib->key, &ib->name) != 0)
        return -1;
    if (item_encode(ib->value, declared, encoder, &ib->code, &ib->e, &ib->owned) != 0)
        return -1;
    ib->is_encoded = 1;
    return name_bytes(ib->name, &ib->nm, &ib->nl);
}

static void item_close(item_bytes *ib) {
    if (ib->is_encoded) {
        encoded_release(&ib->e);
        Py_XDECREF(ib->owned);
    }
    Py_XDECREF(ib->value);
    Py_XDECREF(ib->name);
}


/* The items of each set (as fast sequences) into the list `fast`; how many there are in
 * all, or -1 with an exception set. */
static Py_ssize_t input_shapes(PyObject *sets, PyObject *fast) {
    Py_ssize_t n_items = 0;
    for (Py_ssize_t s = 0; s < PyList_GET_SIZE(sets); s++) {
        PyObject *set = PyList_GET_ITEM(sets, s);
        if (!PyTuple_Check(set) || PyTuple_GET_SIZE(set) != 3) {
            PyErr_SetString(PyExc_TypeError, "a set is (name, element code, items)");
            return -1;
        }
        PyObject *items = PySequence_Fast(PyTuple_GET_ITEM(set, 2), "items are a sequence");
        if (items == NULL)
            return -1;
        PyList_SET_ITEM(fast, s, items);
        n_items += PySequence_Fast_GET_SIZE(items);
    }
    return n_items;
}

/* The first pass: encode every item into `ibs` (*opened of them to item_close(), opened or
 * not) and add the bytes that they and the names take to *need.  0 or -1 with an
 * exception set. */
static int input_room(PyObject *sets, PyObject *fast, PyObject *results, PyObject *encoder,
                      item_bytes *ibs, Py_ssize_t *opened, uint64_t *need) {
    for (Py_ssize_t s = 0; s < PyList_GET_SIZE(sets); s++) {
        PyObject *set = PyList_GET_ITEM(sets, s);
        PyObject *items = PyList_GET_ITEM(fast, s);
        const char *nm;
        Py_ssize_t nl;
        int declared = element_code(PyTuple_GET_ITEM(set, 1));
        if (declared < 0 || name_bytes(PyTuple_GET_ITEM(set, 0), &nm, &nl) != 0)
            return -1;
        *need += ALIGN16((uint64_t)nl);
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(items); i++) {
            item_bytes *ib = &ibs[(*opened)++];
            if (item_open(PySequence_Fast_GET_ITEM(items, i), declared, encoder, ib) != 0)
                return -1;
            *need += item_room(ib->e.size, ib->nl);
        }
    }
    for (Py_ssize_t r = 0; r < PyList_GET_SIZE(results); r++) {
        PyObject *res = PyList_GET_ITEM(results, r);
        const char *nm;
        Py_ssize_t nl;
        if (!PyTuple_Check(res) || PyTuple_GET_SIZE(res) != 2 ||
            name_bytes(PyTuple_GET_ITEM(res, 0), &nm, &nl) != 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "a result is (name, element code)");
            return -1;
        }
        if (element_code(PyTuple_GET_ITEM(res, 1)) < 0)
            return -1;
        *need += ALIGN16((uint64_t)nl);
    }
    return 0;
}

/* Where the tables go: the input sets after the header, then the output sets, then the
 * input items; names and data from `heap` on. */
struct tables {
    uint64_t in_sets, out_sets, in_items, heap;
};

static struct tables tables_of(Py_ssize_t n_sets, Py_ssize_t n_results, Py_ssize_t n_items) {
    struct tables at;
    at.in_sets = 128;
    at.out_sets = at.in_sets + sizeof(dd_set_desc) * (uint64_t)n_sets;
    at.in_items = at.out_sets + sizeof(dd_set_desc) * (uint64_t)n_results;
    at.heap = ALIGN16(at.in_items + sizeof(dd_item_desc) * (uint64_t)n_items);
    return at;
}

/* The second pass: write the tables, the names and what the first pass encoded, and the
 * header, into a context of `capacity` bytes at `base`. */
static void input_write(uint8_t *base, uint64_t capacity, PyObject *sets, PyObject *fast,
                        PyObject *results, item_bytes *ibs, Py_ssize_t n_items) {
    Py_ssize_t n_sets = PyList_GET_SIZE(sets), n_results = PyList_GET_SIZE(results);
    struct tables at = tables_of(n_sets, n_results, n_items);
    uint64_t cur = at.heap;
    memset(base, 0, (size_t)at.in_items);
    uint32_t item_index = 0;
    for (Py_ssize_t s = 0; s < n_sets; s++) {
        PyObject *set = PyList_GET_ITEM(sets, s);
        Py_ssize_t n = PySequence_Fast_GET_SIZE(PyList_GET_ITEM(fast, s));
        const char *nm;
        Py_ssize_t nl;
        name_bytes(PyTuple_GET_ITEM(set, 0), &nm, &nl);  /* checked by input_room() */
        set_write(base, &cur, (dd_set_desc *)(base + at.in_sets) + s, nm, nl,
                  element_code(PyTuple_GET_ITEM(set, 1)), item_index, (uint32_t)n);
        for (Py_ssize_t i = 0; i < n; i++, item_index++) {
            item_bytes *ib = &ibs[item_index];
            item_write(base, &cur, (dd_item_desc *)(base + at.in_items) + item_index, &ib->e,
                       ib->code, ib->key, ib->nm, ib->nl, (uint32_t)s);
        }
    }
    for (Py_ssize_t r = 0; r < n_results; r++) {
        PyObject *res = PyList_GET_ITEM(results, r);
        const char *nm;
        Py_ssize_t nl;
        name_bytes(PyTuple_GET_ITEM(res, 0), &nm, &nl);
        set_write(base, &cur, (dd_set_desc *)(base + at.out_sets) + r, nm, nl,
                  element_code(PyTuple_GET_ITEM(res, 1)), 0, 0);
    }
    dd_header *h = (dd_header *)base;
    memcpy(h->magic, WIRE_CONTEXT_MAGIC, 8);
    h->capacity = capacity;
    h->n_in_sets = (uint32_t)n_sets;
    h->n_in_items = (uint32_t)n_items;
    h->in_sets = at.in_sets;
    h->in_items = at.in_items;
    h->n_out_sets = (uint32_t)n_results;
    h->n_out_items = 0;
    h->out_sets = at.out_sets;
    h->heap_cur = cur;
    h->heap_end = capacity;
}

/*
 * write_inputs(context, sets, results, output_limit, encoder) -> capacity: lay out the
 * inputs.  `sets` is a list of (name, element code, items) per parameter, the items
 * objects with `value`, `key` and `name`; `results` a list of (name, element code) per
 * result; `encoder` as item_payload() says.  The capacity is what the inputs take plus
 * `output_limit`, rounded to pages; when that is more than `context` holds, nothing is
 * written and the capacity needed is returned negated.  Each item is encoded once: the
 * first pass keeps what it encoded for the second to write.
 */
PyObject *write_inputs(PyObject *self, PyObject *args) {
    Py_buffer ctx;
    PyObject *sets, *results, *encoder;
    unsigned long long output_limit;
    if (!PyArg_ParseTuple(args, "w*O!O!KO", &ctx, &PyList_Type, &sets, &PyList_Type, &results,
                          &output_limit, &encoder))
        return NULL;
    Py_ssize_t n_items = 0, opened = 0;
    item_bytes *ibs = NULL;
    PyObject *ret = NULL, *fast = PyList_New(PyList_GET_SIZE(sets));
    if (fast == NULL || (n_items = input_shapes(sets, fast)) < 0)
        goto done;
    ibs = PyMem_Calloc(n_items ? (size_t)n_items : 1, sizeof *ibs);
    if (ibs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    uint64_t need = 0;
    if (input_room(sets, fast, results, encoder, ibs, &opened, &need) != 0)
        goto done;
    need += tables_of(PyList_GET_SIZE(sets), PyList_GET_SIZE(results), n_items).heap;
    uint64_t capacity = (need + output_limit + 4095) & ~(uint64_t)4095;
    if (capacity > (uint64_t)ctx.len) {
        ret = PyLong_FromLongLong(-(long long)capacity);
        goto done;
    }
    input_write(ctx.buf, capacity, sets, fast, results, ibs, n_items);
    ret = PyLong_FromUnsignedLongLong(capacity);
done:
    for (Py_ssize_t k = 0; k < opened; k++)
        item_close(&ibs[k]);
    PyMem_Free(ibs);
    Py_XDECREF(fast);
    PyBuffer_Release(&ctx);
    return ret;
}


/*
 * add_outputs(context, result, element code, items, encoder) -> None, or (bytes needed,
 * bytes left) when the context is full: append a result's items (objects with `value`,
 * `key` and `name`) as output items (inside a sandbox): their data and names into the
 * heap, their entries below the output table.  Items added before one that does not fit
 * stay.
 */
PyObject *add_outputs(PyObject *self, PyObject *args) {
    Py_buffer ctx;
    unsigned int set;
    int declared;
    PyObject *items, *encoder;
    if (!PyArg_ParseTuple(args, "w*IiOO", &ctx, &set, &declared, &items, &encoder))
        return NULL;
    PyObject *ret = NULL, *fast = NULL;
    uint8_t *base = ctx.buf;
    dd_header *h = (dd_header *)base;
    if ((uint64_t)ctx.len < 128 || declared < 0 || declared >= WIRE_EL_COUNT ||
        set >= h->n_out_sets) {
        PyErr_SetString(PyExc_ValueError, "not a context, no such result, or an unknown "
                        "element code");
        goto done;
    }
    fast = PySequence_Fast(items, "items are a sequence");
    if (fast == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); i++) {
        item_bytes ib;
        int rc = item_open(PySequence_Fast_GET_ITEM(fast, i), declared, encoder, &ib);
        if (rc == 0) {
            uint64_t need = item_room(ib.e.size, ib.nl) + sizeof(dd_item_desc);
            uint64_t cur = h->heap_cur, end = h->heap_end;
            if (end > (uint64_t)ctx.len || cur > end || need > end - cur) {
                uint64_t left = end >= cur && end <= (uint64_t)ctx.len ? end - cur : 0;
                ret = Py_BuildValue("(KK)", (unsigned long long)need, (unsigned long long)left);
                rc = -1;
            } else {
                end -= sizeof(dd_item_desc);
                item_write(base, &cur, (dd_item_desc *)(base + end), &ib.e, ib.code, ib.key,
                           ib.nm, ib.nl, set);
                h->heap_cur = cur;
                h->heap_end = end;
                h->n_out_items++;
            }
        }
        item_close(&ib);
        if (rc != 0)
            goto done;
    }
    ret = Py_NewRef(Py_None);
done:
    Py_XDECREF(fast);
    PyBuffer_Release(&ctx);
    return ret;
}
