//! C ABI of the CUDA path: kernels launched on the caller's stream (ggml's `cudaStream_t`),
//! in the stream's context, over device (or UVA) addresses the caller owns; and pinned,
//! device-mapped host memory for K/V rows kept in host RAM. In a build without the `cuda`
//! feature every call returns PARISKV_ERR_UNSUPPORTED.

use std::ffi::c_void;

#[cfg(feature = "cuda")]
use super::boundary::dtype;
use super::boundary::{boundary, in_ref, out_ref};
use super::cache::pariskv_step;
use super::handle::Registry;
use super::types::pariskv_status;
#[cfg(feature = "cuda")]
use crate::error::Error;
#[cfg(not(feature = "cuda"))]
use crate::error::Result;

/// `pariskv_dtype` as Rust reads it: a raw `u32` (see `config.rs`).
type pariskv_dtype = u32;

/// Where an engine's KV cache and its index live on the device, for `pariskv_cuda_encode`:
/// a cache of streams of `kv_size` cells with `n_heads` KV heads; global cell
/// g = stream * kv_size + cell. The key of (g, head h) is at
/// `keys + g * key_row_stride + h * key_head_stride` bytes; the index of (g, h) is row
/// `(stream * n_heads + h) * kv_size + cell` of `codes`, `nibbles` and `weights`.
/// Optionally (both 0: none kept) the histogram of the codes of the cells flagged counted,
/// `hist` `[n_blocks][256]` uint32 per (stream, head) t = stream * n_heads + h, and the
/// flags, `counted`, one uint8 a cell (1 = counted; all 0 for a new cache), t's histogram
/// and flags `kept_stride` bytes after t - 1's (0: packed, `n_blocks * 1024` bytes and
/// `kv_size` bytes apart; a multiple of 4 otherwise, so that both may share rows): an encode
/// takes a counted cell's old codes out of `hist` and puts every encoded cell's new ones in,
/// as `pariskv_codes_tally` does, so that a step can start from it (`pariskv_cuda_layer`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct pariskv_cuda_encode_target {
    pub keys: u64,
    pub key_dtype: pariskv_dtype,
    pub key_row_stride: usize,
    pub key_head_stride: usize,
    pub codes: u64,
    pub nibbles: u64,
    pub weights: u64,
    pub kv_size: usize,
    pub n_heads: u32,
    pub hist: u64,
    pub counted: u64,
    pub kept_stride: usize,
    /// The row cache the steps over these keys read through (`pariskv_cuda_row_cache`), whose
    /// cells the encode forgets as it rewrites them, or NULL: none.
    pub row_cache: *const pariskv_cuda_row_cache,
}

/// A device cache of K/V rows across decode steps, for K/V in host memory (read through
/// UVA): consecutive steps retrieve largely the same rows, and a row read once over PCIe is
/// read from GPU memory the next time. One device allocation at `base` of
/// `pariskv_cuda_row_cache_bytes` bytes (16-byte aligned), all zero when new or after
/// `pariskv_cuda_row_cache_clear`: `n_streams` x `n_kv_heads` tables (stream s, KV head h:
/// table s * n_kv_heads + h) of `slots` slots (a power of two, at least 4), each one cell's K
/// row of `k_row_bytes` and V row of `v_row_bytes`. Give it to every encode of the keys
/// (`pariskv_cuda_encode_target.row_cache`: rewritten cells are forgotten) and to the steps
/// (`pariskv_cuda_layer.row_cache`, with the stream the step reads); clear it after rows
/// change in place otherwise (a K-shift, a state load).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct pariskv_cuda_row_cache {
    pub base: u64,
    pub n_streams: u32,
    pub n_kv_heads: u32,
    pub slots: u32,
    pub k_row_bytes: usize,
    pub v_row_bytes: usize,
}

/// One layer's decode step on the device, for `pariskv_cuda_step_run`: `n_units` units, unit
/// u = a * n_kv_heads + h being KV head h of token (or sequence) a, with `n_heads` query heads
/// sharing it. Every per-unit address is the base plus `a * *_token_stride + h * *_head_stride`
/// bytes. Within a unit: cell c's K row at `+ c * k_row_stride` (likewise V, `n_cells` cells),
/// its index rows (codes, nibbles, weights as in `pariskv_codes`), mask value (0 or -inf,
/// `mask_dtype`) and int32 position at element c; query head i at `+ i * q_row_stride`
/// (f32), its output at `+ i * out_row_stride` (f32). Optionally (both 0: the zone's
/// histogram counted every step) the histogram the encodes keep and its flags
/// (`pariskv_cuda_encode_target`): the unit's `[n_blocks][256]` counts at `hist` and flag of
/// cell c at `counted + c`; the step takes its zone's histogram from them where that is
/// exact, and counts it where not (a counted cell outside the view, a visible cell not
/// counted).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct pariskv_cuda_layer {
    pub n_units: u32,
    pub n_kv_heads: u32,
    pub n_heads: u32,
    pub n_cells: usize,
    pub k: u64,
    pub k_dtype: pariskv_dtype,
    pub k_row_stride: usize,
    pub k_token_stride: i64,
    pub k_head_stride: i64,
    pub v: u64,
    pub v_dtype: pariskv_dtype,
    pub v_row_stride: usize,
    pub v_token_stride: i64,
    pub v_head_stride: i64,
    pub codes: u64,
    pub nibbles: u64,
    pub weights: u64,
    pub index_token_stride_codes: i64,
    pub index_head_stride_codes: i64,
    pub index_token_stride_nibbles: i64,
    pub index_head_stride_nibbles: i64,
    pub index_token_stride_weights: i64,
    pub index_head_stride_weights: i64,
    pub mask: u64,
    pub mask_dtype: pariskv_dtype,
    pub mask_token_stride: i64,
    pub pos: u64,
    pub pos_token_stride: i64,
    pub q: u64,
    pub q_row_stride: usize,
    pub q_token_stride: i64,
    pub q_head_stride: i64,
    pub out: u64,
    pub out_row_stride: usize,
    pub out_token_stride: i64,
    pub out_head_stride: i64,
    pub hist: u64,
    pub hist_token_stride: i64,
    pub hist_head_stride: i64,
    pub counted: u64,
    pub counted_token_stride: i64,
    pub counted_head_stride: i64,
    /// The row cache the step reads its rows through, with K/V in host memory
    /// (`pariskv_cuda_row_cache`; its tables of stream `row_cache_stream`), or NULL: none. The
    /// step's tokens must read the same rows (k_token_stride and v_token_stride 0, or one
    /// token).
    pub row_cache: *const pariskv_cuda_row_cache,
    pub row_cache_stream: u32,
}

/// A GPU decode step's scratch, allocated once in the CUDA context current at creation: a
/// handle the caller owns from `pariskv_cuda_step_create` to `pariskv_cuda_step_free`.
pub struct pariskv_cuda_step {
    #[cfg(feature = "cuda")]
    buffers: crate::cuda::step::StepBuffers,
    #[cfg(feature = "cuda")]
    seed: u64,
    /// Units and retrievals per unit of the last run, and whether it was given a kept
    /// histogram, to read its state back.
    #[cfg(feature = "cuda")]
    last: std::sync::Mutex<(usize, usize, bool)>,
}

static STEPS: Registry<pariskv_cuda_step> = Registry::new("step");

#[cfg(not(feature = "cuda"))]
fn no_cuda<T>() -> Result<T> {
    Err(crate::error::Error::unsupported("this build of pariskv has no CUDA support (feature `cuda`)"))
}

/// `*out` = 1 when a CUDA driver and a GPU are available to this build, else 0.
#[no_mangle]
pub extern "C" fn pariskv_cuda_available(out: *mut u32) -> pariskv_status {
    boundary("pariskv_cuda_available", || {
        #[cfg(feature = "cuda")]
        let yes = crate::cuda::driver::available();
        #[cfg(not(feature = "cuda"))]
        let yes = false;
        *out_ref(out, "out")? = yes as u32;
        Ok(())
    })
}

/// Allocates `bytes` of pinned host memory mapped into the device address space
/// (cuMemHostAlloc DEVICEMAP | PORTABLE, not write-combined), in the current context:
/// `*host` for the CPU, `*device` for kernels (equal on UVA systems). A failure is an error,
/// never pageable memory.
#[no_mangle]
pub extern "C" fn pariskv_host_alloc(
    bytes: usize,
    host: *mut *mut c_void,
    device: *mut u64,
) -> pariskv_status {
    host_alloc("pariskv_host_alloc", bytes, host, device, None)
}

/// `pariskv_host_alloc` made fast for large buffers: from 256 MiB on, the memory is mapped
/// (huge pages where the system has them), faulted in and registered with the driver in
/// 1 GiB chunks by several threads, calling `progress(done, total, user)` (when not NULL; on
/// the calling thread) with the bytes pinned so far as chunks finish, and once at the end
/// with done == total.
/// Kernels read and write such a buffer across its chunks freely, but the driver sees one
/// registration per 1 GiB chunk (from the buffer's start): one copy-engine copy
/// (`cudaMemcpy*`, `cuMemcpy*`) must not span two chunks; split it, or copy with a kernel.
// A C entry point cannot be `unsafe` to its caller; `user` only travels to the caller's
// own callback.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
#[no_mangle]
pub extern "C" fn pariskv_host_alloc_progress(
    bytes: usize,
    host: *mut *mut c_void,
    device: *mut u64,
    progress: Option<unsafe extern "C" fn(done: usize, total: usize, user: *mut c_void)>,
    user: *mut c_void,
) -> pariskv_status {
    let mut report = |done: usize, total: usize| {
        if let Some(f) = progress {
            // SAFETY: the caller's callback, with the caller's pointer.
            unsafe { f(done, total, user) }
        }
    };
    host_alloc("pariskv_host_alloc_progress", bytes, host, device, Some(&mut report))
}

/// Both allocation entry points: one cuMemHostAlloc without `progress`, the fast path
/// (`PinnedHost::with_progress`) with it.
fn host_alloc(
    function: &str,
    bytes: usize,
    host: *mut *mut c_void,
    device: *mut u64,
    progress: Option<&mut dyn FnMut(usize, usize)>,
) -> pariskv_status {
    boundary(function, || {
        let host = out_ref(host, "host")?;
        let device = out_ref(device, "device")?;
        #[cfg(feature = "cuda")]
        {
            use crate::cuda::pinned::PinnedHost;
            let pinned = match progress {
                None => PinnedHost::new(bytes)?,
                Some(report) => PinnedHost::with_progress(bytes, report)?,
            };
            (*host, *device) = pinned.into_raw();
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (bytes, host, device, progress);
            no_cuda()
        }
    })
}

/// Frees memory from `pariskv_host_alloc`. NULL is a no-op; a pointer that did not come
/// from it, or was freed already, is an error (nothing is freed).
#[no_mangle]
pub extern "C" fn pariskv_host_free(host: *mut c_void) -> pariskv_status {
    boundary("pariskv_host_free", || {
        if host.is_null() {
            return Ok(());
        }
        #[cfg(feature = "cuda")]
        {
            crate::cuda::pinned::PinnedHost::free_raw(host)
        }
        #[cfg(not(feature = "cuda"))]
        no_cuda()
    })
}

#[cfg(feature = "cuda")]
fn stream_of(raw: *mut c_void) -> crate::cuda::driver::Stream {
    // SAFETY: the C caller passes a live CUstream / cudaStream_t (or NULL), the documented
    // contract of every function taking `stream`.
    unsafe { crate::cuda::driver::Stream::from_raw(raw as crate::cuda::driver::CUstream) }
}

/// The row cache a C struct points at (NULL: none), checked, with its base address.
#[cfg(feature = "cuda")]
fn row_cache_of(
    c: *const pariskv_cuda_row_cache,
) -> crate::error::Result<Option<(crate::cuda::row_cache::RowCacheShape, u64)>> {
    if c.is_null() {
        return Ok(None);
    }
    let (shape, base) = row_cache_shape(in_ref(c, "row_cache")?)?;
    if base == 0 || !base.is_multiple_of(16) {
        return Err(Error::invalid(format!("row_cache.base {base:#x} is 0 or not aligned to 16 bytes")));
    }
    Ok(Some((shape, base)))
}

#[cfg(feature = "cuda")]
fn row_cache_shape(
    c: &pariskv_cuda_row_cache,
) -> crate::error::Result<(crate::cuda::row_cache::RowCacheShape, u64)> {
    let shape = crate::cuda::row_cache::RowCacheShape::new(
        (c.n_streams as usize, c.n_kv_heads as usize, c.slots as usize),
        (c.k_row_bytes, c.v_row_bytes),
    )?;
    Ok((shape, c.base))
}

/// Encodes, on `stream`, the keys of the global cells listed at `cells` (device int64; the
/// count is the int32 at device address `n_cells`, at most `max_cells`, or when `n_cells`
/// is 0 exactly `max_cells`, a count fixed when a graph is captured) into the index of
/// `target`, like `pariskv_encode_cells`, bitwise. `center` is 0 (keys encoded as they are)
/// or the device address of the KV heads' key centres (`center_len` f32 per head, head
/// after head, shared by all streams): those not set yet are first set from the listed
/// cells as `pariskv_center_init` sets them, then subtracted. No host synchronisation.
#[allow(clippy::too_many_arguments)]
#[no_mangle]
pub extern "C" fn pariskv_cuda_encode(
    head_dim: u32,
    seed: u64,
    target: *const pariskv_cuda_encode_target,
    center: u64,
    cells: u64,
    n_cells: u64,
    max_cells: usize,
    stream: *mut c_void,
) -> pariskv_status {
    boundary("pariskv_cuda_encode", || {
        #[cfg(feature = "cuda")]
        {
            use crate::cuda::encode::{encode, rotation_for, EncodeTarget};
            let shape = crate::shape::Shape::new(head_dim as usize)?;
            let t = in_ref(target, "target")?;
            if t.keys == 0 || t.codes == 0 || t.nibbles == 0 || t.weights == 0 || cells == 0 {
                return Err(Error::invalid("a device address in target or cells is 0"));
            }
            if !center.is_multiple_of(4) || !t.hist.is_multiple_of(4) {
                return Err(Error::invalid(format!(
                    "center {center:#x} or target.hist {:#x} is not aligned to 4 bytes",
                    t.hist
                )));
            }
            let stream = stream_of(stream);
            let module = crate::cuda::driver::module_for(&stream)?;
            let rot = rotation_for(&stream, shape, seed)?;
            let target = EncodeTarget {
                keys: t.keys,
                key_dtype: dtype(t.key_dtype, "target.key_dtype")?,
                key_row_stride: t.key_row_stride,
                key_head_stride: t.key_head_stride,
                codes: t.codes,
                nibbles: t.nibbles,
                weights: t.weights,
                hist: t.hist,
                counted: t.counted,
                kept_stride: t.kept_stride,
                kv_size: t.kv_size,
                n_heads: t.n_heads as usize,
                center,
                row_cache: match row_cache_of(t.row_cache)? {
                    Some((shape, base)) => shape.all_at(base),
                    None => Default::default(),
                },
            };
            encode(module, rot, &target, cells, n_cells, max_cells, &stream)
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (head_dim, seed, target, center, cells, n_cells, max_cells, stream);
            no_cuda()
        }
    })
}

/// Allocates the scratch of a GPU decode step for layers of up to `max_units` units (KV
/// heads x tokens) of up to `max_heads` query heads each, over up to `max_cells` cells, in
/// the current context. On error `*out` = NULL.
#[no_mangle]
pub extern "C" fn pariskv_cuda_step_create(
    head_dim: u32,
    v_dim: u32,
    seed: u64,
    max_cells: usize,
    max_heads: u32,
    max_units: u32,
    out: *mut *mut pariskv_cuda_step,
) -> pariskv_status {
    boundary("pariskv_cuda_step_create", || {
        let out = out_ref(out, "out")?;
        *out = std::ptr::null_mut();
        #[cfg(feature = "cuda")]
        {
            let shape = crate::shape::Shape::new(head_dim as usize)?;
            if v_dim == 0 || v_dim as usize > crate::shape::MAX_HEAD_DIM {
                return Err(Error::unsupported(format!("v_dim {v_dim} must be in 1..=512")));
            }
            crate::cuda::driver::init()?;
            let buffers = crate::cuda::step::StepBuffers::new(
                shape,
                v_dim as usize,
                max_cells,
                max_heads as usize,
                max_units as usize,
            )?;
            *out = STEPS.register(pariskv_cuda_step { buffers, seed, last: Default::default() });
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (head_dim, v_dim, seed, max_cells, max_heads, max_units);
            no_cuda()
        }
    })
}

/// Frees a step's scratch (its context must still exist). NULL is a no-op; so is a handle
/// already freed or never created, which sets `pariskv_last_error`.
#[no_mangle]
pub extern "C" fn pariskv_cuda_step_free(step: *mut pariskv_cuda_step) {
    if step.is_null() {
        return;
    }
    boundary("pariskv_cuda_step_free", || STEPS.remove(step));
}

/// Launches one layer's decode step on `stream`: for every unit, the GPU twin of
/// `pariskv_attend_cache`. Graph-safe: no allocation, no host synchronisation, no
/// device-to-host read.
#[no_mangle]
pub extern "C" fn pariskv_cuda_step_run(
    step: *mut pariskv_cuda_step,
    params: *const pariskv_step,
    layer: *const pariskv_cuda_layer,
    stream: *mut c_void,
) -> pariskv_status {
    boundary("pariskv_cuda_step_run", || {
        #[cfg(feature = "cuda")]
        {
            use crate::cuda::step::{run, GpuLayer, UnitLayout};
            let step = STEPS.lookup(step)?;
            let p = in_ref(params, "params")?;
            let l = in_ref(layer, "layer")?;
            let shape = step.buffers.shape;
            if p.head_dim as usize != shape.head_dim
                || p.v_dim as usize != step.buffers.dv
                || p.seed != step.seed
            {
                return Err(Error::invalid(format!(
                    "params (head_dim {}, v_dim {}, seed {:#x}) differ from the step's ({}, {}, {:#x})",
                    p.head_dim, p.v_dim, p.seed, shape.head_dim, step.buffers.dv, step.seed
                )));
            }
            if p.n_heads != l.n_heads || l.n_kv_heads == 0 || l.n_units % l.n_kv_heads != 0 {
                return Err(Error::invalid(format!(
                    "params.n_heads {} / layer.n_heads {}, {} units of {} KV heads",
                    p.n_heads, l.n_heads, l.n_units, l.n_kv_heads
                )));
            }
            let params = p.params()?;
            let stream = stream_of(stream);
            let module = crate::cuda::driver::module_for(&stream)?;
            let rot = crate::cuda::encode::rotation_for(&stream, shape, p.seed)?;
            let layer = GpuLayer {
                layout: UnitLayout {
                    n_units: l.n_units as i32,
                    n_h: l.n_kv_heads as i32,
                    k_a: l.k_token_stride,
                    k_h: l.k_head_stride,
                    v_a: l.v_token_stride,
                    v_h: l.v_head_stride,
                    codes_a: l.index_token_stride_codes,
                    codes_h: l.index_head_stride_codes,
                    nib_a: l.index_token_stride_nibbles,
                    nib_h: l.index_head_stride_nibbles,
                    w_a: l.index_token_stride_weights,
                    w_h: l.index_head_stride_weights,
                    mask_a: l.mask_token_stride,
                    pos_a: l.pos_token_stride,
                    q_a: l.q_token_stride,
                    q_h: l.q_head_stride,
                    out_a: l.out_token_stride,
                    out_h: l.out_head_stride,
                    kept_a: l.hist_token_stride,
                    kept_h: l.hist_head_stride,
                    counted_a: l.counted_token_stride,
                    counted_h: l.counted_head_stride,
                },
                n: l.n_cells,
                k: l.k,
                k_dtype: dtype(l.k_dtype, "layer.k_dtype")?,
                k_stride: l.k_row_stride,
                v: l.v,
                v_dtype: dtype(l.v_dtype, "layer.v_dtype")?,
                v_stride: l.v_row_stride,
                codes: l.codes,
                nibbles: l.nibbles,
                weights: l.weights,
                kept: l.hist,
                counted: l.counted,
                mask: l.mask,
                mask_dtype: dtype(l.mask_dtype, "layer.mask_dtype")?,
                pos: l.pos,
                q: l.q,
                q_stride: l.q_row_stride,
                n_heads: l.n_heads as usize,
                out: l.out,
                out_stride: l.out_row_stride,
                row_cache: match row_cache_of(l.row_cache)? {
                    Some((shape, base)) => shape.stream_at(base, l.row_cache_stream as usize)?,
                    None => Default::default(),
                },
            };
            run(module, rot, &params, &layer, &step.buffers, &stream)?;
            let n_ret = crate::cuda::step::n_retrievals(params.gqa, layer.n_heads);
            *step.last.lock().unwrap_or_else(|e| e.into_inner()) =
                (layer.layout.n_units as usize, n_ret, layer.kept != 0);
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (step, params, layer, stream);
            no_cuda()
        }
    })
}

/// What the last `pariskv_cuda_step_run` on `step` did, per unit (for logs and tests): fills
/// `out[0..n]`, n = min(`n_out`, units of that run), and sets `*n_written`. Waits for the
/// device (never call it while a graph is being captured).
#[no_mangle]
pub extern "C" fn pariskv_cuda_step_stats(
    step: *const pariskv_cuda_step,
    out: *mut super::cache::pariskv_step_stats,
    n_out: usize,
    n_written: *mut usize,
) -> pariskv_status {
    boundary("pariskv_cuda_step_stats", || {
        let n_written = out_ref(n_written, "n_written")?;
        *n_written = 0;
        #[cfg(feature = "cuda")]
        {
            let step = STEPS.lookup(step)?;
            let (units, n_ret, kept) = *step.last.lock().unwrap_or_else(|e| e.into_inner());
            let n = units.min(n_out);
            if n == 0 {
                return Ok(());
            }
            let out = super::boundary::out_slice(out, n, "out")?;
            crate::cuda::driver::synchronize()?;
            for (o, (state, rets)) in out.iter_mut().zip(step.buffers.read_state(n, n_ret)?) {
                let candidates: i64 = rets.iter().map(|r| r.n_cand as i64).sum();
                *o = super::cache::pariskv_step_stats {
                    n_visible: state.n_visible.max(0) as usize,
                    n_zone: state.n_zone.max(0) as usize,
                    n_candidates: candidates.max(0) as usize,
                    n_attended: state.n_rows.max(0) as usize,
                    n_refined: rets.iter().map(|r| r.n_refined.max(0) as usize).sum(),
                    // where the kept histogram was not exact (kernels/step.cuh, pk_kept_exact)
                    zone_counted: usize::from(
                        !kept || state.n_uncounted != 0 || state.n_counted as u32 != state.kept_total,
                    ),
                };
            }
            *n_written = n;
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (step, out, n_out);
            no_cuda()
        }
    })
}

/// The device bytes of the row cache `cache` describes (its `base` is not read) into `*out`.
#[no_mangle]
pub extern "C" fn pariskv_cuda_row_cache_bytes(
    cache: *const pariskv_cuda_row_cache,
    out: *mut usize,
) -> pariskv_status {
    boundary("pariskv_cuda_row_cache_bytes", || {
        let (cache, out) = (in_ref(cache, "cache")?, out_ref(out, "out")?);
        #[cfg(feature = "cuda")]
        {
            *out = row_cache_shape(cache)?.0.bytes();
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (cache, out);
            no_cuda()
        }
    })
}

/// The rows the steps read from the row cache `cache` (`*hits`) and from host memory
/// (`*misses`) since it was cleared, over all its tables, in the current context; read
/// after the work using the cache is done (synchronize its stream first), never while a
/// CUDA graph is being captured.
#[no_mangle]
pub extern "C" fn pariskv_cuda_row_cache_stats(
    cache: *const pariskv_cuda_row_cache,
    hits: *mut u64,
    misses: *mut u64,
) -> pariskv_status {
    boundary("pariskv_cuda_row_cache_stats", || {
        in_ref(cache, "cache")?;
        let (hits, misses) = (out_ref(hits, "hits")?, out_ref(misses, "misses")?);
        #[cfg(feature = "cuda")]
        {
            let (shape, base) = row_cache_of(cache)?.ok_or_else(|| Error::invalid("cache is NULL"))?;
            // SAFETY: the caller's cache of this shape at `base` (the documented contract).
            let stats = unsafe { shape.stats_at(base)? };
            *hits = stats.iter().map(|s| s.hits).sum();
            *misses = stats.iter().map(|s| s.misses).sum();
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (cache, hits, misses);
            no_cuda()
        }
    })
}

/// Empties the row cache `cache` and zeroes its counts, in order on `stream` (graph-safe):
/// after its rows changed in place other than by an encode given it.
#[no_mangle]
pub extern "C" fn pariskv_cuda_row_cache_clear(
    cache: *const pariskv_cuda_row_cache,
    stream: *mut c_void,
) -> pariskv_status {
    boundary("pariskv_cuda_row_cache_clear", || {
        in_ref(cache, "cache")?;
        #[cfg(feature = "cuda")]
        {
            let (shape, base) = row_cache_of(cache)?.ok_or_else(|| Error::invalid("cache is NULL"))?;
            shape.clear_at(base, &stream_of(stream))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (cache, stream);
            no_cuda()
        }
    })
}
