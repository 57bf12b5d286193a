// A device cache of K/V rows across decode steps, for caches whose rows live in host memory
// (read through UVA): consecutive steps retrieve largely the same rows (the sink and window
// every step, most of the top-k again), so a row read once over PCIe is kept in GPU memory
// and the next step reads it there. A table of `slots` slots, 4-way set associative (a
// cell's set by a multiplicative hash), each slot the raw bytes of one cell's K row and V
// row, tagged by the cell, stamped with the last step that used it (LRU).
//
// Tables are per KV head of a stream; a step reads one stream, its tokens' units sharing
// their KV head's table (pk_row_table). Two units of one step may then
// plan the same cell, which at worst tags it in two slots, both filled with its rows.
//
// The refine, before the plan, reads a cell's K row from its slot where one holds it
// (pk_row_cache_find): only the attention's fills change slots.
//
// A step plans before its attention (pk_row_plan, a thread per row): a row whose cell is
// tagged in its set is a hit and pins its slot for the step (stamp 2 * step); a miss claims
// the least recently used slot of its set not pinned or claimed this step (stamp 2 * step +
// 1, by compare-and-swap, so that a slot is never both read and overwritten in one step),
// retags it and is filled by the attention, which copies the row from host memory into the
// slot and reads it there; a miss whose set is all taken this step reads host memory only.
// The attention's last block of a unit advances its table's step clock. Rows are unique per
// unit and step.
//
// Coherence: the encode op, which runs for every K/V row written, untags the cells it
// encodes (pk_row_cache_forget); every other change of rows in place (a K-shift, a state
// load, a copy between sequences) needs a clear (src/cuda/row_cache.rs:
// RowCacheShape::clear_at, pariskv_cuda_row_cache_clear).
#pragma once

#include "common.cuh"

struct pk_row_cache {
    unsigned int * clock;       // [tables]: steps planned (advanced by the attention)
    int * tag;                  // [tables][slots]: 1 + the cell whose rows a slot holds, 0: none
                                // (all-zero memory is an empty cache)
    unsigned int * stamp;       // [tables][slots]: 2 * step pinned, 2 * step + 1 claimed
    char * data;                // [tables][slots][row_bytes]: the K row, then the V row at v_off
    unsigned long long * stats; // [tables][2]: rows read from the cache, rows read from the host
    int tables;                 // KV heads times streams
    int slots;                  // per table, a power of two, at least 4; 0: no cache
    int row_bytes;
    int v_off;
};

#define PK_CACHE_WAYS 4

// the first slot of cell c's set (slots / 4 sets, a power of two): the high half of the
// cell times 2^64 / golden ratio, as pariskv-fidelity's slot-table simulation sets it
// (src/bin/pariskv-fidelity/reuse.rs: SlotCache), so its hit rates are this table's
__device__ __forceinline__ int pk_cache_set(const pk_row_cache & C, long long c) {
    const unsigned long long sets = (unsigned long long) C.slots / PK_CACHE_WAYS;
    return (int) ((((unsigned long long) (unsigned int) c * 0x9E3779B97F4A7C15ull) >> 32) & (sets - 1)) * PK_CACHE_WAYS;
}

// A plan entry (the step's, pk_attend_args.plan): a hit's slot (>= 0), a fill's slot s as -2 - s, or -1 (host memory only).
__device__ __forceinline__ int pk_plan_fill(int slot) { return -2 - slot; }

// Unit u's table: its KV head's (a step with a cache reads one stream's rows, every token's
// the same: src/cuda/step.rs checks; the tables a step is given are that stream's)
__device__ __forceinline__ int pk_row_table(int n_h, int u) {
    return u % n_h;
}

// table t's slots, row_bytes each
__device__ __forceinline__ char * pk_row_table_data(const pk_row_cache & C, long long t) {
    return C.data + t * C.slots * C.row_bytes;
}

// The slot of table t holding cell c's rows, or -1. For readers before the step's plan (the
// refine): no slot changes between the step's encodes and its attention's fills.
__device__ __forceinline__ int pk_row_cache_find(const pk_row_cache & C, long long t, long long c) {
    const int set = pk_cache_set(C, c);
    const int4 tags = *(const int4 *) (C.tag + t * C.slots + set); // a set's ways, 16-byte aligned
    const int want = (int) c + 1;
    return tags.x == want ? set : tags.y == want ? set + 1 : tags.z == want ? set + 2 : tags.w == want ? set + 3 : -1;
}

// Untags cell c of table t (its rows are being rewritten); no-op without a cache
__device__ __forceinline__ void pk_row_cache_forget(const pk_row_cache & C, long long t, long long c) {
    if (C.slots == 0 || t >= C.tables) return;
    int * tag = C.tag + t * C.slots + pk_cache_set(C, c);
    for (int w = 0; w < PK_CACHE_WAYS; ++w) {
        if (tag[w] == (int) c + 1) tag[w] = 0;
    }
}
