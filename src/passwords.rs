//! Password checks on one thread with one reusable block of memory.
//!
//! An argon2id check with the recommended parameters fills 19 MiB. Run on the blocking
//! pool, every check allocated that afresh on whichever thread took it, and the allocator
//! kept each thread's copy: three wrong passwords took the daemon from 6 to 65 MB, 40
//! parallel guessers to 360 MB more. Here one thread owns one block, sized for the
//! largest configured hash, and checks one password at a time; two short queues (lanes) of
//! waiting checks are kept, and beyond them a check is refused as busy rather than queued.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use crate::sync::lock;
use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Checks waiting in the guessers' lane beyond this are refused (the caller answers "try
/// again").
const QUEUE: usize = 8;
/// The same for the first lane: longer, since guessers with ever new addresses compete
/// there with the owner, and each check in it is short.
const FIRST_QUEUE: usize = 16;

/// Why a check did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Too many checks are waiting.
    Queue,
}

/// Which checks go first. Guessers fill their own lane; a client with no recent failure
/// (the owner, most of the time) is checked before any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Clients that have not failed lately.
    First,
    /// Clients that have.
    Rest,
}

struct Job {
    password: String,
    hash: String,
    answer: async_channel::Sender<bool>,
}

#[derive(Default)]
struct Lanes {
    first: VecDeque<Job>,
    rest: VecDeque<Job>,
    closed: bool,
}

#[derive(Default)]
struct Queue {
    lanes: Mutex<Lanes>,
    ready: Condvar,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lanes> {
        lock(&self.lanes)
    }

    /// The next job, first lane first; `None` once closed.
    fn next(&self) -> Option<Job> {
        let mut lanes = self.lock();
        loop {
            if lanes.closed {
                return None;
            }
            if let Some(job) = lanes.first.pop_front().or_else(|| lanes.rest.pop_front()) {
                return Some(job);
            }
            lanes = self.ready.wait(lanes).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Stops the thread when the last [`Checker`] goes.
struct Stopper(Arc<Queue>);

impl Drop for Stopper {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.ready.notify_all();
    }
}

/// The checker; cheap to share.
#[derive(Clone)]
pub struct Checker {
    queue: Arc<Queue>,
    _stopper: Arc<Stopper>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker").finish_non_exhaustive()
    }
}

impl Checker {
    /// Starts the checking thread, with memory for hashes of up to `max_m_cost` KiB (the
    /// `m=` of the PHC string). The memory is taken on the first check, not before.
    pub fn start(max_m_cost: u32) -> std::io::Result<Checker> {
        let queue = Arc::new(Queue::default());
        let worker = queue.clone();
        thread::Builder::new()
            .name("croissant-argon2".into())
            .spawn(move || {
                let mut memory: Vec<Block> = Vec::new();
                while let Some(job) = worker.next() {
                    let matches = check(&job.password, &job.hash, &mut memory, max_m_cost);
                    let _ = job.answer.try_send(matches);
                }
            })?;
        Ok(Checker {
            _stopper: Arc::new(Stopper(queue.clone())),
            queue,
        })
    }

    /// Whether `password` matches the PHC string `hash`; `Err(Busy)` when too many checks
    /// are already waiting in `lane`.
    pub async fn check(&self, password: &str, hash: &str, lane: Lane) -> Result<bool, Busy> {
        let (answer, answered) = async_channel::bounded(1);
        let job = Job {
            password: password.to_owned(),
            hash: hash.to_owned(),
            answer,
        };
        {
            let mut lanes = self.queue.lock();
            let (waiting, room) = match lane {
                Lane::First => (&mut lanes.first, FIRST_QUEUE),
                Lane::Rest => (&mut lanes.rest, QUEUE),
            };
            if waiting.len() >= room {
                return Err(Busy::Queue);
            }
            waiting.push_back(job);
        }
        self.queue.ready.notify_one();
        // The thread answers every job it takes; a closed channel means it is gone.
        Ok(answered.recv().await.unwrap_or(false))
    }
}

/// The `m=` (memory in KiB, i.e. blocks) of a PHC string, if it parses.
pub fn memory_cost(hash: &str) -> Option<u32> {
    let phc = PasswordHash::new(hash).ok()?;
    Params::try_from(&phc).ok().map(|p| p.m_cost())
}

/// One check, in `memory` (grown once to what the hash needs, up to `max_m_cost`).
fn check(password: &str, hash: &str, memory: &mut Vec<Block>, max_m_cost: u32) -> bool {
    let Ok(phc) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(&phc) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm.as_str()) else {
        return false;
    };
    let version = match phc.version {
        Some(v) => match Version::try_from(v) {
            Ok(version) => version,
            Err(_) => return false,
        },
        None => Version::default(),
    };
    if params.m_cost() > max_m_cost {
        // Never allocate more than the configured hashes asked for at start.
        return false;
    }
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version, params);
    if argon2
        .hash_password_into_with_memory(
            password.as_bytes(),
            salt.as_ref(),
            &mut out,
            &mut memory[..blocks],
        )
        .is_err()
    {
        return false;
    }
    constant_time_eq(&out, expected.as_bytes())
}

/// Compares without stopping at the first difference, so the time says nothing of how much
/// of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_match_what_argon2_itself_says() {
        let hash = crate::auth::hash_password("s3cret").expect("hash");
        let m = memory_cost(&hash).expect("m");
        assert_eq!(m, 19_456);
        let checker = Checker::start(m).expect("thread");
        smol::block_on(async {
            assert_eq!(checker.check("s3cret", &hash, Lane::First).await, Ok(true));
            assert_eq!(checker.check("wrong", &hash, Lane::Rest).await, Ok(false));
            assert_eq!(
                checker.check("s3cret", "not a hash", Lane::First).await,
                Ok(false)
            );
        });
        // A hash asking for more memory than was configured is refused, not allocated.
        let small = Checker::start(1024).expect("thread");
        assert_eq!(
            smol::block_on(small.check("s3cret", &hash, Lane::First)),
            Ok(false)
        );
    }

    #[test]
    fn the_first_lane_goes_ahead_of_a_full_queue_of_the_rest() {
        let hash = crate::auth::hash_password("s3cret").expect("hash");
        let checker = Checker::start(memory_cost(&hash).expect("m")).expect("thread");
        smol::block_on(async {
            let finished = Arc::new(Mutex::new(Vec::new()));
            let mut guesses = Vec::new();
            for n in 0..(QUEUE + 1) {
                let (checker, hash, finished) = (checker.clone(), hash.clone(), finished.clone());
                guesses.push(smol::spawn(async move {
                    let answer = checker.check("guess", &hash, Lane::Rest).await;
                    finished.lock().expect("lock").push(n);
                    answer
                }));
            }
            // Once the guessers' lane is full (the thread busy with one of them)...
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while checker.queue.lock().rest.len() < QUEUE - 1 {
                assert!(std::time::Instant::now() < deadline, "the guesses never queued");
                smol::Timer::after(std::time::Duration::from_millis(1)).await;
            }
            assert_eq!(checker.check("s3cret", &hash, Lane::First).await, Ok(true));
            let overtaken = finished.lock().expect("lock").len();
            // ...the owner waits for the one in progress at most, never for the lane.
            assert!(overtaken <= 2, "{overtaken} guesses went first");
            let mut busy = 0;
            for guess in guesses {
                busy += usize::from(guess.await == Err(Busy::Queue));
            }
            assert!(busy <= 1, "a lane holds {QUEUE}");
        });
    }
}
