/* The floor under the wasm engine's hot path: what wasmtime itself costs per invocation.
 *
 * bench_engines.py builds this into a shared library, loads it into its own process and
 * hands it the wasm engine's wasmtime engine, pre-instantiated module and C functions (their
 * addresses, from the library the wasmtime package loaded), so that the loop below runs the
 * engine's own sequence of C calls, on the same pool and module, without Python around it:
 * a store, its limits, a fresh instance, its memory grown to the context, the context
 * copied in, dandelion_entry called, the store dropped (its memory slot wiped).
 *
 * Mode 0 is that whole sequence; mode 1 leaves out the memory and the call (a store and an
 * instance made and dropped); mode 2 leaves out the call only.  Each iteration's time in nanoseconds goes into ns[i].
 */
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef void *(*store_new_t)(void *engine, void *data, void *finalizer);
typedef void *(*store_context_t)(void *store);
typedef void (*store_limiter_t)(void *store, int64_t memory, int64_t table, int64_t instances,
                                int64_t tables, int64_t memories);
typedef void (*set_deadline_t)(void *context, uint64_t ticks);
typedef void *(*instantiate_t)(void *pre, void *context, void *instance, void **trap);
typedef int (*export_get_t)(void *context, void *instance, const char *name, size_t len,
                            void *out);
typedef void *(*grow_t)(void *context, void *memory, uint64_t pages, uint64_t *previous);
typedef uint8_t *(*data_t)(void *context, void *memory);
typedef void *(*call_t)(void *context, void *func, void *values, size_t n, void **trap);
typedef void (*store_delete_t)(void *store);

/* The C API's functions, in this order (the bench fills it). */
typedef struct {
    store_new_t store_new;
    store_context_t store_context;
    store_limiter_t store_limiter;
    set_deadline_t set_deadline;
    instantiate_t instantiate;
    export_get_t export_get;
    grow_t grow;
    data_t data;
    call_t call;
    store_delete_t store_delete;
} api_t;

static uint64_t now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* extern_size and extern_of: sizeof(wasmtime_extern_t) and the offset of its union, as the
 * wasmtime package declares them (at most 64 bytes).  Returns the number of iterations
 * that failed (0 when all ran and returned 0). */
int floor_loop(const api_t *api, void *engine, void *pre, int64_t memory_limit,
               uint64_t grow_pages, uint32_t base, const uint8_t *context, size_t context_len,
               size_t extern_of, int n, int mode, uint64_t *ns) {
    _Alignas(16) uint8_t instance[16], memory[64], entry[64], value[16];
    int failed = 0;
    for (int i = 0; i < n; i++) {
        uint64_t start = now();
        void *store = api->store_new(engine, NULL, NULL);
        void *cx = api->store_context(store);
        api->store_limiter(store, memory_limit, -1, -1, -1, -1);
        api->set_deadline(cx, (uint64_t)1 << 62);
        void *trap = NULL;
        if (api->instantiate(pre, cx, instance, &trap) || trap) {
            failed++;
        } else if (mode != 1) {
            uint64_t previous;
            api->export_get(cx, instance, "memory", 6, memory);
            api->export_get(cx, instance, "dandelion_entry", 15, entry);
            if (api->grow(cx, memory + extern_of, grow_pages, &previous)) {
                failed++;
            } else {
                memcpy(api->data(cx, memory + extern_of) + base, context, context_len);
                if (mode == 2) goto drop;
                memset(value, 0, sizeof value);
                memcpy(value, &base, sizeof base);
                if (api->call(cx, entry + extern_of, value, 1, &trap) || trap ||
                    *(int32_t *)value != 0)
                    failed++;
            }
        }
    drop:
        api->store_delete(store);
        ns[i] = now() - start;
    }
    return failed;
}
