//! Every kernel of the fatbin, by its extern "C" name, with the dynamic shared memory it
//! may ask for (above 48 KiB it must be allowed per function at load time), and the launch
//! shapes from `constants` that the kernels are compiled with.

use crate::constants::{
    GPU_ATT_ROWS, GPU_ATT_WARPS, GPU_CHUNK, GPU_CHUNK_THREADS, GPU_ENCODE_WARPS, MAX_HEAD_DIM,
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
pub const ATT_WARPS: u32 = GPU_ATT_WARPS as u32;
pub const ENCODE_WARPS: u32 = GPU_ENCODE_WARPS as u32;

const fn k(name: &'static str) -> Kernel {
    Kernel { name, dynamic_smem: 0 }
}

pub const ENCODE: Kernel = Kernel { name: "pk_encode", dynamic_smem: GPU_ENCODE_WARPS * MAX_HEAD_DIM * 4 };
pub const ZERO_U32: Kernel = k("pk_zero_u32");
pub const STEP_BEGIN: Kernel = k("pk_step_begin");
pub const VISIBILITY: Kernel = k("pk_visibility");
pub const CLASSIFY: Kernel = k("pk_classify");
pub const HISTOGRAM: Kernel =
    Kernel { name: "pk_histogram", dynamic_smem: MAX_HEAD_DIM / BLOCK * N_CENTROIDS * 4 };
pub const QUERY_ROT: Kernel = Kernel { name: "pk_query_rot", dynamic_smem: MAX_HEAD_DIM * 4 };
pub const TIERS: Kernel = k("pk_tiers");
pub const COLLISIONS: Kernel =
    Kernel { name: "pk_collisions", dynamic_smem: MAX_HEAD_DIM / BLOCK * N_CENTROIDS };
pub const CUTOFF: Kernel = k("pk_cutoff");
pub const TIE_CHUNKS: Kernel = k("pk_tie_chunks");
pub const SCAN_CHUNKS: Kernel = k("pk_scan_chunks");
pub const SELECT_RERANK: Kernel = Kernel { name: "pk_select_rerank", dynamic_smem: MAX_HEAD_DIM * 16 * 4 };
pub const RADIX_HIST: Kernel = k("pk_radix_hist");
pub const RADIX_PICK: Kernel = k("pk_radix_pick");
pub const MARK: Kernel = k("pk_mark");
pub const ROWS: Kernel = k("pk_rows");
pub const ATTEND_PARTIAL: Kernel = k("pk_attend_partial");
pub const ATTEND_COMBINE: Kernel = k("pk_attend_combine");

pub const ALL_KERNELS: &[Kernel] = &[
    ENCODE,
    ZERO_U32,
    STEP_BEGIN,
    VISIBILITY,
    CLASSIFY,
    HISTOGRAM,
    QUERY_ROT,
    TIERS,
    COLLISIONS,
    CUTOFF,
    TIE_CHUNKS,
    SCAN_CHUNKS,
    SELECT_RERANK,
    RADIX_HIST,
    RADIX_PICK,
    MARK,
    ROWS,
    ATTEND_PARTIAL,
    ATTEND_COMBINE,
];
