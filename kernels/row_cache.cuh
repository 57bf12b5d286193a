// A device cache of K/V rows across decode steps, for caches whose rows live in host memory
// (read through UVA): consecutive steps retrieve largely the same rows (the sink and window
// every step, most of the shortlist and top-k again), so a row read once over PCIe is kept in
// GPU memory and the next step reads it there. A table of `slots` slots, 4-way set
// associative (a cell's set by a multiplicative hash), each slot the raw bytes of one cell's
// K row and V row, tagged by the cell, stamped with the last step that used it (LRU).
//
// Tables are per KV head of a stream; a step reads one stream, its tokens' units sharing
// their KV head's table (pk_row_table). Two units of one step may then take the same cell,
// which at worst tags it in two slots, both filled with its rows.
//
// A row is taken for a step by pk_row_take: a row whose cell is tagged in its set is a hit and
// pins its slot for the step (stamp 2 * step + 2); a miss may claim the least recently used
// slot of its set not pinned or claimed this step (stamp 2 * step + 3, by compare-and-swap,
// so that a slot is never both read and overwritten in one step), retag it and fill it; a
// miss that may not claim, or whose set is all taken this step, reads host memory only, as
// does a row whose cell another row claimed and is still filling.
//   - The refine (refine.cuh: pk_stage_key_rows) takes its shortlist's K rows: a fill copies
//     the cell's K and V rows into the slot and then pins it, so that the attention, which
//     reads most of the shortlist again, finds them.
//   - The attention plans its rows first (pk_row_plan, a thread per row); its fills are
//     copied in by the attention as it reads them, and stay claimed for the step.
// The attention's last block of a unit advances its table's step clock. Rows are unique per
// unit and stage.
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
                                // (by the refine, K rows, and the attention, K and V rows)
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

// This step's pin stamp of table t (a claim is the pin + 1); the clock moves only at the
// attention's end, so every stage of a step sees the same
__device__ __forceinline__ unsigned int pk_row_pin(const pk_row_cache & C, long long t) {
    return 2 * (((volatile unsigned int *) C.clock)[t] + 1);
}

// Cell c's slot in table t for this step (the header's protocol): a hit's slot (pinned), a
// claim's pk_plan_fill(slot) where `may_claim` (the caller fills it), or -1: host memory.
__device__ __forceinline__ int pk_row_take(const pk_row_cache & C, long long t, int c, unsigned int pin, bool may_claim) {
    const int set = pk_cache_set(C, c);
    volatile int * tag = C.tag + t * C.slots + set;
    unsigned int * stamp = C.stamp + t * C.slots + set;
    const unsigned int claim = pin + 1;
    for (int w = 0; w < PK_CACHE_WAYS; ++w) {
        if (tag[w] != c + 1) continue;
        const unsigned int was = atomicMax(stamp + w, pin);
        if (was == claim) return -1; // being filled this step
        if (was == pin) {
            // pinned this step before: perhaps by a fill of another cell that retagged the
            // slot after the tag was read here (its tag and rows precede its pin)
            __threadfence();
            if (tag[w] != c + 1) return -1;
        }
        return set + w;
    }
    // a miss: the least recently used way not pinned or claimed this step, taken by
    // compare-and-swap (another row of the set may take it first: look again)
    for (int attempt = 0; may_claim && attempt < PK_CACHE_WAYS; ++attempt) {
        int victim = -1;
        unsigned int oldest = pin;
        for (int w = 0; w < PK_CACHE_WAYS; ++w) {
            const unsigned int s = ((volatile unsigned int *) stamp)[w];
            if (s < oldest) {
                oldest = s;
                victim = w;
            }
        }
        if (victim < 0) break; // every way taken this step
        if (atomicCAS(stamp + victim, oldest, claim) == oldest) {
            tag[victim] = c + 1;
            return pk_plan_fill(set + victim);
        }
    }
    return -1;
}

// Untags cell c of table t (its rows are being rewritten); no-op without a cache
__device__ __forceinline__ void pk_row_cache_forget(const pk_row_cache & C, long long t, long long c) {
    if (C.slots == 0 || t >= C.tables) return;
    int * tag = C.tag + t * C.slots + pk_cache_set(C, c);
    for (int w = 0; w < PK_CACHE_WAYS; ++w) {
        if (tag[w] == (int) c + 1) tag[w] = 0;
    }
}
