//! The threads of an engine's pool working on one step together (llama.cpp's CPU op runs
//! one decode step per (token, KV head) unit, often fewer units than threads).
//!
//! Every thread of the pool calls in with its index; thread 0, the leader, runs the step
//! and hands out its loops over cells or rows (`Team::split`), the others serve those
//! loops until the leader is done. A split publishes the loop in a slot the threads share,
//! meets the others at the engine's barrier, runs thread 0's share, and meets them again
//! once every share is done: a fork and a join, each one barrier. Nothing spins but the
//! engine's own barrier, and the followers take no decision of their own, so any data the
//! leader looks at can steer the step.
//!
//! A panic in a share is caught where it happens and reported by the leader after the
//! join, so that no thread leaves the barrier protocol early.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use crate::error::{Error, Result};

/// One loop handed out: `f(thread, range)` for the threads' shares of `0..n`.
struct Job<'a> {
    n: usize,
    f: &'a (dyn Fn(usize, Range<usize>) + Sync),
}

/// What the team's threads share: the current job (null when the leader is done) and
/// whether a share panicked. Lives in memory all threads see (llama.cpp: the op's work
/// buffer), zeroed before the first call.
#[repr(C)]
pub struct TeamSlot {
    job: AtomicPtr<()>,
    failed: AtomicBool,
}

impl TeamSlot {
    pub const fn new() -> TeamSlot {
        TeamSlot { job: AtomicPtr::new(std::ptr::null_mut()), failed: AtomicBool::new(false) }
    }
}

impl Default for TeamSlot {
    fn default() -> TeamSlot {
        TeamSlot::new()
    }
}

/// One thread's view of its team.
pub struct Team<'a> {
    pub ith: usize,
    pub nth: usize,
    barrier: &'a (dyn Fn() + Sync),
    slot: &'a TeamSlot,
}

/// Thread t's share of `0..n`: contiguous, sizes differing by at most one.
pub fn share(n: usize, nth: usize, t: usize) -> Range<usize> {
    let (base, extra) = (n / nth, n % nth);
    let start = t * base + t.min(extra);
    start..start + base + usize::from(t < extra)
}

impl<'a> Team<'a> {
    pub fn new(
        ith: usize,
        nth: usize,
        barrier: &'a (dyn Fn() + Sync),
        slot: &'a TeamSlot,
    ) -> Result<Team<'a>> {
        if nth == 0 || ith >= nth {
            return Err(Error::invalid(format!("team: thread {ith} of {nth}")));
        }
        Ok(Team { ith, nth, barrier, slot })
    }

    /// A team of one (splits run inline; the slot is never touched).
    pub fn solo() -> Team<'static> {
        static SLOT: TeamSlot = TeamSlot::new();
        const NO_BARRIER: &(dyn Fn() + Sync) = &|| {};
        Team { ith: 0, nth: 1, barrier: NO_BARRIER, slot: &SLOT }
    }

    pub fn is_leader(&self) -> bool {
        self.ith == 0
    }

    /// Leader: runs `f(thread, range)` over the team's shares of `0..n` and returns when
    /// every share is done. Shares may be empty.
    pub fn split(&self, n: usize, f: &(dyn Fn(usize, Range<usize>) + Sync)) {
        debug_assert!(self.is_leader());
        if self.nth == 1 {
            f(0, 0..n);
            return;
        }
        let job = Job { n, f };
        self.slot.job.store(&job as *const Job as *mut (), Ordering::Release);
        (self.barrier)();
        self.run_share(&job);
        (self.barrier)();
    }

    /// Leader: ends the step for the followers. Every exit of the leader's step calls it
    /// (`Team::lead` does). Like a split it is a fork and a join: a follower reads the slot
    /// only between the two, so the leader never overwrites it (with its next call's first
    /// job) before every follower has read it.
    fn finish(&self) {
        if self.nth > 1 {
            self.slot.job.store(std::ptr::null_mut(), Ordering::Release);
            (self.barrier)();
            (self.barrier)();
        }
    }

    /// Runs the leader's step `step` (which may `split`), then releases the followers, or
    /// serves the leader's splits until it is done. The leader returns the step's result
    /// (a panic in any share as an error), a follower `None`.
    pub fn lead<T>(&self, step: impl FnOnce() -> Result<T>) -> Option<Result<T>> {
        if !self.is_leader() {
            self.serve();
            return None;
        }
        if self.nth > 1 {
            self.slot.failed.store(false, Ordering::Relaxed);
        }
        let out = catch_unwind(AssertUnwindSafe(step));
        self.finish();
        Some(match out {
            _ if self.nth > 1 && self.slot.failed.load(Ordering::Acquire) => {
                Err(Error::internal("a thread of the team panicked in a share of the step"))
            }
            Ok(r) => r,
            Err(_) => Err(Error::internal("the leader of the team panicked in the step")),
        })
    }

    /// Follower: runs its share of each job until the leader publishes none.
    fn serve(&self) {
        loop {
            (self.barrier)();
            let job = self.slot.job.load(Ordering::Acquire) as *const Job;
            if job.is_null() {
                (self.barrier)();
                return;
            }
            // SAFETY: the leader published a pointer to a `Job` on its stack and stays in
            // `split` (keeping it alive) until the barrier after this share.
            self.run_share(unsafe { &*job });
            (self.barrier)();
        }
    }

    fn run_share(&self, job: &Job) {
        let range = share(job.n, self.nth, self.ith);
        if catch_unwind(AssertUnwindSafe(|| (job.f)(self.ith, range))).is_err() {
            self.slot.failed.store(true, Ordering::Release);
        }
    }
}

/// A buffer the team's threads write in disjoint parts during one split (each writes only
/// what its share names), read by anyone after the join.
pub struct Parts<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: `Parts` hands out only the parts a caller names, under the contract of `part`:
// concurrent parts never overlap.
unsafe impl<T: Send> Sync for Parts<T> {}
unsafe impl<T: Send> Send for Parts<T> {}

impl<T> Parts<T> {
    pub fn new(v: &mut [T]) -> Parts<T> {
        Parts { ptr: v.as_mut_ptr(), len: v.len() }
    }

    /// Elements `range`, writable.
    ///
    /// # Safety
    /// No other reference to these elements may be alive at the same time (in a split:
    /// every thread names a range no other thread names), and the buffer `new` took must
    /// outlive the returned slice without being moved or resized.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn part(&self, range: Range<usize>) -> &mut [T] {
        assert!(range.start <= range.end && range.end <= self.len, "part {range:?} of {}", self.len);
        // SAFETY: in bounds (checked above); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Barrier;

    /// Runs `body(team)` on `nth` threads meeting at one `std::sync::Barrier`.
    pub(crate) fn with_team<R: Send>(nth: usize, body: impl Fn(&Team) -> R + Sync) -> Vec<R> {
        let barrier = Barrier::new(nth);
        let wait = || {
            barrier.wait();
        };
        let slot = TeamSlot::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..nth)
                .map(|t| {
                    let (wait, slot, body) = (&wait, &slot, &body);
                    s.spawn(move || body(&Team::new(t, nth, wait, slot).unwrap()))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn shares_cover_the_range_once() {
        for n in [0, 1, 5, 64, 1001] {
            for nth in 1..=7 {
                let all: Vec<usize> = (0..nth).flat_map(|t| share(n, nth, t)).collect();
                assert_eq!(all, (0..n).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn leader_steers_and_every_share_runs_once() {
        for nth in 1..=4 {
            let out = with_team(nth, |team| {
                team.lead(|| {
                    let mut v = vec![0usize; 1000];
                    let parts = Parts::new(&mut v);
                    // data-dependent steering: the second loop's length comes from the first
                    for round in 1..=3 {
                        team.split(v.len(), &|_, r| {
                            // SAFETY: shares are disjoint
                            for x in unsafe { parts.part(r) } {
                                *x += round;
                            }
                        });
                    }
                    let total = AtomicUsize::new(0);
                    team.split(v.len() / 2, &|_, r| {
                        total.fetch_add(r.len(), Ordering::Relaxed);
                    });
                    Ok((v.iter().sum::<usize>(), total.into_inner()))
                })
            });
            let lead = out[0].as_ref().unwrap().as_ref().unwrap();
            assert_eq!(*lead, (6000, 500), "{nth} threads");
            assert!(out[1..].iter().all(Option::is_none));
        }
    }

    /// Calls back to back, as an engine's op makes them: no follower may miss the end of
    /// one call and take the next call's first job for this one's (a finish with one
    /// barrier failed this within a few hundred calls).
    #[test]
    fn back_to_back_calls_stay_in_step() {
        for nth in [2, 3, 5] {
            let out = with_team(nth, |team| {
                let mut sums = Vec::new();
                for call in 0..2000usize {
                    let r = team.lead(|| {
                        let total = AtomicUsize::new(0);
                        team.split(call % 7 + 1, &|_, r| {
                            total.fetch_add(r.len(), Ordering::Relaxed);
                        });
                        Ok(total.into_inner())
                    });
                    if let Some(r) = r {
                        sums.push(r.unwrap());
                    }
                }
                sums
            });
            let want: Vec<usize> = (0..2000).map(|c| c % 7 + 1).collect();
            assert_eq!(out[0], want, "{nth} threads");
        }
    }

    #[test]
    fn a_panicking_share_is_an_error_not_a_hang() {
        for nth in [1, 3] {
            let out = with_team(nth, |team| {
                team.lead(|| {
                    team.split(10, &|t, _| {
                        if t == nth - 1 {
                            panic!("share {t}");
                        }
                    });
                    Ok(())
                })
            });
            assert!(out[0].as_ref().unwrap().is_err(), "{nth} threads");
        }
    }
}
