// The algorithm's numeric constants, in one place for every implementation: the Rust code
// uses them directly, and `build.rs` includes this file to write them into the header the
// CUDA kernels compile against. Plain items only (no `use`, no inner doc comments), so that
// it can be included anywhere.

/// Coordinates per block (m in the paper).
pub const BLOCK: usize = 8;
/// Centroids per block: the 2^m sign patterns.
pub const N_CENTROIDS: usize = 1 << BLOCK;
/// Magnitude levels of the 4-bit code (3 bits of magnitude, 1 bit of sign).
pub const N_LEVELS: usize = 8;
/// Nested tiers of the collision stage.
pub const N_TIERS: usize = TIER_FRACTIONS.len();
/// Tier budget fractions tau_t: tier t holds the best centroids covering
/// `ceil(N * rho_coll * tau_t)` keys.
pub const TIER_FRACTIONS: [f64; 6] = [0.05, 0.15, 0.30, 0.50, 0.75, 1.0];
/// Largest supported head dimension.
pub const MAX_HEAD_DIM: usize = 512;

/// Lloyd-Max reconstruction levels for |u_1|, u uniform on S^7 (density proportional to
/// (1 - x^2)^(5/2) on [0, 1]), fully converged. `codebook::tests::lloyd_max_rederived` derives them
/// again from the density and checks these digits.
pub const LEVELS: [f32; N_LEVELS] =
    [0.042508665, 0.12804365, 0.21520121, 0.3053238, 0.40027127, 0.5030221, 0.61934763, 0.76483506];

/// The levels in int8 for the integer estimate (`algorithm::estimate`): LEVELS scaled so
/// the largest is 127, rounded (`estimate::tests` rederives them); LEVEL_SCALE takes an
/// int8 level back to LEVELS' scale.
pub const LEVELS_I8: [i8; N_LEVELS] = [7, 21, 36, 51, 66, 84, 103, 127];
pub const LEVEL_SCALE: f32 = LEVELS[N_LEVELS - 1] / 127.0;

/// Decision thresholds between consecutive levels (their midpoints, as Lloyd-Max requires).
pub const THRESHOLDS: [f32; N_LEVELS - 1] =
    [0.08527616, 0.17162244, 0.26026252, 0.35279754, 0.45164666, 0.5611849, 0.69209135];

/// The reference implementation's ratio table: for a retrieval zone of fewer than
/// `REFERENCE_RATIOS[i].0` keys (the first row that fits), rho_cand and rho_coll.
pub const REFERENCE_RATIOS: [(usize, f64, f64); 4] =
    [(5_000, 0.5, 0.5), (10_000, 0.25, 0.3), (30_000, 0.2, 0.25), (usize::MAX, 0.1, 0.2)];

/// rho_coll of the tuned ratio table: collision tiers over the whole zone. The widest tier
/// costs nothing extra (every zone key is counted anyway) and on Gemma 3 270M's global
/// layers lifts recall@256 by 0.04-0.13 at 16K-32K (docs/FIDELITY.md, "Retrieval beyond the paper").
pub const TUNED_RHO_COLL: f64 = 1.0;

/// The tuned ratio table (the default), rows as `REFERENCE_RATIOS`, chosen from
/// measurements on real keys (docs/FIDELITY.md, "Retrieval beyond the paper"): rho_coll `TUNED_RHO_COLL`, and
/// candidate shares of 0.3 below 30K keys and 0.2 above (the reference's 0.25-0.2 and 0.1),
/// which with centred keys and refine 2 keep recall@256 at 0.85-0.91 and the attention mass
/// within 0.033 of exact on Gemma 3 270M at 13K-32K. Below 5K keys, the reference's 0.5.
pub const TUNED_RATIOS: [(usize, f64, f64); 4] = [
    (5_000, 0.5, TUNED_RHO_COLL),
    (10_000, 0.3, TUNED_RHO_COLL),
    (30_000, 0.3, TUNED_RHO_COLL),
    (usize::MAX, 0.2, TUNED_RHO_COLL),
];

/// Most keys averaged into a KV head's key centre (the first ones of the first encode that
/// sets it). Centring needs a rough mean only: on Gemma 3 270M 512 keys give 0.08 of the
/// 0.09 recall@256 that 2048 keys give (docs/FIDELITY.md, "Retrieval beyond the paper"); the cap bounds the
/// one-time cost when a whole cache is encoded at once.
pub const CENTER_ROWS: usize = 4096;

// Launch shapes of the CUDA kernels, fixed here so that the kernels and their callers agree.

/// Cells per block of the cell-parallel kernels.
pub const GPU_CHUNK: usize = 1024;
/// Threads per block of the cell-parallel kernels.
pub const GPU_CHUNK_THREADS: usize = 256;
/// Rows per block of the attention kernel at the least (when its bound on a unit's rows is
/// small), which also sizes its partial results.
pub const GPU_ATT_ROWS: usize = 64;
/// Blocks one attention launch aims at, all units and head batches together, where the GPU
/// holds that many at once (else as many as it holds: `Module::resident_blocks`): a unit's
/// rows are split evenly over its share of them. Also the most blocks the last block of a
/// unit combines.
pub const GPU_ATT_BLOCKS: usize = 256;
/// Floats before a head's accumulator in a block's attention state (max, sum and padding
/// that keeps the accumulator 16-byte aligned for vector loads).
pub const GPU_ATT_STATE_HEAD: usize = 4;
/// Blocks of a pass over candidate lists, all units together (about eight per SM of an
/// H200): the blocks stride over the lists, whose lengths only the device knows.
pub const GPU_LIST_BLOCKS: usize = 1024;
/// Blocks of a cell pass whose blocks pay a fixed cost (loading the tier tables, clearing
/// and flushing shared histograms), all units together: beyond it blocks stride over the
/// chunks (about four per SM of an H100 or H200; fewer blocks each taking more chunks
/// measured faster at 128K cells, more no faster at 32K).
pub const GPU_CELL_BLOCKS: usize = 512;
/// Warps per block of the attention kernel.
pub const GPU_ATT_WARPS: usize = 8;
/// Warps (one key each) per block of the encode kernel.
pub const GPU_ENCODE_WARPS: usize = 4;
/// Warps (one row each) per block of the gather kernel.
pub const GPU_GATHER_WARPS: usize = 8;
/// Warps (four shortlisted rows each) per block of the exact rescoring.
pub const GPU_REFINE_WARPS: usize = 4;
/// Threads of the one-block top-k selection.
pub const GPU_TOPK_THREADS: usize = 1024;
/// Blocks of a thread-block cluster that selects one list's top-k on GPUs that have
/// clusters (sm_90 on): each counts and takes an eighth of the list, and the digit
/// histograms are summed through distributed shared memory (8: the portable cluster size).
pub const GPU_TOPK_CLUSTER: usize = 8;
/// Most shortlist keys one block of such a cluster holds while the cluster compacts the
/// shortlist to the front of its list (32 KiB of shared memory); longer shortlists (top-k
/// times refine above it) take the one-block select.
pub const GPU_TOPK_STASH: usize = 4096;
/// Dynamic shared memory of a block of such a cluster, a bound on its struct (the kernel
/// asserts that it fits): counts and held keys as the one-block select, the cluster's
/// summed counts, the stash.
pub const GPU_TOPK_CLUSTER_SMEM: usize = 84 * 1024;
/// Most query heads per KV head the attention kernel takes at once.
pub const GPU_MAX_GROUP: usize = 16;
/// Counters of finished blocks per unit of a step: one per collision batch (at most
/// `GPU_MAX_GROUP`).
pub const GPU_DONE_SLOTS: usize = GPU_MAX_GROUP;
/// Most heads one block of the group policy's candidate pass estimates at once (their
/// accumulators live in registers, their rotated queries in shared memory).
pub const GPU_GROUP_HEAD_BATCH: usize = 8;

// Portable exp (`portable::exp`): Cody-Waite reduction x = n ln2 + r and a degree-5
// polynomial for e^r (the classic single-precision minimax coefficients of Cephes' expf,
// relative error below 2 ulp on its range), computed with f32 multiplies and adds only so
// that CPU and GPU give the same bits.

/// log2(e) as an f32.
pub const EXP_LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 in two parts: the high part has 9 significant bits, so n * EXP_LN2_HI is exact.
pub const EXP_LN2_HI: f32 = 0.693_359_4;
pub const EXP_LN2_LO: f32 = -2.121_944_4e-4;
/// Coefficients of e^r = 1 + r + r^2 * P(r), highest power first (Horner order).
pub const EXP_POLY: [f32; 6] =
    [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];
/// exp(x) is taken as 0 below it (e^-80 ~ 1.8e-35): results stay normal floats, so no
/// denormal handling can differ between processors.
pub const EXP_FLOOR: f32 = -80.0;
/// Fraction bits of the fixed-point sums of probabilities (u64; values in [0, 1] summed over
/// fewer than 2^31 cells cannot overflow).
pub const FIXED_FRACTION_BITS: u32 = 32;
