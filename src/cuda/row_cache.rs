//! A device cache of K/V rows across decode steps, for K/V caches in host memory read through
//! UVA (kernels/row_cache.cuh has the protocol): per KV head of each stream, `slots` slots of
//! one cell's raw K and V rows, 4-way set associative, least recently used first. A step
//! given a stream's tables (`GpuLayer::row_cache`) takes its refine's shortlisted K rows
//! there (copying the K and V rows of misses in), then plans the attention's rows, whose
//! hits it reads from GPU memory, copying misses in as it reads them; an encode given every
//! table (`EncodeTarget::row_cache`) forgets the cells it encodes, so a cell rewritten is
//! never read stale. Rows changed in place by anything else (a K-shift, a state load, a copy
//! between sequences) need a clear.
//!
//! A cache lies in one device allocation of `RowCacheShape::bytes` (the caller's, e.g. a
//! ggml tensor, through the `_at` functions, or `RowCache`'s own).

use super::driver::{memset_u32, read_raw, CUdeviceptr, DeviceBuffer, Stream};
use crate::error::{Error, Result};

pub use super::args::RowCacheArgs;

/// Ways of a set (kernels/row_cache.cuh: PK_CACHE_WAYS).
pub const WAYS: usize = 4;

/// Bytes a slot's rows start at: 16-byte aligned for the copies' widest words.
const ROW_ALIGN: usize = 16;

/// A row cache's dimensions: `streams` x `heads` tables of `slots` slots, each a K row of
/// `k_bytes` and a V row of `v_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowCacheShape {
    pub streams: usize,
    pub heads: usize,
    pub slots: usize,
    pub k_bytes: usize,
    pub v_bytes: usize,
}

/// Rows read from the cache and from host memory (the refine's K rows, the attention's K and
/// V rows), per table, since the last clear.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// Byte offsets of a cache's parts in its allocation: stats (u64 pairs), clocks, tags,
/// stamps (all zero in an empty cache), then the rows (16-byte aligned).
struct Parts {
    clock: usize,
    tag: usize,
    stamp: usize,
    data: usize,
    end: usize,
}

impl RowCacheShape {
    /// Checks the dimensions: a power of two of at least `WAYS` slots, rows of some bytes,
    /// every count within the kernels' 32-bit indices.
    pub fn new(
        (streams, heads, slots): (usize, usize, usize),
        (k_bytes, v_bytes): (usize, usize),
    ) -> Result<RowCacheShape> {
        let shape = RowCacheShape { streams, heads, slots, k_bytes, v_bytes };
        let fits = |x: Option<usize>| x.is_some_and(|x| i32::try_from(x).is_ok());
        let tables = streams.checked_mul(heads);
        let ok = tables.is_some_and(|t| t > 0)
            && slots.is_power_of_two()
            && slots >= WAYS
            && k_bytes > 0
            && v_bytes > 0
            && fits(tables.and_then(|t| t.checked_mul(slots)))
            && fits(Some(shape.row_bytes()));
        if !ok {
            return Err(Error::invalid(format!(
                "row cache: {streams} streams x {heads} heads of {slots} slots (a power of two, at least {WAYS}) \
                 of {k_bytes} + {v_bytes} bytes"
            )));
        }
        Ok(shape)
    }

    fn tables(&self) -> usize {
        self.streams * self.heads
    }

    fn v_off(&self) -> usize {
        round_up(self.k_bytes, ROW_ALIGN)
    }

    fn row_bytes(&self) -> usize {
        self.v_off() + round_up(self.v_bytes, ROW_ALIGN)
    }

    fn parts(&self) -> Parts {
        let (t, cells) = (self.tables(), self.tables() * self.slots);
        // a set's tags are read as one 16-byte word
        let clock = t * 16;
        let tag = round_up(clock + t * 4, ROW_ALIGN);
        let stamp = tag + cells * 4;
        let data = round_up(stamp + cells * 4, ROW_ALIGN);
        Parts { clock, tag, stamp, data, end: data + cells * self.row_bytes() }
    }

    /// Device bytes of the cache (its allocation must be 16-byte aligned).
    pub fn bytes(&self) -> usize {
        self.parts().end
    }

    /// Stream `s`'s tables in the cache at `base`, for a step over that stream's rows.
    pub fn stream_at(&self, base: CUdeviceptr, s: usize) -> Result<RowCacheArgs> {
        if s >= self.streams {
            return Err(Error::invalid(format!("row cache: stream {s} of {}", self.streams)));
        }
        Ok(self.view(base, s * self.heads, self.heads))
    }

    /// Every table of the cache at `base`, for the encodes (table `stream * heads + h`).
    pub fn all_at(&self, base: CUdeviceptr) -> RowCacheArgs {
        self.view(base, 0, self.tables())
    }

    /// Each table's counts of the cache at `base` (table `stream * heads + h`), read after the
    /// work in flight.
    ///
    /// # Safety
    /// `base` must be a cache of this shape in the current context's device memory.
    pub unsafe fn stats_at(&self, base: CUdeviceptr) -> Result<Vec<CacheStats>> {
        // SAFETY: the stats lead the cache's allocation, two u64 a table (the caller's cache).
        let raw: Vec<u64> = unsafe { read_raw(base, self.tables() * 2)? };
        Ok(raw.chunks(2).map(|c| CacheStats { hits: c[0], misses: c[1] }).collect())
    }

    /// Forgets every row of the cache at `base` and zeroes its statistics, in order on
    /// `stream`: for a new cache, and after rows changed in place other than by an encode.
    /// (All-zero memory is an empty cache: zeroing the tables up to the rows does the same.)
    pub fn clear_at(&self, base: CUdeviceptr, stream: &Stream) -> Result<()> {
        memset_u32(base, 0, self.parts().data / 4, stream)
    }

    fn view(&self, base: CUdeviceptr, first: usize, tables: usize) -> RowCacheArgs {
        let p = self.parts();
        let (f, slots) = (first as u64, self.slots as u64);
        RowCacheArgs {
            clock: base + p.clock as u64 + f * 4,
            tag: base + p.tag as u64 + f * slots * 4,
            stamp: base + p.stamp as u64 + f * slots * 4,
            data: base + p.data as u64 + f * slots * self.row_bytes() as u64,
            stats: base + f * 16,
            tables: tables as i32,
            slots: self.slots as i32,
            row_bytes: self.row_bytes() as i32,
            v_off: self.v_off() as i32,
        }
    }
}

/// What a cache holds, read back for tests and diagnostics: per table, each slot's tag
/// (1 + cell, 0 empty), stamp and bytes (`row_bytes` a slot, V at `v_off`).
#[derive(Clone, Debug)]
pub struct Contents {
    pub clock: Vec<u32>,
    pub tag: Vec<i32>,
    pub stamp: Vec<u32>,
    pub data: Vec<u8>,
    pub row_bytes: usize,
    pub v_off: usize,
}

/// A row cache in device memory of its own.
pub struct RowCache {
    pub shape: RowCacheShape,
    buf: DeviceBuffer,
}

impl RowCache {
    /// A cleared cache of `shape`.
    pub fn new(shape: RowCacheShape) -> Result<RowCache> {
        let cache = RowCache { shape, buf: DeviceBuffer::new(shape.bytes())? };
        cache.clear()?;
        Ok(cache)
    }

    /// The cache's device address (for the `_at` functions and the C ABI).
    pub fn base(&self) -> CUdeviceptr {
        self.buf.ptr
    }

    /// Forgets every row and zeroes the statistics (on the null stream).
    pub fn clear(&self) -> Result<()> {
        self.shape.clear_at(self.buf.ptr, &Stream::null())
    }

    /// Stream `s`'s tables, for a step over that stream's rows.
    pub fn stream(&self, s: usize) -> Result<RowCacheArgs> {
        self.shape.stream_at(self.buf.ptr, s)
    }

    /// Every table, for the encodes.
    pub fn all(&self) -> RowCacheArgs {
        self.shape.all_at(self.buf.ptr)
    }

    /// Every table's tags, stamps and rows (table `stream * heads + h`), read after the work
    /// in flight.
    pub fn contents(&self) -> Result<Contents> {
        let (p, cells) = (self.shape.parts(), self.shape.tables() * self.shape.slots);
        Ok(Contents {
            clock: self.buf.read_at(p.clock, self.shape.tables())?,
            tag: self.buf.read_at(p.tag, cells)?,
            stamp: self.buf.read_at(p.stamp, cells)?,
            data: self.buf.read_at(p.data, p.end - p.data)?,
            row_bytes: self.shape.row_bytes(),
            v_off: self.shape.v_off(),
        })
    }

    /// Overwrites every slot's bytes (`Contents::data`'s layout), for tests that check who
    /// reads them.
    pub fn write_data(&self, data: &[u8]) -> Result<()> {
        let p = self.shape.parts();
        if data.len() != p.end - p.data {
            return Err(Error::invalid(format!(
                "row cache data: {} bytes, not {}",
                data.len(),
                p.end - p.data
            )));
        }
        self.buf.write_at(p.data, data)
    }

    /// Each table's counts (table `stream * heads + h`), read after the work in flight.
    pub fn stats(&self) -> Result<Vec<CacheStats>> {
        // SAFETY: `buf` is this cache, of `shape`, allocated in the current context.
        unsafe { self.shape.stats_at(self.buf.ptr) }
    }
}

impl RowCacheArgs {
    /// Whether a cache is given.
    pub fn is_some(&self) -> bool {
        self.slots > 0
    }

    /// Checks that a step of `heads` KV heads over rows of `k_bytes` / `v_bytes` fits the
    /// cache these tables belong to.
    pub(crate) fn check_step(&self, heads: usize, k_bytes: usize, v_bytes: usize) -> Result<()> {
        let fits = self.tables as usize == heads
            && round_up(k_bytes, ROW_ALIGN) <= self.v_off as usize
            && self.v_off as usize + v_bytes <= self.row_bytes as usize;
        if !fits {
            return Err(Error::invalid(format!(
                "row cache of {} tables, rows of {} bytes, for a step of {heads} KV heads, K/V rows of {k_bytes} / \
                 {v_bytes} bytes",
                self.tables, self.row_bytes
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_aligned_and_disjoint() {
        let s = RowCacheShape::new((2, 8, 4096), (256, 136)).unwrap();
        let p = s.parts();
        assert!(p.clock < p.tag && p.tag < p.stamp && p.stamp < p.data && p.data < p.end);
        assert_eq!(p.data % ROW_ALIGN, 0);
        assert_eq!(s.row_bytes(), 256 + 144);
        assert_eq!(s.bytes(), p.data + 16 * 4096 * 400);
        let all = s.all_at(0);
        let one = s.stream_at(0, 1).unwrap();
        assert_eq!(one.tag - all.tag, 8 * 4096 * 4, "stream 1's tables follow stream 0's");
        assert_eq!(one.data - all.data, 8 * 4096 * 400);
        assert!(s.stream_at(0, 2).is_err());
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(RowCacheShape::new((1, 8, 3000), (256, 256)).is_err(), "not a power of two");
        assert!(RowCacheShape::new((1, 8, 2), (256, 256)).is_err(), "fewer than a set");
        assert!(RowCacheShape::new((0, 8, 4096), (256, 256)).is_err(), "no tables");
        assert!(RowCacheShape::new((1, 8, 4096), (0, 256)).is_err(), "empty rows");
        assert!(RowCacheShape::new((1, 1 << 20, 4096), (256, 256)).is_err(), "too many slots");
    }
}
