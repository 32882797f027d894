/*
 * The paper's matrix workload as a native compute function: M · Mᵀ for a square int64
 * matrix M (128×128 in the benchmark), input and output as .npy items.
 *
 *     dandelion build examples/matmul.c -o examples/matmul.elf
 *
 * gives the same result as the Python/numpy version (examples/matmul.py).
 */
#include <dandelion.h>

static uint64_t isqrt(uint64_t v) {
    uint64_t r = 0;
    while ((r + 1) * (r + 1) <= v) r++;
    return r;
}

int dandelion_main(void) {
    dd_item in;
    if (dd_input_item(0, 0, &in) != 0) return 1;
    uint64_t bytes;
    const int64_t *m = (const int64_t *)dd_npy_data(&in, &bytes);
    if (!m) return 2;
    uint64_t n = isqrt(bytes / sizeof(int64_t));
    if (n * n * sizeof(int64_t) != bytes) return 3;  /* not square */
    uint64_t shape[2] = {n, n};
    uint8_t *item;
    uint64_t item_size;
    int64_t *out = (int64_t *)dd_npy_alloc("<i8", shape, 2, sizeof(int64_t), &item, &item_size);
    if (!out) return 4;
    /* out[i][j] = sum_k m[i][k] * m[j][k]: both rows are read contiguously */
    for (uint64_t i = 0; i < n; i++) {
        const int64_t *a = m + i * n;
        for (uint64_t j = 0; j < n; j++) {
            const int64_t *b = m + j * n;
            int64_t acc = 0;
            for (uint64_t k = 0; k < n; k++) acc += a[k] * b[k];
            out[i * n + j] = acc;
        }
    }
    return dd_add_output(0, item, item_size, in.key, 0);
}
