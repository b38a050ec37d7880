//! When a polled worker (SQLite, Redis) looks for jobs: at once when this process enqueues one
//! for its queue, and on a tokio interval for jobs enqueued by other processes.
//!
//! On SQLite a worker's look is an `UPDATE`, which takes the database's one write lock even
//! when it finds nothing, and every step's commit needs that lock: six idle queues looking five
//! times a second made the step batches find the lock taken a dozen times a second. There,
//! [`watch_sqlite_queues`] reads which queues hold due jobs every [`POLL_INTERVAL`] (a read
//! takes no lock) and wakes only their workers; a worker's own interval is a backstop.
//!
//! apalis's own `IntervalStrategy` re-arms its timer without polling it, so a wake-up can be
//! lost: a fetch that completes on its first poll leaves no timer armed, and the worker sleeps
//! until its next heartbeat (30 s). That is why idle queues used to take up to 30 s to start a
//! job. This strategy polls every source until it is pending, so a waker is always registered.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use apalis::prelude::{PollSnapshot, PollStrategy};
use tokio::{
    sync::Notify,
    time::{Interval, MissedTickBehavior},
};
use tokio_util::sync::CancellationToken;

use crate::queue::JobQueue;

/// Look for jobs at most this long after another process enqueued them.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// SQLite: how often a worker looks for jobs by itself, should [`watch_sqlite_queues`]' read
/// fail.
pub const SQLITE_BACKSTOP: Duration = Duration::from_secs(10);

/// SQLite: every [`POLL_INTERVAL`], wake this process's workers of the queues holding due jobs
/// (enqueued by another process, due for a retry, or put back after a worker stopped), until
/// `shutdown`. A job this process enqueues wakes its worker at once without it.
pub async fn watch_sqlite_queues(jobs: JobQueue, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Busy or briefly unreachable: the next tick reads again, and the workers' own
        // backstop interval still runs.
        if let Err(err) = jobs.wake_claimable().await {
            tracing::debug!(error = %err, "cannot read which job queues hold due jobs");
        }
    }
}

type Notified = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// Wakes one worker when its queue is pushed to in this process, and every `period`.
pub struct Wakeup {
    pushed: Arc<Notify>,
    notified: Notified,
    period: Duration,
    /// Created on first poll: a tokio timer needs the runtime, which the monitor provides.
    interval: Option<Interval>,
}

impl Wakeup {
    pub fn new(pushed: Arc<Notify>, period: Duration) -> Self {
        Self {
            notified: Self::arm(&pushed),
            pushed,
            period,
            interval: None,
        }
    }

    fn arm(pushed: &Arc<Notify>) -> Notified {
        let pushed = pushed.clone();
        Box::pin(async move { pushed.notified().await })
    }
}

impl PollStrategy for Wakeup {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let period = self.period;
        let interval = self.interval.get_or_insert_with(|| {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        let mut woke = false;
        // Poll each source until it is pending: that is what registers the waker again.
        while interval.poll_tick(cx).is_ready() {
            woke = true;
        }
        while self.notified.as_mut().poll(cx).is_ready() {
            self.notified = Self::arm(&self.pushed);
            woke = true;
        }
        if woke {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_once(wakeup: &mut Wakeup) -> (Poll<Option<()>>, Arc<std::sync::atomic::AtomicUsize>) {
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let waker = futures::task::waker(Arc::new(CountingWaker(count.clone())));
        let mut cx = Context::from_waker(&waker);
        (wakeup.poll_drive(&mut cx, &PollSnapshot::default()), count)
    }

    struct CountingWaker(Arc<std::sync::atomic::AtomicUsize>);
    impl futures::task::ArcWake for CountingWaker {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Wait (up to 5 s) until `wakes` counts one: the timer fired without another poll.
    async fn woken(wakes: &std::sync::atomic::AtomicUsize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while wakes.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the timer never woke the task"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Poll until ready: the first tick is due at once (within the timer's millisecond).
    async fn ready(wakeup: &mut Wakeup) {
        let (poll, wakes) = poll_once(wakeup);
        if poll.is_pending() {
            woken(&wakes).await;
            assert!(poll_once(wakeup).0.is_ready());
        }
    }

    #[tokio::test]
    async fn every_ready_poll_leaves_a_timer_armed() {
        let mut wakeup = Wakeup::new(Arc::new(Notify::new()), Duration::from_millis(20));
        ready(&mut wakeup).await;
        // Nothing is due now, but the next tick must wake the task without another poll.
        let (poll, wakes) = poll_once(&mut wakeup);
        assert!(poll.is_pending());
        woken(&wakes).await;
        assert!(poll_once(&mut wakeup).0.is_ready());
        // And again after that ready poll: re-armed each time.
        let (poll, wakes) = poll_once(&mut wakeup);
        assert!(poll.is_pending());
        woken(&wakes).await;
    }

    #[tokio::test]
    async fn a_push_wakes_the_worker_before_the_interval() {
        let pushed = Arc::new(Notify::new());
        let mut wakeup = Wakeup::new(pushed.clone(), Duration::from_secs(3600));
        ready(&mut wakeup).await;
        let (poll, wakes) = poll_once(&mut wakeup);
        assert!(poll.is_pending());
        pushed.notify_waiters();
        assert_eq!(wakes.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(poll_once(&mut wakeup).0.is_ready());
        // And it is armed again for the next push.
        let (poll, wakes) = poll_once(&mut wakeup);
        assert!(poll.is_pending());
        pushed.notify_waiters();
        assert_eq!(wakes.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
