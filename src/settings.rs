//! Engine settings: what an engine that keeps its own KV cache (llama.cpp) lets its users
//! choose, defined once for every consumer. The struct, its text form
//! (`topk=256,window=64`: llama.cpp's context parameter and llama-bench's columns), the
//! table of keys with their help (llama.cpp's flags are registered from it), the dense
//! threshold derived from the settings, and the packing into a ggml op's parameters that
//! both of llama.cpp's backends unpack.

use std::ffi::CStr;

use crate::algorithm::gqa::GqaPolicy;
use crate::algorithm::search::{RatioPolicy, Ratios};
use crate::config::{
    DEFAULT_CENTER, DEFAULT_LOCAL, DEFAULT_REFINE, DEFAULT_ROW_CACHE, DEFAULT_SEED, DEFAULT_SINK, MAX_REFINE,
    MAX_ROW_CACHE,
};
use crate::constants::TUNED_RHO_COLL;
use crate::error::{Error, Result};

/// The ratio table a step reranks with, unless `candidates` fixes the share.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Table {
    /// `Ratios::tuned`: measured on real keys (the default).
    #[default]
    Tuned,
    /// `Ratios::reference`: the reference implementation's (the paper's).
    Reference,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Keys retrieved per KV head and decode step; 0 = ParisKV off.
    pub top_k: u32,
    pub n_sink: u32,
    pub n_window: u32,
    /// Caches of fewer cells stay dense; 0 = automatic (see `dense_threshold`).
    pub dense_threshold: u32,
    pub gqa: GqaPolicy,
    pub table: Table,
    /// Exact rescoring factor (1 = off).
    pub refine: u32,
    /// Share of the zone reranked at every zone size, with the tuned table's collision
    /// tiers, instead of the table's share; 0 = the table's.
    pub candidates: f32,
    pub center: bool,
    /// K/V of the handled layers in pinned host memory that the GPU reads (CUDA).
    pub offload: bool,
    /// Under `offload`, where the K rows go (V always goes to host memory).
    pub offload_keys: OffloadKeys,
    /// Under `offload` (CUDA), slots of the device cache of K/V rows per KV head and stream
    /// (rounded up to a power of two), 0 = none.
    pub row_cache: u32,
    /// How prompt ubatches attend (llama-bench's depth fill, speed only).
    pub fill: Fill,
}

/// Under `offload`, where the K rows of the handled layers live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OffloadKeys {
    /// With V, in pinned host memory: the least GPU memory; every row a step reads (the
    /// refine's K rows, the attention's K and V rows) crosses PCIe.
    #[default]
    Host,
    /// In GPU memory: the refine and the attention read K at memory speed and only V rows
    /// cross PCIe; the K half of the cache stays in GPU memory. Same results as `Host`.
    Device,
}

/// How prompt ubatches attend while llama-bench fills a cache to its depth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fill {
    /// As the model does: every prompt token over every cell it sees.
    #[default]
    Exact,
    /// Each prompt token only over the cells of its own ubatch (and the few before it that
    /// share its 256-cell tile): a D-token fill in O(D) attention instead of O(D^2). The keys
    /// and values stored differ from a real prefill's after the first ubatch; decoding
    /// itself is unchanged. Speed only.
    Local,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            top_k: 0,
            n_sink: DEFAULT_SINK as u32,
            n_window: DEFAULT_LOCAL as u32,
            dense_threshold: 0,
            gqa: GqaPolicy::default(),
            table: Table::Tuned,
            refine: DEFAULT_REFINE as u32,
            candidates: 0.0,
            center: DEFAULT_CENTER,
            offload: false,
            offload_keys: OffloadKeys::Host,
            row_cache: DEFAULT_ROW_CACHE as u32,
            fill: Fill::Exact,
        }
    }
}

/// Where a decode step runs, for the automatic dense threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Cuda,
}

/// The CPU's automatic dense threshold, in cells: ParisKV from `CPU_DENSE_DEPTH` cells or
/// `CPU_DENSE_DEPTH_PER_TOP_K` cells per unit of top-k, whichever is more. Measured with
/// llama-bench against llama.cpp's flash attention on 2 cores (docs/BENCHMARKS.md, "When
/// ParisKV takes over on the CPU"): Gemma 3 270M (3 of 18 layers global) breaks even near
/// 8K cells at top-k 256 and 1024 and between 8K and 16K at 2048; Qwen2.5-Coder-1.5B (every
/// layer) below 8K at 256 and 1024 and between 8K and 16K at 2048.
pub const CPU_DENSE_DEPTH: u64 = 12 * 1024;
pub const CPU_DENSE_DEPTH_PER_TOP_K: u64 = 8;

impl Backend {
    /// The automatic threshold for a layout of `fixed` sink and window cells and `top_k`.
    /// CUDA: sink + window + 2 top-k (the GPU step's own threshold comes with its rebuild).
    pub fn dense_depth(self, fixed: u64, top_k: u64) -> u64 {
        let least = fixed + 2 * top_k;
        match self {
            Backend::Cpu => least.max(CPU_DENSE_DEPTH).max(CPU_DENSE_DEPTH_PER_TOP_K * top_k),
            Backend::Cuda => least,
        }
    }
}

/// A dense threshold no cache reaches: the cache stays dense at every depth.
pub const NEVER: u64 = u64::MAX;

/// llama.cpp's automatic threshold on CUDA for K/V in GPU memory: `NEVER`, until the GPU
/// step beats flash attention. Measured on the H200 (docs/BENCHMARKS.md, 8B shape,
/// llama-bench tg): ParisKV 0.38x flash attention's speed at 32K and 0.48x at 128K with the
/// defaults, 0.82x at 512K with the paper's settings; no depth where it is faster. With
/// offload (K/V in host memory, where the alternative is attention over PCIe or on the CPU)
/// `Backend::dense_depth` applies.
pub const CUDA_HBM_DENSE_DEPTH: u64 = NEVER;

/// Largest value of a count (top-k, sink, window, threshold): engines hold them as int32.
pub const MAX_COUNT: u32 = i32::MAX as u32;

/// What values a setting takes, for parsers and help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A whole number in 0..=`MAX_COUNT` (refine: 1..=`MAX_REFINE`).
    Count,
    /// One of the words of `Spec::values` (separated by `|`).
    Choice,
    /// `on` or `off`, a flag of its own (`--pariskv-offload`, `--no-pariskv-offload`).
    Switch,
    /// A number in [0, 1].
    Share,
}

/// One setting: its key (llama.cpp's flag is `--pariskv-<key>`), values, help and accessors.
pub struct Spec {
    pub key: &'static CStr,
    pub values: &'static CStr,
    pub help: &'static CStr,
    pub kind: Kind,
    get: fn(&Settings) -> String,
    set: fn(&mut Settings, &str) -> Result<()>,
}

impl Spec {
    pub fn key_str(&self) -> &'static str {
        self.key.to_str().unwrap_or_default()
    }
}

fn count(key: &str, text: &str, min: u32, max: u32) -> Result<u32> {
    // whole decimal numbers only: "1e3" or "64abc" are errors, not 1 or 64
    let v: u64 = (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
        .ok_or_else(|| Error::invalid(format!("{key} = '{text}' is not a whole number")))?;
    if v < min as u64 || v > max as u64 {
        return Err(Error::invalid(format!("{key} = {v} is out of range {min}..={max}")));
    }
    Ok(v as u32)
}

fn switch(key: &str, text: &str) -> Result<bool> {
    match text {
        "on" | "1" => Ok(true),
        "off" | "0" => Ok(false),
        _ => Err(Error::invalid(format!("{key} = '{text}': on or off"))),
    }
}

fn on_off(v: bool) -> String {
    (if v { "on" } else { "off" }).into()
}

/// A whole-number setting of field `$field`, in `$min..=$max`.
macro_rules! count_spec {
    ($key:literal, $field:ident, $min:expr, $max:expr, $help:literal) => {
        Spec {
            key: $key,
            values: c"N",
            help: $help,
            kind: Kind::Count,
            get: |s| s.$field.to_string(),
            set: |s, t| {
                s.$field = count($key.to_str().unwrap_or_default(), t, $min, $max)?;
                Ok(())
            },
        }
    };
}

/// A setting of field `$field`, a two-valued enum, naming its values by a word each: `$a`
/// for `$va`, `$b` for `$vb` (the words are its `values`, its text and its error message).
macro_rules! pair_spec {
    ($key:literal, $field:ident, $a:literal => $va:expr, $b:literal => $vb:expr, $help:literal) => {
        Spec {
            key: $key,
            values: match CStr::from_bytes_with_nul(concat!($a, "|", $b, "\0").as_bytes()) {
                Ok(values) => values,
                Err(_) => panic!("a word holds a NUL"),
            },
            help: $help,
            kind: Kind::Choice,
            get: |s| (if s.$field == $va { $a } else { $b }).into(),
            set: |s, t| {
                s.$field = match t {
                    $a => $va,
                    $b => $vb,
                    _ => {
                        let key = $key.to_str().unwrap_or_default();
                        return Err(Error::invalid(format!("{key} = '{t}': {} or {}", $a, $b)));
                    }
                };
                Ok(())
            },
        }
    };
}

/// Every setting, in the order help lists them.
pub static SPECS: [Spec; 13] = [
    count_spec!(c"topk", top_k, 0, MAX_COUNT, c"ParisKV top-k attention: keys retrieved per KV head and decode step, 0 = off;\n\
long-context decoding attends exactly over the first --pariskv-sink and last --pariskv-window\n\
positions and the N keys the ParisKV index retrieves; needs a GGML_PARISKV=ON build"),
    count_spec!(c"sink", n_sink, 0, MAX_COUNT, c"ParisKV: first positions of a sequence always attended"),
    count_spec!(c"window", n_window, 0, MAX_COUNT, c"ParisKV: last positions of a sequence always attended"),
    count_spec!(c"dense-threshold", dense_threshold, 0, MAX_COUNT, c"ParisKV: caches of fewer cells stay dense, 0 = automatic: where ParisKV is faster\n\
(CPU: the largest of 12288, 8*topk and sink + window + 2*topk; CUDA with K/V in GPU memory:\n\
none, it stays dense at every depth until its step beats flash attention; CUDA with offload:\n\
sink + window + 2*topk; never below sink + window + topk)"),
    Spec {
        key: c"gqa",
        values: c"per-head|mean|group",
        help: c"ParisKV: how query heads sharing a KV head choose its rows: each retrieves its share of top-k\n\
(per-head), one retrieval with their mean query (mean, the paper's reference), or k rows chosen for\n\
the group's attention mass (group)",
        kind: Kind::Choice,
        get: |s| s.gqa.name().into(),
        set: |s, t| {
            s.gqa = GqaPolicy::from_name(t)
                .ok_or_else(|| Error::invalid(format!("gqa = '{t}': per-head, mean or group")))?;
            Ok(())
        },
    },
    pair_spec!(c"ratios", table, "tuned" => Table::Tuned, "reference" => Table::Reference,
        c"ParisKV: candidate and collision ratios by zone size: the table tuned on real keys (tuned:\n\
reranks 0.5 of the zone below 5K keys, 0.3 below 30K, 0.2 above) or the reference implementation's\n\
(reference, the paper's setting: 0.5, 0.25-0.2, 0.1 above 30K)"),
    count_spec!(c"refine", refine, 1, MAX_REFINE as u32, c"ParisKV: rescore each retrieval's N*k best estimates exactly from the K cache and keep the k\n\
best (1 = off, the paper's setting; at most 64)"),
    Spec {
        key: c"candidates",
        values: c"F",
        help: c"ParisKV: rerank this share of the retrieval zone at every zone size, in (0, 1], instead of the\n\
ratio table's share by zone size (0 = the table's); collision tiers as the tuned table's",
        kind: Kind::Share,
        get: |s| s.candidates.to_string(),
        set: |s, t| {
            let f: f32 = t.parse().map_err(|_| Error::invalid(format!("candidates = '{t}' is not a number")))?;
            if !(0.0..=1.0).contains(&f) {
                return Err(Error::invalid(format!("candidates = {f} must lie in (0, 1] (0 = the table's)")));
            }
            s.candidates = f;
            Ok(())
        },
    },
    Spec {
        key: c"center",
        values: c"on|off",
        help: c"ParisKV: index each key minus its KV head's mean over the first encoded ubatch (on: same\n\
rankings, codes that tell keys apart) or as it is (off, the paper's setting)",
        kind: Kind::Choice,
        get: |s| on_off(s.center),
        set: |s, t| {
            s.center = switch("center", t)?;
            Ok(())
        },
    },
    Spec {
        key: c"offload",
        values: c"on|off",
        help: c"ParisKV: keep the K/V cache of the layers it handles in pinned host memory, read by the GPU\n\
through UVA (CUDA builds); the index stays in GPU memory, so contexts whose KV cache does not\n\
fit in GPU memory run; fails if the memory cannot be pinned",
        kind: Kind::Switch,
        get: |s| on_off(s.offload),
        set: |s, t| {
            s.offload = switch("offload", t)?;
            Ok(())
        },
    },
    pair_spec!(c"offload-keys", offload_keys, "host" => OffloadKeys::Host, "device" => OffloadKeys::Device,
        c"ParisKV, with --pariskv-offload: where the K rows of the offloaded layers live: host (with V,\n\
in pinned host memory: the least GPU memory) or device (in GPU memory: the step reads K at memory\n\
speed and only V rows cross PCIe, for the GPU memory of K; the same results)"),
    count_spec!(c"row-cache", row_cache, 0, MAX_ROW_CACHE as u32, c"ParisKV, with --pariskv-offload: slots per KV head and sequence of a cache in GPU memory of the\n\
K/V rows decode steps read (rounded up to a power of two; 0 = none): a row retrieved again is read\n\
from GPU memory instead of over PCIe; the same results. About 4 x top-k (the default fits 2048): a step\n\
reads the refine's shortlist, then the attention's rows"),
    pair_spec!(c"fill", fill, "exact" => Fill::Exact, "local" => Fill::Local,
        c"ParisKV, llama-bench only, speed only: how prompt ubatches attend while the cache is filled to\n\
its depth (-d): exact, or local (each prompt token only over its own ubatch's cells: a D-token\n\
fill in linear time; what is stored differs from a real prefill's, decoding is unchanged)"),
];

pub fn spec(key: &str) -> Result<&'static Spec> {
    SPECS.iter().find(|s| s.key_str() == key).ok_or_else(|| {
        let keys: Vec<&str> = SPECS.iter().map(Spec::key_str).collect();
        Error::invalid(format!("no setting '{key}' (settings: {})", keys.join(", ")))
    })
}

impl Settings {
    /// The defaults with the `key=value` items of `text` (comma-separated) applied in order.
    pub fn parse(text: &str) -> Result<Settings> {
        let mut s = Settings::default();
        for item in text.split(',').filter(|i| !i.is_empty()) {
            let (key, value) =
                item.split_once('=').ok_or_else(|| Error::invalid(format!("'{item}' is not key=value")))?;
            s.set(key, value)?;
        }
        Ok(s)
    }

    /// Sets one setting from its text; on error `self` is unchanged.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        (spec(key)?.set)(self, value)
    }

    pub fn value(&self, key: &str) -> Result<String> {
        Ok((spec(key)?.get)(self))
    }

    /// The text form: the items that differ from the defaults, in `SPECS` order ("" for the
    /// defaults). `parse` of it gives `self` back.
    pub fn format(&self) -> String {
        let default = Settings::default();
        let items: Vec<String> = SPECS
            .iter()
            .filter(|s| (s.get)(self) != (s.get)(&default))
            .map(|s| format!("{}={}", s.key_str(), (s.get)(self)))
            .collect();
        items.join(",")
    }

    /// Caches of fewer cells than this attend densely on a backend: the explicit threshold,
    /// or automatically the depth from which the backend's ParisKV step beats its dense
    /// attention (`Backend::dense_depth`); never less than sink + window + top-k (below
    /// that every visible cell is attended anyway). No overflow: u64. On CUDA without
    /// offload the automatic threshold is `NEVER`: see `CUDA_HBM_DENSE_DEPTH`.
    pub fn dense_threshold_on(&self, backend: Backend) -> u64 {
        let fixed = self.n_sink as u64 + self.n_window as u64;
        let wanted = if self.dense_threshold > 0 {
            self.dense_threshold as u64
        } else if backend == Backend::Cuda && !self.offload {
            CUDA_HBM_DENSE_DEPTH
        } else {
            backend.dense_depth(fixed, self.top_k as u64)
        };
        wanted.max(fixed + self.top_k as u64)
    }

    /// The ratios a step uses: a fixed candidate share with the tuned collision tiers, or
    /// the table.
    pub fn ratio_policy(&self) -> RatioPolicy {
        if self.candidates > 0.0 {
            RatioPolicy::Fixed(Ratios { cand: self.candidates as f64, coll: TUNED_RHO_COLL })
        } else if self.table == Table::Reference {
            RatioPolicy::Adaptive
        } else {
            RatioPolicy::Tuned
        }
    }
}

/// The op parameters of an attention step (a ggml op's `op_params`), one i32 each:
/// scale and softcap (f32 bits), top-k, sink, window, GQA policy, ratio table, refine,
/// candidate share (f32 bits).
pub const OP_PARAMS: usize = 9;

/// What a step's op parameters hold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpParams {
    pub settings: Settings,
    pub scale: f32,
    pub softcap: f32,
}

impl OpParams {
    pub fn pack(&self) -> [i32; OP_PARAMS] {
        let s = &self.settings;
        [
            self.scale.to_bits() as i32,
            self.softcap.to_bits() as i32,
            s.top_k as i32,
            s.n_sink as i32,
            s.n_window as i32,
            GqaPolicy::ALL.iter().position(|&g| g == s.gqa).unwrap_or(0) as i32,
            (s.table == Table::Reference) as i32,
            s.refine as i32,
            s.candidates.to_bits() as i32,
        ]
    }

    /// Checks every value: op parameters come from a graph, which anyone can build.
    pub fn unpack(p: &[i32; OP_PARAMS]) -> Result<OpParams> {
        let mut s = Settings::default();
        let counts = [("topk", p[2]), ("sink", p[3]), ("window", p[4]), ("refine", p[7])];
        for (key, v) in counts {
            s.set(
                key,
                &u32::try_from(v)
                    .map_err(|_| Error::invalid(format!("op parameter {key} = {v}")))?
                    .to_string(),
            )?;
        }
        let flag = |key: &str, v: i32| match v {
            0 | 1 => Ok(v == 1),
            _ => Err(Error::invalid(format!("op parameter {key} = {v}: 0 or 1"))),
        };
        s.gqa = *usize::try_from(p[5]).ok().and_then(|i| GqaPolicy::ALL.get(i)).ok_or_else(|| {
            Error::invalid(format!("op parameter gqa = {}: 0 (per-head), 1 (mean) or 2 (group)", p[5]))
        })?;
        s.table = if flag("ratios", p[6])? { Table::Reference } else { Table::Tuned };
        s.set("candidates", &f32::from_bits(p[8] as u32).to_string())?;
        if s.top_k == 0 {
            return Err(Error::invalid(
                "op parameter topk = 0: an attention step retrieves at least one key",
            ));
        }
        Ok(OpParams { settings: s, scale: f32::from_bits(p[0] as u32), softcap: f32::from_bits(p[1] as u32) })
    }

    /// The seed every engine encodes its cache with.
    pub const SEED: u64 = DEFAULT_SEED;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_defaults_are_empty() {
        assert_eq!(Settings::default().format(), "");
        let s = Settings::parse(
            "topk=256,window=64,gqa=mean,ratios=reference,refine=1,center=off,offload=on,candidates=0.1,fill=local,\
             offload-keys=device",
        )
        .unwrap();
        assert_eq!(
            (s.top_k, s.n_window, s.gqa, s.table, s.refine, s.center, s.offload, s.offload_keys, s.fill),
            (256, 64, GqaPolicy::Mean, Table::Reference, 1, false, true, OffloadKeys::Device, Fill::Local)
        );
        assert_eq!(Settings::parse(&s.format()).unwrap(), s);
        assert_eq!(
            s.format(),
            "topk=256,window=64,gqa=mean,ratios=reference,refine=1,candidates=0.1,center=off,offload=on,\
             offload-keys=device,fill=local"
        );
    }

    #[test]
    fn bad_text_is_refused_with_its_key() {
        for (text, says) in [
            ("topk=1e3", "not a whole number"),
            ("topk=64abc", "not a whole number"),
            ("topk=-1", "not a whole number"),
            ("topk=2147483648", "out of range"),
            ("window=99999999999999999999", "not a whole number"),
            ("refine=0", "out of range 1..=64"),
            ("refine=65", "out of range"),
            ("gqa=both", "per-head, mean or group"),
            ("center=yes", "on or off"),
            ("fill=fast", "exact or local"),
            ("offload-keys=gpu", "host or device"),
            ("candidates=1.5", "(0, 1]"),
            ("candidates=abc", "not a number"),
            ("speed=max", "no setting 'speed'"),
            ("topk", "not key=value"),
        ] {
            let e = Settings::parse(text).unwrap_err();
            assert!(e.message.contains(says), "{text}: {}", e.message);
        }
    }

    #[test]
    fn dense_threshold_is_derived_and_never_overflows() {
        let mut s = Settings::parse("topk=64").unwrap();
        assert_eq!(s.dense_threshold_on(Backend::Cuda), NEVER, "GPU memory: not yet faster at any depth");
        s.offload = true;
        assert_eq!(s.dense_threshold_on(Backend::Cuda), 4 + 512 + 128);
        s.offload = false;
        assert_eq!(s.dense_threshold_on(Backend::Cpu), CPU_DENSE_DEPTH);
        s.top_k = 4096;
        assert_eq!(s.dense_threshold_on(Backend::Cpu), 8 * 4096);
        s.top_k = 64;
        s.dense_threshold = 100;
        assert_eq!(s.dense_threshold_on(Backend::Cuda), 4 + 512 + 64);
        assert_eq!(s.dense_threshold_on(Backend::Cpu), 4 + 512 + 64, "an explicit value wins");
        s.dense_threshold = 10_000;
        assert_eq!(s.dense_threshold_on(Backend::Cpu), 10_000);
        let big = Settings::parse("topk=2147483647,window=2147483647,sink=2147483647,offload=on").unwrap();
        assert_eq!(big.dense_threshold_on(Backend::Cuda), 4 * MAX_COUNT as u64);
        assert_eq!(big.dense_threshold_on(Backend::Cpu), 8 * MAX_COUNT as u64);
    }

    #[test]
    fn op_params_round_trip_and_refuse_nonsense() {
        let settings =
            Settings::parse("topk=300,sink=8,window=128,gqa=mean,refine=3,candidates=0.25").unwrap();
        let p = OpParams { settings, scale: 0.125, softcap: 30.0 };
        assert_eq!(OpParams::unpack(&p.pack()).unwrap(), p);
        let mut bad = p.pack();
        bad[5] = 3;
        assert!(OpParams::unpack(&bad).is_err());
        let mut bad = p.pack();
        bad[2] = 0;
        assert!(OpParams::unpack(&bad).is_err());
        let mut bad = p.pack();
        bad[7] = 100;
        assert!(OpParams::unpack(&bad).is_err());
    }

    #[test]
    fn every_gqa_setting_survives_the_op_params() {
        for g in ["per-head", "mean", "group"] {
            let settings = Settings::parse(&format!("topk=64,gqa={g}")).unwrap();
            let p = OpParams { settings, scale: 1.0, softcap: 0.0 };
            assert_eq!(OpParams::unpack(&p.pack()).unwrap().settings.value("gqa").unwrap(), g);
        }
    }

    #[test]
    fn ratio_policy_follows_the_settings() {
        assert_eq!(Settings::default().ratio_policy(), RatioPolicy::Tuned);
        assert_eq!(Settings::parse("ratios=reference").unwrap().ratio_policy(), RatioPolicy::Adaptive);
        assert_eq!(
            Settings::parse("ratios=reference,candidates=0.5").unwrap().ratio_policy(),
            RatioPolicy::Fixed(Ratios { cand: 0.5, coll: TUNED_RHO_COLL })
        );
    }
}
