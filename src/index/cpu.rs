//! The CPU index handle: the K/V rows and codes in host memory, every step on the CPU, built
//! from the algorithm's stateless primitives.

use crate::algorithm::attention::{attend, AttnScratch};
use crate::algorithm::encode::{encode_rows, CodeStore, EncodeScratch};
use crate::algorithm::gqa::{select_group, GroupScratch, Refine};
use crate::algorithm::rotation::Rotation;
use crate::algorithm::search::{tally, SearchStats, Tally};
use crate::config::{Config, Device};
use crate::cpu;
use crate::cpu::team::Team;
use crate::error::{Error, Result};
use crate::index::handle::{check_append, load_queries, IndexStats, KvIndex, Retrieved};
use crate::rows::{RowBuf, RowData, Rows};
use crate::shape::{Shape, N_CENTROIDS};
use crate::step::CacheView;

/// Everything stored for one KV head.
#[derive(Clone, Debug)]
struct Head {
    codes: CodeStore,
    /// The key centre (`center::len` values; set by the first append when `cfg.center`).
    center: Vec<f32>,
    /// Cluster sizes over every appended key, `[block][centroid]`.
    hist: Vec<u32>,
    keys: RowBuf,
    values: RowBuf,
}

/// Per-call buffers, kept to avoid allocating on every step.
#[derive(Debug, Default)]
struct Scratch {
    encode: EncodeScratch,
    group: GroupScratch,
    attn: AttnScratch,
    queries: Vec<f32>,
    zone_hist: Vec<u32>,
    /// Retrieved cells of the last selection, best first.
    top: Vec<u32>,
    cells: Vec<u32>,
    /// 0, 1, 2, ...: the cells' positions for the step.
    positions: Vec<i32>,
    step: cpu::step::Scratch,
}

#[derive(Debug)]
pub struct Index {
    cfg: Config,
    shape: Shape,
    rotation: Rotation,
    len: usize,
    heads: Vec<Head>,
    last: Vec<SearchStats>,
    scratch: Scratch,
}

impl Index {
    pub fn new(cfg: Config) -> Result<Index> {
        let shape = cfg.validate()?;
        if cfg.device != Device::Cpu {
            return Err(Error::invalid(format!(
                "Index is the CPU index; {:?} needs index::open (a build with feature `cuda`)",
                cfg.device
            )));
        }
        let heads = (0..cfg.n_kv_heads)
            .map(|_| Head {
                codes: CodeStore::default(),
                center: vec![0.0; crate::algorithm::center::len(cfg.head_dim)],
                hist: vec![0; shape.n_blocks * N_CENTROIDS],
                keys: RowBuf::new(cfg.kv_dtype),
                values: RowBuf::new(cfg.kv_dtype),
            })
            .collect();
        Ok(Index {
            rotation: Rotation::new(shape, cfg.seed),
            shape,
            len: 0,
            last: vec![SearchStats::default(); cfg.n_kv_heads],
            heads,
            cfg,
            scratch: Scratch::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn stats(&self) -> IndexStats {
        IndexStats {
            len: self.len,
            index_bytes: self.heads.iter().map(|h| h.codes.bytes()).sum(),
            kv_bytes: self.heads.iter().map(|h| h.keys.bytes() + h.values.bytes()).sum(),
            last_zone: self.last.iter().map(|s| s.n_zone).sum(),
            last_candidates: self.last.iter().map(|s| s.n_candidates).sum(),
        }
    }

    /// Appends `n_tokens` keys and values laid out `[n_tokens][n_kv_heads][head_dim]`.
    /// Either everything is appended or, on error, nothing is.
    pub fn append(&mut self, keys: RowData, values: RowData, n_tokens: usize) -> Result<()> {
        let (d, nkv) = (self.cfg.head_dim, self.cfg.n_kv_heads);
        check_append(&self.cfg, self.len, &keys, &values, n_tokens)?;
        if n_tokens == 0 {
            return Ok(());
        }
        // Reserve everything first so that nothing below can fail half-way.
        for h in &mut self.heads {
            h.keys.reserve(n_tokens * d)?;
            h.values.reserve(n_tokens * d)?;
            h.codes.reserve(&self.shape, n_tokens)?;
        }
        let mut row = vec![0.0f32; d];
        let new_cells: Vec<usize> = (self.len..self.len + n_tokens).collect();
        // the rows of this call, for the centre of a head that has none yet
        let in_call: Vec<usize> = (0..n_tokens).collect();
        for (h, head) in self.heads.iter_mut().enumerate() {
            let k_in = Rows::head_of(keys, nkv, d, h, n_tokens)?;
            let v_in = Rows::head_of(values, nkv, d, h, n_tokens)?;
            for t in 0..n_tokens {
                k_in.load(t, &mut row);
                head.keys.extend_from_f32(&row);
                v_in.load(t, &mut row);
                head.values.extend_from_f32(&row);
            }
            // Encode the keys as stored: the rows attention will actually read.
            head.codes.grow(&self.shape, n_tokens)?;
            let stored = Rows::new(head.keys.data(), self.len * d, d, d, n_tokens)?;
            if self.cfg.center {
                crate::algorithm::center::init(&stored, &in_call, &mut head.center, &mut row);
            }
            encode_rows(
                &self.rotation,
                &stored,
                &new_cells,
                crate::algorithm::center::offset(&head.center),
                &mut head.codes.as_mut(),
                &mut self.scratch.encode,
            )?;
            tally(&self.shape, &head.codes.as_ref(), new_cells.iter().copied(), &mut head.hist, Tally::Add);
        }
        self.len += n_tokens;
        Ok(())
    }

    /// Converts `n_q_heads` query rows to f32 into the scratch.
    fn load_queries(&mut self, queries: RowData) -> Result<()> {
        load_queries(&self.cfg, queries, &mut self.scratch.queries)
    }

    /// The code histogram of KV head `h`'s retrieval zone into `scratch.zone_hist`: every
    /// appended key's (kept as keys arrive) minus the sink's and the window's.
    fn zone_hist(&mut self, h: usize) {
        let head = &self.heads[h];
        let zone = self.cfg.zone(self.len);
        let s = &mut self.scratch;
        s.zone_hist.clear();
        s.zone_hist.extend_from_slice(&head.hist);
        tally(
            &self.shape,
            &head.codes.as_ref(),
            (0..zone.start).chain(zone.end..self.len),
            &mut s.zone_hist,
            Tally::Remove,
        );
    }

    /// Top-k cells of the retrieval zone for KV head `h`, best first, into `scratch.top`.
    fn select(&mut self, h: usize, k: usize) -> Result<()> {
        let (d, g) = (self.cfg.head_dim, self.cfg.group_size());
        self.zone_hist(h);
        let s = &mut self.scratch;
        let head = &self.heads[h];
        let keys = Rows::packed(head.keys.data(), d)?;
        self.last[h] = select_group(
            &self.rotation,
            self.cfg.gqa,
            &s.queries[h * g * d..][..g * d],
            head.codes.as_ref(),
            self.cfg.zone(self.len),
            |_| true,
            Some(&s.zone_hist),
            self.cfg.ratios,
            k,
            Refine { keys: &keys, factor: self.cfg.refine, attn: self.cfg.attn },
            &mut s.group,
            &mut s.top,
        )?;
        Ok(())
    }

    /// Per KV head, the top-k token positions of the retrieval zone, best first.
    pub fn search(&mut self, queries: RowData, k: usize) -> Result<Vec<Vec<u32>>> {
        Ok(self.search_detailed(queries, k)?.into_iter().map(|r| r.top).collect())
    }

    /// `search`, also returning each head's candidates (to measure the coarse stage).
    pub fn search_detailed(&mut self, queries: RowData, k: usize) -> Result<Vec<Retrieved>> {
        if k == 0 {
            return Err(Error::invalid("search: k must be at least 1"));
        }
        self.load_queries(queries)?;
        (0..self.cfg.n_kv_heads)
            .map(|h| {
                self.select(h, k)?;
                let s = &self.scratch;
                Ok(Retrieved {
                    top: s.top.clone(),
                    candidates: s.group.candidates.clone(),
                    shortlists: s.group.shortlists.clone(),
                    stats: self.last[h],
                })
            })
            .collect()
    }

    /// Stored keys of KV head `h` (for exact baselines).
    pub fn keys(&self, h: usize) -> Result<Rows<'_>> {
        Rows::packed(self.heads[h].keys.data(), self.cfg.head_dim)
    }

    /// Stored values of KV head `h`.
    pub fn values(&self, h: usize) -> Result<Rows<'_>> {
        Rows::packed(self.heads[h].values.data(), self.cfg.head_dim)
    }

    /// ParisKV attention output `[n_q_heads][head_dim]` for one decode query: dense below
    /// the threshold, else exact attention over sink ∪ top-k ∪ window, in position order.
    pub fn attend(&mut self, queries: RowData, out: &mut [f32]) -> Result<()> {
        let (d, g) = (self.cfg.head_dim, self.cfg.group_size());
        if out.len() != self.cfg.n_q_heads * d {
            return Err(Error::invalid(format!(
                "attend: output has {} values, expected {}",
                out.len(),
                self.cfg.n_q_heads * d
            )));
        }
        if self.len == 0 {
            return Err(Error::invalid("attend: the index is empty"));
        }
        self.load_queries(queries)?;
        let dense = self.cfg.is_dense(self.len);
        let params = self.cfg.step_params(self.cfg.top_k);
        // a cell's position is its index: the step's sink and window are the config's zone bounds
        let n = self.len;
        self.scratch.positions.extend(self.scratch.positions.len() as i32..n as i32);
        for h in 0..self.cfg.n_kv_heads {
            let (q, o) = (h * g * d..(h + 1) * g * d, &mut out[h * g * d..][..g * d]);
            if dense {
                let mut cells = std::mem::take(&mut self.scratch.cells);
                cells.clear();
                cells.extend(0..n as u32);
                let head = &self.heads[h];
                let (k, v) = (Rows::packed(head.keys.data(), d)?, Rows::packed(head.values.data(), d)?);
                let result = attend(
                    &self.scratch.queries[q],
                    &k,
                    &v,
                    &cells,
                    self.cfg.attn,
                    &mut self.scratch.attn,
                    o,
                );
                self.scratch.cells = cells;
                result?;
                continue;
            }
            // sink ∪ top-k ∪ window by the CPU step (the same rows as `select`'s top-k)
            self.zone_hist(h);
            let head = &self.heads[h];
            let s = &mut self.scratch;
            let view = CacheView {
                keys: Rows::packed(head.keys.data(), d)?,
                values: Rows::packed(head.values.data(), d)?,
                codes: head.codes.as_ref(),
                visible: |_| true,
                pos: &s.positions[..n],
                zone_hist: Some(&s.zone_hist),
                kept: None,
            };
            let st = cpu::step::attend_cache(
                &Team::solo(),
                &self.rotation,
                &params,
                &view,
                &s.queries[q],
                &mut s.step,
                o,
            )?;
            self.last[h] =
                SearchStats { n_zone: st.n_zone, n_candidates: st.n_candidates, ..SearchStats::default() };
        }
        Ok(())
    }
}

impl KvIndex for Index {
    fn config(&self) -> &Config {
        Index::config(self)
    }

    fn len(&self) -> usize {
        Index::len(self)
    }

    fn stats(&self) -> IndexStats {
        Index::stats(self)
    }

    fn append(&mut self, keys: RowData, values: RowData, n_tokens: usize) -> Result<()> {
        Index::append(self, keys, values, n_tokens)
    }

    fn search(&mut self, queries: RowData, k: usize) -> Result<Vec<Vec<u32>>> {
        Index::search(self, queries, k)
    }

    fn attend(&mut self, queries: RowData, out: &mut [f32]) -> Result<()> {
        Index::attend(self, queries, out)
    }
}
