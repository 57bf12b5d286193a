//! The ownership model of every handle the C ABI gives out (`pariskv_index`,
//! `pariskv_cuda_step`): a handle is an id, never an address that is dereferenced. `*_create`
//! registers the object under a fresh id (never reused in the process) and the caller owns it
//! until `*_free`. Every call looks the handle up, so a freed, never-created or corrupted
//! handle is refused with an error instead of used, a double free is a no-op that says so,
//! and a free racing other calls on the handle waits for none of them and harms none (they
//! hold the object until they return).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};

/// The next handle id, shared by every kind so that no two handles are ever equal; handle
/// values are ids times 16 (aligned, non-null).
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// The live objects of one handle kind, by handle value.
pub struct Registry<T> {
    what: &'static str,
    live: Mutex<Option<HashMap<usize, Arc<T>>>>,
}

impl<T> Registry<T> {
    pub const fn new(what: &'static str) -> Registry<T> {
        Registry { what, live: Mutex::new(None) }
    }

    fn live(&self) -> MutexGuard<'_, Option<HashMap<usize, Arc<T>>>> {
        // the map stays consistent whatever panicked while it was locked
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `value`; the handle C holds for it.
    pub fn register(&self, value: T) -> *mut T {
        let handle = NEXT_ID.fetch_add(1, Ordering::Relaxed) << 4;
        self.live().get_or_insert_with(HashMap::new).insert(handle, Arc::new(value));
        handle as *mut T
    }

    /// The live object a handle names, held for the caller's call.
    pub fn lookup(&self, handle: *const T) -> Result<Arc<T>> {
        if handle.is_null() {
            return Err(Error::invalid(format!("{} is NULL", self.what)));
        }
        self.live().as_ref().and_then(|m| m.get(&(handle as usize)).cloned()).ok_or_else(|| {
            Error::invalid(format!("{} {handle:p} is not a live handle (freed, or never created)", self.what))
        })
    }

    /// Forgets a handle; the object is dropped here, or by the last call still holding it.
    pub fn remove(&self, handle: *const T) -> Result<()> {
        // taken out under the lock, dropped after it
        let removed = self.live().as_mut().and_then(|m| m.remove(&(handle as usize)));
        removed.map(drop).ok_or_else(|| {
            Error::invalid(format!("{} {handle:p} is not a live handle (freed twice?)", self.what))
        })
    }
}
