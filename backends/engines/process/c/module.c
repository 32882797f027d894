/*
 * The _sandboxc extension module: its method table (sandboxc.h says which file does what).
 */
#include "sandboxc.h"

PyObject *str_value, *str_key, *str_name, *empty_str;

static PyMethodDef methods[] = {
    {"receive", receive, METH_VARARGS,
     "receive(channel, header_size, capacity_offset, length_offset) -> (header, view, payload)."},
    {"write_inputs", write_inputs, METH_VARARGS,
     "write_inputs(context, sets, results, output_limit, encoder) -> capacity (< 0: too small)."},
    {"read_items", read_items, METH_VARARGS,
     "read_items(context, capacity, outputs, declared, decoder, item, copy) -> per set a "
     "tuple."},
    {"add_outputs", add_outputs, METH_VARARGS,
     "add_outputs(context, result, code, items, encoder) -> None or (needed, left)."},
    {"exchange", exchange, METH_VARARGS,
     "exchange(channel, memfd, header, payload, timeout, skip_ready, max_body) -> report."},
    {"assign", assign, METH_VARARGS,
     "assign(channel, memfd, header, payload, timeout): exchange's send, no wait."},
    {"report_size", py_report_size, METH_VARARGS,
     "report_size(data, max_body) -> bytes of the report data begins (0: not known yet)."},
    {"finish", finish, METH_VARARGS, "finish(channel, report): report, wait, exit."},
    {"ready", ready, METH_VARARGS, "ready(channel) -> 1 READY taken, 0 not yet, -1 neither."},
    {"heap_arenas", heap_arenas, METH_NOARGS,
     "heap_arenas(): Python arenas allocated from now on lie one after another."},
    {"huge_pages", huge_pages, METH_NOARGS,
     "huge_pages() -> bytes of private memory collapsed into 2 MiB pages."},
    {"immortalize", immortalize, METH_O,
     "immortalize(objects) -> objects made immortal (Python >= 3.12; else 0)."},
    {"zygote_loop", zygote_loop, METH_VARARGS,
     "zygote_loop(ctrl, cap, cpu, memory_limit, program, warm, reuse=False) -> None | "
     "(baseline, warm)."},
    {"prepare", prepare, METH_VARARGS,
     "prepare(channel, cpu_seconds) -> bytes of address space in use."},
    {"wait_assignment", wait_assignment, METH_VARARGS,
     "wait_assignment(channel, size) -> (header, memfd)."},
    {"track", track, METH_NOARGS,
     "track() -> bool: make this sandbox reusable, before its filter (snapshot.h)."},
    {"install_filter", install_filter, METH_VARARGS,
     "install_filter(program): no_new_privs, then the seccomp-bpf program (bytes)."},
    {"wipe", wipe, METH_VARARGS,
     "wipe(fd, mapping, limit): zero a context in place (or punch it out if large)."},
    {"load_segments", py_load_segments, METH_VARARGS,
     "load_segments(fd, n_segments, payload_len): read a native function's validated "
     "segments from fd and map them at their addresses."},
    {"run_native", run_native, METH_VARARGS,
     "run_native(entry, context, fd): strict mode, call entry(context), report, exit."},
    {"address_of", address_of, METH_VARARGS, "address_of(writable buffer) -> int."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sandboxc",
    "Low-level sandbox primitives of the process engine (seccomp, signals, native code).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__sandboxc(void) {
    empty_str = PyUnicode_New(0, 0);
    str_value = PyUnicode_InternFromString("value");
    str_key = PyUnicode_InternFromString("key");
    str_name = PyUnicode_InternFromString("name");
    if (empty_str == NULL || str_value == NULL || str_key == NULL || str_name == NULL ||
        npy_init() != 0)
        return NULL;
    return PyModule_Create(&module);
}
