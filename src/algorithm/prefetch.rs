//! Software prefetch for gathers over scattered cells (rerank candidates, selected K/V
//! rows): the hardware prefetcher cannot guess the next cell, and without a hint each one
//! costs a full memory latency (measured: ~250 ns per rerank candidate at 128K cells).

/// How many cells ahead of use a gather requests its data.
pub const DISTANCE: usize = 16;

/// Bytes per cache line on every CPU we target.
const LINE: usize = 64;

/// Asks for every cache line holding `data` to be loaded.
#[inline(always)]
pub fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = data.as_ptr() as usize;
        let end = start + std::mem::size_of_val(data);
        let mut line = start & !(LINE - 1);
        while line < end {
            // SAFETY: `_mm_prefetch` needs SSE, which every x86-64 CPU has; a prefetch is
            // only a hint that never faults and never writes, so any address is sound.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
            line += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}
