//! The index handle on a CUDA device: the twin of `index::Index`. K/V rows live in device
//! memory, or with `kv_in_host` in pinned host memory the GPU reads through UVA; codes and
//! the search always live on the device. Appends are encoded there; search and attend run
//! the step kernels of `step` over one token whose units are the KV heads.
//!
//! Storage is `[kv_head][capacity][row]` for rows and codes alike; capacity doubles when an
//! append needs more (a copy of what is stored, like `Vec`).

use crate::algorithm::gqa::merge_ranks;
use crate::algorithm::rotation::Rotation;
use crate::config::{Config, Device};
use crate::cuda::driver::{self, CUdeviceptr, DeviceBuffer, Module, PrimaryContext, Stream};
use crate::cuda::encode::{encode, EncodeTarget, GpuRotation};
use crate::cuda::kernels::MAX_GROUP;
use crate::cuda::pinned::PinnedHost;
use crate::cuda::step::{self, GpuLayer, Retrieval, StepBuffers, UnitLayout, UnitState};
use crate::error::{Error, Result};
use crate::index::handle::{check_append, load_queries, IndexStats, KvIndex};
use crate::rows::{DType, RowBuf, RowData, Rows};
use crate::shape::Shape;

/// Capacity of the first allocation, in tokens.
const MIN_CAPACITY: usize = 1024;

/// K or V rows of every KV head, `[head][capacity][head_dim]` in the index's dtype.
enum KvRows {
    Device(DeviceBuffer),
    /// Pinned, device-mapped host memory (read by the kernels through UVA).
    Host(PinnedHost),
}

impl KvRows {
    fn new(bytes: usize, in_host: bool) -> Result<KvRows> {
        Ok(if in_host {
            KvRows::Host(PinnedHost::new(bytes)?)
        } else {
            KvRows::Device(DeviceBuffer::new(bytes)?)
        })
    }

    /// The address kernels read.
    fn ptr(&self) -> CUdeviceptr {
        match self {
            KvRows::Device(b) => b.ptr,
            KvRows::Host(h) => h.device,
        }
    }

    fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        match self {
            KvRows::Device(b) => b.write_at(offset, data),
            KvRows::Host(h) => {
                assert!(offset + data.len() <= h.bytes, "host write out of range");
                // SAFETY: the range lies inside the live pinned allocation (checked above),
                // which no kernel is using (every call synchronises before returning).
                unsafe {
                    std::ptr::copy_nonoverlapping(data.as_ptr(), (h.host as *mut u8).add(offset), data.len())
                };
                Ok(())
            }
        }
    }

    /// Copies `bytes` at `src_offset` of `src` (the same kind) to `offset`.
    fn copy_from(&self, offset: usize, src: &KvRows, src_offset: usize, bytes: usize) -> Result<()> {
        match (self, src) {
            (KvRows::Device(d), KvRows::Device(s)) => d.copy_from(offset, s, src_offset, bytes),
            (KvRows::Host(d), KvRows::Host(s)) => {
                assert!(offset + bytes <= d.bytes && src_offset + bytes <= s.bytes, "host copy out of range");
                // SAFETY: both ranges lie inside live, distinct pinned allocations.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        (s.host as *const u8).add(src_offset),
                        (d.host as *mut u8).add(offset),
                        bytes,
                    )
                };
                Ok(())
            }
            _ => Err(Error::internal("K/V rows copied between device and host storage")),
        }
    }
}

/// Everything on the device, sized for `cap` tokens.
struct Store {
    module: &'static Module,
    rotation: GpuRotation,
    cap: usize,
    keys: KvRows,
    values: KvRows,
    codes: DeviceBuffer,
    nibbles: DeviceBuffer,
    weights: DeviceBuffer,
    /// Each KV head's key centre (`center::len` f32; all zero: not set).
    center: DeviceBuffer,
    /// Position of each cell (its index) and an all-visible mask: the step's view of a
    /// single sequence.
    pos: DeviceBuffer,
    mask: DeviceBuffer,
    q: DeviceBuffer,
    out: DeviceBuffer,
    step: StepBuffers,
}

/// Bytes per token and KV head of each stored array.
#[derive(Clone, Copy)]
struct RowBytes {
    kv: usize,
    codes: usize,
    nibbles: usize,
    weights: usize,
}

impl RowBytes {
    fn of(cfg: &Config, shape: &Shape) -> RowBytes {
        RowBytes {
            kv: cfg.kv_dtype.bytes(cfg.head_dim),
            codes: shape.code_bytes(),
            nibbles: shape.nibble_bytes(),
            weights: shape.n_weights() * 2,
        }
    }
}

impl Store {
    /// Empty storage for `cap` tokens, in the current context.
    fn new(cfg: &Config, shape: Shape, rotation: &Rotation, cap: usize) -> Result<Store> {
        let (nkv, g, d) = (cfg.n_kv_heads, cfg.group_size(), cfg.head_dim);
        let b = RowBytes::of(cfg, &shape);
        let in_host = matches!(cfg.device, Device::Cuda { kv_in_host: true, .. });
        let per_head = |row: usize| -> Result<usize> {
            nkv.checked_mul(cap)
                .and_then(|x| x.checked_mul(row))
                .ok_or_else(|| Error::invalid(format!("GPU index of {cap} tokens: size overflows")))
        };
        let pos: Vec<i32> = (0..cap as i32).collect();
        Ok(Store {
            module: driver::module_for(&Stream::null())?,
            rotation: GpuRotation::new(rotation)?,
            cap,
            keys: KvRows::new(per_head(b.kv)?, in_host)?,
            values: KvRows::new(per_head(b.kv)?, in_host)?,
            codes: DeviceBuffer::new(per_head(b.codes)?)?,
            nibbles: DeviceBuffer::new(per_head(b.nibbles)?)?,
            weights: DeviceBuffer::new(per_head(b.weights)?)?,
            center: DeviceBuffer::from_slice(&vec![0.0f32; nkv * crate::algorithm::center::len(d)])?,
            pos: DeviceBuffer::from_slice(&pos)?,
            mask: DeviceBuffer::from_slice(&vec![0u16; cap])?,
            q: DeviceBuffer::new(cfg.n_q_heads * d * 4)?,
            out: DeviceBuffer::new(cfg.n_q_heads * d * 4)?,
            step: StepBuffers::new(shape, d, cap, g, nkv)?,
        })
    }

    /// Copies the first `len` tokens of every head from `old`.
    fn copy_from(&self, old: &Store, len: usize, b: RowBytes, n_heads: usize) -> Result<()> {
        for h in 0..n_heads {
            let (to, from) = (h * self.cap, h * old.cap);
            self.keys.copy_from(to * b.kv, &old.keys, from * b.kv, len * b.kv)?;
            self.values.copy_from(to * b.kv, &old.values, from * b.kv, len * b.kv)?;
            self.codes.copy_from(to * b.codes, &old.codes, from * b.codes, len * b.codes)?;
            self.nibbles.copy_from(to * b.nibbles, &old.nibbles, from * b.nibbles, len * b.nibbles)?;
            self.weights.copy_from(to * b.weights, &old.weights, from * b.weights, len * b.weights)?;
        }
        self.center.copy_from(0, &old.center, 0, old.center.bytes)?;
        driver::synchronize()
    }
}

pub struct GpuIndex {
    cfg: Config,
    shape: Shape,
    rotation: Rotation,
    len: usize,
    /// Zone sizes and candidates of the last search, per KV head.
    last: Vec<(usize, usize)>,
    queries: Vec<f32>,
    store: Option<Store>,
    /// Declared last: released after `store` is freed inside it (see `Drop`).
    ctx: PrimaryContext,
}

impl GpuIndex {
    pub fn new(cfg: Config) -> Result<GpuIndex> {
        let shape = cfg.validate()?;
        let Device::Cuda { ordinal, .. } = cfg.device else {
            return Err(Error::invalid("GpuIndex needs a CUDA device in the config"));
        };
        if cfg.group_size() > MAX_GROUP {
            return Err(Error::unsupported(format!(
                "GPU index: {} query heads per KV head, at most {MAX_GROUP} on the GPU",
                cfg.group_size()
            )));
        }
        let ctx = PrimaryContext::retain(ordinal)?;
        {
            // Load the kernels now, so that a device that cannot run them fails here.
            let _current = ctx.enter()?;
            driver::module_for(&Stream::null())?;
        }
        Ok(GpuIndex {
            rotation: Rotation::new(shape, cfg.seed),
            shape,
            len: 0,
            last: vec![(0, 0); cfg.n_kv_heads],
            queries: Vec::new(),
            store: None,
            cfg,
            ctx,
        })
    }

    fn row_bytes(&self) -> RowBytes {
        RowBytes::of(&self.cfg, &self.shape)
    }

    /// Storage for at least `need` tokens (call with the context current).
    fn reserve(&mut self, need: usize) -> Result<()> {
        let cap = self.store.as_ref().map_or(0, |s| s.cap);
        if need <= cap {
            return Ok(());
        }
        if need > i32::MAX as usize {
            return Err(Error::invalid(format!("GPU index: {need} tokens, at most {} on the GPU", i32::MAX)));
        }
        let new_cap = need.max(cap.saturating_mul(2)).max(MIN_CAPACITY).min(i32::MAX as usize);
        let store = Store::new(&self.cfg, self.shape, &self.rotation, new_cap)?;
        if let Some(old) = &self.store {
            store.copy_from(old, self.len, self.row_bytes(), self.cfg.n_kv_heads)?;
        }
        self.store = Some(store);
        Ok(())
    }

    fn store(&self) -> Result<&Store> {
        self.store.as_ref().ok_or_else(|| Error::internal("GPU index used before any append"))
    }

    /// One token's step over every KV head (the unit), reading the queries in `store.q`.
    fn layer(&self, s: &Store) -> GpuLayer {
        let (d, g) = (self.cfg.head_dim, self.cfg.group_size());
        let b = self.row_bytes();
        let per_head = |row: usize| (s.cap * row) as i64;
        GpuLayer {
            layout: UnitLayout {
                n_units: self.cfg.n_kv_heads as i32,
                n_h: self.cfg.n_kv_heads as i32,
                k_h: per_head(b.kv),
                v_h: per_head(b.kv),
                codes_h: per_head(b.codes),
                nib_h: per_head(b.nibbles),
                w_h: per_head(b.weights),
                q_h: (g * d * 4) as i64,
                out_h: (g * d * 4) as i64,
                ..UnitLayout::default()
            },
            n: self.len,
            k: s.keys.ptr(),
            k_dtype: self.cfg.kv_dtype,
            k_stride: b.kv,
            v: s.values.ptr(),
            v_dtype: self.cfg.kv_dtype,
            v_stride: b.kv,
            codes: s.codes.ptr,
            nibbles: s.nibbles.ptr,
            weights: s.weights.ptr,
            kept: 0,
            counted: 0,
            mask: s.mask.ptr,
            mask_dtype: DType::F16,
            pos: s.pos.ptr,
            q: s.q.ptr,
            q_stride: d * 4,
            n_heads: g,
            out: s.out.ptr,
            out_stride: d * 4,
            row_cache: Default::default(),
        }
    }

    fn n_retrievals(&self) -> usize {
        step::n_retrievals(self.cfg.gqa, self.cfg.group_size())
    }

    /// Each unit's state and retrievals after a step (synchronises), noted as the last
    /// search's stats.
    fn read_state(&mut self) -> Result<Vec<(UnitState, Vec<Retrieval>)>> {
        driver::synchronize()?;
        let units = self.store()?.step.read_state(self.cfg.n_kv_heads, self.n_retrievals())?;
        for (last, (state, rets)) in self.last.iter_mut().zip(&units) {
            *last = (state.n_zone.max(0) as usize, rets.iter().map(|r| r.n_cand.max(0) as usize).sum());
        }
        Ok(units)
    }

    fn upload_queries(&self) -> Result<()> {
        self.store()?.q.write(&self.queries)
    }

    fn append_rows(&mut self, keys: RowData, values: RowData, n_tokens: usize) -> Result<()> {
        let (d, nkv) = (self.cfg.head_dim, self.cfg.n_kv_heads);
        self.reserve(self.len + n_tokens)?;
        let b = self.row_bytes();
        let s = self.store()?;
        let mut row = vec![0.0f32; d];
        for h in 0..nkv {
            let at = (h * s.cap + self.len) * b.kv;
            for (data, dst) in [(keys, &s.keys), (values, &s.values)] {
                // Stored in the index's dtype, rounded exactly as the CPU index rounds.
                let input = Rows::head_of(data, nkv, d, h, n_tokens)?;
                let mut buf = RowBuf::new(self.cfg.kv_dtype);
                buf.reserve(n_tokens * d)?;
                for t in 0..n_tokens {
                    input.load(t, &mut row);
                    buf.extend_from_f32(&row);
                }
                dst.write_at(at, buf.data().as_bytes())?;
            }
        }
        let cells: Vec<i64> = (self.len as i64..(self.len + n_tokens) as i64).collect();
        let cells_dev = DeviceBuffer::from_slice(&cells)?;
        let target = EncodeTarget {
            keys: s.keys.ptr(),
            key_dtype: self.cfg.kv_dtype,
            key_row_stride: b.kv,
            key_head_stride: s.cap * b.kv,
            codes: s.codes.ptr,
            nibbles: s.nibbles.ptr,
            weights: s.weights.ptr,
            hist: 0,
            counted: 0,
            kept_stride: 0,
            kv_size: s.cap,
            n_heads: nkv,
            center: if self.cfg.center { s.center.ptr } else { 0 },
            row_cache: Default::default(),
        };
        // count 0: exactly `n_tokens` cells
        encode(s.module, &s.rotation, &target, cells_dev.ptr, 0, n_tokens, &Stream::null())?;
        driver::synchronize()?;
        self.len += n_tokens;
        Ok(())
    }

    /// Per KV head, its retrievals' top-k read back (ranked by key) and merged rank by rank.
    fn search_lists(&mut self, k: usize) -> Result<Vec<Vec<u32>>> {
        let s = self.store()?;
        let params = self.cfg.step_params(k);
        step::select(s.module, &s.rotation, &params, &self.layer(s), &s.step, &Stream::null())?;
        let units = self.read_state()?;
        let s = self.store()?;
        let n_ret = self.n_retrievals();
        let mut seen = Default::default();
        let mut out = Vec::with_capacity(units.len());
        for (h, (_, rets)) in units.iter().enumerate() {
            let mut lists = Vec::with_capacity(n_ret);
            for (r, ret) in rets.iter().enumerate() {
                let offset = (h * n_ret + r) * self.len * 8;
                let mut keys: Vec<u64> = s.step.cand.read_at(offset, ret.n_cand.max(0) as usize)?;
                // order-preserving keys: best first, ties by lower cell; after refining, the
                // shortlist's exact keys, the rest ~0 (last)
                keys.sort_unstable();
                keys.truncate(ret.keep.max(0) as usize);
                keys.retain(|&key| key != u64::MAX);
                lists.push(keys.into_iter().map(|key| key as u32).collect::<Vec<u32>>());
            }
            let mut merged = Vec::new();
            merge_ranks(&lists, &mut seen, &mut merged);
            out.push(merged);
        }
        Ok(out)
    }

    fn attend_rows(&mut self, out: &mut [f32]) -> Result<()> {
        let dense = self.cfg.is_dense(self.len);
        let s = self.store()?;
        let params = self.cfg.step_params(if dense { usize::MAX } else { self.cfg.top_k });
        step::run(s.module, &s.rotation, &params, &self.layer(s), &s.step, &Stream::null())?;
        driver::synchronize()?;
        out.copy_from_slice(&s.out.read::<f32>(out.len())?);
        if !dense {
            // Like the CPU index, stats describe the last step that retrieved.
            self.read_state()?;
        }
        Ok(())
    }
}

impl KvIndex for GpuIndex {
    fn config(&self) -> &Config {
        &self.cfg
    }

    fn len(&self) -> usize {
        self.len
    }

    fn stats(&self) -> IndexStats {
        let b = self.row_bytes();
        let per_token = self.len * self.cfg.n_kv_heads;
        IndexStats {
            len: self.len,
            index_bytes: per_token * (b.codes + b.nibbles + b.weights),
            kv_bytes: per_token * 2 * b.kv,
            last_zone: self.last.iter().map(|l| l.0).sum(),
            last_candidates: self.last.iter().map(|l| l.1).sum(),
        }
    }

    fn append(&mut self, keys: RowData, values: RowData, n_tokens: usize) -> Result<()> {
        check_append(&self.cfg, self.len, &keys, &values, n_tokens)?;
        if n_tokens == 0 {
            return Ok(());
        }
        let _current = self.ctx.enter()?;
        self.append_rows(keys, values, n_tokens)
    }

    fn search(&mut self, queries: RowData, k: usize) -> Result<Vec<Vec<u32>>> {
        if k == 0 {
            return Err(Error::invalid("search: k must be at least 1"));
        }
        load_queries(&self.cfg, queries, &mut self.queries)?;
        if self.len == 0 {
            return Ok(vec![Vec::new(); self.cfg.n_kv_heads]);
        }
        let _current = self.ctx.enter()?;
        self.upload_queries()?;
        self.search_lists(k)
    }

    fn attend(&mut self, queries: RowData, out: &mut [f32]) -> Result<()> {
        let want = self.cfg.n_q_heads * self.cfg.head_dim;
        if out.len() != want {
            return Err(Error::invalid(format!("attend: output has {} values, expected {want}", out.len())));
        }
        if self.len == 0 {
            return Err(Error::invalid("attend: the index is empty"));
        }
        load_queries(&self.cfg, queries, &mut self.queries)?;
        let _current = self.ctx.enter()?;
        self.upload_queries()?;
        self.attend_rows(out)
    }
}

impl Drop for GpuIndex {
    fn drop(&mut self) {
        // Free the device memory inside its context; `ctx` is released afterwards.
        if let Ok(_current) = self.ctx.enter() {
            let _ = driver::synchronize();
            self.store = None;
        }
    }
}
