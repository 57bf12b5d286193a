//! The CUDA driver, loaded at run time (cudarc, dynamic loading): checked calls, the
//! kernels' module per context, launches on a caller's stream, device buffers. All raw
//! driver calls of the library are here, each in a small `unsafe` block.

use std::collections::HashMap;
use std::ffi::{c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use cudarc::driver::sys;

use super::kernels::{Kernel, ALL_KERNELS, ATTEND, ATT_WARPS, GROUP_ESTIMATE};
use crate::error::{Error, Result};

pub use sys::{CUcontext, CUdeviceptr, CUstream};

/// A CUDA stream to launch on (ggml's `cudaStream_t` is a `CUstream`). Creating one from a
/// raw handle is the unsafe step; everything that takes a `Stream` can then rely on it.
#[derive(Clone, Copy, Debug)]
pub struct Stream(CUstream);

impl Stream {
    /// The legacy default stream of the thread's current context.
    pub fn null() -> Stream {
        Stream(std::ptr::null_mut())
    }

    /// # Safety
    /// `raw` must be a live stream (or null) and stay alive while work launched on it runs.
    pub unsafe fn from_raw(raw: CUstream) -> Stream {
        Stream(raw)
    }

    pub fn raw(&self) -> CUstream {
        self.0
    }
}

/// A stream created here, destroyed on drop (graph capture needs one: the legacy default
/// stream cannot be captured).
pub struct OwnedStream(CUstream);

impl OwnedStream {
    pub fn new() -> Result<OwnedStream> {
        let mut s = std::ptr::null_mut();
        let flags = sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32;
        // SAFETY: creates a stream in the current context into `s`.
        check(unsafe { sys::cuStreamCreate(&mut s, flags) }, "cuStreamCreate")?;
        Ok(OwnedStream(s))
    }

    pub fn stream(&self) -> Stream {
        Stream(self.0)
    }
}

impl Drop for OwnedStream {
    fn drop(&mut self) {
        // SAFETY: destroys the stream created in `new`, once.
        unsafe { sys::cuStreamDestroy_v2(self.0) };
    }
}

/// Launches recorded once from a stream and replayed as a CUDA graph, as llama.cpp's CUDA
/// backend does with a decode step: whatever is captured must not allocate, synchronise or
/// read back, and replays see only what changed in device memory.
pub struct Graph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
}

impl Graph {
    /// Captures the launches `record` makes on `stream` (not the null stream).
    pub fn capture(stream: &Stream, record: impl FnOnce() -> Result<()>) -> Result<Graph> {
        let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        // SAFETY: the stream is live (the promise of `Stream`).
        check(unsafe { sys::cuStreamBeginCapture_v2(stream.raw(), mode) }, "cuStreamBeginCapture")?;
        let recorded = record();
        let mut graph = std::ptr::null_mut();
        // SAFETY: ends the capture begun above (always, so the stream stays usable).
        let ended = check(unsafe { sys::cuStreamEndCapture(stream.raw(), &mut graph) }, "cuStreamEndCapture");
        if let Err(e) = recorded.and(ended) {
            if !graph.is_null() {
                // SAFETY: destroys the graph the capture made.
                unsafe { sys::cuGraphDestroy(graph) };
            }
            return Err(e);
        }
        let mut exec = std::ptr::null_mut();
        // SAFETY: `graph` is the captured graph; `exec` receives its executable form.
        if let Err(e) =
            check(unsafe { sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0) }, "cuGraphInstantiate")
        {
            // SAFETY: as above.
            unsafe { sys::cuGraphDestroy(graph) };
            return Err(e);
        }
        Ok(Graph { graph, exec })
    }

    pub fn launch(&self, stream: &Stream) -> Result<()> {
        // SAFETY: live executable graph and stream.
        check(unsafe { sys::cuGraphLaunch(self.exec, stream.raw()) }, "cuGraphLaunch")
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: destroys what `capture` created, once.
        unsafe {
            sys::cuGraphExecDestroy(self.exec);
            sys::cuGraphDestroy(self.graph);
        }
    }
}

/// The embedded fatbin (build.rs).
static FATBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pariskv.fatbin"));

/// Turns a driver result into an error carrying the driver's own name and message.
pub fn check(result: sys::CUresult, what: &str) -> Result<()> {
    if result == sys::CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    let (mut name, mut text) = (std::ptr::null(), std::ptr::null());
    // SAFETY: both calls only write a pointer to a static string owned by the driver.
    unsafe {
        sys::cuGetErrorName(result, &mut name);
        sys::cuGetErrorString(result, &mut text);
    }
    let show = |p: *const std::ffi::c_char| {
        // SAFETY: non-null results point at NUL-terminated static strings of the driver.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    };
    Err(Error::cuda(format!(
        "{what}: {} ({})",
        show(name).unwrap_or_else(|| format!("{result:?}")),
        show(text).unwrap_or_default()
    )))
}

/// Whether a CUDA driver can be loaded and initialised, and sees a GPU.
pub fn available() -> bool {
    init().is_ok()
}

/// Loads and initialises the driver once; later calls return the first outcome.
pub fn init() -> Result<()> {
    static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        // SAFETY: probing for the library has no preconditions.
        if !unsafe { sys::is_culib_present() } {
            return Err("no CUDA driver library (libcuda.so) could be loaded".into());
        }
        // SAFETY: cuInit may be called any number of times from any thread.
        check(unsafe { sys::cuInit(0) }, "cuInit").map_err(|e| e.message)?;
        let mut n = 0;
        // SAFETY: writes the device count into `n`.
        check(unsafe { sys::cuDeviceGetCount(&mut n) }, "cuDeviceGetCount").map_err(|e| e.message)?;
        if n == 0 {
            return Err("the CUDA driver sees no GPU".into());
        }
        Ok(())
    })
    .clone()
    .map_err(Error::cuda)
}

/// The kernels loaded into one context.
pub struct Module {
    functions: HashMap<&'static str, sys::CUfunction>,
    /// The context's device has thread-block clusters and programmatic dependent launch
    /// (compute capability 9.0 on).
    sm90: bool,
    /// Each attention kernel's blocks the whole GPU holds at once (`resident_blocks`).
    resident: HashMap<&'static str, usize>,
}

/// Whether launches may use thread-block clusters where the device has them (the default);
/// off, every stage takes its one-block kernels, so that tests can check those on any GPU.
static CLUSTERS_ALLOWED: AtomicBool = AtomicBool::new(true);

/// Allows or forbids thread-block clusters for launches from now on, process-wide (tests
/// and benchmarks compare both variants; nothing else needs it).
pub fn allow_clusters(allowed: bool) {
    CLUSTERS_ALLOWED.store(allowed, Ordering::Relaxed);
}

/// Whether launches may be programmatic dependent launches where the device has them (the
/// default; see `launch`).
static PROGRAMMATIC_ALLOWED: AtomicBool = AtomicBool::new(true);

/// Allows or forbids programmatic dependent launch from now on, process-wide (tests and
/// benchmarks compare both variants; nothing else needs it).
pub fn allow_programmatic_launch(allowed: bool) {
    PROGRAMMATIC_ALLOWED.store(allowed, Ordering::Relaxed);
}

// SAFETY: a CUfunction is a handle valid in every thread for the context's lifetime; the
// map is never written after construction.
unsafe impl Send for Module {}
unsafe impl Sync for Module {}

impl Module {
    pub fn function(&self, k: Kernel) -> sys::CUfunction {
        self.functions[k.name]
    }

    /// How many blocks of attention kernel `k` (ATT_WARPS warps, its largest dynamic shared
    /// memory) the GPU runs at once: a launch of more runs in waves, each wave's blocks
    /// paying the whole latency chain of a block again.
    pub fn resident_blocks(&self, k: Kernel) -> usize {
        self.resident[k.name]
    }

    /// Whether a stage may launch its cluster kernel (kernels/topk_cluster.cuh).
    pub fn clusters(&self) -> bool {
        self.sm90 && CLUSTERS_ALLOWED.load(Ordering::Relaxed)
    }

    /// Whether kernels are launched as programmatic dependent launches (`launch`).
    pub fn programmatic(&self) -> bool {
        self.sm90 && PROGRAMMATIC_ALLOWED.load(Ordering::Relaxed)
    }
}

/// The compute capability's major number of the current context's device.
fn compute_major() -> Result<i32> {
    device_attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
}

/// An attribute of the current context's device.
fn device_attribute(attr: sys::CUdevice_attribute) -> Result<i32> {
    let mut dev: sys::CUdevice = 0;
    // SAFETY: writes the current context's device.
    check(unsafe { sys::cuCtxGetDevice(&mut dev) }, "cuCtxGetDevice")?;
    let mut value = 0;
    // SAFETY: `dev` is a device ordinal the driver returned; writes one int.
    check(unsafe { sys::cuDeviceGetAttribute(&mut value, attr, dev) }, "cuDeviceGetAttribute")?;
    Ok(value)
}

/// The module of the context `stream` belongs to (the null stream: the current context),
/// loaded on first use in each context and kept for the process's life.
pub fn module_for(stream: &Stream) -> Result<&'static Module> {
    static MODULES: OnceLock<Mutex<HashMap<usize, &'static Module>>> = OnceLock::new();
    let ctx = context_of(stream)?;
    let mut modules = MODULES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = modules.get(&(ctx as usize)) {
        return Ok(m);
    }
    let _guard = CurrentContext::push(ctx)?;
    // The driver wants the image 8-byte aligned; include_bytes! promises nothing.
    let mut image = vec![0u64; FATBIN.len().div_ceil(8)];
    // SAFETY: `image` has at least FATBIN.len() bytes; plain byte copy.
    unsafe { std::ptr::copy_nonoverlapping(FATBIN.as_ptr(), image.as_mut_ptr() as *mut u8, FATBIN.len()) };
    let mut module: sys::CUmodule = std::ptr::null_mut();
    // SAFETY: `image` is a complete fatbin produced by nvcc, alive during the call.
    check(
        unsafe { sys::cuModuleLoadData(&mut module, image.as_ptr() as *const c_void) },
        "cuModuleLoadData",
    )?;
    let mut functions = HashMap::new();
    let estimates = GROUP_ESTIMATE.iter().map(|(_, k)| k);
    for k in ALL_KERNELS.iter().chain(estimates).chain(ATTEND.iter().flat_map(|v| [&v.plain, &v.cached])) {
        let name = CString::new(k.name).unwrap();
        let mut f: sys::CUfunction = std::ptr::null_mut();
        // SAFETY: `module` was loaded above; `name` is NUL-terminated.
        check(unsafe { sys::cuModuleGetFunction(&mut f, module, name.as_ptr()) }, k.name)?;
        if k.dynamic_smem > 48 * 1024 {
            let attr = sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
            // SAFETY: `f` is a function of the loaded module.
            check(unsafe { sys::cuFuncSetAttribute(f, attr, k.dynamic_smem as i32) }, k.name)?;
        }
        functions.insert(k.name, f);
    }
    let sm90 = compute_major()? >= 9;
    let sms = device_attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
    let mut resident = HashMap::new();
    for k in ATTEND.iter().flat_map(|v| [&v.plain, &v.cached]) {
        let (f, threads, mut per_sm) = (functions[k.name], (ATT_WARPS * 32) as i32, 0);
        // SAFETY: `f` is a function of the loaded module; writes one int.
        let r = unsafe {
            sys::cuOccupancyMaxActiveBlocksPerMultiprocessor(&mut per_sm, f, threads, k.dynamic_smem)
        };
        check(r, "cuOccupancyMaxActiveBlocksPerMultiprocessor")?;
        resident.insert(k.name, (per_sm.max(1) * sms.max(1)) as usize);
    }
    let m: &'static Module = Box::leak(Box::new(Module { functions, sm90, resident }));
    modules.insert(ctx as usize, m);
    Ok(m)
}

/// Makes a context current for a scope and restores the previous one after.
struct CurrentContext {
    pushed: bool,
}

impl CurrentContext {
    /// `ctx` comes from the driver (a stream's context), so it is live.
    fn push(ctx: CUcontext) -> Result<CurrentContext> {
        let mut cur: CUcontext = std::ptr::null_mut();
        // SAFETY: writes the current context.
        check(unsafe { sys::cuCtxGetCurrent(&mut cur) }, "cuCtxGetCurrent")?;
        if cur == ctx {
            return Ok(CurrentContext { pushed: false });
        }
        // SAFETY: `ctx` is a live context (it owns a stream the caller passed, or is primary).
        check(unsafe { sys::cuCtxPushCurrent_v2(ctx) }, "cuCtxPushCurrent")?;
        Ok(CurrentContext { pushed: true })
    }
}

impl Drop for CurrentContext {
    fn drop(&mut self) {
        if self.pushed {
            let mut popped: CUcontext = std::ptr::null_mut();
            // SAFETY: pops the context pushed in `push` on this thread.
            unsafe { sys::cuCtxPopCurrent_v2(&mut popped) };
        }
    }
}

/// Launches `k` on `stream` with kernel parameters `args` (pointers to each argument).
/// Where the module allows it (sm_90 on), as a programmatic dependent launch: the kernel is
/// scheduled as the blocks of the one before it in the stream exit, and waits for it to
/// finish in hardware (every kernel begins with `pk_grid_order`, kernels/common.cuh), which
/// hides the gap between the launches of a step's chain; captured into a CUDA graph as a
/// programmatic edge.
pub fn launch(
    module: &Module,
    k: Kernel,
    grid: (u32, u32, u32),
    block: u32,
    smem: u32,
    stream: &Stream,
    args: &mut [*mut c_void],
) -> Result<()> {
    if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
        return Ok(());
    }
    // SAFETY (both calls): `args` holds one pointer per kernel parameter, each to a live
    // value of the parameter's type (the callers in this module build them next to the
    // launch); the grid and block fit the kernel's limits; `stream` is live (the promise of
    // `Stream`); the attribute and the config outlive the call.
    let r = if module.programmatic() {
        // SAFETY: a zeroed attribute value is a valid plain-data union
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: grid.0,
            gridDimY: grid.1,
            gridDimZ: grid.2,
            blockDimX: block,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: smem,
            hStream: stream.raw(),
            attrs: &mut attr,
            numAttrs: 1,
        };
        unsafe { sys::cuLaunchKernelEx(&config, module.function(k), args.as_mut_ptr(), std::ptr::null_mut()) }
    } else {
        unsafe {
            sys::cuLaunchKernel(
                module.function(k),
                grid.0,
                grid.1,
                grid.2,
                block,
                1,
                1,
                smem,
                stream.raw(),
                args.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
    };
    check(r, k.name)
}

/// `n` values read from device memory at `ptr` (synchronous; after the work writing them).
///
/// # Safety
/// `ptr` must address `n` readable values of `T` in the current context's device memory (or
/// memory the device maps).
pub unsafe fn read_raw<T: Copy + Default>(ptr: CUdeviceptr, n: usize) -> Result<Vec<T>> {
    let mut out = vec![T::default(); n];
    let bytes = std::mem::size_of_val(&out[..]);
    // SAFETY: `out` has `bytes` writable bytes; the caller vouches for `ptr`.
    check(unsafe { sys::cuMemcpyDtoH_v2(out.as_mut_ptr() as *mut c_void, ptr, bytes) }, "cuMemcpyDtoH")?;
    Ok(out)
}

/// Sets `count` 32-bit words at `ptr` to `value`, in order on `stream` (graph-safe).
pub fn memset_u32(ptr: CUdeviceptr, value: u32, count: usize, stream: &Stream) -> Result<()> {
    if count == 0 {
        return Ok(());
    }
    // SAFETY: the caller's `count` words at `ptr` are device memory of this context.
    check(unsafe { sys::cuMemsetD32Async(ptr, value, count, stream.raw()) }, "cuMemsetD32Async")
}

/// Device memory owned by Rust, freed on drop (for tests, tools and the index handle).
pub struct DeviceBuffer {
    pub ptr: CUdeviceptr,
    pub bytes: usize,
}

impl DeviceBuffer {
    pub fn new(bytes: usize) -> Result<DeviceBuffer> {
        let mut ptr: CUdeviceptr = 0;
        // SAFETY: allocates in the current context; `ptr` receives the address.
        check(unsafe { sys::cuMemAlloc_v2(&mut ptr, bytes.max(1)) }, "cuMemAlloc")?;
        Ok(DeviceBuffer { ptr, bytes })
    }

    pub fn from_slice<T: Copy>(data: &[T]) -> Result<DeviceBuffer> {
        let b = DeviceBuffer::new(std::mem::size_of_val(data))?;
        b.write(data)?;
        Ok(b)
    }

    pub fn write<T: Copy>(&self, data: &[T]) -> Result<()> {
        let n = std::mem::size_of_val(data);
        assert!(n <= self.bytes, "write of {n} bytes into {}", self.bytes);
        // SAFETY: `data` is `n` readable bytes; the buffer holds at least `n`.
        check(unsafe { sys::cuMemcpyHtoD_v2(self.ptr, data.as_ptr() as *const c_void, n) }, "cuMemcpyHtoD")
    }

    pub fn read<T: Copy + Default>(&self, n: usize) -> Result<Vec<T>> {
        self.read_at(0, n)
    }

    /// `data` written `offset` bytes into the buffer.
    pub fn write_at<T: Copy>(&self, offset: usize, data: &[T]) -> Result<()> {
        let n = std::mem::size_of_val(data);
        assert!(offset + n <= self.bytes, "write of {n} bytes at {offset} into {}", self.bytes);
        // SAFETY: `data` is `n` readable bytes; the buffer holds `offset + n`.
        let r = unsafe { sys::cuMemcpyHtoD_v2(self.ptr + offset as u64, data.as_ptr() as *const c_void, n) };
        check(r, "cuMemcpyHtoD")
    }

    /// `n` values read from `offset` bytes into the buffer.
    pub fn read_at<T: Copy + Default>(&self, offset: usize, n: usize) -> Result<Vec<T>> {
        let mut out = vec![T::default(); n];
        let bytes = std::mem::size_of_val(&out[..]);
        assert!(offset + bytes <= self.bytes, "read of {bytes} bytes at {offset} from {}", self.bytes);
        // SAFETY: `out` has `bytes` writable bytes; the buffer holds `offset + bytes`.
        check(
            unsafe { sys::cuMemcpyDtoH_v2(out.as_mut_ptr() as *mut c_void, self.ptr + offset as u64, bytes) },
            "cuMemcpyDtoH",
        )?;
        Ok(out)
    }

    /// Copies `bytes` from `src` at `src_offset` to this buffer at `offset`, in order with
    /// the null stream's work.
    pub fn copy_from(
        &self,
        offset: usize,
        src: &DeviceBuffer,
        src_offset: usize,
        bytes: usize,
    ) -> Result<()> {
        assert!(offset + bytes <= self.bytes && src_offset + bytes <= src.bytes, "device copy out of range");
        // SAFETY: both ranges lie inside live allocations (checked above).
        let r = unsafe { sys::cuMemcpyDtoD_v2(self.ptr + offset as u64, src.ptr + src_offset as u64, bytes) };
        check(r, "cuMemcpyDtoD")
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: frees the allocation made in `new`, once.
        unsafe { sys::cuMemFree_v2(self.ptr) };
    }
}

/// The primary context of a device made current on this thread (for tests and tools that
/// own no context of their own).
pub fn use_primary_context(ordinal: i32) -> Result<CUcontext> {
    init()?;
    let (mut dev, mut ctx) = (0, std::ptr::null_mut());
    // SAFETY: plain getters/retain on a valid ordinal (checked by the driver).
    unsafe {
        check(sys::cuDeviceGet(&mut dev, ordinal), "cuDeviceGet")?;
        check(sys::cuDevicePrimaryCtxRetain(&mut ctx, dev), "cuDevicePrimaryCtxRetain")?;
        check(sys::cuCtxSetCurrent(ctx), "cuCtxSetCurrent")?;
    }
    Ok(ctx)
}

/// A device's primary context, retained for the owner's life (the index handle's). Work
/// runs inside `enter`, which makes it current on the calling thread for the scope.
pub struct PrimaryContext {
    ctx: CUcontext,
    dev: sys::CUdevice,
}

// SAFETY: a context handle may be made current on any thread.
unsafe impl Send for PrimaryContext {}

impl PrimaryContext {
    pub fn retain(ordinal: u32) -> Result<PrimaryContext> {
        init()?;
        let mut n = 0;
        // SAFETY: writes the device count into `n`.
        check(unsafe { sys::cuDeviceGetCount(&mut n) }, "cuDeviceGetCount")?;
        if ordinal as i64 >= n as i64 {
            return Err(Error::invalid(format!("CUDA device {ordinal} does not exist ({n} devices)")));
        }
        let (mut dev, mut ctx) = (0, std::ptr::null_mut());
        // SAFETY: plain getter and retain on an ordinal checked above.
        unsafe {
            check(sys::cuDeviceGet(&mut dev, ordinal as i32), "cuDeviceGet")?;
            check(sys::cuDevicePrimaryCtxRetain(&mut ctx, dev), "cuDevicePrimaryCtxRetain")?;
        }
        Ok(PrimaryContext { ctx, dev })
    }

    /// Makes the context current until the guard drops (the previous one comes back).
    pub fn enter(&self) -> Result<impl Drop> {
        CurrentContext::push(self.ctx)
    }
}

impl Drop for PrimaryContext {
    fn drop(&mut self) {
        // SAFETY: releases the retain made in `retain`, once.
        unsafe { sys::cuDevicePrimaryCtxRelease_v2(self.dev) };
    }
}

/// Waits for all work in the current context (tests and tools only: never inside a step).
pub fn synchronize() -> Result<()> {
    // SAFETY: no preconditions beyond a current context.
    check(unsafe { sys::cuCtxSynchronize() }, "cuCtxSynchronize")
}

/// The context current on this thread, or the one `stream` belongs to.
pub fn context_of(stream: &Stream) -> Result<CUcontext> {
    init()?;
    let mut ctx: CUcontext = std::ptr::null_mut();
    if stream.raw().is_null() {
        // SAFETY: writes the current context.
        check(unsafe { sys::cuCtxGetCurrent(&mut ctx) }, "cuCtxGetCurrent")?;
    } else {
        // SAFETY: the stream is live (the promise of `Stream`).
        check(unsafe { sys::cuStreamGetCtx(stream.raw(), &mut ctx) }, "cuStreamGetCtx")?;
    }
    if ctx.is_null() {
        return Err(Error::cuda("no CUDA context is current on this thread"));
    }
    Ok(ctx)
}

/// A scope in which `stream`'s context is current (device allocations land there).
pub fn with_stream_context<T>(stream: &Stream, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let ctx = context_of(stream)?;
    let _guard = CurrentContext::push(ctx)?;
    f()
}

/// Times work on a stream with two events (benchmarks only: it synchronises).
pub struct Timer {
    start: sys::CUevent,
    stop: sys::CUevent,
}

impl Timer {
    pub fn new() -> Result<Timer> {
        let (mut start, mut stop) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: creates two events in the current context.
        unsafe {
            check(sys::cuEventCreate(&mut start, 0), "cuEventCreate")?;
            check(sys::cuEventCreate(&mut stop, 0), "cuEventCreate")?;
        }
        Ok(Timer { start, stop })
    }

    pub fn start(&self, stream: &Stream) -> Result<()> {
        // SAFETY: live event and stream.
        check(unsafe { sys::cuEventRecord(self.start, stream.raw()) }, "cuEventRecord")
    }

    /// Milliseconds since `start`, waiting for the stream.
    pub fn stop(&self, stream: &Stream) -> Result<f32> {
        let mut ms = 0.0;
        // SAFETY: live events and stream.
        unsafe {
            check(sys::cuEventRecord(self.stop, stream.raw()), "cuEventRecord")?;
            check(sys::cuEventSynchronize(self.stop), "cuEventSynchronize")?;
            check(sys::cuEventElapsedTime_v2(&mut ms, self.start, self.stop), "cuEventElapsedTime")?;
        }
        Ok(ms)
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: destroys the events created in `new`.
        unsafe {
            sys::cuEventDestroy_v2(self.start);
            sys::cuEventDestroy_v2(self.stop);
        }
    }
}
