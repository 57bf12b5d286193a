//! C ABI of the engine settings (`crate::settings`): the struct an engine's integration
//! passes around, its text form, the table of keys, the dense threshold, and the op
//! parameters of a decode step, packed by the graph builder and unpacked by every backend.

use std::ffi::{c_char, CStr};

use super::boundary::{boundary, gqa, in_ref, in_slice, out_ref, out_slice, raw_gqa};
use super::cache::pariskv_step;
use super::types::{self, pariskv_status};
use crate::error::{Error, Result};
use crate::settings::{self, Fill, Kind, OffloadKeys, OpParams, Settings, Table, OP_PARAMS, SPECS};

/// `pariskv_gqa` as Rust reads it: a raw `u32` (see `config.rs`).
type pariskv_gqa = u32;
/// Likewise `pariskv_ratios`.
type pariskv_ratios = u32;
/// Likewise `pariskv_backend`.
type pariskv_backend = u32;

/// Number of `int32_t` op parameters of an attention step (`pariskv_op_params_pack`).
pub const PARISKV_OP_PARAMS: usize = 9;
const _: () = assert!(PARISKV_OP_PARAMS == OP_PARAMS);

/// What an engine that keeps its own KV cache lets its users set (llama.cpp's
/// `--pariskv-*` flags). `pariskv_settings_init` fills the defaults; the text form
/// (`pariskv_settings_parse`, `pariskv_settings_format`) names each field by its key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct pariskv_settings {
    /// `topk`: keys retrieved per KV head and decode step; 0 = off.
    pub top_k: u32,
    /// `sink`: first positions of a sequence always attended.
    pub n_sink: u32,
    /// `window`: last positions of a sequence always attended.
    pub n_window: u32,
    /// `dense-threshold`: caches of fewer cells stay dense; 0 = automatic
    /// (`pariskv_settings_dense_threshold`).
    pub dense_threshold: u32,
    /// `gqa`: how query heads sharing a KV head choose its rows (`pariskv_gqa`).
    pub gqa: pariskv_gqa,
    /// `ratios`: PARISKV_RATIOS_TUNED or PARISKV_RATIOS_REFERENCE.
    pub ratios: pariskv_ratios,
    /// `refine`: exact rescoring of each retrieval's `refine * top_k` best estimates, 1..64
    /// (1 = off).
    pub refine: u32,
    /// `candidates`: share of the zone reranked at every zone size, in (0, 1], with the
    /// tuned collision tiers; 0 = the ratio table's.
    pub candidates: f32,
    /// `center`: 1 = keys indexed minus their KV head's centre, 0 = as they are.
    pub center: u32,
    /// `offload`: 1 = the K/V of the handled layers in pinned host memory read by the GPU.
    pub offload: u32,
    /// `offload-keys`: under `offload`, 0 = K with V in host memory, 1 = K in GPU memory
    /// (only V in host memory).
    pub offload_keys: u32,
    /// `row-cache`: under `offload`, slots of the device row cache per KV head and stream
    /// (0 = none).
    pub row_cache: u32,
    /// `fill`: llama-bench's depth fill, 0 = exact, 1 = local (prompt ubatches attend only
    /// within themselves; speed only).
    pub fill: u32,
}

/// What values a setting takes (`pariskv_setting_info.kind`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum pariskv_setting_kind {
    /// A whole number.
    PARISKV_SETTING_COUNT = 0,
    /// One of the words of `values`, separated by `|`.
    PARISKV_SETTING_CHOICE = 1,
    /// `on` or `off`, given as a flag of its own (`--pariskv-offload`, `--no-pariskv-offload`).
    PARISKV_SETTING_SWITCH = 2,
    /// A number in [0, 1].
    PARISKV_SETTING_SHARE = 3,
}

/// One setting, for flag parsers and help: static strings, never freed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct pariskv_setting_info {
    /// Its key in the text form (llama.cpp's flag is `--pariskv-<key>`).
    pub key: *const c_char,
    /// Its values: `N`, `F` or the words of a choice (`per-head|mean|group`).
    pub values: *const c_char,
    /// What it does, in lines of at most 100 characters.
    pub help: *const c_char,
    pub kind: pariskv_setting_kind,
}

impl pariskv_settings {
    fn from_settings(s: &Settings) -> pariskv_settings {
        pariskv_settings {
            top_k: s.top_k,
            n_sink: s.n_sink,
            n_window: s.n_window,
            dense_threshold: s.dense_threshold,
            gqa: raw_gqa(s.gqa),
            ratios: match s.table {
                Table::Tuned => types::pariskv_ratios::PARISKV_RATIOS_TUNED,
                Table::Reference => types::pariskv_ratios::PARISKV_RATIOS_REFERENCE,
            } as u32,
            refine: s.refine,
            candidates: s.candidates,
            center: s.center as u32,
            offload: s.offload as u32,
            offload_keys: (s.offload_keys == OffloadKeys::Device) as u32,
            row_cache: s.row_cache,
            fill: (s.fill == Fill::Local) as u32,
        }
    }

    /// The settings, each field checked as its text would be.
    fn to_settings(self) -> Result<Settings> {
        const TUNED: u32 = types::pariskv_ratios::PARISKV_RATIOS_TUNED as u32;
        const REFERENCE: u32 = types::pariskv_ratios::PARISKV_RATIOS_REFERENCE as u32;
        let mut s = Settings::default();
        for (key, v) in [
            ("topk", self.top_k),
            ("sink", self.n_sink),
            ("window", self.n_window),
            ("dense-threshold", self.dense_threshold),
            ("refine", self.refine),
            ("row-cache", self.row_cache),
        ] {
            s.set(key, &v.to_string())?;
        }
        s.gqa = gqa(self.gqa, "settings gqa")?;
        s.table = match self.ratios {
            TUNED => Table::Tuned,
            REFERENCE => Table::Reference,
            other => {
                return Err(Error::invalid(format!(
                    "settings ratios {other}: PARISKV_RATIOS_TUNED or PARISKV_RATIOS_REFERENCE \
                     (a fixed share is `candidates`)"
                )))
            }
        };
        s.set("candidates", &self.candidates.to_string())?;
        for (key, v) in [
            ("center", self.center),
            ("offload", self.offload),
            ("offload-keys", self.offload_keys),
            ("fill", self.fill),
        ] {
            if v > 1 {
                return Err(Error::invalid(format!("settings {key} = {v}: 0 or 1")));
            }
        }
        s.center = self.center == 1;
        s.offload = self.offload == 1;
        s.offload_keys = if self.offload_keys == 1 { OffloadKeys::Device } else { OffloadKeys::Host };
        s.fill = if self.fill == 1 { Fill::Local } else { Fill::Exact };
        Ok(s)
    }
}

fn in_str<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("{name} is NULL")));
    }
    // SAFETY: non-null; that it points at a NUL-terminated string that lives through the
    // call is the documented contract.
    unsafe { CStr::from_ptr(ptr) }.to_str().map_err(|_| Error::invalid(format!("{name} is not UTF-8")))
}

/// Writes `text` and a NUL into `buf[0..size]`; `*len` = its length without the NUL, also
/// when it does not fit (an error then, `buf` untouched).
fn out_str(text: &str, buf: *mut c_char, size: usize, len: *mut usize) -> Result<()> {
    *out_ref(len, "len")? = text.len();
    if text.len() >= size {
        return Err(Error::invalid(format!(
            "buffer of {size} bytes is too small for {} bytes and a NUL",
            text.len()
        )));
    }
    let out = out_slice(buf as *mut u8, text.len() + 1, "buf")?;
    out[..text.len()].copy_from_slice(text.as_bytes());
    out[text.len()] = 0;
    Ok(())
}

/// Fills `out` with the defaults (ParisKV off: top-k 0).
#[no_mangle]
pub extern "C" fn pariskv_settings_init(out: *mut pariskv_settings) -> pariskv_status {
    boundary("pariskv_settings_init", || {
        *out_ref(out, "out")? = pariskv_settings::from_settings(&Settings::default());
        Ok(())
    })
}

/// Sets `*out` to the defaults with the items of `text` applied in order: `key=value`
/// separated by commas (`"topk=256,window=64,gqa=mean"`; "" = the defaults). Numbers are
/// whole decimal strings; an unknown key, a value out of range or trailing characters are
/// errors naming the item. `*out` is untouched on error.
#[no_mangle]
pub extern "C" fn pariskv_settings_parse(text: *const c_char, out: *mut pariskv_settings) -> pariskv_status {
    boundary("pariskv_settings_parse", || {
        let out = out_ref(out, "out")?;
        *out = pariskv_settings::from_settings(&Settings::parse(in_str(text, "text")?)?);
        Ok(())
    })
}

/// Sets the setting `key` of `settings` from its text `value`, checked as
/// `pariskv_settings_parse` checks it; `settings` is untouched on error.
#[no_mangle]
pub extern "C" fn pariskv_settings_set(
    settings: *mut pariskv_settings,
    key: *const c_char,
    value: *const c_char,
) -> pariskv_status {
    boundary("pariskv_settings_set", || {
        let settings = out_ref(settings, "settings")?;
        let mut s = settings.to_settings()?;
        s.set(in_str(key, "key")?, in_str(value, "value")?)?;
        *settings = pariskv_settings::from_settings(&s);
        Ok(())
    })
}

/// The text form of `settings` (the items that differ from the defaults, "" for none) into
/// `buf` of `size` bytes, NUL-terminated; `*len` = its length, also when `buf` is too small
/// (an error then).
#[no_mangle]
pub extern "C" fn pariskv_settings_format(
    settings: *const pariskv_settings,
    buf: *mut c_char,
    size: usize,
    len: *mut usize,
) -> pariskv_status {
    boundary("pariskv_settings_format", || {
        let s = in_ref(settings, "settings")?.to_settings()?;
        out_str(&s.format(), buf, size, len)
    })
}

/// The text of the setting `key` of `settings` (`"256"`, `"mean"`, `"on"`), as
/// `pariskv_settings_format` writes text.
#[no_mangle]
pub extern "C" fn pariskv_settings_value(
    settings: *const pariskv_settings,
    key: *const c_char,
    buf: *mut c_char,
    size: usize,
    len: *mut usize,
) -> pariskv_status {
    boundary("pariskv_settings_value", || {
        let s = in_ref(settings, "settings")?.to_settings()?;
        out_str(&s.value(in_str(key, "key")?)?, buf, size, len)
    })
}

/// `*out` = the number of settings (`pariskv_setting_describe` takes 0 .. n - 1).
#[no_mangle]
pub extern "C" fn pariskv_setting_count(out: *mut u32) -> pariskv_status {
    boundary("pariskv_setting_count", || {
        *out_ref(out, "out")? = SPECS.len() as u32;
        Ok(())
    })
}

/// Describes setting `i`, in the order help lists them.
#[no_mangle]
pub extern "C" fn pariskv_setting_describe(i: u32, out: *mut pariskv_setting_info) -> pariskv_status {
    boundary("pariskv_setting_describe", || {
        let out = out_ref(out, "out")?;
        let spec = SPECS
            .get(i as usize)
            .ok_or_else(|| Error::invalid(format!("no setting {i} ({} settings)", SPECS.len())))?;
        *out = pariskv_setting_info {
            key: spec.key.as_ptr(),
            values: spec.values.as_ptr(),
            help: spec.help.as_ptr(),
            kind: match spec.kind {
                Kind::Count => pariskv_setting_kind::PARISKV_SETTING_COUNT,
                Kind::Choice => pariskv_setting_kind::PARISKV_SETTING_CHOICE,
                Kind::Switch => pariskv_setting_kind::PARISKV_SETTING_SWITCH,
                Kind::Share => pariskv_setting_kind::PARISKV_SETTING_SHARE,
            },
        };
        Ok(())
    })
}

/// `*out` = the number of cells from which a cache whose steps run on `backend` (a
/// `pariskv_backend`) is attended with ParisKV: the explicit `dense_threshold`, or when it
/// is 0 the depth from which that backend's step beats its dense attention (CPU: the largest
/// of 12288, 8 top-k and sink + window + 2 top-k; CUDA with K/V in GPU memory: UINT64_MAX,
/// none yet; CUDA with `offload`: sink + window + 2 top-k), and never below sink + window +
/// top-k (below that every visible cell is attended anyway). Computed without overflow.
#[no_mangle]
pub extern "C" fn pariskv_settings_dense_threshold(
    settings: *const pariskv_settings,
    backend: pariskv_backend,
    out: *mut u64,
) -> pariskv_status {
    boundary("pariskv_settings_dense_threshold", || {
        let s = in_ref(settings, "settings")?.to_settings()?;
        let backend = match backend {
            b if b == types::pariskv_backend::PARISKV_BACKEND_CPU as u32 => settings::Backend::Cpu,
            b if b == types::pariskv_backend::PARISKV_BACKEND_CUDA as u32 => settings::Backend::Cuda,
            b => {
                return Err(Error::unsupported(format!(
                    "backend {b}: PARISKV_BACKEND_CPU or PARISKV_BACKEND_CUDA"
                )))
            }
        };
        *out_ref(out, "out")? = s.dense_threshold_on(backend);
        Ok(())
    })
}

/// Packs the op parameters of an attention step: `settings` (top-k > 0) with the
/// attention `scale` (finite, > 0) and logit `softcap` (0 = off) into
/// `out[0..PARISKV_OP_PARAMS]`. What it packs, `pariskv_op_params_step` unpacks.
#[no_mangle]
pub extern "C" fn pariskv_op_params_pack(
    settings: *const pariskv_settings,
    scale: f32,
    softcap: f32,
    out: *mut i32,
) -> pariskv_status {
    boundary("pariskv_op_params_pack", || {
        let settings = in_ref(settings, "settings")?.to_settings()?;
        let p = OpParams { settings, scale, softcap };
        // the same checks as the backends make when they unpack
        OpParams::unpack(&p.pack())?;
        crate::algorithm::attention::AttnParams { scale, softcap }.validate()?;
        out_slice(out, OP_PARAMS, "out")?.copy_from_slice(&p.pack());
        Ok(())
    })
}

/// The decode step that op parameters packed by `pariskv_op_params_pack` describe, for
/// keys of `head_dim` and values of `v_dim` elements and `n_heads` query heads per KV head:
/// fills `*out` for `pariskv_attend_cache` and `pariskv_cuda_step_run`.
#[no_mangle]
pub extern "C" fn pariskv_op_params_step(
    params: *const i32,
    head_dim: u32,
    v_dim: u32,
    n_heads: u32,
    out: *mut pariskv_step,
) -> pariskv_status {
    boundary("pariskv_op_params_step", || {
        let out = out_ref(out, "out")?;
        let p: [i32; OP_PARAMS] =
            in_slice(params, OP_PARAMS, "params")?.try_into().map_err(|_| Error::internal("op params"))?;
        let p = OpParams::unpack(&p)?;
        let step = pariskv_step::from_op_params(&p, head_dim, v_dim, n_heads);
        step.params()?;
        *out = step;
        Ok(())
    })
}

impl pariskv_step {
    fn from_op_params(p: &OpParams, head_dim: u32, v_dim: u32, n_heads: u32) -> pariskv_step {
        let s = &p.settings;
        let (ratio_table, fixed) = super::boundary::raw_ratios(s.ratio_policy());
        pariskv_step {
            head_dim,
            v_dim,
            n_heads,
            top_k: s.top_k,
            n_sink: s.n_sink,
            n_local: s.n_window,
            ratio_table,
            gqa_policy: raw_gqa(s.gqa),
            rho_cand: fixed.cand,
            rho_coll: fixed.coll,
            scale: p.scale,
            softcap: p.softcap,
            seed: settings::OpParams::SEED,
            refine: s.refine,
        }
    }
}
