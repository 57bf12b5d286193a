//! The C ABI. Thin and uniform: every function checks its arguments, runs inside
//! `boundary`, and returns a `pariskv_status`.
//!
//! Ownership: both handle kinds, `pariskv_index *` and `pariskv_cuda_step *`, follow one
//! model (`handle`): an id the caller owns from create to free, looked up by every call.
//! Calls on one handle from several threads are serialised by a lock inside it.
#![allow(non_camel_case_types)]

mod boundary;
pub mod cache;
mod config;
pub mod cuda;
mod handle;
pub mod settings;
pub mod types;

use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex, MutexGuard};

use boundary::{boundary, in_ref, in_rows, last_error_ptr, out_ref, out_slice};
pub use config::pariskv_config;
use handle::Registry;
pub use types::{pariskv_stats, pariskv_status};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::index::{self, KvIndex};

/// `pariskv_dtype` as Rust reads it: a raw `u32` (see `config.rs`).
type pariskv_dtype = u32;

/// An index handle: the caller owns it from `pariskv_index_create` to `pariskv_index_free`.
pub struct pariskv_index {
    inner: Mutex<Box<dyn KvIndex>>,
}

static INDEXES: Registry<pariskv_index> = Registry::new("index");

fn lookup(handle: *const pariskv_index) -> Result<Arc<pariskv_index>> {
    INDEXES.lookup(handle)
}

impl pariskv_index {
    fn lock(&self) -> Result<MutexGuard<'_, Box<dyn KvIndex>>> {
        self.inner
            .lock()
            .map_err(|_| Error::internal("the index is unusable after an earlier internal error; free it"))
    }
}

/// Why the last call on this thread failed; "" when it succeeded (every call clears it).
/// Valid until the next call on the same thread; copy it to keep it.
#[no_mangle]
pub extern "C" fn pariskv_last_error() -> *const c_char {
    last_error_ptr()
}

/// The library's version, "MAJOR.MINOR.PATCH" (static; compare with the
/// `PARISKV_VERSION_*` macros of the header a program was compiled with).
#[no_mangle]
pub extern "C" fn pariskv_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// Fills `cfg` with the defaults for a model shape: the paper's sink 4, window 512 and top-k
/// 2048, the tuned ratio table (PARISKV_RATIOS_TUNED), refine 2, an automatic dense
/// threshold (0: derived when the index is created, from the device, top-k, sink and window
/// then set; see `pariskv_config_dense_threshold`), scale 1/sqrt(head_dim), no softcap, f16
/// storage, k rows for each GQA group (PARISKV_GQA_GROUP), centred keys (center 1), on the
/// CPU (device -1). The caller sets `cfg->struct_size = sizeof(pariskv_config)` first; `cfg`
/// is left untouched on error.
#[no_mangle]
pub extern "C" fn pariskv_config_init(
    cfg: *mut pariskv_config,
    head_dim: u32,
    n_q_heads: u32,
    n_kv_heads: u32,
) -> pariskv_status {
    boundary("pariskv_config_init", || {
        config::check_size(cfg)?;
        let c = Config::new(head_dim as usize, n_q_heads as usize, n_kv_heads as usize);
        c.validate()?;
        let filled = pariskv_config::from_config(&c)?;
        *out_ref(cfg, "cfg")? = filled;
        Ok(())
    })
}

/// The depth in tokens below which an index of this config attends densely: `dense_threshold`
/// where set, else the automatic one for the config's device, top-k, sink and window (the
/// depth from which the retrieval step beats dense attention there).
#[no_mangle]
pub extern "C" fn pariskv_config_dense_threshold(
    cfg: *const pariskv_config,
    out: *mut u64,
) -> pariskv_status {
    boundary("pariskv_config_dense_threshold", || {
        config::check_size(cfg)?;
        let depth = in_ref(cfg, "cfg")?.into_config()?.dense_depth();
        *out_ref(out, "out")? = depth as u64;
        Ok(())
    })
}

/// Creates an index from a validated config, on the device `cfg->device` names (a CUDA
/// device fails with PARISKV_ERR_UNSUPPORTED in a build without feature `cuda`, with
/// PARISKV_ERR_CUDA when the driver or device cannot be used). On error `*out` is NULL.
#[no_mangle]
pub extern "C" fn pariskv_index_create(
    cfg: *const pariskv_config,
    out: *mut *mut pariskv_index,
) -> pariskv_status {
    boundary("pariskv_index_create", || {
        let out = out_ref(out, "out")?;
        *out = std::ptr::null_mut();
        config::check_size(cfg)?;
        let config = in_ref(cfg, "cfg")?.into_config()?;
        let index = index::open(config)?;
        *out = INDEXES.register(pariskv_index { inner: Mutex::new(index) });
        Ok(())
    })
}

/// Frees an index. NULL is a no-op; so is a handle already freed or never created, which
/// sets `pariskv_last_error`. A call still running on the handle in another thread finishes
/// normally; the index is released when it returns.
#[no_mangle]
pub extern "C" fn pariskv_index_free(index: *mut pariskv_index) {
    if index.is_null() {
        return;
    }
    // `boundary` also keeps a panic in a destructor from unwinding into C.
    boundary("pariskv_index_free", || INDEXES.remove(index));
}

fn with_index<T>(index: *const pariskv_index, f: impl FnOnce(&mut dyn KvIndex) -> Result<T>) -> Result<T> {
    let handle = lookup(index)?;
    let mut guard = handle.lock()?;
    f(guard.as_mut())
}

/// Appends `n_tokens` keys and values, each laid out `[n_tokens][n_kv_heads][head_dim]`
/// in `dtype`; positions continue from the current length. All or nothing.
#[no_mangle]
pub extern "C" fn pariskv_index_append(
    index: *mut pariskv_index,
    dtype: pariskv_dtype,
    keys: *const c_void,
    values: *const c_void,
    n_tokens: usize,
) -> pariskv_status {
    boundary("pariskv_index_append", || {
        with_index(index, |ix| {
            let c = ix.config();
            let n = n_tokens
                .checked_mul(c.n_kv_heads * c.head_dim)
                .ok_or_else(|| Error::invalid(format!("n_tokens {n_tokens} is too large")))?;
            let k = in_rows(dtype, keys, n, "keys")?;
            let v = in_rows(dtype, values, n, "values")?;
            ix.append(k, v, n_tokens)
        })
    })
}

/// Number of tokens appended.
#[no_mangle]
pub extern "C" fn pariskv_index_len(index: *const pariskv_index, out: *mut usize) -> pariskv_status {
    boundary("pariskv_index_len", || {
        let out = out_ref(out, "out")?;
        *out = with_index(index, |ix| Ok(ix.len()))?;
        Ok(())
    })
}

/// Memory use and the last step's retrieval work.
#[no_mangle]
pub extern "C" fn pariskv_index_stats(
    index: *const pariskv_index,
    out: *mut pariskv_stats,
) -> pariskv_status {
    boundary("pariskv_index_stats", || {
        let out = out_ref(out, "out")?;
        let s = with_index(index, |ix| Ok(ix.stats()))?;
        *out = pariskv_stats {
            len: s.len,
            index_bytes: s.index_bytes,
            kv_bytes: s.kv_bytes,
            last_zone: s.last_zone,
            last_candidates: s.last_candidates,
        };
        Ok(())
    })
}

/// Per KV head, the top-`k` positions of the retrieval zone (between the sink and the local
/// window) for one decode query `[n_q_heads][head_dim]`, best first.
/// `out_positions` is `[n_kv_heads][k]`, slots past `out_count[h]` are set to -1;
/// `out_count` is `[n_kv_heads]`. Fewer than `k` come back where the zone holds fewer
/// (length - n_sink - n_local tokens) and, with PARISKV_GQA_PER_HEAD, where the query heads'
/// shares of `k` overlap (their union is returned).
#[no_mangle]
pub extern "C" fn pariskv_index_search(
    index: *mut pariskv_index,
    dtype: pariskv_dtype,
    queries: *const c_void,
    k: u32,
    out_positions: *mut i64,
    out_count: *mut u32,
) -> pariskv_status {
    boundary("pariskv_index_search", || {
        with_index(index, |ix| {
            let c = ix.config();
            let (nkv, k) = (c.n_kv_heads, k as usize);
            let q = in_rows(dtype, queries, c.n_q_heads * c.head_dim, "queries")?;
            let total = nkv.checked_mul(k).ok_or_else(|| Error::invalid(format!("k {k} is too large")))?;
            let positions = out_slice(out_positions, total, "out_positions")?;
            let counts = out_slice(out_count, nkv, "out_count")?;
            let found = ix.search(q, k)?;
            for ((slots, count), cells) in
                positions.chunks_exact_mut(k.max(1)).zip(counts.iter_mut()).zip(found)
            {
                slots.fill(-1);
                for (slot, &cell) in slots.iter_mut().zip(&cells) {
                    *slot = cell as i64;
                }
                *count = cells.len() as u32;
            }
            Ok(())
        })
    })
}

/// The ParisKV attention output `[n_q_heads][head_dim]` (f32) for one decode query: exact
/// attention over sink ∪ top-k ∪ window, or dense below the threshold.
#[no_mangle]
pub extern "C" fn pariskv_index_attend(
    index: *mut pariskv_index,
    dtype: pariskv_dtype,
    queries: *const c_void,
    out: *mut f32,
) -> pariskv_status {
    boundary("pariskv_index_attend", || {
        with_index(index, |ix| {
            let c = ix.config();
            let n = c.n_q_heads * c.head_dim;
            let q = in_rows(dtype, queries, n, "queries")?;
            let out = out_slice(out, n, "out")?;
            ix.attend(q, out)
        })
    })
}
