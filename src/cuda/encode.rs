//! GPU encode of the keys of given cells: the twin of `encode::encode_rows`, bitwise equal.

use std::ffi::c_void;

use super::args::EncodeArgs;
use super::driver::{launch, CUdeviceptr, DeviceBuffer, Module, Stream};
use super::kernels::{CENTER_INIT, ENCODE, ENCODE_WARPS};
use super::row_cache::RowCacheArgs;
use crate::algorithm::rotation::Rotation;
use crate::error::{Error, Result};
use crate::rows::{DType, Q8_0_BLOCK};
use crate::shape::{Shape, N_CENTROIDS};

/// The rotation's sign diagonal on the device.
pub struct GpuRotation {
    pub shape: Shape,
    signs: DeviceBuffer,
    scale: f32,
}

impl GpuRotation {
    pub fn new(rotation: &Rotation) -> Result<GpuRotation> {
        let shape = rotation.shape();
        Ok(GpuRotation {
            shape,
            signs: DeviceBuffer::from_slice(rotation.signs())?,
            scale: 1.0 / (shape.padded_dim as f32).sqrt(),
        })
    }

    pub fn signs_ptr(&self) -> CUdeviceptr {
        self.signs.ptr
    }

    pub fn scale(&self) -> f32 {
        self.scale
    }
}

/// Where the keys and the index live (device or UVA addresses): a cache of streams of
/// `kv_size` cells with `n_heads` KV heads; global cell g = stream * kv_size + cell.
#[derive(Clone, Copy, Debug)]
pub struct EncodeTarget {
    pub keys: CUdeviceptr,
    pub key_dtype: DType,
    /// Bytes from one cell's keys to the next, and from one head's key to the next.
    pub key_row_stride: usize,
    pub key_head_stride: usize,
    pub codes: CUdeviceptr,
    pub nibbles: CUdeviceptr,
    pub weights: CUdeviceptr,
    /// The kept histogram of the codes, per (stream, head) t = stream * n_heads + h
    /// `[n_blocks][256]` u32, and its flags, one byte a cell (`kept::tally`: a cell's old
    /// codes leave it, its new ones enter), or 0 and 0: none kept. t's histogram and flags
    /// lie `kept_stride` bytes after t - 1's, or with `kept_stride` 0 packed (histograms
    /// `n_blocks * 256 * 4` bytes apart, flags `kv_size`).
    pub hist: CUdeviceptr,
    pub counted: CUdeviceptr,
    pub kept_stride: usize,
    pub kv_size: usize,
    pub n_heads: usize,
    /// The heads' key centres (`center::len` f32 each, head after head), or 0: keys
    /// encoded as they are.
    pub center: CUdeviceptr,
    /// Every table of the row cache the steps over these keys use (`RowCache::all`), which
    /// forgets the cells encoded, or none (`Default`).
    pub row_cache: RowCacheArgs,
}

/// The kernels' code of an element type (`pk_dtype`, numbered as `pariskv_dtype`): f32, f16,
/// bf16 and q8_0 rows (row lengths a whole number of q8_0 blocks, checked by the callers).
pub fn dtype_code(d: DType) -> i32 {
    match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
        DType::Q8_0 => 3,
    }
}

/// Refuses rows of `len` elements of `dtype` the kernels cannot read: q8_0 rows must be
/// whole blocks.
pub fn check_rows(dtype: DType, len: usize, what: &str) -> Result<()> {
    if dtype == DType::Q8_0 && !len.is_multiple_of(Q8_0_BLOCK) {
        return Err(Error::unsupported(format!(
            "{what}: q8_0 rows of {len} elements (whole blocks of {Q8_0_BLOCK} needed)"
        )));
    }
    Ok(())
}

/// Encodes the keys of the global cells `cells` (I64, on the device; `*n_cells`, an i32 on
/// the device, of them, at most `max_cells`; or exactly `max_cells` when `n_cells` is 0)
/// into the index, on `stream`, after setting the centres from them where they are not set
/// yet (`target.center`). No host reads: the grid covers `max_cells` and the kernels stop at
/// the count they read.
#[allow(clippy::too_many_arguments)]
pub fn encode(
    module: &Module,
    rotation: &GpuRotation,
    target: &EncodeTarget,
    cells: CUdeviceptr,
    n_cells: CUdeviceptr,
    max_cells: usize,
    stream: &Stream,
) -> Result<()> {
    let shape = rotation.shape;
    check_rows(target.key_dtype, shape.head_dim, "keys")?;
    if (target.hist == 0) != (target.counted == 0) {
        return Err(Error::invalid("encode: a kept histogram needs both its counts and its flags"));
    }
    let packed_hist = shape.n_blocks * N_CENTROIDS * 4;
    let (hist_stride, counted_stride) = match target.kept_stride {
        0 => (packed_hist, target.kv_size),
        s if s >= packed_hist && s >= target.kv_size && s.is_multiple_of(4) => (s, s),
        s => {
            return Err(Error::invalid(format!(
                "encode: kept histograms {s} bytes apart (a multiple of 4, at least {packed_hist} and the {} cells' flags)",
                target.kv_size
            )))
        }
    };
    let mut args = EncodeArgs {
        keys: target.keys,
        key_dtype: dtype_code(target.key_dtype),
        key_row_stride: target.key_row_stride as i64,
        key_head_stride: target.key_head_stride as i64,
        cells,
        n_cells,
        max_cells: max_cells as i64,
        codes: target.codes,
        nibbles: target.nibbles,
        weights: target.weights,
        hist: target.hist,
        counted: target.counted,
        hist_stride: hist_stride as i64,
        counted_stride: counted_stride as i64,
        kv_size: target.kv_size as i64,
        n_heads: target.n_heads as i32,
        center: target.center,
        signs: rotation.signs.ptr,
        scale: rotation.scale,
        head_dim: shape.head_dim as i32,
        padded_dim: shape.padded_dim as i32,
        init_center: 0,
        cache: target.row_cache,
    };
    // A ubatch that one encode block per head covers (a decode token) sets an unset centre
    // in that block; larger ones need every cell's key first: a launch of its own.
    let one_block = max_cells <= ENCODE_WARPS as usize;
    if target.center != 0 && max_cells > 0 && one_block {
        args.init_center = 1;
    } else if target.center != 0 && max_cells > 0 {
        let mut params = [&mut args as *mut EncodeArgs as *mut c_void];
        launch(module, CENTER_INIT, (target.n_heads as u32, 1, 1), 256, 0, stream, &mut params)?;
    }
    let grid = (max_cells.div_ceil(ENCODE_WARPS as usize) as u32, target.n_heads as u32, 1);
    let smem = ENCODE_WARPS as usize * shape.padded_dim * 4;
    let mut params = [&mut args as *mut EncodeArgs as *mut c_void];
    launch(module, ENCODE, grid, ENCODE_WARPS * 32, smem as u32, stream, &mut params)
}

/// The rotation for (shape, seed) on the device of `stream`'s context, uploaded once per
/// context and kept for the process's life (a few KiB each).
pub fn rotation_for(stream: &Stream, shape: Shape, seed: u64) -> Result<&'static GpuRotation> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type ByContextDimSeed = HashMap<(usize, usize, u64), &'static GpuRotation>;
    static CACHE: OnceLock<Mutex<ByContextDimSeed>> = OnceLock::new();
    let ctx = super::driver::context_of(stream)? as usize;
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = cache.get(&(ctx, shape.head_dim, seed)) {
        return Ok(r);
    }
    let rot = super::driver::with_stream_context(stream, || GpuRotation::new(&Rotation::new(shape, seed)))?;
    let rot: &'static GpuRotation = Box::leak(Box::new(rot));
    cache.insert((ctx, shape.head_dim, seed), rot);
    Ok(rot)
}
