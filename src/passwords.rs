//! Password checks on one thread with one reusable block of memory.
//!
//! An argon2id check with the recommended parameters fills 19 MiB. Run on the blocking
//! pool, every check allocated that afresh on whichever thread took it, and the allocator
//! kept each thread's copy: three wrong passwords took the daemon from 6 to 65 MB, 40
//! parallel guessers to 360 MB more. Here one thread owns one block, sized for the
//! largest configured hash, and checks one password at a time; a queue of a few waiting
//! checks at most is kept, and beyond it a check is refused as busy rather than queued.

use std::thread;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// Checks waiting beyond this are refused (the caller answers "try again").
const QUEUE: usize = 8;

/// Why a check did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Too many checks are waiting.
    Queue,
}

struct Job {
    password: String,
    hash: String,
    answer: async_channel::Sender<bool>,
}

/// The checker; cheap to share.
#[derive(Debug, Clone)]
pub struct Checker {
    jobs: async_channel::Sender<Job>,
}

impl Checker {
    /// Starts the checking thread, with memory for hashes of up to `max_m_cost` KiB (the
    /// `m=` of the PHC string). The memory is taken on the first check, not before.
    pub fn start(max_m_cost: u32) -> std::io::Result<Checker> {
        let (jobs, queue) = async_channel::bounded::<Job>(QUEUE);
        thread::Builder::new()
            .name("croissant-argon2".into())
            .spawn(move || {
                let mut memory: Vec<Block> = Vec::new();
                while let Ok(job) = queue.recv_blocking() {
                    let matches = check(&job.password, &job.hash, &mut memory, max_m_cost);
                    let _ = job.answer.try_send(matches);
                }
            })?;
        Ok(Checker { jobs })
    }

    /// Whether `password` matches the PHC string `hash`; `Err(Busy)` when too many checks
    /// are already waiting.
    pub async fn check(&self, password: &str, hash: &str) -> Result<bool, Busy> {
        let (answer, answered) = async_channel::bounded(1);
        let job = Job {
            password: password.to_owned(),
            hash: hash.to_owned(),
            answer,
        };
        self.jobs.try_send(job).map_err(|_| Busy::Queue)?;
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
            assert_eq!(checker.check("s3cret", &hash).await, Ok(true));
            assert_eq!(checker.check("wrong", &hash).await, Ok(false));
            assert_eq!(checker.check("s3cret", "not a hash").await, Ok(false));
        });
        // A hash asking for more memory than was configured is refused, not allocated.
        let small = Checker::start(1024).expect("thread");
        assert_eq!(smol::block_on(small.check("s3cret", &hash)), Ok(false));
    }
}
