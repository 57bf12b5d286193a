//! A device cache of K/V rows across decode steps, for K/V caches in host memory read through
//! UVA (kernels/row_cache.cuh has the protocol): per KV head of each stream, `slots` slots of
//! one cell's raw K and V rows, 4-way set associative, least recently used first. A step
//! given a stream's tables (`GpuLayer::row_cache`) plans its rows first and its attention
//! reads hits from GPU memory, copying misses in as it reads them; an encode given the whole
//! cache (`EncodeTarget::row_cache`) forgets the cells it encodes, so a cell rewritten is
//! never read stale. Rows changed in place by anything else (a K-shift, a state load, a copy
//! between sequences) need `clear`.

use super::driver::DeviceBuffer;
use crate::error::{Error, Result};

pub use super::args::RowCacheArgs;

/// Ways of a set (kernels/row_cache.cuh: PK_CACHE_WAYS).
pub const WAYS: usize = 4;

/// Bytes a slot's row starts at: 16-byte aligned for the copies' widest words.
const ROW_ALIGN: usize = 16;

/// The tables of `streams` x `heads` KV heads, each `slots` slots of a K row of `k_bytes`
/// and a V row of `v_bytes`, with a plan for steps of up to `max_units` units and
/// `max_rows` rows each.
pub struct RowCache {
    pub streams: usize,
    pub heads: usize,
    pub slots: usize,
    pub max_units: usize,
    pub max_rows: usize,
    pub k_bytes: usize,
    pub v_bytes: usize,
    row_bytes: usize,
    v_off: usize,
    clock: DeviceBuffer,
    tag: DeviceBuffer,
    stamp: DeviceBuffer,
    data: DeviceBuffer,
    plan: DeviceBuffer,
    stats: DeviceBuffer,
}

/// Rows read from the cache and from host memory, per table, since creation or `clear`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

impl RowCache {
    /// Device bytes of the tables of a cache of these dimensions, for the caller's memory plan
    /// (the plan of a step, 4 bytes a row, aside).
    pub fn bytes(streams: usize, heads: usize, slots: usize, k_bytes: usize, v_bytes: usize) -> usize {
        let tables = streams * heads;
        let row = round_up(k_bytes, ROW_ALIGN) + round_up(v_bytes, ROW_ALIGN);
        tables * (4 + 16) + tables * slots * (4 + 4 + row)
    }

    pub fn new(
        streams: usize,
        heads: usize,
        slots: usize,
        (max_units, max_rows): (usize, usize),
        (k_bytes, v_bytes): (usize, usize),
    ) -> Result<RowCache> {
        let tables = streams.checked_mul(heads).unwrap_or(0);
        let row_bytes = round_up(k_bytes, ROW_ALIGN) + round_up(v_bytes, ROW_ALIGN);
        let fits = |x: usize| i32::try_from(x).is_ok();
        if tables == 0 || !slots.is_power_of_two() || slots < WAYS || k_bytes == 0 || v_bytes == 0 {
            return Err(Error::invalid(format!(
                "row cache: {streams} streams x {heads} heads of {slots} slots (a power of two, at least {WAYS}) \
                 of {k_bytes} + {v_bytes} bytes"
            )));
        }
        if !fits(tables) || !fits(slots) || !fits(row_bytes) || !fits(max_rows) || max_units == 0 {
            return Err(Error::invalid(format!(
                "row cache: {tables} tables, {slots} slots, rows of {row_bytes} bytes, {max_units} units of {max_rows} rows"
            )));
        }
        let cells = tables * slots;
        let cache = RowCache {
            streams,
            heads,
            slots,
            max_units,
            max_rows,
            k_bytes,
            v_bytes,
            row_bytes,
            v_off: round_up(k_bytes, ROW_ALIGN),
            clock: DeviceBuffer::new(tables * 4)?,
            tag: DeviceBuffer::new(cells * 4)?,
            stamp: DeviceBuffer::new(cells * 4)?,
            data: DeviceBuffer::new(cells * row_bytes)?,
            plan: DeviceBuffer::new(max_units * max_rows.max(1) * 4)?,
            stats: DeviceBuffer::new(tables * 16)?,
        };
        cache.clear()?;
        Ok(cache)
    }

    /// Forgets every row and zeroes the statistics (in order with the null stream's work):
    /// after rows changed in place other than by an encode.
    pub fn clear(&self) -> Result<()> {
        let tables = self.streams * self.heads;
        self.tag.write(&vec![-1i32; tables * self.slots])?;
        self.stamp.write(&vec![0u32; tables * self.slots])?;
        self.clock.write(&vec![0u32; tables])?;
        self.stats.write(&vec![0u64; tables * 2])
    }

    /// Stream `s`'s tables, for a step over that stream's rows.
    pub fn stream(&self, s: usize) -> Result<RowCacheArgs> {
        if s >= self.streams {
            return Err(Error::invalid(format!("row cache: stream {s} of {}", self.streams)));
        }
        Ok(self.view(s * self.heads, self.heads))
    }

    /// Every table, for the encodes (table `stream * heads + h`).
    pub fn all(&self) -> RowCacheArgs {
        self.view(0, self.streams * self.heads)
    }

    fn view(&self, first: usize, tables: usize) -> RowCacheArgs {
        let (f, slots) = (first as u64, self.slots as u64);
        RowCacheArgs {
            clock: self.clock.ptr + f * 4,
            tag: self.tag.ptr + f * slots * 4,
            stamp: self.stamp.ptr + f * slots * 4,
            data: self.data.ptr + f * slots * self.row_bytes as u64,
            plan: self.plan.ptr,
            stats: self.stats.ptr + f * 16,
            tables: tables as i32,
            slots: self.slots as i32,
            row_bytes: self.row_bytes as i32,
            v_off: self.v_off as i32,
            max_rows: self.max_rows as i32,
            max_units: self.max_units as i32,
        }
    }

    /// Each table's counts (table `stream * heads + h`), read after the work in flight.
    pub fn stats(&self) -> Result<Vec<CacheStats>> {
        let raw: Vec<u64> = self.stats.read(self.streams * self.heads * 2)?;
        Ok(raw.chunks(2).map(|c| CacheStats { hits: c[0], misses: c[1] }).collect())
    }
}

impl RowCacheArgs {
    /// Whether a cache is given.
    pub fn is_some(&self) -> bool {
        self.slots > 0
    }

    /// Checks that a step of `units` units over rows of `k_bytes` / `v_bytes` with up to
    /// `max_rows` rows a unit fits the cache these tables belong to.
    pub(crate) fn check_step(
        &self,
        units: usize,
        heads: usize,
        max_rows: usize,
        k_bytes: usize,
        v_bytes: usize,
    ) -> Result<()> {
        let fits = self.tables as usize == heads
            && units <= self.max_units as usize
            && max_rows <= self.max_rows as usize
            && round_up(k_bytes, ROW_ALIGN) <= self.v_off as usize
            && self.v_off as usize + v_bytes <= self.row_bytes as usize;
        if !fits {
            return Err(Error::invalid(format!(
                "row cache of {} tables, rows of {} bytes, plans of {} units x {} rows, for a step of {units} units \
                 ({heads} KV heads), {max_rows} rows, K/V rows of {k_bytes} / {v_bytes} bytes",
                self.tables, self.row_bytes, self.max_units, self.max_rows
            )));
        }
        Ok(())
    }
}
