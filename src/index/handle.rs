//! What every index handle is: the contract (`KvIndex`) the C ABI's `pariskv_index` holds,
//! its statistics, and the argument checks every handle shares.

use crate::algorithm::search::SearchStats;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::rows::{RowData, Rows};

/// Memory use and the last step's retrieval work, summed over KV heads.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct IndexStats {
    pub len: usize,
    /// Bytes of codes, 4-bit codes and weights.
    pub index_bytes: usize,
    /// Bytes of stored K and V rows.
    pub kv_bytes: usize,
    /// Keys in the retrieval zones of the last search (all heads).
    pub last_zone: usize,
    /// Candidates reranked by the last search (all heads).
    pub last_candidates: usize,
}

/// One KV head's selection, with its coarse stage.
#[derive(Clone, Debug)]
pub struct Retrieved {
    /// Top-k positions, best first.
    pub top: Vec<u32>,
    /// Candidate positions passed to the reranks (of every head of the group), in position order.
    pub candidates: Vec<u32>,
    /// Each retrieval's refine shortlist (the cells whose key rows the refine read), best
    /// estimate first; empty without a refine.
    pub shortlists: Vec<Vec<u32>>,
    pub stats: SearchStats,
}

/// What every index handle answers, wherever it lives.
pub trait KvIndex: Send {
    fn config(&self) -> &Config;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn stats(&self) -> IndexStats;
    /// Appends `n_tokens` keys and values laid out `[n_tokens][n_kv_heads][head_dim]`.
    /// Either everything is appended or, on error, nothing is.
    fn append(&mut self, keys: RowData, values: RowData, n_tokens: usize) -> Result<()>;
    /// Per KV head, the top-k token positions of the retrieval zone, best first.
    fn search(&mut self, queries: RowData, k: usize) -> Result<Vec<Vec<u32>>>;
    /// ParisKV attention output `[n_q_heads][head_dim]` for one decode query.
    fn attend(&mut self, queries: RowData, out: &mut [f32]) -> Result<()>;
}

/// Checks an append of `n_tokens` to an index of `len` tokens (shared by every handle).
pub(crate) fn check_append(
    cfg: &Config,
    len: usize,
    keys: &RowData,
    values: &RowData,
    n_tokens: usize,
) -> Result<()> {
    let rows =
        n_tokens.checked_mul(cfg.n_kv_heads).ok_or_else(|| Error::invalid("append: n_tokens too large"))?;
    expect_len(cfg, "append keys", keys, rows)?;
    expect_len(cfg, "append values", values, rows)?;
    if len.checked_add(n_tokens).is_none_or(|n| n > u32::MAX as usize) {
        return Err(Error::invalid(format!(
            "append: {len} + {n_tokens} tokens exceeds the 2^32-1 cells an index can hold"
        )));
    }
    Ok(())
}

/// Checks that `data` holds `rows` rows of `head_dim`.
pub(crate) fn expect_len(cfg: &Config, what: &str, data: &RowData, rows: usize) -> Result<()> {
    let want =
        rows.checked_mul(cfg.head_dim).ok_or_else(|| Error::invalid(format!("{what}: size overflows")))?;
    if data.len() != want {
        return Err(Error::invalid(format!(
            "{what}: {} elements given, expected {rows} rows of {} = {want}",
            data.len(),
            cfg.head_dim
        )));
    }
    Ok(())
}

/// `n_q_heads` query rows converted to f32 into `out`.
pub(crate) fn load_queries(cfg: &Config, queries: RowData, out: &mut Vec<f32>) -> Result<()> {
    let (d, nq) = (cfg.head_dim, cfg.n_q_heads);
    expect_len(cfg, "queries", &queries, nq)?;
    let rows = Rows::packed(queries, d)?;
    out.resize(nq * d, 0.0);
    for (h, q) in out.chunks_exact_mut(d).enumerate() {
        rows.load(h, q);
    }
    Ok(())
}
