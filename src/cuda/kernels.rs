//! Every kernel of the fatbin, by its extern "C" name, with the dynamic shared memory it
//! may ask for (above 48 KiB it must be allowed per function at load time), and the launch
//! shapes from `constants` that the kernels are compiled with.

use crate::constants::{
    GPU_ATT_BLOCKS, GPU_ATT_ROWS, GPU_ATT_STATE_HEAD, GPU_ATT_WARPS, GPU_CELL_BLOCKS, GPU_CHUNK,
    GPU_CHUNK_THREADS, GPU_DONE_SLOTS, GPU_ENCODE_WARPS, GPU_GATHER_WARPS, GPU_GROUP_HEAD_BATCH,
    GPU_LIST_BLOCKS, GPU_MAX_GROUP, GPU_REFINE_WARPS, GPU_TOPK_CLUSTER, GPU_TOPK_CLUSTER_SMEM,
    GPU_TOPK_STASH, GPU_TOPK_THREADS, MAX_HEAD_DIM,
};
use crate::shape::{BLOCK, N_CENTROIDS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub name: &'static str,
    pub dynamic_smem: usize,
}

pub const CHUNK: usize = GPU_CHUNK;
pub const THREADS: u32 = GPU_CHUNK_THREADS as u32;
pub const ATT_ROWS: usize = GPU_ATT_ROWS;
pub const ATT_BLOCKS: usize = GPU_ATT_BLOCKS;
pub const ATT_WARPS: u32 = GPU_ATT_WARPS as u32;
pub const ENCODE_WARPS: u32 = GPU_ENCODE_WARPS as u32;
pub const GATHER_WARPS: u32 = GPU_GATHER_WARPS as u32;
pub const TOPK_THREADS: u32 = GPU_TOPK_THREADS as u32;
pub const REFINE_WARPS: u32 = GPU_REFINE_WARPS as u32;
/// Shortlisted rows per block of the exact rescoring: four per warp (8 lanes each).
pub const REFINE_ROWS: usize = GPU_REFINE_WARPS * 4;
pub const MAX_GROUP: usize = GPU_MAX_GROUP;
pub const DONE_SLOTS: usize = GPU_DONE_SLOTS;

/// The attention kernel for rows of `dk`, `dv` elements and `heads` query heads per unit,
/// reading through a row cache or not: its variant (lanes hold 4 elements of each of L
/// slices of 128, a batch of up to HB heads, HB * L <= 8, their state in registers) and the
/// heads one block takes (the batch).
pub fn attend_variant(dk: usize, dv: usize, heads: usize, cached: bool) -> (Kernel, usize) {
    let slices = match dk.max(dv).div_ceil(128) {
        0 | 1 => 1,
        2 => 2,
        _ => 4,
    };
    let batch = heads.clamp(1, 8 / slices);
    let width = batch.next_power_of_two();
    let kernel = ATTEND
        .iter()
        .find(|v| v.slices == slices && v.batch == width)
        .map(|v| if cached { v.cached } else { v.plain })
        .expect("a variant for every slice count and power-of-two batch up to 8 / L");
    (kernel, batch)
}

/// Dynamic shared memory of the attention kernel for a batch of `batch` heads of value dim
/// dv, `heads` heads per unit and `blocks` blocks per unit: every warp's softmax state, for
/// combining the warps, or the blocks' weights and totals for the last block's combine
/// (`pk_attend_combine`), whichever is larger.
pub const fn attend_smem(batch: usize, dv: usize, heads: usize, blocks: usize) -> usize {
    let warps = GPU_ATT_WARPS * batch * (2 + dv) * 4;
    let combine = heads * (blocks + 1) * 4;
    if warps > combine {
        warps
    } else {
        combine
    }
}

/// Floats of one block's attention state for one head of value dim dv (`PK_ATT_PART`).
pub const fn attend_state(dv: usize) -> usize {
    GPU_ATT_STATE_HEAD + dv
}

const fn k(name: &'static str) -> Kernel {
    Kernel { name, dynamic_smem: 0 }
}

pub const ENCODE: Kernel = Kernel { name: "pk_encode", dynamic_smem: GPU_ENCODE_WARPS * MAX_HEAD_DIM * 4 };
pub const CENTER_INIT: Kernel = k("pk_center_init");
pub const BEGIN: Kernel = k("pk_begin");
pub const VISIBILITY: Kernel = k("pk_visibility");
pub const CLASSIFY: Kernel =
    Kernel { name: "pk_classify", dynamic_smem: MAX_HEAD_DIM / BLOCK * N_CENTROIDS * 4 };
/// Dynamic shared memory: the rotated query.
pub const TIERS: Kernel = Kernel { name: "pk_tiers", dynamic_smem: MAX_HEAD_DIM * 4 };
/// Most shared memory a collision block asks for; retrievals are batched to fit.
pub const COLLISIONS_SMEM: usize = 96 * 1024;
pub const COLLISIONS: Kernel = Kernel { name: "pk_collisions", dynamic_smem: COLLISIONS_SMEM };

/// Dynamic shared memory of the collision kernel for `r_batch` retrievals of `n_blocks`
/// blocks per key: their levels, four retrievals to a 4-byte word, then their count
/// histograms (`N_TIERS` per block + 1 bins), the block's and its current chunk's.
pub const fn collisions_smem(r_batch: usize, n_blocks: usize) -> usize {
    r_batch.div_ceil(4) * 4 * n_blocks * N_CENTROIDS
        + 2 * r_batch * (crate::shape::N_TIERS * n_blocks + 1) * 4
}

/// How many retrievals one collision block handles at once: all of them, or as many
/// words of four as fit.
pub fn collisions_batch(n_ret: usize, n_blocks: usize) -> usize {
    let quads = (COLLISIONS_SMEM / collisions_smem(4, n_blocks)).max(1);
    (4 * quads).clamp(1, n_ret.max(1))
}

/// Shared memory of one rotated query in the estimate's form (kernels/estimate.cuh): its
/// int8 coordinates, then its blocks' f32 factors.
pub const fn query_i8_smem(padded_dim: usize) -> usize {
    padded_dim + padded_dim / BLOCK * 4
}

/// Dynamic shared memory of pk_select_rerank: the retrieval's query.
pub const SELECT_RERANK: Kernel =
    Kernel { name: "pk_select_rerank", dynamic_smem: query_i8_smem(MAX_HEAD_DIM) };
pub const TOPK: Kernel = k("pk_topk");

/// Bytes between the key rows a warp of the exact rescoring stages: the row (`row_bytes`)
/// rounded up to 16, plus 32 so that its four rows' 8-lane groups start on distinct
/// shared-memory banks.
pub const fn refine_pitch(row_bytes: usize) -> usize {
    row_bytes.div_ceil(16) * 16 + 32
}

/// Dynamic shared memory of the exact rescoring: the query, then every warp's four rows.
pub const fn refine_smem(head_dim: usize, row_bytes: usize) -> usize {
    head_dim * 4 + REFINE_ROWS * refine_pitch(row_bytes)
}

pub const REFINE: Kernel =
    Kernel { name: "pk_refine", dynamic_smem: refine_smem(MAX_HEAD_DIM, MAX_HEAD_DIM * 4) };
/// pk_refine taking its key rows through a row cache (a kernel of its own: its fills cost
/// registers that steps without one would pay for)
pub const REFINE_CACHED: Kernel = Kernel { name: "pk_refine_cached", ..REFINE };

/// The exact rescoring kernel of a step with or without a row cache.
pub fn refine_kernel(cached: bool) -> Kernel {
    if cached {
        REFINE_CACHED
    } else {
        REFINE
    }
}
pub const REFINE_PICK: Kernel = k("pk_refine_pick");

/// Blocks of a cluster of the clustered top-k, and the longest shortlist it compacts.
pub const TOPK_CLUSTER: usize = GPU_TOPK_CLUSTER;
pub const TOPK_STASH: usize = GPU_TOPK_STASH;
/// pk_topk and pk_refine_pick by thread-block clusters (kernels/topk_cluster.cuh), for
/// devices that have them (`Module::clusters`).
pub const TOPK_BY_CLUSTER: Kernel = Kernel { name: "pk_topk_cluster", dynamic_smem: GPU_TOPK_CLUSTER_SMEM };
pub const REFINE_PICK_BY_CLUSTER: Kernel =
    Kernel { name: "pk_refine_pick_cluster", dynamic_smem: GPU_TOPK_CLUSTER_SMEM };
pub const LIST_BLOCKS: usize = GPU_LIST_BLOCKS;
pub const CELL_BLOCKS: usize = GPU_CELL_BLOCKS;
/// Heads pk_group_estimate estimates at once.
pub fn group_head_batch(heads: usize) -> usize {
    heads.clamp(1, GPU_GROUP_HEAD_BATCH)
}

/// Dynamic shared memory of a pk_group_estimate kernel: the queries of the batch it holds
/// (its capacity: the kernel pads a smaller batch with zero heads).
pub const fn group_estimate_smem(capacity: usize, padded_dim: usize) -> usize {
    capacity * query_i8_smem(padded_dim)
}

pub const GROUP_UNION: Kernel = k("pk_group_union");
const fn group_estimate(capacity: usize, name: &'static str) -> (usize, Kernel) {
    (capacity, Kernel { name, dynamic_smem: group_estimate_smem(capacity, MAX_HEAD_DIM) })
}
/// pk_group_estimate by capacity: the heads it computes, a batch padded with zero heads up
/// to the smallest capacity that holds it (fewer heads, fewer registers and no wasted work
/// for small groups).
pub const GROUP_ESTIMATE: [(usize, Kernel); 4] = [
    group_estimate(1, "pk_group_estimate_1"),
    group_estimate(2, "pk_group_estimate_2"),
    group_estimate(4, "pk_group_estimate_4"),
    group_estimate(GPU_GROUP_HEAD_BATCH, "pk_group_estimate_8"),
];
const _: () = assert!(GPU_GROUP_HEAD_BATCH == 8, "the largest capacity is pk_group_estimate_8");

/// The group estimate kernel for a head batch of `hb` (from `group_head_batch`), and its
/// capacity.
pub fn group_estimate_kernel(hb: usize) -> (Kernel, usize) {
    let (capacity, kernel) =
        *GROUP_ESTIMATE.iter().find(|(c, _)| *c >= hb).unwrap_or(&GROUP_ESTIMATE[GROUP_ESTIMATE.len() - 1]);
    (kernel, capacity)
}
pub const GROUP_NORM: Kernel = k("pk_group_norm");
pub const GROUP_SCORE: Kernel = k("pk_group_score");

/// Dynamic shared memory of the group's exact rescoring: the `heads` queries, then every
/// warp's four rows.
pub const fn group_refine_smem(heads: usize, head_dim: usize, row_bytes: usize) -> usize {
    heads * head_dim * 4 + REFINE_ROWS * refine_pitch(row_bytes)
}

pub const GROUP_REFINE: Kernel = Kernel {
    name: "pk_group_refine",
    dynamic_smem: group_refine_smem(GPU_MAX_GROUP, MAX_HEAD_DIM, MAX_HEAD_DIM * 4),
};
/// pk_group_refine taking its key rows through a row cache (as `REFINE_CACHED`)
pub const GROUP_REFINE_CACHED: Kernel = Kernel { name: "pk_group_refine_cached", ..GROUP_REFINE };

/// The group's exact rescoring kernel of a step with or without a row cache.
pub fn group_refine_kernel(cached: bool) -> Kernel {
    if cached {
        GROUP_REFINE_CACHED
    } else {
        GROUP_REFINE
    }
}
pub const UNMARK: Kernel = k("pk_unmark");
/// One of kernels/attention.cuh's attention kernels: rows of up to 128 `slices` elements, a
/// head batch of up to `batch`, its `plain` kernel and the one that reads through a row
/// cache (`cached`; a kernel of its own, so that steps without one pay nothing for it).
pub struct AttendVariant {
    pub slices: usize,
    pub batch: usize,
    pub plain: Kernel,
    pub cached: Kernel,
}

const fn variant(plain: &'static str, cached: &'static str, slices: usize, batch: usize) -> AttendVariant {
    let dynamic_smem = attend_smem(batch, 128 * slices, GPU_MAX_GROUP, GPU_ATT_BLOCKS);
    AttendVariant {
        slices,
        batch,
        plain: Kernel { name: plain, dynamic_smem },
        cached: Kernel { name: cached, dynamic_smem },
    }
}

pub const ATTEND: [AttendVariant; 9] = [
    variant("pk_attend_1_1", "pk_attend_cached_1_1", 1, 1),
    variant("pk_attend_1_2", "pk_attend_cached_1_2", 1, 2),
    variant("pk_attend_1_4", "pk_attend_cached_1_4", 1, 4),
    variant("pk_attend_1_8", "pk_attend_cached_1_8", 1, 8),
    variant("pk_attend_2_1", "pk_attend_cached_2_1", 2, 1),
    variant("pk_attend_2_2", "pk_attend_cached_2_2", 2, 2),
    variant("pk_attend_2_4", "pk_attend_cached_2_4", 2, 4),
    variant("pk_attend_4_1", "pk_attend_cached_4_1", 4, 1),
    variant("pk_attend_4_2", "pk_attend_cached_4_2", 4, 2),
];
pub const GATHER: Kernel = k("pk_gather");
/// A step's rows looked up in its row cache before the attention (kernels/attention.cuh)
pub const ROW_PLAN: Kernel = k("pk_row_plan");

/// Every kernel but the group estimate's capacities (GROUP_ESTIMATE) and the attention
/// variants (ATTEND).
pub const ALL_KERNELS: &[Kernel] = &[
    ENCODE,
    CENTER_INIT,
    BEGIN,
    VISIBILITY,
    CLASSIFY,
    TIERS,
    COLLISIONS,
    SELECT_RERANK,
    TOPK,
    REFINE,
    REFINE_CACHED,
    REFINE_PICK,
    TOPK_BY_CLUSTER,
    REFINE_PICK_BY_CLUSTER,
    GROUP_UNION,
    GROUP_NORM,
    GROUP_SCORE,
    GROUP_REFINE,
    GROUP_REFINE_CACHED,
    UNMARK,
    GATHER,
    ROW_PLAN,
];
