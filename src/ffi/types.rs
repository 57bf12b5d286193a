//! The C types of the public ABI. cbindgen writes them into `include/pariskv.h`.

/// Result of every `pariskv_*` call. On anything but `PARISKV_OK`,
/// `pariskv_last_error()` says what went wrong.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum pariskv_status {
    PARISKV_OK = 0,
    /// A NULL or misaligned pointer, a size out of range, a config value out of its domain.
    PARISKV_ERR_INVALID_ARGUMENT = 1,
    /// Valid input this build does not handle (head dim, dtype).
    PARISKV_ERR_UNSUPPORTED = 2,
    PARISKV_ERR_OUT_OF_MEMORY = 3,
    /// A bug in the library; the handle involved should be freed.
    PARISKV_ERR_INTERNAL = 4,
    /// The CUDA driver failed (its message is in `pariskv_last_error()`), or no CUDA driver or
    /// GPU is available.
    PARISKV_ERR_CUDA = 5,
}

// Rust code takes `pariskv_dtype` as a plain `u32` (see the alias in `config.rs` and
// `mod.rs`) so that any value a C caller writes is a defined input, never an invalid enum.

/// Element type of keys, values and queries: a `uint32_t` holding one of these values.
/// Any other value is reported as `PARISKV_ERR_UNSUPPORTED`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum pariskv_dtype {
    PARISKV_F32 = 0,
    PARISKV_F16 = 1,
    PARISKV_BF16 = 2,
    /// ggml's Q8_0 blocks (34 bytes per 32 elements: f16 scale, 32 int8), K/V rows of
    /// caller-owned caches on the CPU (`pariskv_attend_cache`, `pariskv_encode_cells`,
    /// `pariskv_center_init`) and of CPU index handles: head_dim a multiple of 32, strides
    /// whole blocks.
    PARISKV_Q8_0 = 3,
}

/// How the query heads sharing a KV head choose its rows (a `uint32_t` holding one of
/// these; any other value is reported as `PARISKV_ERR_UNSUPPORTED`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum pariskv_gqa {
    /// Each query head retrieves its share of top-k; the group attends over the union.
    PARISKV_GQA_PER_HEAD = 0,
    /// One retrieval with the mean of the group's queries (the paper's reference).
    PARISKV_GQA_MEAN = 1,
    /// k distinct rows chosen for the group's attention mass: every head's candidates pooled
    /// and estimated for every head, each head's scores made probabilities over the pool, the
    /// k rows of the largest mean probability (the shortlist rescored exactly first when
    /// refining). CPU and CUDA choose the same rows.
    PARISKV_GQA_GROUP = 2,
}

/// How the candidate and collision ratios are chosen (a `uint32_t` holding one of these;
/// any other value is reported as `PARISKV_ERR_UNSUPPORTED`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum pariskv_ratios {
    /// `rho_cand` / `rho_coll` as given.
    PARISKV_RATIOS_FIXED = 0,
    /// The reference implementation's table by zone size (the paper's setting).
    PARISKV_RATIOS_REFERENCE = 1,
    /// Wider candidate shares than the reference's (0.3 below 30K keys, 0.2 above) and
    /// collision tiers over the whole zone, chosen from measurements on real keys (the
    /// default).
    PARISKV_RATIOS_TUNED = 2,
}

/// Where a decode step runs (`pariskv_settings_dense_threshold`; a `uint32_t` holding one
/// of these, any other value is reported as `PARISKV_ERR_UNSUPPORTED`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum pariskv_backend {
    PARISKV_BACKEND_CPU = 0,
    PARISKV_BACKEND_CUDA = 1,
}

/// The library's version (`pariskv_version()` gives it as text): a program compiled
/// against this header can compare these with what the library it runs with reports.
pub const PARISKV_VERSION_MAJOR: u32 = 0;
pub const PARISKV_VERSION_MINOR: u32 = 4;
pub const PARISKV_VERSION_PATCH: u32 = 0;

/// Seed of the rotation that `pariskv_config_init` sets and that engines encoding their own
/// cache (`pariskv_encode_cells`, `pariskv_attend_cache`) should use.
pub const PARISKV_DEFAULT_SEED: u64 = 0x5041_5249_534B_5631;

/// Refine factor that `pariskv_config_init` sets (1 would be no exact rescoring).
pub const PARISKV_DEFAULT_REFINE: u32 = 2;

/// rho_coll of `PARISKV_RATIOS_TUNED`: callers that fix the candidate share
/// (`PARISKV_RATIOS_FIXED`) use it to keep the tuned table's collision tiers.
pub const PARISKV_TUNED_RHO_COLL: f64 = 1.0;

/// Most keys `pariskv_center_init` averages into a KV head's key centre.
pub const PARISKV_CENTER_ROWS: u32 = 4096;

/// Centroids of a code block: a kept code histogram holds this many counts per block.
pub const PARISKV_N_CENTROIDS: u32 = 256;

/// Memory use and the last search's work, summed over KV heads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct pariskv_stats {
    /// Tokens appended.
    pub len: usize,
    /// Bytes of centroid codes, 4-bit codes and weights.
    pub index_bytes: usize,
    /// Bytes of stored K and V rows.
    pub kv_bytes: usize,
    /// Keys in the retrieval zones of the last search or attend.
    pub last_zone: usize,
    /// Candidates reranked by the last search or attend.
    pub last_candidates: usize,
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_macros_are_the_crate_version() {
        let text = format!(
            "{}.{}.{}",
            super::PARISKV_VERSION_MAJOR,
            super::PARISKV_VERSION_MINOR,
            super::PARISKV_VERSION_PATCH
        );
        assert_eq!(text, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn default_seed_is_the_config_default() {
        assert_eq!(super::PARISKV_DEFAULT_SEED, crate::config::DEFAULT_SEED);
        assert_eq!(super::PARISKV_DEFAULT_REFINE as usize, crate::config::DEFAULT_REFINE);
        assert_eq!(super::PARISKV_CENTER_ROWS as usize, crate::constants::CENTER_ROWS);
        assert_eq!(super::PARISKV_N_CENTROIDS as usize, crate::constants::N_CENTROIDS);
        assert_eq!(super::PARISKV_TUNED_RHO_COLL, crate::constants::TUNED_RHO_COLL);
    }
}
