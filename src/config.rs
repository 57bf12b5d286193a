//! Configuration of an index: model shape, attention layout, retrieval ratios, defaults.

use crate::algorithm::attention::AttnParams;
use crate::algorithm::gqa::GqaPolicy;
use crate::algorithm::search::{RatioPolicy, Ratios};
use crate::error::{Error, Result};
use crate::rows::{DType, Q8_0_BLOCK};
use crate::settings::Backend;
use crate::shape::Shape;
use crate::step::StepParams;

/// Sink tokens always attended (the reference uses 4-64).
pub const DEFAULT_SINK: usize = 4;
/// Local window always attended densely (the reference uses 256-512).
pub const DEFAULT_LOCAL: usize = 512;
/// Keys retrieved per KV head and step (the reference goes up to 2048).
pub const DEFAULT_TOP_K: usize = 2048;
/// Shortlist of each retrieval rescored exactly, in units of its k (1: off; see `gqa`).
/// 2 recovers much of what the 4-bit estimator misranks: recall@256 +0.04-0.09 on Gemma 3
/// 270M's keys (docs/FIDELITY.md, "Retrieval beyond the paper"), for 1 ms per 32-layer step of an 8B model at
/// 32K from HBM and 6 ms through UVA (the rows it reads; docs/BENCHMARKS.md).
pub const DEFAULT_REFINE: usize = 2;
/// Whether keys are encoded minus their KV head's centre (see `center`): it preserves every
/// ranking and lifts recall@256 by 0.06-0.11 on Gemma 3 270M's keys, halving the attention
/// mass lost (docs/FIDELITY.md, "Retrieval beyond the paper").
pub const DEFAULT_CENTER: bool = true;
/// Slots of the device row cache per KV head and stream under offload (K/V in host memory):
/// four times the default top-k, since a step at refine 2 takes 2 x top-k shortlist rows plus
/// sink and window. The device's step protocol replayed on Gemma 3 270M and
/// Qwen2.5-Coder-1.5B captures at top-k 2048 moves 0.08 of a step's rows over PCIe with 4k
/// slots, 0.34-0.38 with 2k, which thrash (docs/FIDELITY.md, "The device's step protocol,
/// simulated").
pub const DEFAULT_ROW_CACHE: usize = 4 * DEFAULT_TOP_K;
/// Largest row cache accepted, slots per KV head and stream.
pub const MAX_ROW_CACHE: usize = 1 << 24;
/// Largest refine factor accepted.
pub const MAX_REFINE: usize = 64;
/// Seed of the rotation's sign diagonal ("PARISKV1").
pub const DEFAULT_SEED: u64 = 0x5041_5249_534B_5631;

/// Where an index handle lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// Everything in host memory, computed on the CPU.
    #[default]
    Cpu,
    /// The index and the search on CUDA device `ordinal`; K/V rows in its memory, or with
    /// `kv_in_host` in pinned host memory the GPU reads through UVA (contexts that do not
    /// fit in device memory).
    Cuda { ordinal: u32, kv_in_host: bool },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub head_dim: usize,
    pub n_q_heads: usize,
    pub n_kv_heads: usize,
    pub n_sink: usize,
    pub n_local: usize,
    pub top_k: usize,
    /// Contexts shorter than this attend densely (exact and cheap there); 0: automatic,
    /// the depth from which the device's step beats dense attention (`dense_depth`).
    pub dense_threshold: usize,
    pub ratios: RatioPolicy,
    /// How query heads sharing a KV head choose its rows (see `gqa`).
    pub gqa: GqaPolicy,
    /// Exact rescoring of each retrieval's `refine * k` best estimates (1: off; see `gqa`).
    pub refine: usize,
    /// Encode keys minus their KV head's centre (see `center`).
    pub center: bool,
    pub seed: u64,
    pub attn: AttnParams,
    /// Element type the index handle stores K and V rows in.
    pub kv_dtype: DType,
    /// Where the index handle lives (the stateless primitives take no notice).
    pub device: Device,
}

impl Config {
    /// Defaults for a model shape: the paper's layout and top-k, the tuned ratio table,
    /// per-head GQA and centred keys (docs/FIDELITY.md); the dense threshold automatic (0),
    /// and the attention scale 1/sqrt(head_dim).
    pub fn new(head_dim: usize, n_q_heads: usize, n_kv_heads: usize) -> Config {
        Config {
            head_dim,
            n_q_heads,
            n_kv_heads,
            n_sink: DEFAULT_SINK,
            n_local: DEFAULT_LOCAL,
            top_k: DEFAULT_TOP_K,
            dense_threshold: 0,
            ratios: RatioPolicy::Tuned,
            gqa: GqaPolicy::default(),
            refine: DEFAULT_REFINE,
            center: DEFAULT_CENTER,
            seed: DEFAULT_SEED,
            attn: AttnParams { scale: 1.0 / (head_dim.max(1) as f32).sqrt(), softcap: 0.0 },
            kv_dtype: DType::F16,
            device: Device::Cpu,
        }
    }

    /// Checks every field; returns the shape of the head dimension.
    pub fn validate(&self) -> Result<Shape> {
        let shape = Shape::new(self.head_dim)?;
        if self.n_kv_heads == 0 || self.n_q_heads == 0 || !self.n_q_heads.is_multiple_of(self.n_kv_heads) {
            return Err(Error::invalid(format!(
                "n_q_heads {} must be a positive multiple of n_kv_heads {}",
                self.n_q_heads, self.n_kv_heads
            )));
        }
        if self.n_q_heads > 4096 {
            return Err(Error::unsupported(format!("n_q_heads {} is above 4096", self.n_q_heads)));
        }
        if self.top_k == 0 || self.top_k > u32::MAX as usize {
            return Err(Error::invalid(format!("top_k {} must be in 1..=2^32-1", self.top_k)));
        }
        check_refine(self.refine)?;
        if self.n_sink.checked_add(self.n_local).is_none() {
            return Err(Error::invalid("n_sink + n_local overflows"));
        }
        if let RatioPolicy::Fixed(r) = self.ratios {
            r.validate()?;
        }
        self.attn.validate()?;
        if self.kv_dtype == DType::Q8_0 && !self.head_dim.is_multiple_of(Q8_0_BLOCK) {
            return Err(Error::invalid(format!(
                "kv_dtype q8_0 stores whole blocks of {Q8_0_BLOCK}: head_dim {} is not a multiple",
                self.head_dim
            )));
        }
        if let Device::Cuda { ordinal, .. } = self.device {
            if ordinal > i32::MAX as u32 {
                return Err(Error::invalid(format!("CUDA device ordinal {ordinal} is out of range")));
            }
        }
        Ok(shape)
    }

    /// Query heads sharing one KV head.
    pub fn group_size(&self) -> usize {
        self.n_q_heads / self.n_kv_heads
    }

    /// The depth below which attention is dense: the explicit threshold, or automatically
    /// the one `settings::Backend::dense_depth` gives for the device (derived here, where it
    /// is used, so that a `top_k` set after `new` counts).
    pub fn dense_depth(&self) -> usize {
        if self.dense_threshold > 0 {
            return self.dense_threshold;
        }
        let backend = match self.device {
            Device::Cpu => Backend::Cpu,
            Device::Cuda { .. } => Backend::Cuda,
        };
        let fixed = self.n_sink as u64 + self.n_local as u64;
        usize::try_from(backend.dense_depth(fixed, self.top_k as u64)).unwrap_or(usize::MAX)
    }

    /// A decode step's parameters for this config, retrieving `top_k` cells.
    pub fn step_params(&self, top_k: usize) -> StepParams {
        StepParams {
            top_k,
            n_sink: self.n_sink,
            n_local: self.n_local,
            ratios: self.ratios,
            gqa: self.gqa,
            refine: self.refine,
            attn: self.attn,
        }
    }

    /// Attention is dense below the threshold and whenever the retrieval zone is no larger
    /// than top-k (retrieval would return all of it anyway).
    pub fn is_dense(&self, n_total: usize) -> bool {
        n_total < self.dense_depth() || self.zone(n_total).len() <= self.top_k
    }

    /// Positions of the retrieval zone in a sequence of `n_total` tokens: everything
    /// between the sink and the local window.
    pub fn zone(&self, n_total: usize) -> std::ops::Range<usize> {
        let start = self.n_sink.min(n_total);
        let end = n_total.saturating_sub(self.n_local).max(start);
        start..end
    }

    /// The fixed-ratio policy from explicit values (for callers that do not want the
    /// reference's adaptive table).
    pub fn with_fixed_ratios(mut self, cand: f64, coll: f64) -> Config {
        self.ratios = RatioPolicy::Fixed(Ratios { cand, coll });
        self
    }
}

/// A refine factor in 0..=MAX_REFINE (0 and 1 both mean off).
pub fn check_refine(refine: usize) -> Result<()> {
    if refine > MAX_REFINE {
        return Err(Error::invalid(format!("refine {refine} is above {MAX_REFINE}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_zone_rules() {
        let c = Config::new(128, 32, 8);
        c.validate().unwrap();
        assert_eq!(c.group_size(), 4);
        assert_eq!(c.dense_threshold, 0, "automatic");
        assert_eq!(c.dense_depth(), 16_384, "the CPU's: 8 cells per unit of top-k 2048");
        assert!(c.is_dense(16_383));
        assert!(!c.is_dense(16_384));
        let mut cuda = c.clone();
        cuda.device = Device::Cuda { ordinal: 0, kv_in_host: false };
        assert_eq!(cuda.dense_depth(), 4612, "the GPU's: sink + window + 2 top-k");
        let mut later = c.clone();
        later.top_k = 4096;
        assert_eq!(later.dense_depth(), 32_768, "top-k set after new counts");
        later.dense_threshold = 100;
        assert_eq!(later.dense_depth(), 100, "an explicit threshold wins");
        assert_eq!(c.zone(100_000), 4..99_488);
        assert_eq!(c.zone(10), 4..4, "short sequences have an empty zone");
        let mut small = c.clone();
        small.dense_threshold = 1;
        assert!(small.is_dense(2048 + 516), "zone == top_k is dense");
        assert!(!small.is_dense(2049 + 516));
    }

    #[test]
    fn bad_values_are_named() {
        let mut c = Config::new(128, 6, 4);
        assert!(c.validate().unwrap_err().message.contains("n_q_heads"));
        c = Config::new(100, 4, 4);
        assert!(c.validate().unwrap_err().message.contains("head_dim 100"));
        c = Config::new(128, 4, 4).with_fixed_ratios(1.5, 0.2);
        assert!(c.validate().unwrap_err().message.contains("rho_cand"));
        c = Config::new(128, 4, 4);
        c.top_k = 0;
        assert!(c.validate().is_err());
        c = Config::new(128, 4, 4);
        c.refine = MAX_REFINE + 1;
        assert!(c.validate().unwrap_err().message.contains("refine"));
        c = Config::new(128, 4, 4);
        c.attn.softcap = f32::NAN;
        assert!(c.validate().is_err());
    }
}
