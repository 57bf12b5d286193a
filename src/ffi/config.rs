//! `pariskv_config`, the C view of `crate::Config`, and the conversions between them.

use super::boundary::{dtype, gqa, in_ref, ratio_policy, raw_dtype, raw_gqa, raw_ratios};
use crate::config::{Config, Device};
use crate::error::{Error, Result};

/// `pariskv_dtype` as Rust reads it: a raw `u32`. Private, so cbindgen does not export it
/// and resolves the name in the header to the enum in `types.rs`.
type pariskv_dtype = u32;
/// Likewise for `pariskv_gqa`.
type pariskv_gqa = u32;
/// Likewise `pariskv_ratios`.
type pariskv_ratios = u32;

/// Configuration of an index. Set `struct_size` to `sizeof(pariskv_config)`, fill it with
/// `pariskv_config_init`, then edit fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct pariskv_config {
    /// `sizeof(pariskv_config)` as the caller's header has it, set by the caller before
    /// `pariskv_config_init`: every call taking a config refuses another size (a header of
    /// another version than the library).
    pub struct_size: u32,
    /// Head dimension: a multiple of 8 up to 512 (64, 128, 256 in practice).
    pub head_dim: u32,
    pub n_q_heads: u32,
    /// Must divide `n_q_heads` (GQA: query head h uses KV head h / (n_q_heads / n_kv_heads)).
    pub n_kv_heads: u32,
    /// First positions always attended.
    pub n_sink: u32,
    /// Last positions always attended densely.
    pub n_local: u32,
    /// Keys retrieved per KV head and step by `pariskv_index_attend`.
    pub top_k: u32,
    /// Sequences shorter than this attend densely.
    pub dense_threshold: u32,
    /// How the ratios are chosen (`pariskv_ratios`, default PARISKV_RATIOS_TUNED); with
    /// PARISKV_RATIOS_FIXED, `rho_cand` and `rho_coll`.
    pub ratio_table: pariskv_ratios,
    /// Share of the zone kept as candidates for the rerank, in (0, 1].
    pub rho_cand: f64,
    /// Share of the zone covered by the widest collision tier, in (0, 1].
    pub rho_coll: f64,
    /// Attention scale (default 1/sqrt(head_dim)).
    pub scale: f32,
    /// Logit softcap, 0 = off.
    pub softcap: f32,
    /// Element type the index stores K and V rows in.
    pub kv_dtype: pariskv_dtype,
    /// How query heads sharing a KV head choose its rows (default PARISKV_GQA_GROUP).
    pub gqa_policy: pariskv_gqa,
    /// Where the index lives: -1 (default) host memory and the CPU; n >= 0 CUDA device n
    /// (needs a library built with feature `cuda`, else PARISKV_ERR_UNSUPPORTED).
    pub device: i32,
    /// With a CUDA device, nonzero keeps the K/V rows in pinned host memory that the GPU
    /// reads through UVA (only the index takes device memory); must be 0 on the CPU.
    pub kv_in_host: u32,
    /// Seed of the rotation's random sign diagonal.
    pub seed: u64,
    /// Each retrieval's `refine * k` best cells by the 4-bit estimate are rescored exactly
    /// from their key rows and the k best kept; 0 or 1 = off (at most 64).
    pub refine: u32,
    /// Nonzero (default 1): each KV head's keys are encoded minus the mean of the first
    /// appended keys (`pariskv_center_init`); 0: as they are (the paper's setting).
    pub center: u32,
}

/// Bytes of this library's `pariskv_config`.
pub(super) const CONFIG_SIZE: u32 = std::mem::size_of::<pariskv_config>() as u32;

/// The caller's `struct_size`, read alone (a config of another header may be smaller than
/// this library's), checked against this library's size.
pub(super) fn check_size(cfg: *const pariskv_config) -> Result<()> {
    let size = *in_ref(cfg as *const u32, "cfg")?;
    if size != CONFIG_SIZE {
        return Err(Error::invalid(format!(
            "cfg->struct_size is {size}, this library's pariskv_config has {CONFIG_SIZE} bytes (version {}): \
             set it to sizeof(pariskv_config), with the pariskv.h of the library you link",
            env!("CARGO_PKG_VERSION")
        )));
    }
    Ok(())
}

fn to_u32(v: usize, name: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid(format!("{name} = {v} does not fit in 32 bits")))
}

impl pariskv_config {
    pub(super) fn from_config(c: &Config) -> Result<pariskv_config> {
        let (ratio_table, fixed) = raw_ratios(c.ratios);
        Ok(pariskv_config {
            struct_size: CONFIG_SIZE,
            head_dim: to_u32(c.head_dim, "head_dim")?,
            n_q_heads: to_u32(c.n_q_heads, "n_q_heads")?,
            n_kv_heads: to_u32(c.n_kv_heads, "n_kv_heads")?,
            n_sink: to_u32(c.n_sink, "n_sink")?,
            n_local: to_u32(c.n_local, "n_local")?,
            top_k: to_u32(c.top_k, "top_k")?,
            dense_threshold: to_u32(c.dense_threshold, "dense_threshold")?,
            ratio_table,
            rho_cand: fixed.cand,
            rho_coll: fixed.coll,
            scale: c.attn.scale,
            softcap: c.attn.softcap,
            kv_dtype: raw_dtype(c.kv_dtype),
            gqa_policy: raw_gqa(c.gqa),
            device: match c.device {
                Device::Cpu => -1,
                Device::Cuda { ordinal, .. } => i32::try_from(ordinal)
                    .map_err(|_| Error::invalid(format!("CUDA device {ordinal} does not fit in 31 bits")))?,
            },
            kv_in_host: matches!(c.device, Device::Cuda { kv_in_host: true, .. }) as u32,
            seed: c.seed,
            refine: to_u32(c.refine, "refine")?,
            center: c.center as u32,
        })
    }

    pub(super) fn into_config(self) -> Result<Config> {
        let mut c = Config::new(self.head_dim as usize, self.n_q_heads as usize, self.n_kv_heads as usize);
        c.n_sink = self.n_sink as usize;
        c.n_local = self.n_local as usize;
        c.top_k = self.top_k as usize;
        c.dense_threshold = self.dense_threshold as usize;
        c.ratios = ratio_policy(self.ratio_table, self.rho_cand, self.rho_coll, "config ratio_table")?;
        c.seed = self.seed;
        c.refine = self.refine as usize;
        c.center = self.center != 0;
        c.attn.scale = self.scale;
        c.attn.softcap = self.softcap;
        c.kv_dtype = dtype(self.kv_dtype, "config kv_dtype")?;
        c.gqa = gqa(self.gqa_policy, "config gqa_policy")?;
        c.device = match (self.device, self.kv_in_host) {
            (-1, 0) => Device::Cpu,
            (-1, _) => return Err(Error::invalid("config kv_in_host needs a CUDA device (device >= 0)")),
            (n, in_host) if n >= 0 => Device::Cuda { ordinal: n as u32, kv_in_host: in_host != 0 },
            (n, _) => {
                return Err(Error::invalid(format!("config device {n}: -1 (CPU) or a CUDA ordinal >= 0")))
            }
        };
        c.validate()?;
        Ok(c)
    }
}
