#include <stdio.h>
#include <stdlib.h>
#include "pariskv.h"

int main(void) {
    enum { D = 128, NQ = 32, NKV = 8, N = 20000 };
    pariskv_config cfg = { .struct_size = sizeof(pariskv_config) }; /* this header's size */
    pariskv_index *ix = NULL;
    if (pariskv_config_init(&cfg, D, NQ, NKV) != PARISKV_OK ||  /* top-k 2048, tuned defaults */
        pariskv_index_create(&cfg, &ix) != PARISKV_OK) {
        fprintf(stderr, "pariskv: %s\n", pariskv_last_error());
        return 1;
    }
    /* Keys and values [N][NKV][D]; here random, in f32 (f16 and bf16 work too). */
    float *k = malloc(sizeof(float) * N * NKV * D), *v = malloc(sizeof(float) * N * NKV * D);
    for (size_t i = 0; i < (size_t)N * NKV * D; i++) {
        k[i] = (float)rand() / RAND_MAX - 0.5f;
        v[i] = (float)rand() / RAND_MAX - 0.5f;
    }
    float q[NQ * D], out[NQ * D];
    for (int i = 0; i < NQ * D; i++) q[i] = (float)rand() / RAND_MAX - 0.5f;

    pariskv_status st = pariskv_index_append(ix, PARISKV_F32, k, v, N);
    if (st == PARISKV_OK) st = pariskv_index_attend(ix, PARISKV_F32, q, out); /* one decode step */
    if (st != PARISKV_OK) fprintf(stderr, "pariskv: %s\n", pariskv_last_error());
    else printf("out[0] = %f\n", out[0]);
    pariskv_index_free(ix);
    free(k);
    free(v);
    return st == PARISKV_OK ? 0 : 1;
}
