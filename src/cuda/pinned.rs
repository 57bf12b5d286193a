//! Pinned host memory mapped into the device address space, for K/V caches the GPU reads in
//! place through UVA (`--pariskv-offload`). Large buffers are pinned the fast way: mapped
//! anonymously (transparent huge pages asked for), their pages faulted in and registered
//! with the driver (cuMemHostRegister, DEVICEMAP | PORTABLE) a chunk at a time by several
//! threads, with progress reported as chunks finish. One cuMemHostAlloc call does the same
//! work on one thread: tens of seconds for tens of GiB. Small buffers, and `new`, take that
//! one call. The driver sees a chunked buffer as one registration per chunk: kernels read
//! across chunks freely, but a copy-engine copy must stay within one (measured: a
//! cuMemcpyDtoD across two chunks fails with CUDA_ERROR_INVALID_VALUE).
//! Buffers given to C (`into_raw`) are kept in a registry, so that a pointer the library
//! did not hand out, or one freed twice, is refused instead of freed.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use cudarc::driver::sys;

use super::driver::{check, init, CUdeviceptr};
use crate::error::{Error, Result};

/// Buffers from this size on are pinned in chunks on several threads.
const FAST_FROM: usize = 256 << 20;
/// Bytes one thread faults in and registers at a time (a multiple of the huge page size).
const CHUNK: usize = 1 << 30;
/// The huge page size the mapping is rounded to.
const HUGE_PAGE: usize = 2 << 20;
/// Threads that pin at once at the most (the driver's registration scales little further).
const MAX_THREADS: usize = 16;

/// How a buffer was pinned, so that it is freed the same way.
#[derive(Debug)]
enum Pinning {
    /// One cuMemHostAlloc.
    Alloc,
    /// An anonymous mapping of `mapped` bytes registered in chunks of `CHUNK` bytes.
    Registered { mapped: usize },
}

/// Pinned host memory mapped into the device address space (not write-combined: the GPU
/// reads it through UVA, the CPU reads and writes it normally).
#[derive(Debug)]
pub struct PinnedHost {
    pub host: *mut c_void,
    pub device: CUdeviceptr,
    pub bytes: usize,
    pinning: Pinning,
}

// SAFETY: the allocation is plain memory; ownership moves with the value.
unsafe impl Send for PinnedHost {}

impl PinnedHost {
    /// `bytes` of pinned memory in the current context, in one cuMemHostAlloc.
    pub fn new(bytes: usize) -> Result<PinnedHost> {
        PinnedHost::alloc(bytes)
    }

    /// `bytes` of pinned memory in the current context; large buffers are pinned by
    /// several threads and `progress(done, total)` is called (on this thread) as their
    /// chunks finish, and once at the end.
    pub fn with_progress(bytes: usize, progress: &mut dyn FnMut(usize, usize)) -> Result<PinnedHost> {
        init()?;
        let pinned = if bytes < FAST_FROM {
            PinnedHost::alloc(bytes)?
        } else {
            PinnedHost::register(bytes, progress)?
        };
        progress(bytes, bytes);
        Ok(pinned)
    }

    /// One cuMemHostAlloc (small buffers, and `new`).
    pub fn alloc(bytes: usize) -> Result<PinnedHost> {
        init()?;
        let mut host = std::ptr::null_mut();
        let flags = sys::CU_MEMHOSTALLOC_DEVICEMAP | sys::CU_MEMHOSTALLOC_PORTABLE;
        // SAFETY: allocates `bytes` of pinned memory in the current context; fails cleanly.
        check(unsafe { sys::cuMemHostAlloc(&mut host, bytes.max(1), flags) }, "cuMemHostAlloc")?;
        let mut pinned = PinnedHost { host, device: 0, bytes, pinning: Pinning::Alloc };
        pinned.device = device_pointer(host)?; // on failure `pinned` is dropped: freed
        Ok(pinned)
    }

    /// The fast path: an anonymous mapping faulted in and registered chunk by chunk by
    /// several threads, each with the caller's context current.
    fn register(bytes: usize, progress: &mut dyn FnMut(usize, usize)) -> Result<PinnedHost> {
        let mut ctx = std::ptr::null_mut();
        // SAFETY: writes the calling thread's current context.
        check(unsafe { sys::cuCtxGetCurrent(&mut ctx) }, "cuCtxGetCurrent")?;
        if ctx.is_null() {
            return Err(Error::invalid("pinning host memory needs a current CUDA context"));
        }
        let mapped = bytes.div_ceil(HUGE_PAGE) * HUGE_PAGE;
        // SAFETY: a fresh private anonymous mapping; the result is checked.
        let host = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if host == libc::MAP_FAILED {
            return Err(Error::cuda(format!(
                "cannot map {:.2} MiB of host memory to pin: {}",
                mapped as f64 / (1 << 20) as f64,
                std::io::Error::last_os_error()
            )));
        }
        // Huge pages where the system has them: 512 times fewer faults and pages to pin.
        // Advice only; a system without them pins 4 KiB pages.
        // SAFETY: advice on the mapping made above.
        unsafe { libc::madvise(host, mapped, libc::MADV_HUGEPAGE) };
        let n_chunks = mapped.div_ceil(CHUNK);
        let threads =
            std::thread::available_parallelism().map_or(4, |n| n.get()).clamp(1, MAX_THREADS).min(n_chunks);
        let (next, done, failed) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicBool::new(false));
        let registered: Vec<AtomicBool> = (0..n_chunks).map(|_| AtomicBool::new(false)).collect();
        let errors = Mutex::new(Vec::new());
        let (base, ctx) = (host as usize, ctx as usize); // addresses: plain values cross threads
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    // SAFETY: `ctx` is the caller's live context; making it current on this
                    // worker thread affects this thread only.
                    if let Err(e) =
                        check(unsafe { sys::cuCtxSetCurrent(ctx as sys::CUcontext) }, "cuCtxSetCurrent")
                    {
                        errors.lock().unwrap().push(e);
                        failed.store(true, Ordering::Relaxed);
                        return;
                    }
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n_chunks || failed.load(Ordering::Relaxed) {
                            return;
                        }
                        let start = base + i * CHUNK;
                        let len = CHUNK.min(mapped - i * CHUNK);
                        // First touch: a write per page faults it in on this thread.
                        for page in (0..len).step_by(4096) {
                            // SAFETY: inside the mapping, which nothing else uses yet.
                            unsafe { std::ptr::write_volatile((start + page) as *mut u8, 0) };
                        }
                        let flags = sys::CU_MEMHOSTREGISTER_DEVICEMAP | sys::CU_MEMHOSTREGISTER_PORTABLE;
                        // SAFETY: a page-aligned range of the mapping, registered once.
                        let r = unsafe { sys::cuMemHostRegister_v2(start as *mut c_void, len, flags) };
                        match check(r, "cuMemHostRegister") {
                            Ok(()) => {
                                registered[i].store(true, Ordering::Release);
                                done.fetch_add(len, Ordering::Relaxed);
                            }
                            Err(e) => {
                                errors.lock().unwrap().push(e);
                                failed.store(true, Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                });
            }
            // this thread reports progress while the workers pin
            let mut last = usize::MAX;
            while !failed.load(Ordering::Relaxed) && done.load(Ordering::Relaxed) < mapped {
                let now = done.load(Ordering::Relaxed).min(bytes);
                if now != last {
                    progress(now, bytes);
                    last = now;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        if let Some(e) = errors.into_inner().unwrap().into_iter().next() {
            unregister(host, mapped, |i| registered[i].load(Ordering::Acquire));
            // SAFETY: the mapping made above, no longer registered or used.
            unsafe { libc::munmap(host, mapped) };
            return Err(Error::cuda(format!(
                "cannot pin {:.2} MiB of host memory: {e}",
                bytes as f64 / (1 << 20) as f64
            )));
        }
        // from here on, dropping it unregisters every chunk and unmaps
        let mut pinned = PinnedHost { host, device: 0, bytes, pinning: Pinning::Registered { mapped } };
        // The kernels read the buffer at one address across its chunks: that needs every
        // chunk mapped at its host address (unified addressing).
        for i in 0..n_chunks {
            let chunk = (base + i * CHUNK) as *mut c_void;
            if device_pointer(chunk)? != chunk as CUdeviceptr {
                return Err(Error::cuda(
                    "pinned host memory is not mapped at its host address (no unified addressing)",
                ));
            }
        }
        pinned.device = host as CUdeviceptr;
        Ok(pinned)
    }

    /// Gives the buffer to C: kept in the registry until `free_raw`.
    pub fn into_raw(self) -> (*mut c_void, CUdeviceptr) {
        let (host, device) = (self.host, self.device);
        registry().lock().unwrap().insert(host as usize, self);
        (host, device)
    }

    /// Frees a buffer given to C by `into_raw`; any other pointer is refused.
    pub fn free_raw(host: *mut c_void) -> Result<()> {
        // taken out under the lock, unpinned after it (unregistering tens of GiB takes time)
        let found = registry().lock().unwrap().remove(&(host as usize));
        match found {
            Some(pinned) => {
                drop(pinned);
                Ok(())
            }
            None => Err(Error::invalid(format!(
                "{host:p} is not pinned memory from pariskv_host_alloc (or was freed)"
            ))),
        }
    }
}

impl Drop for PinnedHost {
    fn drop(&mut self) {
        match self.pinning {
            // SAFETY: frees the allocation made in `alloc`, once.
            Pinning::Alloc => unsafe {
                sys::cuMemFreeHost(self.host);
            },
            Pinning::Registered { mapped } => {
                unregister(self.host, mapped, |_| true);
                // SAFETY: the mapping made in `register`, unregistered above, once.
                unsafe { libc::munmap(self.host, mapped) };
            }
        }
    }
}

fn registry() -> &'static Mutex<HashMap<usize, PinnedHost>> {
    static REGISTRY: OnceLock<Mutex<HashMap<usize, PinnedHost>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Unregisters the chunks of a mapping for which `was` is true.
fn unregister(host: *mut c_void, mapped: usize, was: impl Fn(usize) -> bool) {
    for i in 0..mapped.div_ceil(CHUNK) {
        if was(i) {
            // SAFETY: the chunk was registered by `register` and is unregistered once.
            unsafe { sys::cuMemHostUnregister((host as usize + i * CHUNK) as *mut c_void) };
        }
    }
}

/// The device address of pinned memory at `host`.
fn device_pointer(host: *mut c_void) -> Result<CUdeviceptr> {
    let mut device = 0;
    // SAFETY: `host` is pinned with DEVICEMAP (allocated or registered).
    check(unsafe { sys::cuMemHostGetDevicePointer_v2(&mut device, host, 0) }, "cuMemHostGetDevicePointer")?;
    Ok(device)
}
