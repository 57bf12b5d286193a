//! One decode step on the GPU for one KV head and its query group: the twin of
//! `cache_step::attend_cache`. All buffers are allocated once for an upper bound of cells
//! (`StepBuffers::new`); `run` only launches kernels on the caller's stream: no allocation,
//! no host synchronisation, no device-to-host read, so it can be captured in a CUDA graph.

use std::ffi::c_void;

use super::driver::{launch, CUdeviceptr, DeviceBuffer, Module, Stream};
use super::encode::{dtype_code, GpuRotation};
use super::kernels::*;
use crate::cache_step::StepParams;
use crate::error::{Error, Result};
use crate::gqa::GqaPolicy;
use crate::rows::DType;
use crate::search::RatioPolicy;
use crate::shape::{Shape, N_CENTROIDS};

/// `pk_retrieval` of kernels/search.cuh.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retrieval {
    pub k: i32,
    pub m: i32,
    pub cutoff: i32,
    pub ties_left: i32,
    pub prefix: u64,
    pub remaining: i32,
    _pad: i32,
}

/// The fixed part of `pk_step_state`; the retrievals follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepHeader {
    pub n_visible: i32,
    pub n_zone: i32,
    pub n_rows: i32,
    pub p_min: i32,
    pub p_max: i32,
    pub tag: u32,
}

/// `pk_step_args` of kernels/search.cuh, field for field.
#[repr(C)]
struct StepArgs {
    state: u64,
    n: i32,
    nb: i32,
    dp: i32,
    n_ret: i32,
    top_k: i32,
    n_sink: i32,
    n_local: i32,
    adaptive: i32,
    rho_cand: f64,
    rho_coll: f64,
    max_collisions: i32,
    mask: u64,
    mask_dtype: i32,
    pos: u64,
    codes: u64,
    nibbles: u64,
    weights: u64,
    klass: u64,
    hist: u64,
    q_rot: u64,
    levels: u64,
    counts: u64,
    count_hist: u64,
    chunk_ties: u64,
    keys: u64,
    radix: u64,
    mark: u64,
    rows: u64,
}

/// `pk_attend_args` of kernels/attention.cuh, field for field.
#[repr(C)]
struct AttendArgs {
    rows: u64,
    n_rows: u64,
    max_rows: i32,
    q: u64,
    q_stride: i64,
    k: u64,
    k_dtype: i32,
    k_stride: i64,
    v: u64,
    v_dtype: i32,
    v_stride: i64,
    dk: i32,
    dv: i32,
    scale: f32,
    softcap: f32,
    partial: u64,
    out: u64,
    out_stride: i64,
}

/// Scratch of a step, sized once.
pub struct StepBuffers {
    pub max_cells: usize,
    pub max_heads: usize,
    pub shape: Shape,
    pub dv: usize,
    pub state: DeviceBuffer,
    pub klass: DeviceBuffer,
    pub hist: DeviceBuffer,
    pub q_rot: DeviceBuffer,
    pub levels: DeviceBuffer,
    pub counts: DeviceBuffer,
    pub count_hist: DeviceBuffer,
    pub chunk_ties: DeviceBuffer,
    pub keys: DeviceBuffer,
    pub radix: DeviceBuffer,
    pub mark: DeviceBuffer,
    pub rows: DeviceBuffer,
    pub partial: DeviceBuffer,
}

fn chunks(n: usize) -> usize {
    n.div_ceil(CHUNK).max(1)
}

impl StepBuffers {
    /// For caches of up to `max_cells` cells and groups of up to `max_heads` query heads.
    pub fn new(shape: Shape, dv: usize, max_cells: usize, max_heads: usize) -> Result<StepBuffers> {
        if max_cells == 0 || max_cells > i32::MAX as usize || max_heads == 0 {
            return Err(Error::invalid(format!("GPU step for {max_cells} cells and {max_heads} heads")));
        }
        let (n, r, nb) = (max_cells, max_heads, shape.n_blocks);
        let header = std::mem::size_of::<StepHeader>();
        let zeroed = |bytes: usize| -> Result<DeviceBuffer> { DeviceBuffer::from_slice(&vec![0u8; bytes]) };
        Ok(StepBuffers {
            max_cells,
            max_heads,
            shape,
            dv,
            state: zeroed(header + r * std::mem::size_of::<Retrieval>())?,
            klass: DeviceBuffer::new(n)?,
            hist: DeviceBuffer::new(nb * N_CENTROIDS * 4)?,
            q_rot: DeviceBuffer::new(r * shape.padded_dim * 4)?,
            levels: DeviceBuffer::new(r * nb * N_CENTROIDS)?,
            counts: DeviceBuffer::new(r * n * 2)?,
            count_hist: DeviceBuffer::new(r * (shape.max_collisions() + 1) * 4)?,
            chunk_ties: DeviceBuffer::new(r * (chunks(n) + 1) * 4)?,
            keys: DeviceBuffer::new(r * n * 8)?,
            radix: DeviceBuffer::new(r * 256 * 4)?,
            mark: zeroed(n * 4)?,
            rows: DeviceBuffer::new(n * 4)?,
            partial: DeviceBuffer::new(r * n.div_ceil(ATT_ROWS) * (2 + dv) * 4)?,
        })
    }

    /// Device address of the step's row count (for callers that chain work after a step).
    pub fn n_rows_ptr(&self) -> CUdeviceptr {
        self.state.ptr + 8
    }
}

/// A cache view on the device for one KV head: `n` cells of K, V (rows `*_stride` bytes
/// apart), their index, and per cell the mask value (0 or -inf) and position.
#[derive(Clone, Copy, Debug)]
pub struct GpuCache {
    pub n: usize,
    pub k: CUdeviceptr,
    pub k_dtype: DType,
    pub k_stride: usize,
    pub v: CUdeviceptr,
    pub v_dtype: DType,
    pub v_stride: usize,
    pub codes: CUdeviceptr,
    pub nibbles: CUdeviceptr,
    pub weights: CUdeviceptr,
    pub mask: CUdeviceptr,
    pub mask_dtype: DType,
    pub pos: CUdeviceptr,
}

/// The queries of the group (`n_heads` f32 rows, `q_stride` floats apart) and where the
/// output rows go (`out_stride` floats apart).
#[derive(Clone, Copy, Debug)]
pub struct GpuQueries {
    pub q: CUdeviceptr,
    pub q_stride: usize,
    pub n_heads: usize,
    pub out: CUdeviceptr,
    pub out_stride: usize,
}

fn zero(module: &Module, ptr: CUdeviceptr, words: usize, stream: &Stream) -> Result<()> {
    let (mut p, mut n) = (ptr, words as i64);
    let mut params = [&mut p as *mut u64 as *mut c_void, &mut n as *mut i64 as *mut c_void];
    let blocks = words.div_ceil(256).clamp(1, 1024) as u32;
    launch(module, ZERO_U32, (blocks, 1, 1), 256, 0, stream, &mut params)
}

/// Receives the end of each stage of a step (benchmarks record an event there).
pub trait StageMarks {
    fn mark(&mut self, stage: &'static str, stream: &Stream) -> Result<()>;
}

/// No stage marks (the normal case).
pub struct NoMarks;

impl StageMarks for NoMarks {
    fn mark(&mut self, _: &'static str, _: &Stream) -> Result<()> {
        Ok(())
    }
}

/// Launches one step on `stream`.
pub fn run(
    module: &Module,
    rotation: &GpuRotation,
    params: &StepParams,
    cache: &GpuCache,
    queries: &GpuQueries,
    buf: &StepBuffers,
    stream: &Stream,
) -> Result<()> {
    run_marked(module, rotation, params, cache, queries, buf, stream, &mut NoMarks)
}

/// `run`, telling `marks` where each stage ends.
#[allow(clippy::too_many_arguments)]
pub fn run_marked(
    module: &Module,
    rotation: &GpuRotation,
    params: &StepParams,
    cache: &GpuCache,
    queries: &GpuQueries,
    buf: &StepBuffers,
    stream: &Stream,
    marks: &mut dyn StageMarks,
) -> Result<()> {
    let shape = rotation.shape;
    if shape != buf.shape
        || cache.n > buf.max_cells
        || queries.n_heads > buf.max_heads
        || queries.n_heads == 0
    {
        return Err(Error::invalid(format!(
            "GPU step: {} cells and {} heads for buffers of {} and {}, shapes {:?} / {:?}",
            cache.n, queries.n_heads, buf.max_cells, buf.max_heads, shape, buf.shape
        )));
    }
    let n_ret = match params.gqa {
        GqaPolicy::Mean => 1,
        GqaPolicy::PerHead => queries.n_heads,
    };
    let (adaptive, rho_cand, rho_coll) = match params.ratios {
        RatioPolicy::Adaptive => (1, 0.0, 0.0),
        RatioPolicy::Fixed(r) => (0, r.cand, r.coll),
    };
    let n = cache.n;
    let n_chunks = chunks(n);
    let mut a = StepArgs {
        state: buf.state.ptr,
        n: n as i32,
        nb: shape.n_blocks as i32,
        dp: shape.padded_dim as i32,
        n_ret: n_ret as i32,
        top_k: params.top_k.min(i32::MAX as usize) as i32,
        n_sink: params.n_sink.min(i32::MAX as usize) as i32,
        n_local: params.n_local.min(i32::MAX as usize) as i32,
        adaptive,
        rho_cand,
        rho_coll,
        max_collisions: shape.max_collisions() as i32,
        mask: cache.mask,
        mask_dtype: dtype_code(cache.mask_dtype),
        pos: cache.pos,
        codes: cache.codes,
        nibbles: cache.nibbles,
        weights: cache.weights,
        klass: buf.klass.ptr,
        hist: buf.hist.ptr,
        q_rot: buf.q_rot.ptr,
        levels: buf.levels.ptr,
        counts: buf.counts.ptr,
        count_hist: buf.count_hist.ptr,
        chunk_ties: buf.chunk_ties.ptr,
        keys: buf.keys.ptr,
        radix: buf.radix.ptr,
        mark: buf.mark.ptr,
        rows: buf.rows.ptr,
    };
    let cells = ((n_chunks as u32).min(65535), 1, 1);
    let per_ret = (n_chunks as u32, n_ret as u32, 1);
    let ap = &mut a as *mut StepArgs as *mut c_void;
    let mut p = [ap];
    let one = (1, 1, 1);
    launch(module, STEP_BEGIN, one, 1, 0, stream, &mut p)?;
    launch(module, VISIBILITY, cells, THREADS, 0, stream, &mut p)?;
    launch(module, CLASSIFY, cells, THREADS, 0, stream, &mut p)?;
    zero(module, buf.hist.ptr, shape.n_blocks * N_CENTROIDS, stream)?;
    let hist_smem = (shape.n_blocks * N_CENTROIDS * 4) as u32;
    launch(module, HISTOGRAM, (n_chunks as u32, 1, 1), THREADS, hist_smem, stream, &mut p)?;
    marks.mark("validity + histogram", stream)?;

    // rotated retrieval queries
    let (mut q, mut qs, mut nh, mut mean) =
        (queries.q, queries.q_stride as i64, queries.n_heads as i32, (params.gqa == GqaPolicy::Mean) as i32);
    let (mut signs, mut scale, mut d, mut dp, mut qr) = (
        rotation.signs_ptr(),
        rotation.scale(),
        shape.head_dim as i32,
        shape.padded_dim as i32,
        buf.q_rot.ptr,
    );
    let mut qp = [
        &mut q as *mut u64 as *mut c_void,
        &mut qs as *mut i64 as *mut c_void,
        &mut nh as *mut i32 as *mut c_void,
        &mut mean as *mut i32 as *mut c_void,
        &mut signs as *mut u64 as *mut c_void,
        &mut scale as *mut f32 as *mut c_void,
        &mut d as *mut i32 as *mut c_void,
        &mut dp as *mut i32 as *mut c_void,
        &mut qr as *mut u64 as *mut c_void,
    ];
    launch(module, QUERY_ROT, (n_ret as u32, 1, 1), 32, (shape.padded_dim * 4) as u32, stream, &mut qp)?;

    launch(module, TIERS, (shape.n_blocks as u32, n_ret as u32, 1), N_CENTROIDS as u32, 0, stream, &mut p)?;
    zero(module, buf.count_hist.ptr, n_ret * (shape.max_collisions() + 1), stream)?;
    launch(module, COLLISIONS, per_ret, THREADS, (shape.n_blocks * N_CENTROIDS) as u32, stream, &mut p)?;
    launch(module, CUTOFF, (n_ret as u32, 1, 1), 32, 0, stream, &mut p)?;
    marks.mark("query + tiers + collision counts", stream)?;
    launch(module, TIE_CHUNKS, per_ret, THREADS, 0, stream, &mut p)?;
    let mut nc = n_chunks as i32;
    let mut sp = [ap, &mut nc as *mut i32 as *mut c_void];
    launch(module, SCAN_CHUNKS, (n_ret as u32, 1, 1), 32, 0, stream, &mut sp)?;
    launch(module, SELECT_RERANK, per_ret, THREADS, (shape.padded_dim * 16 * 4) as u32, stream, &mut p)?;
    marks.mark("candidates + rerank", stream)?;
    for pass in (0..8).rev() {
        zero(module, buf.radix.ptr, n_ret * 256, stream)?;
        let mut ps: i32 = pass;
        let mut rp = [ap, &mut ps as *mut i32 as *mut c_void];
        launch(module, RADIX_HIST, per_ret, THREADS, 0, stream, &mut rp)?;
        launch(module, RADIX_PICK, (n_ret as u32, 1, 1), 32, 0, stream, &mut rp)?;
    }
    launch(module, MARK, per_ret, THREADS, 0, stream, &mut p)?;
    launch(module, ROWS, cells, THREADS, 0, stream, &mut p)?;
    marks.mark("top-k + rows", stream)?;
    attend(module, buf, cache, queries, params, buf.rows.ptr, buf.n_rows_ptr(), n, stream)?;
    marks.mark("attention", stream)
}

/// Exact attention of `queries` over the cells listed at `rows` (device i32; the count is
/// the i32 at `n_rows`, at most `max_rows`): the last stage of a step, and dense attention
/// when the rows are every cell.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    module: &Module,
    buf: &StepBuffers,
    cache: &GpuCache,
    queries: &GpuQueries,
    params: &StepParams,
    rows: CUdeviceptr,
    n_rows: CUdeviceptr,
    max_rows: usize,
    stream: &Stream,
) -> Result<()> {
    if max_rows > buf.max_cells || queries.n_heads > buf.max_heads {
        return Err(Error::invalid(format!(
            "attention over {max_rows} rows for buffers of {}",
            buf.max_cells
        )));
    }
    let shape = buf.shape;
    let max_chunks = max_rows.div_ceil(ATT_ROWS).max(1);
    let mut att = AttendArgs {
        rows,
        n_rows,
        max_rows: max_rows as i32,
        q: queries.q,
        q_stride: queries.q_stride as i64,
        k: cache.k,
        k_dtype: dtype_code(cache.k_dtype),
        k_stride: cache.k_stride as i64,
        v: cache.v,
        v_dtype: dtype_code(cache.v_dtype),
        v_stride: cache.v_stride as i64,
        dk: shape.head_dim as i32,
        dv: buf.dv as i32,
        scale: params.attn.scale,
        softcap: params.attn.softcap,
        partial: buf.partial.ptr,
        out: queries.out,
        out_stride: queries.out_stride as i64,
    };
    let attp = &mut att as *mut AttendArgs as *mut c_void;
    let mut ap1 = [attp];
    launch(
        module,
        ATTEND_PARTIAL,
        (max_chunks as u32, queries.n_heads as u32, 1),
        ATT_WARPS * 32,
        0,
        stream,
        &mut ap1,
    )?;
    let mut mc = max_chunks as i32;
    let mut ap2 = [attp, &mut mc as *mut i32 as *mut c_void];
    launch(module, ATTEND_COMBINE, (queries.n_heads as u32, 1, 1), 128, 0, stream, &mut ap2)
}
