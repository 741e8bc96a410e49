//! The executor every task runs on: one `smol::Executor` driven by one thread per core.
//!
//! `smol::spawn` alone runs tasks on a single thread; a camera fanned out to hundreds of
//! viewers wants both cores of a small board.

use std::future::Future;
use std::thread;

use once_cell::sync::Lazy;
use smol::{Executor, Task};

static EXECUTOR: Lazy<Executor<'static>> = Lazy::new(Executor::new);

/// Spawns a task on the daemon's executor. Dropping the returned handle cancels it; call
/// `detach()` to let it run on its own.
pub fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
    EXECUTOR.spawn(future)
}

/// Runs `main` to completion, with helper threads (one per extra core) working on spawned
/// tasks meanwhile. They stop when `main` returns.
pub fn block_on<T>(main: impl Future<Output = T>) -> T {
    let threads = thread::available_parallelism().map_or(1, |n| n.get()).max(1);
    let (stop, stopped) = crate::shutdown::signal();
    let workers: Vec<_> = (1..threads)
        .filter_map(|i| {
            let stopped = stopped.clone();
            thread::Builder::new()
                .name(format!("croissant-{i}"))
                .spawn(move || smol::block_on(EXECUTOR.run(stopped.wait())))
                .ok()
        })
        .collect();
    let result = smol::block_on(EXECUTOR.run(main));
    stop.fire();
    for worker in workers {
        let _ = worker.join();
    }
    result
}
