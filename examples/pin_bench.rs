//! Times pinning host memory for an offloaded K/V cache (feature `cuda`): one
//! cuMemHostAlloc (how llama.cpp's pinned buffers are made) against the library's fast path
//! (mapped, faulted in and registered in 1 GiB chunks by several threads), each buffer
//! freed before the next; GiB sizes from the command line.
//!
//!   cargo run --release --features cuda --example pin_bench -- [--fast-only] [GIB ...]

use std::time::Instant;

use pariskv::cuda::driver;
use pariskv::cuda::pinned::PinnedHost;

fn main() -> pariskv::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fast_only = args.iter().any(|a| a == "--fast-only");
    let sizes: Vec<f64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![4.0] } else { sizes };
    driver::use_primary_context(0)?;
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("pinning host memory, {threads} hardware threads");
    for gib in sizes {
        let bytes = (gib * (1u64 << 30) as f64) as usize;
        if !fast_only {
            let (pin, free) = timed(|| PinnedHost::alloc(bytes))?;
            println!(
                "{gib:7.2} GiB  one cuMemHostAlloc: {pin:7.2} s ({:6.2} GiB/s), freed in {free:.2} s",
                gib / pin
            );
        }
        let mut reports = 0;
        let (pin, free) = timed(|| PinnedHost::with_progress(bytes, &mut |_, _| reports += 1))?;
        println!(
            "{gib:7.2} GiB  fast path:         {pin:7.2} s ({:6.2} GiB/s, {reports} progress reports), freed in {free:.2} s",
            gib / pin
        );
    }
    Ok(())
}

/// Seconds to pin a buffer with `pin`, and to free it.
fn timed(pin: impl FnOnce() -> pariskv::Result<PinnedHost>) -> pariskv::Result<(f64, f64)> {
    let t = Instant::now();
    let buffer = pin()?;
    let pinned = t.elapsed().as_secs_f64();
    let t = Instant::now();
    drop(buffer);
    Ok((pinned, t.elapsed().as_secs_f64()))
}
