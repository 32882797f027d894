/*
 * One value as the bytes of an item, as dandelion.codec encodes it: scalars here, text and
 * buffers (a bytes-like value, or a tuple of parts that Python encoded) pointed to, so that
 * writing them into a context is their only copy.
 */
#include "sandboxc.h"

#include <string.h>

void encoded_release(encoded *e) {
    for (int i = 0; i < e->n_views; i++)
        PyBuffer_Release(&e->views[i]);
    e->n_views = 0;
    Py_CLEAR(e->text);
}

static int encode_int(PyObject *value, encoded *e) {
    if (!PyLong_Check(value) || PyBool_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "expected int");
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow) {
        PyErr_SetString(PyExc_OverflowError, "does not fit in 64 bits");
        return -1;
    }
    if (v == -1 && PyErr_Occurred())
        return -1;
    int64_t le = (int64_t)v;
    memcpy(e->small, &le, 8);  /* x86-64 and arm64 are little-endian */
    e->data = e->small;
    e->size = 8;
    return 0;
}

static int encode_float(PyObject *value, encoded *e) {
    if (!(PyFloat_Check(value) || PyLong_Check(value)) || PyBool_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "expected float");
        return -1;
    }
    double d = PyFloat_AsDouble(value);
    if (d == -1.0 && PyErr_Occurred())
        return -1;
    memcpy(e->small, &d, 8);
    e->data = e->small;
    e->size = 8;
    return 0;
}

static int encode_bool(PyObject *value, encoded *e) {
    if (!PyBool_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "expected bool");
        return -1;
    }
    e->small[0] = value == Py_True;
    e->data = e->small;
    e->size = 1;
    return 0;
}

static int encode_str(PyObject *value, encoded *e) {
    if (!PyUnicode_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "expected str");
        return -1;
    }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(value, &n);
    if (s == NULL) {  /* lone surrogates: as dandelion.codec, surrogatepass */
        PyErr_Clear();
        e->text = PyUnicode_AsEncodedString(value, "utf-8", "surrogatepass");
        if (e->text == NULL)
            return -1;
        s = PyBytes_AS_STRING(e->text);
        n = PyBytes_GET_SIZE(e->text);
    }
    e->data = (const uint8_t *)s;
    e->size = (uint64_t)n;
    return 0;
}

/* A bytes-like value, or a tuple of bytes-like parts written one after the other. */
static int encode_buffers(PyObject *value, encoded *e) {
    if (PyTuple_Check(value)) {
        Py_ssize_t n = PyTuple_GET_SIZE(value);
        if (n > 4) {
            PyErr_SetString(PyExc_TypeError, "at most 4 parts");
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            if (PyObject_GetBuffer(PyTuple_GET_ITEM(value, i), &e->views[i], PyBUF_SIMPLE) != 0) {
                encoded_release(e);
                return -1;
            }
            e->n_views++;
            e->size += (uint64_t)e->views[i].len;
        }
        return 0;
    }
    if (PyObject_GetBuffer(value, &e->views[0], PyBUF_SIMPLE) != 0)
        return -1;
    e->n_views = 1;
    e->data = e->views[0].buf;
    e->size = (uint64_t)e->views[0].len;
    return 0;
}

/* Encode `value` as element `code` into *e (release with encoded_release).  0 or -1 with
 * TypeError / OverflowError set. */
int encode_value(int code, PyObject *value, encoded *e) {
    memset(e, 0, sizeof *e);
    switch (code) {
    case WIRE_EL_INT:
        return encode_int(value, e);
    case WIRE_EL_FLOAT:
        return encode_float(value, e);
    case WIRE_EL_BOOL:
        return encode_bool(value, e);
    case WIRE_EL_STR:
        return encode_str(value, e);
    default:
        return encode_buffers(value, e);
    }
}

void encoded_copy(const encoded *e, uint8_t *dst) {
    if (e->n_views == 0) {
        memcpy(dst, e->data, e->size);
        return;
    }
    for (int i = 0; i < e->n_views; i++) {
        memcpy(dst, e->views[i].buf, (size_t)e->views[i].len);
        dst += e->views[i].len;
    }
}

