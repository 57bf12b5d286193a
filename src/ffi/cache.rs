//! C ABI over a KV cache the caller owns (llama.cpp's ggml op uses it): the index layout,
//! encoding the keys of given cells, and one decode step for one query group and KV head.
//! Concurrent calls are allowed when they write disjoint cells and outputs.

use std::cell::RefCell;
use std::ffi::c_void;

use half::f16;

use super::boundary::{boundary, dtype, gqa, in_ref, in_rows, in_slice, out_ref, out_slice, ratio_policy};
use super::types::pariskv_status;
use crate::algorithm::attention::AttnParams;
use crate::algorithm::encode::{encode_rotated, Codes};
use crate::algorithm::rotation::Rotation;
use crate::algorithm::search::Tally;
use crate::cpu;
use crate::cpu::team::{Team, TeamSlot};
use crate::error::{Error, Result};
use crate::rows::{RowData, Rows};
use crate::shape::Shape;
use crate::shape::N_CENTROIDS;
use crate::step::{CacheView, Kept, StepParams};

/// `pariskv_dtype` as Rust reads it: a raw `u32` (see `config.rs`).
type pariskv_dtype = u32;
/// Likewise for `pariskv_gqa`.
type pariskv_gqa = u32;
/// Likewise `pariskv_ratios`.
type pariskv_ratios = u32;

/// Sizes of the index for one head dimension, per cell and KV head.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct pariskv_layout {
    pub head_dim: u32,
    /// Head dim rounded up to a power of two (the transform's size).
    pub padded_dim: u32,
    pub n_blocks: u32,
    /// Bytes of centroid codes per cell (`codes`).
    pub code_bytes: u32,
    /// Bytes of packed 4-bit codes per cell (`nibbles`).
    pub nibble_bytes: u32,
    /// f16 weights per cell (`weights`).
    pub n_weights: u32,
    /// f32 values of a KV head's key centre (`pariskv_center_init`): head_dim + 1.
    pub center_len: u32,
}

/// The index of one KV head over `n_cells` cells, in caller memory: `codes`
/// `[n_cells][code_bytes]`, `nibbles` `[n_cells][nibble_bytes]`, `weights`
/// `[n_cells][n_weights]` (f16 bit patterns). Optionally (both NULL: not kept) the
/// histogram of the codes of the cells flagged counted, `hist` `[n_blocks][256]` uint32,
/// and the flags, `counted` `[n_cells]` (1 = counted): `pariskv_codes_tally` keeps them
/// (remove a cell before its codes are rewritten, add it after), and a decode step takes
/// its zone's histogram from them instead of counting every step (`pariskv_attend_cache`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct pariskv_codes {
    pub codes: *mut u8,
    pub nibbles: *mut u8,
    pub weights: *mut u16,
    pub n_cells: usize,
    pub hist: *mut u32,
    pub counted: *mut u8,
}

/// K and V rows of one KV head: the row of cell c at `k + c * k_stride` bytes (same for V).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct pariskv_kv {
    pub k_dtype: pariskv_dtype,
    pub k: *const c_void,
    pub k_stride: usize,
    pub v_dtype: pariskv_dtype,
    pub v: *const c_void,
    pub v_stride: usize,
    pub n_cells: usize,
}

/// Which cells the query sees and their positions: cell c is visible when `mask[c]`
/// (f32 or f16, as `mask_dtype`) is not -inf or NaN (a 0 / -inf mask as llama.cpp builds it
/// without ALiBi); `pos[c]` is its position.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct pariskv_visibility {
    pub mask_dtype: pariskv_dtype,
    pub mask: *const c_void,
    pub pos: *const i32,
}

/// Settings of a decode step.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct pariskv_step {
    pub head_dim: u32,
    pub v_dim: u32,
    /// Query heads sharing the KV head.
    pub n_heads: u32,
    pub top_k: u32,
    pub n_sink: u32,
    pub n_local: u32,
    /// How the ratios are chosen (`pariskv_ratios`); with PARISKV_RATIOS_FIXED, `rho_cand`
    /// and `rho_coll`.
    pub ratio_table: pariskv_ratios,
    /// How the `n_heads` query heads choose the rows they share.
    pub gqa_policy: pariskv_gqa,
    pub rho_cand: f64,
    pub rho_coll: f64,
    pub scale: f32,
    pub softcap: f32,
    pub seed: u64,
    /// Exact rescoring of each retrieval's `refine * top_k` best estimates; 0 or 1 = off
    /// (at most 64).
    pub refine: u32,
}

/// What a decode step did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct pariskv_step_stats {
    /// Cells the query may see (the mask's).
    pub n_visible: usize,
    /// Visible cells between the sink and the window.
    pub n_zone: usize,
    /// Candidates reranked by the 4-bit estimate: the union of the query heads' candidates
    /// with PARISKV_GQA_GROUP, else summed over the retrievals (a cell two query heads
    /// both rerank counts twice).
    pub n_candidates: usize,
    /// Rows attended: sink, window and the selected cells.
    pub n_attended: usize,
    /// Cells rescored exactly (refine).
    pub n_refined: usize,
    /// 1 when the step counted its zone's code histogram itself (its index keeps none, or
    /// the kept one could not give it: a counted cell outside the view, a zone cell not
    /// counted); 0 when it took it from the kept one or was given it. (A size_t like the
    /// other fields, so that the struct has no padding and compares with memcmp.)
    pub zone_counted: usize,
}

#[derive(Default)]
struct ThreadScratch {
    rotations: Vec<Rotation>,
    key: Vec<f32>,
    rotated: Vec<f32>,
    queries: Vec<f32>,
    result: Vec<f32>,
    step: cpu::step::Scratch,
}

thread_local! {
    static SCRATCH: RefCell<ThreadScratch> = RefCell::new(ThreadScratch::default());
}

/// This thread's rotation for (shape, seed), created on first use.
fn rotation(cache: &mut Vec<Rotation>, shape: Shape, seed: u64) -> &Rotation {
    match cache.iter().position(|r| r.shape() == shape && r.seed() == seed) {
        Some(i) => &cache[i],
        None => {
            cache.push(Rotation::new(shape, seed));
            cache.last().unwrap()
        }
    }
}

fn layout(shape: &Shape) -> pariskv_layout {
    pariskv_layout {
        head_dim: shape.head_dim as u32,
        padded_dim: shape.padded_dim as u32,
        n_blocks: shape.n_blocks as u32,
        code_bytes: shape.code_bytes() as u32,
        nibble_bytes: shape.nibble_bytes() as u32,
        n_weights: shape.n_weights() as u32,
        center_len: crate::algorithm::center::len(shape.head_dim) as u32,
    }
}

/// Rows of `n` cells of `dim` elements at `ptr`, `stride` bytes apart.
fn rows_at<'a>(
    raw: pariskv_dtype,
    ptr: *const c_void,
    stride: usize,
    dim: usize,
    n: usize,
    name: &str,
) -> Result<Rows<'a>> {
    let (per, size) = dtype(raw, name)?.block();
    if !stride.is_multiple_of(size) {
        return Err(Error::invalid(format!(
            "{name}: stride {stride} is not a multiple of the element (block) size {size}"
        )));
    }
    let stride = stride / size * per;
    let len = match n {
        0 => Some(0),
        _ => (n - 1).checked_mul(stride).and_then(|x| x.checked_add(dim)),
    }
    .ok_or_else(|| Error::invalid(format!("{name}: {n} rows of stride {stride} overflow")))?;
    Rows::new(in_rows(raw, ptr, len, name)?, 0, dim, stride, n)
}

/// Read-only view of caller index storage.
fn codes_ref<'a>(c: &pariskv_codes, shape: &Shape) -> Result<Codes<'a>> {
    let n = c.n_cells;
    let weights: &[u16] = in_slice(c.weights, n * shape.n_weights(), "codes.weights")?;
    Ok(Codes {
        codes: in_slice(c.codes, n * shape.code_bytes(), "codes.codes")?,
        nibbles: in_slice(c.nibbles, n * shape.nibble_bytes(), "codes.nibbles")?,
        // f16 is a transparent wrapper of its u16 bit pattern.
        weights: bytemuck_f16(weights),
    })
}

fn bytemuck_f16(bits: &[u16]) -> &[f16] {
    // SAFETY: `half::f16` is `#[repr(transparent)]` over `u16`: same size, alignment and
    // validity for every bit pattern, so the slice can be viewed as f16 unchanged.
    unsafe { std::slice::from_raw_parts(bits.as_ptr() as *const f16, bits.len()) }
}

/// Fills `out` with the index layout for `head_dim`.
#[no_mangle]
pub extern "C" fn pariskv_layout_for(head_dim: u32, out: *mut pariskv_layout) -> pariskv_status {
    boundary("pariskv_layout_for", || {
        let shape = Shape::new(head_dim as usize)?;
        *out_ref(out, "out")? = layout(&shape);
        Ok(())
    })
}

/// Sets a KV head's key centre `center` (`center_len` f32, see `pariskv_layout`) unless it
/// is set already (its last element, the number of keys averaged, is nonzero): the mean of
/// the keys of the first `PARISKV_CENTER_ROWS` of `cells` (row of cell c at
/// `keys + c * key_stride` bytes, `n_rows` rows readable). Call it before each
/// `pariskv_encode_cells` of the head with the same cells (only the first call that has
/// cells sets it); zero the centre to start over, and encode every cell again after.
/// One thread at a time per centre.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub extern "C" fn pariskv_center_init(
    head_dim: u32,
    key_dtype: pariskv_dtype,
    keys: *const c_void,
    key_stride: usize,
    n_rows: usize,
    cells: *const i64,
    n: usize,
    center: *mut f32,
) -> pariskv_status {
    boundary("pariskv_center_init", || {
        let shape = Shape::new(head_dim as usize)?;
        let rows = rows_at(key_dtype, keys, key_stride, shape.head_dim, n_rows, "keys")?;
        let cells = checked_cells(in_slice(cells, n, "cells")?, n_rows)?;
        let center = out_slice(center, crate::algorithm::center::len(shape.head_dim), "center")?;
        SCRATCH.with(|s| crate::algorithm::center::init(&rows, &cells, center, &mut s.borrow_mut().key));
        Ok(())
    })
}

/// Cells as indices, each checked against `n_cells`.
fn checked_cells(cells: &[i64], n_cells: usize) -> Result<Vec<usize>> {
    match cells.iter().find(|&&c| c < 0 || c as usize >= n_cells) {
        Some(&bad) => Err(Error::invalid(format!("cell {bad} out of range ({n_cells} cells)"))),
        None => Ok(cells.iter().map(|&c| c as usize).collect()),
    }
}

/// Encodes the keys of `cells` (row of cell c at `keys + c * key_stride` bytes, `dst->n_cells`
/// rows readable) into the same cells of `dst`, overwriting them: each key minus `center`
/// when `center` (`center_len` f32, from `pariskv_center_init`) is given and set, else as it
/// is. Concurrent calls must name disjoint cells.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub extern "C" fn pariskv_encode_cells(
    head_dim: u32,
    seed: u64,
    key_dtype: pariskv_dtype,
    keys: *const c_void,
    key_stride: usize,
    cells: *const i64,
    n: usize,
    center: *const f32,
    dst: *const pariskv_codes,
) -> pariskv_status {
    boundary("pariskv_encode_cells", || {
        let shape = Shape::new(head_dim as usize)?;
        let dst = in_ref(dst, "dst")?;
        let rows = rows_at(key_dtype, keys, key_stride, shape.head_dim, dst.n_cells, "keys")?;
        let cells = checked_cells(in_slice(cells, n, "cells")?, dst.n_cells)?;
        let center = if center.is_null() {
            None
        } else {
            crate::algorithm::center::offset(in_slice(
                center,
                crate::algorithm::center::len(shape.head_dim),
                "center",
            )?)
        };
        // Validate the destination once over its whole extent.
        codes_ref(dst, &shape)?;
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            let rot = rotation(&mut s.rotations, shape, seed);
            s.key.resize(shape.head_dim, 0.0);
            s.rotated.resize(shape.padded_dim, 0.0);
            for &c in &cells {
                rows.load(c, &mut s.key);
                crate::algorithm::center::subtract(&mut s.key, center);
                rot.apply(&s.key, &mut s.rotated);
                // SAFETY: `dst` was checked to hold `n_cells` cells (non-null, aligned,
                // in-bounds above) and `c < n_cells`; these slices cover exactly cell c, which
                // by the documented contract no other concurrent call writes.
                let (codes, nibbles, weights) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(
                            dst.codes.add(c * shape.code_bytes()),
                            shape.code_bytes(),
                        ),
                        std::slice::from_raw_parts_mut(
                            dst.nibbles.add(c * shape.nibble_bytes()),
                            shape.nibble_bytes(),
                        ),
                        std::slice::from_raw_parts_mut(
                            (dst.weights as *mut f16).add(c * shape.n_weights()),
                            shape.n_weights(),
                        ),
                    )
                };
                encode_rotated(&shape, &s.rotated, codes, nibbles, weights);
            }
        });
        Ok(())
    })
}

/// Adds the codes of `cells` (`n`, each in `0..codes->n_cells`) that are not counted yet to
/// `codes->hist` and flags them (`add` = 1), or removes those counted and clears their flags
/// (`add` = 0); cells in the state asked for are left alone. `hist` and `counted` must be
/// set. One thread at a time per index.
#[no_mangle]
pub extern "C" fn pariskv_codes_tally(
    head_dim: u32,
    codes: *const pariskv_codes,
    cells: *const i64,
    n: usize,
    add: u32,
) -> pariskv_status {
    boundary("pariskv_codes_tally", || {
        let shape = Shape::new(head_dim as usize)?;
        let c = in_ref(codes, "codes")?;
        let index = codes_ref(c, &shape)?;
        let cells = checked_cells(in_slice(cells, n, "cells")?, c.n_cells)?;
        if c.hist.is_null() || c.counted.is_null() {
            return Err(Error::invalid("codes.hist and codes.counted must be set to tally"));
        }
        let hist = out_slice(c.hist, shape.n_blocks * N_CENTROIDS, "codes.hist")?;
        let counted = out_slice(c.counted, c.n_cells, "codes.counted")?;
        let op = if add != 0 { Tally::Add } else { Tally::Remove };
        cpu::kept::tally(&shape, &index, &cells, hist, counted, op);
        Ok(())
    })
}

/// The kept histogram of `codes`, when it has one, checked against `shape`.
fn kept_of<'a>(c: &pariskv_codes, shape: &Shape) -> Result<Option<Kept<'a>>> {
    match (c.hist.is_null(), c.counted.is_null()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(Kept {
            hist: in_slice(c.hist as *const u32, shape.n_blocks * N_CENTROIDS, "codes.hist")?,
            counted: in_slice(c.counted as *const u8, c.n_cells, "codes.counted")?,
        })),
        _ => Err(Error::invalid("codes.hist and codes.counted are set together or not at all")),
    }
}

impl pariskv_step {
    pub(super) fn params(&self) -> Result<StepParams> {
        let ratios = ratio_policy(self.ratio_table, self.rho_cand, self.rho_coll, "step ratio_table")?;
        let attn = AttnParams { scale: self.scale, softcap: self.softcap };
        attn.validate()?;
        crate::config::check_refine(self.refine as usize)?;
        if self.top_k == 0 || self.n_heads == 0 || self.v_dim == 0 {
            return Err(Error::invalid(format!(
                "top_k {}, n_heads {} and v_dim {} must be positive",
                self.top_k, self.n_heads, self.v_dim
            )));
        }
        Ok(StepParams {
            top_k: self.top_k as usize,
            n_sink: self.n_sink as usize,
            n_local: self.n_local as usize,
            ratios,
            gqa: gqa(self.gqa_policy, "step gqa_policy")?,
            refine: self.refine as usize,
            attn,
        })
    }
}

/// One decode step for the `step->n_heads` query heads sharing one KV head: `q` holds
/// them as f32 rows `q_stride` bytes apart, `out` receives f32 rows `out_stride` bytes
/// apart. Attends exactly over sink ∪ top-k of the zone ∪ window of the visible cells, or
/// over every visible cell when the zone is no larger than top-k. `stats` may be NULL.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub extern "C" fn pariskv_attend_cache(
    step: *const pariskv_step,
    q: *const f32,
    q_stride: usize,
    kv: *const pariskv_kv,
    codes: *const pariskv_codes,
    visibility: *const pariskv_visibility,
    out: *mut f32,
    out_stride: usize,
    stats: *mut pariskv_step_stats,
) -> pariskv_status {
    boundary("pariskv_attend_cache", || {
        attend_cache_on(&Team::solo(), step, q, q_stride, kv, codes, visibility, out, out_stride, stats)
    })
}

/// Bytes of the slot a team's threads share (`pariskv_team::slot`).
pub const PARISKV_TEAM_SLOT_BYTES: usize = 16;
const _: () = assert!(std::mem::size_of::<TeamSlot>() <= PARISKV_TEAM_SLOT_BYTES);

/// Threads of the caller's pool working on one call together: every thread calls with its
/// own `ith` and the same other fields. `barrier(barrier_ctx)` returns once all `nth`
/// threads have called it (llama.cpp: `ggml_barrier`); `slot` points to
/// `PARISKV_TEAM_SLOT_BYTES` bytes, 8-aligned, that the team's threads share and nothing
/// else uses during the call (llama.cpp: the op's work buffer; no initialisation needed).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct pariskv_team {
    pub ith: u32,
    pub nth: u32,
    pub barrier: Option<unsafe extern "C" fn(ctx: *mut c_void)>,
    pub barrier_ctx: *mut c_void,
    pub slot: *mut c_void,
}

/// The C barrier as the team calls it.
struct CBarrier(unsafe extern "C" fn(*mut c_void), *mut c_void);

// SAFETY: the caller's barrier is made for all threads of its pool to call at once.
unsafe impl Sync for CBarrier {}

impl CBarrier {
    fn wait(&self) {
        // SAFETY: the caller's function with the caller's context, as documented.
        unsafe { (self.0)(self.1) }
    }
}

/// `pariskv_attend_cache` with the threads of `team` sharing its work: every thread of the
/// team calls it with the same arguments (its own `ith`); thread 0 computes the step,
/// hands out its loops and returns its result, the others help and return `PARISKV_OK`.
/// The results are those of `pariskv_attend_cache` to the bit. A team whose threads do
/// not all call, or call with different `nth`, `barrier` or `slot`, never returns.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub extern "C" fn pariskv_attend_cache_team(
    team: *const pariskv_team,
    step: *const pariskv_step,
    q: *const f32,
    q_stride: usize,
    kv: *const pariskv_kv,
    codes: *const pariskv_codes,
    visibility: *const pariskv_visibility,
    out: *mut f32,
    out_stride: usize,
    stats: *mut pariskv_step_stats,
) -> pariskv_status {
    boundary("pariskv_attend_cache_team", || {
        let t = in_ref(team, "team")?;
        let barrier =
            CBarrier(t.barrier.ok_or_else(|| Error::invalid("team.barrier is NULL"))?, t.barrier_ctx);
        let wait = || barrier.wait();
        if t.slot.is_null() || !(t.slot as usize).is_multiple_of(8) {
            return Err(Error::invalid("team.slot must be a non-NULL, 8-aligned pointer"));
        }
        // SAFETY: the caller provides PARISKV_TEAM_SLOT_BYTES, 8-aligned, shared by the team
        // only. Any bytes are a valid TeamSlot (a pointer and a flag the leader writes before
        // anyone reads them: `Team`).
        let slot = unsafe { &*(t.slot as *const TeamSlot) };
        let team = Team::new(t.ith as usize, t.nth as usize, &wait, slot)?;
        match team
            .lead(|| attend_cache_on(&team, step, q, q_stride, kv, codes, visibility, out, out_stride, stats))
        {
            Some(result) => result,
            None => Ok(()),
        }
    })
}

/// The body of both calls, on the team's leader.
#[allow(clippy::too_many_arguments)]
fn attend_cache_on(
    team: &Team,
    step: *const pariskv_step,
    q: *const f32,
    q_stride: usize,
    kv: *const pariskv_kv,
    codes: *const pariskv_codes,
    visibility: *const pariskv_visibility,
    out: *mut f32,
    out_stride: usize,
    stats: *mut pariskv_step_stats,
) -> Result<()> {
    let step = in_ref(step, "step")?;
    let params = step.params()?;
    let shape = Shape::new(step.head_dim as usize)?;
    let (dk, dv, heads) = (shape.head_dim, step.v_dim as usize, step.n_heads as usize);
    let kv = in_ref(kv, "kv")?;
    let codes = in_ref(codes, "codes")?;
    let vis = in_ref(visibility, "visibility")?;
    let n = kv.n_cells;
    if codes.n_cells < n {
        return Err(Error::invalid(format!("codes hold {} cells, the cache view {n}", codes.n_cells)));
    }
    let keys = rows_at(kv.k_dtype, kv.k, kv.k_stride, dk, n, "kv.k")?;
    let values = rows_at(kv.v_dtype, kv.v, kv.v_stride, dv, n, "kv.v")?;
    let index = codes_ref(&pariskv_codes { n_cells: n, ..*codes }, &shape)?;
    let kept = kept_of(codes, &shape)?;
    let pos = in_slice(vis.pos, n, "visibility.pos")?;
    let mask = in_rows(vis.mask_dtype, vis.mask, n, "visibility.mask")?;
    let f32 = super::types::pariskv_dtype::PARISKV_F32 as u32;
    let q_rows = rows_at(f32, q as *const c_void, q_stride, dk, heads, "q")?;
    let out_stride_f = match out_stride % 4 {
        0 if out_stride / 4 >= dv => out_stride / 4,
        _ => {
            return Err(Error::invalid(format!(
                "out_stride {out_stride} must be a multiple of 4, >= 4 * v_dim"
            )))
        }
    };
    let out = out_slice(out, (heads - 1) * out_stride_f + dv, "out")?;
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        s.queries.resize(heads * dk, 0.0);
        for (h, row) in s.queries.chunks_exact_mut(dk).enumerate() {
            q_rows.load(h, row);
        }
        let rot = rotation(&mut s.rotations, shape, step.seed);
        s.result.resize(heads * dv, 0.0);
        // one monomorphised step per mask type: the visibility test runs once per cell
        let st = match mask {
            RowData::F32(m) => {
                let cache = CacheView {
                    keys,
                    values,
                    codes: index,
                    visible: |c: usize| m[c] > f32::NEG_INFINITY,
                    pos,
                    zone_hist: None,
                    kept,
                };
                cpu::step::attend_cache(team, rot, &params, &cache, &s.queries, &mut s.step, &mut s.result)?
            }
            RowData::F16(m) => {
                // not -inf (0xFC00) and not NaN (exponent all ones, mantissa nonzero)
                let visible = |c: usize| {
                    let b = m[c].to_bits();
                    b != 0xFC00 && b & 0x7FFF <= 0x7C00
                };
                let cache = CacheView { keys, values, codes: index, visible, pos, zone_hist: None, kept };
                cpu::step::attend_cache(team, rot, &params, &cache, &s.queries, &mut s.step, &mut s.result)?
            }
            RowData::BF16(m) => {
                let visible = |c: usize| {
                    let b = m[c].to_bits();
                    b != 0xFF80 && b & 0x7FFF <= 0x7F80
                };
                let cache = CacheView { keys, values, codes: index, visible, pos, zone_hist: None, kept };
                cpu::step::attend_cache(team, rot, &params, &cache, &s.queries, &mut s.step, &mut s.result)?
            }
            RowData::Q8_0(_) => {
                return Err(Error::invalid("visibility.mask: a mask is f32, f16 or bf16, not q8_0"))
            }
        };
        for (h, r) in s.result.chunks_exact(dv).enumerate() {
            out[h * out_stride_f..][..dv].copy_from_slice(r);
        }
        if !stats.is_null() {
            *out_ref(stats, "stats")? = pariskv_step_stats {
                n_visible: st.n_visible,
                n_zone: st.n_zone,
                n_candidates: st.n_candidates,
                n_attended: st.n_attended,
                n_refined: st.n_refined,
                zone_counted: st.zone_counted as usize,
            };
        }
        Ok(())
    })
}
