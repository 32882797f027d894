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
    /* out[i][j] = sum_k m[i][k] * m[j][k]: both rows are read contiguously, and four
     * rows j at a time, so that each m[i][k] is loaded once for four products */
    for (uint64_t i = 0; i < n; i++) {
        const int64_t *a = m + i * n;
        uint64_t j = 0;
        for (; j + 4 <= n; j += 4) {
            const int64_t *b0 = m + j * n, *b1 = b0 + n, *b2 = b1 + n, *b3 = b2 + n;
            int64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            for (uint64_t k = 0; k < n; k++) {
                int64_t x = a[k];
                s0 += x * b0[k];
                s1 += x * b1[k];
                s2 += x * b2[k];
                s3 += x * b3[k];
            }
            out[i * n + j] = s0;
            out[i * n + j + 1] = s1;
            out[i * n + j + 2] = s2;
            out[i * n + j + 3] = s3;
        }
        for (; j < n; j++) {
            const int64_t *b = m + j * n;
            int64_t acc = 0;
            for (uint64_t k = 0; k < n; k++) acc += a[k] * b[k];
            out[i * n + j] = acc;
        }
    }
    return dd_add_output(0, item, item_size, in.key, 0);
}
