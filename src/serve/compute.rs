//! A bounded pool of ranking threads between the async IO threads and the ranking code.
//!
//! Ranking is CPU work of ~0.1 ms. Run inline on the async workers, a saturated server stops
//! reading its sockets and the excess waits unread in TCP and HTTP/2 buffers, where no limit
//! can refuse it, until clients time out. With ranking on its own threads the IO threads keep
//! reading, and a call that finds the queue full is refused at once with `RESOURCE_EXHAUSTED`.

use std::panic::AssertUnwindSafe;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("ranking queue full")]
    Full,
    #[error("ranking job failed")]
    Lost,
}

/// Fixed threads pulling jobs from one bounded queue. Dropping the pool stops the threads once
/// the queue drains.
#[derive(Debug)]
pub struct ComputePool {
    sender: crossbeam_channel::Sender<Job>,
}

impl ComputePool {
    pub fn new(threads: usize, queue: usize) -> std::io::Result<Self> {
        let (sender, receiver) = crossbeam_channel::bounded::<Job>(queue.max(1));
        for i in 0..threads.max(1) {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("cobuy-rank-{i}"))
                .spawn(move || {
                    while let Ok(job) = receiver.recv() {
                        // A panicking job drops its reply channel (the caller sees `Lost`); the
                        // thread lives on.
                        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                            tracing::error!("ranking job panicked");
                        }
                    }
                })?;
        }
        Ok(Self { sender })
    }

    /// Runs `f` on a pool thread, or refuses at once when the queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.sender
            .try_send(Box::new(move || {
                let _ = reply.send(f());
            }))
            .map_err(|_| PoolError::Full)?;
        result.await.map_err(|_| PoolError::Lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_refuses_when_full() {
        let pool = std::sync::Arc::new(ComputePool::new(1, 1).expect("pool"));
        assert_eq!(pool.run(|| 2 + 2).await, Ok(4));
        // Block the only thread, fill the one queue slot, then the next call is refused.
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let busy_pool = std::sync::Arc::clone(&pool);
        let busy = tokio::spawn(async move { busy_pool.run(move || blocked.recv().ok()).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let queued = pool.sender.try_send(Box::new(|| {}));
        assert!(queued.is_ok(), "one slot is free");
        assert_eq!(pool.run(|| 1).await, Err(PoolError::Full));
        release.send(()).expect("release");
        assert_eq!(busy.await.expect("join"), Ok(Some(())));
        // Let the filler job drain before the next submission.
        while pool.run(|| ()).await == Err(PoolError::Full) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(
            pool.run(|| -> i32 { panic!("boom") }).await,
            Err(PoolError::Lost)
        );
        assert_eq!(pool.run(|| 7).await, Ok(7), "the thread survives a panic");
    }
}
