// Gather of the rows a step selected into compact buffers, for engines that run their own
// attention (or dequantisation) over them: unit u's i-th row of K goes to
// out_k + (u * max_rows + i) * k_bytes, likewise V. Rows are copied as raw bytes, so any row
// type works; K/V in pinned host memory are read through UVA. Row counts are read on the
// device; the grid covers max_rows.
#pragma once

#include "step.cuh"

struct pk_gather_args {
    pk_unit_layout L;
    const int * rows;           // [units][row_stride] cells
    long long row_stride;
    const int * n_rows;         // the count of unit u at n_rows[u * n_rows_stride] (ints)
    int n_rows_stride;
    int max_rows;
    const char * k; long long k_stride; int k_bytes;  // row of cell c at k + off(u) + c*k_stride
    const char * v; long long v_stride; int v_bytes;
    char * out_k;
    char * out_v;
};

// grid (ceil(max_rows / PK_GATHER_WARPS), 1, units), PK_GATHER_WARPS warps
extern "C" __global__ void pk_gather(pk_gather_args a) {
    pk_grid_order();
    const int u = blockIdx.z, lane = threadIdx.x % 32;
    const int i = blockIdx.x * PK_GATHER_WARPS + threadIdx.x / 32;
    if (i >= min(a.n_rows[u * a.n_rows_stride], a.max_rows)) return;
    const long long cell = a.rows[u * a.row_stride + i];
    const long long ua = u / a.L.n_h, uh = u % a.L.n_h;
    const long long slot = (long long) u * a.max_rows + i;
    pk_copy_row(a.out_k + slot * a.k_bytes, a.k + ua * a.L.k_a + uh * a.L.k_h + cell * a.k_stride, a.k_bytes, lane);
    pk_copy_row(a.out_v + slot * a.v_bytes, a.v + ua * a.L.v_a + uh * a.L.v_h + cell * a.v_stride, a.v_bytes, lane);
}
