//! One decode step on the GPU for every unit of a layer at once (a unit is one KV head of
//! one token, with the query heads sharing it): the twin of `cache_step::attend_cache`.
//! Buffers are allocated once for upper bounds (`StepBuffers::new`); `run` only launches
//! kernels on the caller's stream: no allocation, no host synchronisation, no
//! device-to-host read, so it can be captured in a CUDA graph. 8 launches (10 when
//! refining; the group policy 11, 15 when refining) plus 1 for the attention, whatever the
//! number of units.

use std::ffi::c_void;

use super::args::{AttendArgs, GatherArgs, GroupStat, StepArgs};
pub use super::args::{Retrieval, UnitLayout, UnitState};
use super::driver::{launch, CUdeviceptr, DeviceBuffer, Module, Stream};
use super::encode::{check_rows, dtype_code, GpuRotation};
use super::kernels::*;
use super::row_cache::RowCacheArgs;
use crate::algorithm::gqa::GqaPolicy;
use crate::algorithm::search::RatioPolicy;
use crate::error::{Error, Result};
use crate::rows::DType;
use crate::shape::{Shape, N_CENTROIDS};
use crate::step::StepParams;

/// The cache and queries of a layer's step: bases (unit 0) and per-unit strides in
/// `layout`; rows of K, V `k_stride` / `v_stride` bytes apart; the query heads of a unit
/// `q_stride` bytes apart, outputs `out_stride` bytes apart (f32).
#[derive(Clone, Copy, Debug)]
pub struct GpuLayer {
    pub layout: UnitLayout,
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
    /// The histogram the encodes keep and its flags (`EncodeTarget::hist`), per unit at
    /// `layout`'s kept and counted strides, or 0 and 0: the zone's histogram counted every
    /// step.
    pub kept: CUdeviceptr,
    pub counted: CUdeviceptr,
    pub mask: CUdeviceptr,
    pub mask_dtype: DType,
    pub pos: CUdeviceptr,
    pub q: CUdeviceptr,
    pub q_stride: usize,
    pub n_heads: usize,
    pub out: CUdeviceptr,
    pub out_stride: usize,
    /// The stream's row cache tables (`RowCache::stream`, `RowCacheShape::stream_at`), or none
    /// (`Default`): rows read where K and V are, every step.
    pub row_cache: RowCacheArgs,
}

/// Scratch of a step, sized once for `max_units` units of up to `max_heads` query heads
/// over up to `max_cells` cells.
pub struct StepBuffers {
    pub max_cells: usize,
    pub max_heads: usize,
    pub max_units: usize,
    pub shape: Shape,
    pub dv: usize,
    pub state: DeviceBuffer,
    pub klass: DeviceBuffer,
    pub hist: DeviceBuffer,
    pub q_i8: DeviceBuffer,
    pub q_factor: DeviceBuffer,
    pub levels: DeviceBuffer,
    pub counts: DeviceBuffer,
    pub count_hist: DeviceBuffer,
    pub chunk_hist: DeviceBuffer,
    pub chunk_ties: DeviceBuffer,
    pub cand: DeviceBuffer,
    pub mark: DeviceBuffer,
    pub rows: DeviceBuffer,
    /// With a row cache, each row's slot (`rows`' shape; kernels/attention.cuh: pk_row_plan).
    pub plan: DeviceBuffer,
    pub partial: DeviceBuffer,
    /// Per unit, the attention blocks done (zero between steps).
    pub att_done: DeviceBuffer,
    /// Per unit, the search stages' blocks done, `DONE_SLOTS` counters (zero between steps).
    pub done: DeviceBuffer,
    /// The group policy's per-head logits over the union and its softmax statistics.
    pub logits: DeviceBuffer,
    pub gstat: DeviceBuffer,
}

fn chunks(n: usize) -> usize {
    n.div_ceil(CHUNK).max(1)
}

/// Bytes of one unit's state (its header and `n_ret` retrievals).
pub fn state_stride(n_ret: usize) -> usize {
    std::mem::size_of::<UnitState>() + n_ret * std::mem::size_of::<Retrieval>()
}

/// Retrievals per unit: one with the group-mean query, else one per query head.
pub fn n_retrievals(gqa: GqaPolicy, n_heads: usize) -> usize {
    match gqa {
        GqaPolicy::Mean => 1,
        GqaPolicy::PerHead | GqaPolicy::Group => n_heads,
    }
}

impl StepBuffers {
    /// The rows the last step over `n` cells with `n_ret` retrievals per unit selected.
    pub fn rows_of(&self, n: usize, n_ret: usize) -> Rows {
        Rows {
            rows: self.rows.ptr,
            row_stride: n,
            n_rows: self.state.ptr + std::mem::offset_of!(UnitState, n_rows) as u64,
            n_rows_stride: state_stride(n_ret) / 4,
            mark: self.mark.ptr,
        }
    }

    /// Each of the first `units` units' state and retrievals after a step with `n_ret`
    /// retrievals per unit. A synchronous copy: call it after the step's stream is done.
    pub fn read_state(&self, units: usize, n_ret: usize) -> Result<Vec<(UnitState, Vec<Retrieval>)>> {
        let stride = state_stride(n_ret);
        let raw: Vec<u8> = self.state.read(units * stride)?;
        Ok(raw
            .chunks_exact(stride)
            .map(|u| {
                // SAFETY: the bytes are the kernels' `pk_unit_state` followed by `n_ret`
                // `pk_retrieval`, plain i32 structs that the Rust types mirror.
                let state = unsafe { std::ptr::read_unaligned(u.as_ptr() as *const UnitState) };
                let rets = u[std::mem::size_of::<UnitState>()..]
                    .chunks_exact(std::mem::size_of::<Retrieval>())
                    // SAFETY: as above.
                    .map(|r| unsafe { std::ptr::read_unaligned(r.as_ptr() as *const Retrieval) })
                    .collect();
                (state, rets)
            })
            .collect())
    }

    pub fn new(
        shape: Shape,
        dv: usize,
        max_cells: usize,
        max_heads: usize,
        max_units: usize,
    ) -> Result<StepBuffers> {
        if max_cells == 0
            || max_cells > i32::MAX as usize
            || max_heads == 0
            || max_heads > MAX_GROUP
            || max_units == 0
        {
            return Err(Error::invalid(format!(
                "GPU step for {max_cells} cells, {max_heads} heads per KV head (at most {MAX_GROUP}), {max_units} units"
            )));
        }
        let (n, r, u, nb) = (max_cells, max_heads, max_units, shape.n_blocks);
        let zeroed = |bytes: usize| -> Result<DeviceBuffer> { DeviceBuffer::from_slice(&vec![0u8; bytes]) };
        Ok(StepBuffers {
            max_cells,
            max_heads,
            max_units,
            shape,
            dv,
            state: zeroed(u * state_stride(r))?,
            klass: DeviceBuffer::new(u * n)?,
            hist: DeviceBuffer::new(u * nb * N_CENTROIDS * 4)?,
            q_i8: DeviceBuffer::new(u * r * shape.padded_dim)?,
            q_factor: DeviceBuffer::new(u * r * nb * 4)?,
            levels: DeviceBuffer::new(u * r * nb * N_CENTROIDS)?,
            counts: DeviceBuffer::new(u * r * n * 2)?,
            count_hist: DeviceBuffer::new(u * r * (shape.max_collisions() + 1) * 4)?,
            chunk_hist: DeviceBuffer::new(u * r * chunks(n) * (shape.max_collisions() + 1) * 2)?,
            chunk_ties: DeviceBuffer::new(u * r * (chunks(n) + 1) * 4)?,
            cand: DeviceBuffer::new(u * r * n * 8)?,
            mark: zeroed(u * n * 4)?,
            rows: DeviceBuffer::new(u * n * 4)?,
            plan: DeviceBuffer::new(u * n * 4)?,
            partial: DeviceBuffer::new(u * n.div_ceil(ATT_ROWS).min(ATT_BLOCKS) * r * attend_state(dv) * 4)?,
            att_done: zeroed(u * 4)?,
            done: zeroed(u * DONE_SLOTS * 4)?,
            logits: DeviceBuffer::new(u * r * n * 4)?,
            gstat: DeviceBuffer::new(u * r * 2 * std::mem::size_of::<GroupStat>())?,
        })
    }
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

/// Launches one step of a layer on `stream`.
pub fn run(
    module: &Module,
    rotation: &GpuRotation,
    params: &StepParams,
    layer: &GpuLayer,
    buf: &StepBuffers,
    stream: &Stream,
) -> Result<()> {
    run_marked(module, rotation, params, layer, buf, stream, &mut NoMarks)
}

/// `run`, telling `marks` where each stage ends.
pub fn run_marked(
    module: &Module,
    rotation: &GpuRotation,
    params: &StepParams,
    layer: &GpuLayer,
    buf: &StepBuffers,
    stream: &Stream,
    marks: &mut dyn StageMarks,
) -> Result<()> {
    // the attention clears the marks of the rows it reads (one launch less than pk_unmark)
    let n_ret = search(module, rotation, params, layer, buf, stream, marks, params.top_k, false)?;
    attend(module, buf, layer, params, &buf.rows_of(layer.n, n_ret), layer.n, stream)?;
    marks.mark("attention", stream)
}

/// The search stages of a step alone, each retrieval taking its share of `params.top_k`
/// whatever the zone's size (a step attends zones up to top-k whole instead): for callers
/// that read the candidates' keys (`cand`) and counts back, like the index handle's search.
/// A row cache of `layer` is not used. Returns the retrievals per unit.
pub fn select(
    module: &Module,
    rotation: &GpuRotation,
    params: &StepParams,
    layer: &GpuLayer,
    buf: &StepBuffers,
    stream: &Stream,
) -> Result<usize> {
    // without the row cache: its refine would pin slots for a step that only the attention
    // ends (kernels/row_cache.cuh)
    let layer = GpuLayer { row_cache: RowCacheArgs::default(), ..*layer };
    search(module, rotation, params, &layer, buf, stream, &mut NoMarks, 0, true)
}

/// Launches the stages up to the top-k and the rows; zones of up to `dense_zone` cells are
/// taken whole. With `unmark`, the marks the top-k set are cleared here (pk_unmark);
/// without, the caller's attention over `rows_of` clears them.
#[allow(clippy::too_many_arguments)]
fn search(
    module: &Module,
    rotation: &GpuRotation,
    params: &StepParams,
    layer: &GpuLayer,
    buf: &StepBuffers,
    stream: &Stream,
    marks: &mut dyn StageMarks,
    dense_zone: usize,
    unmark: bool,
) -> Result<usize> {
    let shape = rotation.shape;
    let units = layer.layout.n_units as usize;
    if shape != buf.shape
        || layer.n > buf.max_cells
        || layer.n_heads == 0
        || layer.n_heads > buf.max_heads
        || units == 0
        || units > buf.max_units
        || layer.layout.n_h <= 0
    {
        return Err(Error::invalid(format!(
            "GPU step: {} cells, {} heads, {} units for buffers of {}, {}, {}; shapes {:?} / {:?}",
            layer.n, layer.n_heads, units, buf.max_cells, buf.max_heads, buf.max_units, shape, buf.shape
        )));
    }
    check_rows(layer.k_dtype, shape.head_dim, "K")?;
    if layer.mask_dtype == DType::Q8_0 {
        return Err(Error::invalid("GPU step: a mask is f32, f16 or bf16, not q8_0"));
    }
    if (layer.kept == 0) != (layer.counted == 0) {
        return Err(Error::invalid("GPU step: a kept histogram needs both its counts and its flags"));
    }
    check_row_cache(layer, shape.head_dim, buf.dv)?; // the refine reads K rows through it too
    let n_ret = n_retrievals(params.gqa, layer.n_heads);
    let (adaptive, rho_cand, rho_coll) = match params.ratios {
        RatioPolicy::Adaptive => (1, 0.0, 0.0),
        RatioPolicy::Tuned => (2, 0.0, 0.0),
        RatioPolicy::Fixed(r) => (0, r.cand, r.coll),
    };
    let n = layer.n;
    let n_chunks = chunks(n);
    let clamp = |x: usize| x.min(i32::MAX as usize) as i32;
    let mut a = StepArgs {
        layout: layer.layout,
        state: buf.state.ptr,
        n: n as i32,
        nb: shape.n_blocks as i32,
        dp: shape.padded_dim as i32,
        n_ret: n_ret as i32,
        top_k: clamp(params.top_k),
        n_sink: clamp(params.n_sink),
        n_local: clamp(params.n_local),
        adaptive,
        rho_cand,
        rho_coll,
        max_collisions: shape.max_collisions() as i32,
        dense_zone: clamp(dense_zone),
        q: layer.q,
        q_stride: layer.q_stride as i64,
        n_heads: layer.n_heads as i32,
        mask: layer.mask,
        mask_dtype: dtype_code(layer.mask_dtype),
        pos: layer.pos,
        codes: layer.codes,
        nibbles: layer.nibbles,
        weights: layer.weights,
        kept: layer.kept,
        counted: layer.counted,
        klass: buf.klass.ptr,
        hist: buf.hist.ptr,
        q_i8: buf.q_i8.ptr,
        q_factor: buf.q_factor.ptr,
        levels: buf.levels.ptr,
        counts: buf.counts.ptr,
        count_hist: buf.count_hist.ptr,
        chunk_hist: buf.chunk_hist.ptr,
        chunk_ties: buf.chunk_ties.ptr,
        cand: buf.cand.ptr,
        mark: buf.mark.ptr,
        rows: buf.rows.ptr,
        refine: clamp(params.refine),
        d: shape.head_dim as i32,
        k: layer.k,
        k_dtype: dtype_code(layer.k_dtype),
        k_stride: layer.k_stride as i64,
        v: layer.v,
        v_stride: layer.v_stride as i64,
        v_bytes: layer.v_dtype.bytes(buf.dv) as i32,
        group: (params.gqa == GqaPolicy::Group) as i32,
        scale: params.attn.scale,
        softcap: params.attn.softcap,
        logits: buf.logits.ptr,
        gstat: buf.gstat.ptr,
        done: buf.done.ptr,
        cache: layer.row_cache,
    };
    let u = units as u32;
    let cells = (n_chunks as u32, 1, u);
    // passes with a fixed cost per block: at most CELL_BLOCKS for the layer, striding over
    // the chunks (`per_unit`: the grid's y extent times the units)
    let strided = |per_unit: usize| (n_chunks.min((CELL_BLOCKS / per_unit).max(1))) as u32;
    let per_ret = (n_chunks as u32, n_ret as u32, u);
    let ap = &mut a as *mut StepArgs as *mut c_void;
    let mut p = [ap];
    launch(module, BEGIN, (1, 1, u), THREADS, 0, stream, &mut p)?;
    launch(module, VISIBILITY, (strided(units), 1, u), THREADS, 0, stream, &mut p)?;
    let hist_smem = (shape.n_blocks * N_CENTROIDS * 4) as u32;
    launch(module, CLASSIFY, (strided(units), 1, u), THREADS, hist_smem, stream, &mut p)?;
    marks.mark("validity + histogram", stream)?;

    let (mut mean, mut signs, mut scale, mut d) = (
        (params.gqa == GqaPolicy::Mean) as i32,
        rotation.signs_ptr(),
        rotation.scale(),
        shape.head_dim as i32,
    );
    let mut qp = [
        ap,
        &mut mean as *mut i32 as *mut c_void,
        &mut signs as *mut u64 as *mut c_void,
        &mut scale as *mut f32 as *mut c_void,
        &mut d as *mut i32 as *mut c_void,
    ];
    let rot_smem = (shape.padded_dim * 4) as u32;
    launch(
        module,
        TIERS,
        (shape.n_blocks as u32, n_ret as u32, u),
        N_CENTROIDS as u32,
        rot_smem,
        stream,
        &mut qp,
    )?;
    let r_batch = collisions_batch(n_ret, shape.n_blocks);
    let mut rb = r_batch as i32;
    let mut cp = [ap, &mut rb as *mut i32 as *mut c_void];
    let n_batches = n_ret.div_ceil(r_batch);
    let batches = (strided(units * n_batches), n_batches as u32, u);
    let smem = collisions_smem(r_batch, shape.n_blocks) as u32;
    // with the cutoffs and the ties before each chunk (the last block of each batch)
    launch(module, COLLISIONS, batches, THREADS, smem, stream, &mut cp)?;
    marks.mark("query + tiers + collision counts", stream)?;
    if params.gqa == GqaPolicy::Group {
        group_select(module, params, layer, buf, stream, marks, ap, (n_chunks, n_ret, units))?;
    } else {
        launch(
            module,
            SELECT_RERANK,
            per_ret,
            THREADS,
            query_i8_smem(shape.padded_dim) as u32,
            stream,
            &mut p,
        )?;
        marks.mark("candidates + rerank", stream)?;
        // shortlists hold at most refine times a retrieval's share of top-k cells
        let shortlist = params.top_k.div_ceil(n_ret).saturating_mul(params.refine).min(n);
        let refining = params.refine > 1;
        top_k(module, TopK::Select, if refining { shortlist } else { 0 }, (n_ret, units), stream, &mut p)?;
        if refining {
            let tiles = (shortlist.div_ceil(REFINE_ROWS).max(1) as u32, n_ret as u32, u);
            let kernel = refine_kernel(layer.row_cache.is_some());
            let smem = |row| refine_smem(shape.head_dim, row);
            launch_refine(module, layer, shape.head_dim, kernel, smem, tiles, stream, ap)?;
            top_k(module, TopK::Pick, 0, (n_ret, units), stream, &mut p)?;
        }
    }
    if unmark {
        launch(module, UNMARK, cells, THREADS, 0, stream, &mut p)?;
    }
    marks.mark("top-k + rows", stream)?;
    Ok(n_ret)
}

/// The group policy's stages after the coarse one (kernels/group.cuh): the heads'
/// candidates into one union per unit, scored for every head, ranked by the group's mean
/// probability; with refining, the shortlist rescored exactly for every head and ranked
/// again. `ap` points at the step's arguments; `dims` are (chunks, retrievals, units).
#[allow(clippy::too_many_arguments)]
fn group_select(
    module: &Module,
    params: &StepParams,
    layer: &GpuLayer,
    buf: &StepBuffers,
    stream: &Stream,
    marks: &mut dyn StageMarks,
    ap: *mut c_void,
    (n_chunks, n_ret, units): (usize, usize, usize),
) -> Result<()> {
    let shape = buf.shape;
    let (c, r, u) = (n_chunks as u32, n_ret as u32, units as u32);
    let mut p = [ap];
    launch(module, GROUP_UNION, (c, 1, u), THREADS, 0, stream, &mut p)?;
    let hb = group_head_batch(n_ret);
    let mut hb_arg = hb as i32;
    let mut ep = [ap, &mut hb_arg as *mut i32 as *mut c_void];
    // lists' lengths are known on the device only: blocks stride over a bound of them
    let blocks =
        |per_unit: usize| layer.n.div_ceil(THREADS as usize).clamp(1, (LIST_BLOCKS / per_unit).max(1)) as u32;
    let (estimate, capacity) = group_estimate_kernel(hb);
    let smem = group_estimate_smem(capacity, shape.padded_dim) as u32;
    launch(module, estimate, (blocks(units), 1, u), THREADS, smem, stream, &mut ep)?;
    let mut stage = 0i32;
    let mut sp = [ap, &mut stage as *mut i32 as *mut c_void];
    launch(module, GROUP_NORM, (blocks(units * n_ret), r, u), THREADS, 0, stream, &mut sp)?;
    launch(module, GROUP_SCORE, (blocks(units), 1, u), THREADS, 0, stream, &mut sp)?;
    marks.mark("candidates + rerank", stream)?;
    let shortlist = params.top_k.saturating_mul(params.refine).min(layer.n);
    let refining = params.refine > 1;
    top_k(module, TopK::Select, if refining { shortlist } else { 0 }, (n_ret, units), stream, &mut p)?;
    if refining {
        let tiles = (shortlist.div_ceil(REFINE_ROWS).max(1) as u32, 1, u);
        let kernel = group_refine_kernel(layer.row_cache.is_some());
        let smem = |row| group_refine_smem(n_ret, shape.head_dim, row);
        launch_refine(module, layer, shape.head_dim, kernel, smem, tiles, stream, ap)?;
        stage = 1;
        let mut sp = [ap, &mut stage as *mut i32 as *mut c_void];
        launch(module, GROUP_NORM, (blocks(units * n_ret), r, u), THREADS, 0, stream, &mut sp)?;
        launch(module, GROUP_SCORE, (blocks(units), 1, u), THREADS, 0, stream, &mut sp)?;
        top_k(module, TopK::Pick, 0, (n_ret, units), stream, &mut p)?;
    }
    Ok(())
}

/// Launches an exact rescoring kernel over `tiles` of a shortlist: its argument after the
/// step's is the pitch of its staged K rows (`refine_pitch` of the layer's row bytes), and
/// `smem` gives its shared memory for those row bytes.
#[allow(clippy::too_many_arguments)]
fn launch_refine(
    module: &Module,
    layer: &GpuLayer,
    head_dim: usize,
    kernel: Kernel,
    smem: impl FnOnce(usize) -> usize,
    tiles: (u32, u32, u32),
    stream: &Stream,
    ap: *mut c_void,
) -> Result<()> {
    let row = layer.k_dtype.bytes(head_dim);
    let mut pitch = refine_pitch(row) as i32;
    let mut rp = [ap, &mut pitch as *mut i32 as *mut c_void];
    launch(module, kernel, tiles, REFINE_WARPS * 32, smem(row) as u32, stream, &mut rp)
}

/// Which top-k stage `top_k` launches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TopK {
    /// pk_topk: each retrieval's best candidates (its shortlist when refining)
    Select,
    /// pk_refine_pick: the best of each rescored shortlist
    Pick,
}

/// Launches a top-k stage for `n_ret` retrievals of each of `units` units: each list by a
/// thread-block cluster where the module may use clusters and a shortlist of up to
/// `shortlist` keys (0: none compacted) fits a cluster block's stash, else by one block.
/// `p` holds the step's arguments.
fn top_k(
    module: &Module,
    stage: TopK,
    shortlist: usize,
    (n_ret, units): (usize, usize),
    stream: &Stream,
    p: &mut [*mut c_void],
) -> Result<()> {
    let (one_block, by_cluster) = match stage {
        TopK::Select => (TOPK, TOPK_BY_CLUSTER),
        TopK::Pick => (REFINE_PICK, REFINE_PICK_BY_CLUSTER),
    };
    if module.clusters() && shortlist <= TOPK_STASH {
        let grid = ((n_ret * TOPK_CLUSTER) as u32, 1, units as u32);
        launch(module, by_cluster, grid, TOPK_THREADS, by_cluster.dynamic_smem as u32, stream, p)
    } else {
        launch(module, one_block, (n_ret as u32, 1, units as u32), TOPK_THREADS, 0, stream, p)
    }
}

/// The rows each unit attends: unit u's cells at `rows + u * row_stride` (i32), its count
/// the i32 at `n_rows + u * n_rows_stride * 4`.
#[derive(Clone, Copy, Debug)]
pub struct Rows {
    pub rows: CUdeviceptr,
    pub row_stride: usize,
    pub n_rows: CUdeviceptr,
    pub n_rows_stride: usize,
    /// The step's marks of the rows' cells (unit u's at `mark + u * row_stride * 4`, u32),
    /// cleared by the attention that reads the rows; 0: none.
    pub mark: CUdeviceptr,
}

/// Exact attention of each unit's queries over its rows (at most `max_rows` each): the last
/// stage of a step, and dense attention when the rows are every cell.
pub fn attend(
    module: &Module,
    buf: &StepBuffers,
    layer: &GpuLayer,
    params: &StepParams,
    rows: &Rows,
    max_rows: usize,
    stream: &Stream,
) -> Result<()> {
    let units = layer.layout.n_units as usize;
    if max_rows > buf.max_cells || layer.n_heads > buf.max_heads || units > buf.max_units {
        return Err(Error::invalid(format!(
            "attention over {max_rows} rows for buffers of {}",
            buf.max_cells
        )));
    }
    let shape = buf.shape;
    check_rows(layer.k_dtype, shape.head_dim, "K")?;
    check_rows(layer.v_dtype, buf.dv, "V")?;
    let (kernel, hb) = attend_variant(shape.head_dim, buf.dv, layer.n_heads, layer.row_cache.is_some());
    let batches = layer.n_heads.div_ceil(hb);
    // blocks per unit: the rows split evenly, at least ATT_ROWS each where the bound is small,
    // all units' blocks in one wave (a second wave would pay a block's latency chain again)
    let blocks = ATT_BLOCKS.min(module.resident_blocks(kernel));
    let max_chunks = max_rows.div_ceil(ATT_ROWS).clamp(1, (blocks / (units * batches)).max(1));
    let mut att = AttendArgs {
        layout: layer.layout,
        rows: rows.rows,
        row_stride: rows.row_stride as i64,
        n_rows: rows.n_rows,
        n_rows_stride: rows.n_rows_stride as i32,
        max_rows: max_rows as i32,
        q: layer.q,
        q_stride: layer.q_stride as i64,
        n_heads: layer.n_heads as i32,
        k: layer.k,
        k_dtype: dtype_code(layer.k_dtype),
        k_stride: layer.k_stride as i64,
        v: layer.v,
        v_dtype: dtype_code(layer.v_dtype),
        v_stride: layer.v_stride as i64,
        dk: shape.head_dim as i32,
        dv: buf.dv as i32,
        scale: params.attn.scale,
        softcap: params.attn.softcap,
        partial: buf.partial.ptr,
        out: layer.out,
        out_stride: layer.out_stride as i64,
        done: buf.att_done.ptr,
        mark: rows.mark,
        cache: layer.row_cache,
        plan: buf.plan.ptr,
    };
    let attp = &mut att as *mut AttendArgs as *mut c_void;
    if layer.row_cache.is_some() {
        check_row_cache(layer, shape.head_dim, buf.dv)?;
        if rows.row_stride > buf.max_cells {
            // the plan has the rows' shape, in buffers of max_cells a unit
            return Err(Error::invalid(format!(
                "row cache plan: rows {} apart, buffers of {}",
                rows.row_stride, buf.max_cells
            )));
        }
        let blocks = max_rows.div_ceil(THREADS as usize).clamp(1, (LIST_BLOCKS / units.max(1)).max(1)) as u32;
        launch(module, ROW_PLAN, (blocks, 1, units as u32), THREADS, 0, stream, &mut [attp])?;
    }
    let mut hb_arg = hb as i32;
    let smem = attend_smem(hb, buf.dv, layer.n_heads, max_chunks) as u32;
    let grid = (max_chunks as u32, batches as u32, units as u32);
    launch(
        module,
        kernel,
        grid,
        ATT_WARPS * 32,
        smem,
        stream,
        &mut [attp, &mut hb_arg as *mut i32 as *mut c_void],
    )
}

/// Checks that `layer`'s row cache (if any) serves its step: one stream's rows, the same for
/// every token (its tables are per KV head: kernels/row_cache.cuh, pk_row_table), of the
/// cache's row sizes.
fn check_row_cache(layer: &GpuLayer, head_dim: usize, dv: usize) -> Result<()> {
    if !layer.row_cache.is_some() {
        return Ok(());
    }
    let tokens = layer.layout.n_units > layer.layout.n_h;
    if tokens && (layer.layout.k_a != 0 || layer.layout.v_a != 0) {
        return Err(Error::invalid("a row cache serves steps whose tokens read the same K/V rows"));
    }
    let (kb, vb) = (layer.k_dtype.bytes(head_dim), layer.v_dtype.bytes(dv));
    layer.row_cache.check_step(layer.layout.n_h.max(0) as usize, kb, vb)
}

/// Where `gather` writes: unit u's i-th row of K at `k + (u * max_rows + i) * k_bytes`,
/// likewise V; rows are copied as raw bytes.
#[derive(Clone, Copy, Debug)]
pub struct Gathered {
    pub k: CUdeviceptr,
    pub k_bytes: usize,
    pub v: CUdeviceptr,
    pub v_bytes: usize,
    pub max_rows: usize,
}

/// Copies each unit's rows (at most `to.max_rows`) of the layer's K and V into compact
/// buffers, on `stream`; graph-safe like `run`. The attention of a step reads its rows
/// itself, so a step never needs this: it is for callers with their own attention.
pub fn gather(module: &Module, layer: &GpuLayer, rows: &Rows, to: &Gathered, stream: &Stream) -> Result<()> {
    let units = layer.layout.n_units.max(0) as usize;
    let fits = |x: usize| i32::try_from(x).is_ok();
    if units == 0 || layer.layout.n_h <= 0 || !fits(to.max_rows) || !fits(to.k_bytes) || !fits(to.v_bytes) {
        return Err(Error::invalid(format!(
            "gather: {units} units, {} rows of {} / {} bytes",
            to.max_rows, to.k_bytes, to.v_bytes
        )));
    }
    if to.max_rows == 0 {
        return Ok(());
    }
    let mut args = GatherArgs {
        layout: layer.layout,
        rows: rows.rows,
        row_stride: rows.row_stride as i64,
        n_rows: rows.n_rows,
        n_rows_stride: rows.n_rows_stride as i32,
        max_rows: to.max_rows as i32,
        k: layer.k,
        k_stride: layer.k_stride as i64,
        k_bytes: to.k_bytes as i32,
        v: layer.v,
        v_stride: layer.v_stride as i64,
        v_bytes: to.v_bytes as i32,
        out_k: to.k,
        out_v: to.v,
    };
    let grid = (to.max_rows.div_ceil(GATHER_WARPS as usize) as u32, 1, units as u32);
    let mut p = [&mut args as *mut GatherArgs as *mut c_void];
    launch(module, GATHER, grid, GATHER_WARPS * 32, 0, stream, &mut p)
}
