/*
 * _wasmc: the wasm engine's sandbox, one invocation's calls of wasmtime's C API in C.
 *
 * Called through ctypes, each of the C API's functions costs the engine about half a
 * microsecond to a microsecond and a half of argument conversion (measured here: 0.56 us
 * with two arguments, 1.34 us with six), and an invocation makes eleven such calls.  A
 * Sandbox makes them from C: open (a store with its limits and a fresh instance),
 * grow_to, call, close, each one call from Python.
 *
 * Nothing here links wasmtime: `bind` hands over the addresses of the C API's functions in
 * the library the `wasmtime` package loaded (whose version range pyproject.toml pins),
 * the layout of the two structures read here (where an extern's and a value's union
 * starts, as the package declares them), and the Python function that makes the
 * exception of a wasmtime error or trap.  Structures the C API fills in are kept in the
 * Sandbox as opaque bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

typedef void *(*store_new_t)(void *engine, void *data, void *finalizer);
typedef void *(*store_context_t)(void *store);
typedef void (*store_limiter_t)(void *store, int64_t memory, int64_t table, int64_t instances,
                                int64_t tables, int64_t memories);
typedef void (*set_deadline_t)(void *context, uint64_t ticks);
typedef void *(*instantiate_t)(void *pre, void *context, void *instance, void **trap);
typedef _Bool (*export_get_t)(void *context, void *instance, const char *name, size_t len,
                              void *out);
typedef void *(*grow_t)(void *context, void *memory, uint64_t pages, uint64_t *previous);
typedef uint8_t *(*data_t)(void *context, void *memory);
typedef size_t (*data_size_t)(void *context, void *memory);
typedef void *(*call_t)(void *context, void *func, void *values, size_t n, void **trap);
typedef void (*global_get_t)(void *context, void *global, void *value);
typedef void (*store_delete_t)(void *store);

/* The C API's functions, in the order `bind` takes their addresses. */
static struct {
    store_new_t store_new;
    store_context_t store_context;
    store_limiter_t store_limiter;
    set_deadline_t set_deadline;
    instantiate_t instantiate;
    export_get_t export_get;
    grow_t grow;
    data_t data;
    data_size_t data_size;
    call_t call;
    global_get_t global_get;
    store_delete_t store_delete;
} api;
#define FUNCTIONS (sizeof api / sizeof(void *))
#define OPAQUE 64 /* bytes kept for a wasmtime_extern_t or wasmtime_val_t */

static size_t extern_of, value_of; /* where their unions start */
static void *wasmtime_base;        /* where the shared object of the C API is loaded */
static PyObject *failure;          /* failure(error, trap) -> the exception to raise */

typedef struct {
    PyObject_HEAD
    void *store, *context;
    unsigned long long address, size; /* the linear memory: where, and its bytes */
    uint64_t instance[2];             /* wasmtime_instance_t */
    uint64_t memory[OPAQUE / 8], entry[OPAQUE / 8]; /* wasmtime_extern_t */
} Sandbox;

/* Raise the exception of a wasmtime error or trap (either may be NULL). */
static PyObject *fail(void *error, void *trap) {
    PyObject *e = PyObject_CallFunction(failure, "KK", (unsigned long long)(uintptr_t)error,
                                        (unsigned long long)(uintptr_t)trap);
    if (e != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(e), e);
        Py_DECREF(e);
    }
    return NULL;
}

static int unbound(void) {
    if (failure == NULL) PyErr_SetString(PyExc_RuntimeError, "_wasmc.bind was not called");
    return failure == NULL;
}

static int closed(Sandbox *s) {
    if (s->store == NULL) PyErr_SetString(PyExc_RuntimeError, "the sandbox is not open");
    return s->store == NULL;
}

static void drop(Sandbox *s) {
    api.store_delete(s->store);
    s->store = s->context = NULL;
    s->address = s->size = 0;
}

static PyObject *sandbox_open(Sandbox *s, PyObject *const *args, Py_ssize_t n) {
    if (n != 4) {
        PyErr_SetString(PyExc_TypeError, "open(engine, pre, memory_limit, deadline)");
        return NULL;
    }
    if (unbound()) return NULL;
    if (s->store != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the sandbox is open already");
        return NULL;
    }
    void *engine = PyLong_AsVoidPtr(args[0]), *pre = PyLong_AsVoidPtr(args[1]);
    long long limit = PyLong_AsLongLong(args[2]);
    unsigned long long deadline = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred()) return NULL;
    s->store = api.store_new(engine, NULL, NULL);
    s->context = api.store_context(s->store);
    api.store_limiter(s->store, limit, -1, -1, -1, -1);
    api.set_deadline(s->context, deadline);
    void *trap = NULL, *error = api.instantiate(pre, s->context, s->instance, &trap);
    if (error != NULL || trap != NULL) {
        drop(s);
        return fail(error, trap);
    }
    if (!api.export_get(s->context, s->instance, "memory", 6, s->memory) ||
        !api.export_get(s->context, s->instance, "dandelion_entry", 15, s->entry)) {
        drop(s);
        PyErr_SetString(PyExc_RuntimeError, "the instance exports no memory or entry");
        return NULL;
    }
    void *memory = (char *)s->memory + extern_of;
    s->address = (uintptr_t)api.data(s->context, memory);
    s->size = api.data_size(s->context, memory);
    Py_RETURN_NONE;
}

static PyObject *sandbox_grow_to(Sandbox *s, PyObject *arg) {
    unsigned long long size = PyLong_AsUnsignedLongLong(arg);
    if ((size == (unsigned long long)-1 && PyErr_Occurred()) || closed(s)) return NULL;
    if (size > s->size) {
        uint64_t previous;
        void *memory = (char *)s->memory + extern_of;
        void *error = api.grow(s->context, memory, (size - s->size + 0xffff) >> 16, &previous);
        if (error != NULL) return fail(error, NULL);
        s->size = api.data_size(s->context, memory);
    }
    Py_RETURN_NONE;
}

static PyObject *sandbox_view(Sandbox *s, PyObject *arg) {
    Py_ssize_t offset = PyLong_AsSsize_t(arg);
    if ((offset == -1 && PyErr_Occurred()) || closed(s)) return NULL;
    if (offset < 0 || (unsigned long long)offset > s->size) {
        PyErr_SetString(PyExc_ValueError, "offset outside the linear memory");
        return NULL;
    }
    return PyMemoryView_FromMemory((char *)(uintptr_t)s->address + offset,
                                   (Py_ssize_t)(s->size - offset), PyBUF_WRITE);
}

static PyObject *sandbox_call(Sandbox *s, PyObject *arg) {
    long argument = PyLong_AsLong(arg);
    if ((argument == -1 && PyErr_Occurred()) || closed(s)) return NULL;
    uint64_t value[2] = {(uint32_t)argument, 0}; /* a wasmtime_val_raw_t: i32 */
    void *trap = NULL, *error;
    void *entry = (char *)s->entry + extern_of;
    Py_BEGIN_ALLOW_THREADS /* the function may run for long: the epoch clock must tick */
    error = api.call(s->context, entry, value, 1, &trap);
    Py_END_ALLOW_THREADS
    if (error != NULL || trap != NULL) return fail(error, trap);
    return PyLong_FromLong((int32_t)(uint32_t)value[0]);
}

static PyObject *sandbox_global_i32(Sandbox *s, PyObject *arg) {
    char *name;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(arg, &name, &len) < 0 || closed(s)) return NULL;
    uint64_t found[OPAQUE / 8], value[OPAQUE / 8];
    if (!api.export_get(s->context, s->instance, name, (size_t)len, found)) {
        PyErr_Format(PyExc_KeyError, "no export %R", arg);
        return NULL;
    }
    api.global_get(s->context, (char *)found + extern_of, value);
    int32_t i32;
    memcpy(&i32, (char *)value + value_of, sizeof i32);
    return PyLong_FromLong(i32);
}

static PyObject *sandbox_close(Sandbox *s, PyObject *unused) {
    if (s->store == NULL) Py_RETURN_FALSE;
    drop(s);
    Py_RETURN_TRUE;
}

static void sandbox_dealloc(Sandbox *s) {
    if (s->store != NULL) drop(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyMethodDef sandbox_methods[] = {
    {"open", (PyCFunction)(void (*)(void))sandbox_open, METH_FASTCALL,
     "open(engine, pre, memory_limit, deadline): a fresh instance of the pre-instantiated "
     "module at address pre, in a store of its own whose linear memory may not exceed "
     "memory_limit bytes and which traps past epoch deadline."},
    {"grow_to", (PyCFunction)sandbox_grow_to, METH_O,
     "grow_to(size): grow the linear memory to at least size bytes (whole wasm pages)."},
    {"view", (PyCFunction)sandbox_view, METH_O,
     "view(offset) -> a writable memoryview of the linear memory from offset on (valid until "
     "close: pooled memories do not move)."},
    {"call", (PyCFunction)sandbox_call, METH_O,
     "call(argument) -> what dandelion_entry(argument) returns (an i32)."},
    {"global_i32", (PyCFunction)sandbox_global_i32, METH_O,
     "global_i32(name) -> the value of the exported i32 global name (bytes)."},
    {"close", (PyCFunction)sandbox_close, METH_NOARGS,
     "close() -> whether a store was open: drop it, with its instance and memory."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef sandbox_members[] = {
    {"address", T_ULONGLONG, offsetof(Sandbox, address), READONLY,
     "where the linear memory starts in this process (0: not open)"},
    {"size", T_ULONGLONG, offsetof(Sandbox, size), READONLY, "bytes of linear memory"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject SandboxType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_wasmc.Sandbox",
    .tp_basicsize = sizeof(Sandbox),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Sandbox(): one wasm instance in a store of its own at a time.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)sandbox_dealloc,
    .tp_methods = sandbox_methods,
    .tp_members = sandbox_members,
};

static PyObject *bind(PyObject *module, PyObject *args) {
    PyObject *functions, *make;
    Py_ssize_t extern_at, value_at;
    if (!PyArg_ParseTuple(args, "O!nnO", &PyTuple_Type, &functions, &extern_at, &value_at,
                          &make))
        return NULL;
    if (PyTuple_GET_SIZE(functions) != (Py_ssize_t)FUNCTIONS || extern_at <= 0 ||
        extern_at > OPAQUE - 16 || value_at <= 0 || value_at > OPAQUE - 16) {
        PyErr_SetString(PyExc_ValueError, "bind: unexpected functions or layout");
        return NULL;
    }
    void **slots = (void **)&api;
    for (size_t i = 0; i < FUNCTIONS; i++) {
        slots[i] = PyLong_AsVoidPtr(PyTuple_GET_ITEM(functions, i));
        if (slots[i] == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bind: a null function");
            return NULL;
        }
    }
    extern_of = (size_t)extern_at;
    value_of = (size_t)value_at;
    Dl_info info;
    wasmtime_base = dladdr((void *)api.store_new, &info) ? info.dli_fbase : NULL;
    Py_INCREF(make);
    Py_XSETREF(failure, make);
    Py_RETURN_NONE;
}

/* The signals compiled code traps with when it relies on them (an access past its memory
 * into the guard pages, a stack overflow, ud2, a division by zero: those wasmtime handles
 * on Linux; SIGBUS too on 32-bit ARM), and the handler of each last found to be
 * wasmtime's. */
static const int trap_signals[] = {SIGSEGV, SIGILL, SIGFPE
#if defined(__arm__)
                                   , SIGBUS
#endif
};
#define TRAP_SIGNALS (sizeof trap_signals / sizeof trap_signals[0])
static void *verified[TRAP_SIGNALS];

static PyObject *handlers_intact(PyObject *module, PyObject *unused) {
    for (size_t i = 0; i < TRAP_SIGNALS; i++) {
        struct sigaction action;
        if (sigaction(trap_signals[i], NULL, &action) != 0) Py_RETURN_FALSE;
        void *handler = (action.sa_flags & SA_SIGINFO) ? (void *)action.sa_sigaction
                                                        : (void *)action.sa_handler;
        if (handler != NULL && handler == verified[i]) continue;
        Dl_info info;
        if (wasmtime_base == NULL || handler == (void *)SIG_DFL || handler == (void *)SIG_IGN ||
            !dladdr(handler, &info) || info.dli_fbase != wasmtime_base)
            Py_RETURN_FALSE;
        verified[i] = handler;
    }
    Py_RETURN_TRUE;
}

static PyMethodDef module_methods[] = {
    {"handlers_intact", handlers_intact, METH_NOARGS,
     "handlers_intact() -> whether wasmtime's own handlers are installed for SIGSEGV, SIGILL "
     "and SIGFPE (each in the shared object of the C API bind was given): code "
     "compiled to trap by signals may run only then."},
    {"bind", bind, METH_VARARGS,
     "bind(functions, extern_of, value_of, failure): the C API's functions (addresses, in "
     "order: store_new, store_context, store_limiter, context_set_epoch_deadline, "
     "instance_pre_instantiate, instance_export_get, memory_grow, memory_data, "
     "memory_data_size, func_call_unchecked, global_get, store_delete), where the unions of "
     "wasmtime_extern_t and wasmtime_val_t start, and failure(error, trap) -> exception."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_wasmc",
    "The wasm engine's sandbox: one invocation's calls of wasmtime's C API in C.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__wasmc(void) {
    if (PyType_Ready(&SandboxType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&SandboxType);
    PyModule_AddObject(m, "Sandbox", (PyObject *)&SandboxType);
    PyModule_AddStringConstant(m, "FUNCTIONS",
                               "store_new store_context store_limiter "
                               "context_set_epoch_deadline instance_pre_instantiate "
                               "instance_export_get memory_grow memory_data memory_data_size "
                               "func_call_unchecked global_get store_delete");
    return m;
}
