/*
 * The _sandboxc extension: the few things a sandbox needs that Python cannot do by itself,
 * and the hot paths of the process engine that Python would do slowly.  One file per
 * concern, each declaring here what module.c's method table names:
 *
 *  - lockdown.c: the sandbox's lockdown (descriptors, rlimits, seccomp), the zygote's
 *    control loop, native code under strict mode;
 *  - channel.c: the channel between the worker and a sandbox (assignments and reports);
 *  - context_write.c, context_read.c: the context layout (items written into a context,
 *    read out of one); encode.c: a value as an item's bytes; npy.c: a plain ndarray's
 *    .npy encoding, both ways;
 *  - memory.c: memory: a context wiped for reuse, the zygote's heap laid out for huge pages
 *    and made immortal.
 *
 * Everything that parses untrusted data (ELF headers, pickles, items) lives elsewhere or
 * runs after the filter: the ELF is validated by the trusted worker, pickles and items are
 * read only after the filter, and the worker reads a context's outputs as untrusted.
 * The extension is built with hidden visibility: only PyInit__sandboxc is exported.
 */
#ifndef DANDELION_SANDBOXC_H
#define DANDELION_SANDBOXC_H

#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <stdint.h>

#define DANDELION_NO_ENTRY /* only the structs of the context layout, not a function */
#include "dandelion.h"
#include "protocol.h"

/* lockdown.c */
PyObject *install_filter(PyObject *self, PyObject *args);
PyObject *track(PyObject *self, PyObject *noargs);
PyObject *prepare(PyObject *self, PyObject *args);
PyObject *zygote_loop(PyObject *self, PyObject *args);
PyObject *py_load_segments(PyObject *self, PyObject *args);
PyObject *run_native(PyObject *self, PyObject *args);
PyObject *address_of(PyObject *self, PyObject *args);

/* channel.c */
PyObject *wait_assignment(PyObject *self, PyObject *args);
PyObject *receive(PyObject *self, PyObject *args);
PyObject *exchange(PyObject *self, PyObject *args);
PyObject *assign(PyObject *self, PyObject *args);
PyObject *py_report_size(PyObject *self, PyObject *args);
PyObject *finish(PyObject *self, PyObject *args);
PyObject *ready(PyObject *self, PyObject *args);

/* encode.c */
/* One value as bytes: scalars in `small`, text and buffers pointed to (`views` hold the
 * buffers of a tuple of parts, concatenated). */
typedef struct {
    uint8_t small[8];
    const uint8_t *data;
    uint64_t size;
    PyObject *text;            /* a UTF-8 bytes object for a str with surrogates */
    Py_buffer views[4];
    int n_views;
} encoded;
int encode_value(int code, PyObject *value, encoded *e);  /* 0, or -1 with an exception */
void encoded_release(encoded *e);
void encoded_copy(const encoded *e, uint8_t *dst);

/* npy.c: a plain ndarray's .npy, or "not plain" (NULL / 0, no exception set) */
PyObject *npy_decode(const uint8_t *p, uint64_t n, PyObject *buffer, uint64_t off, int copy);
int npy_encode(PyObject *value, encoded *e);
int npy_init(void);  /* 0, or -1 with an exception set */

/* context_write.c, context_read.c */
PyObject *write_inputs(PyObject *self, PyObject *args);
PyObject *add_outputs(PyObject *self, PyObject *args);
PyObject *read_items(PyObject *self, PyObject *args);
/* interned "value", "key", "name" and "" (set up by module.c) */
extern PyObject *str_value, *str_key, *str_name, *empty_str;

/* memory.c */
PyObject *wipe(PyObject *self, PyObject *args);
PyObject *heap_arenas(PyObject *self, PyObject *noargs);
PyObject *huge_pages(PyObject *self, PyObject *noargs);
PyObject *immortalize(PyObject *self, PyObject *objects);

#endif
