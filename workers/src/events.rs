//! In-process fan-out of committed outbox events to live subscribers. The outbox table is the
//! source of truth; this only spares subscribers from polling it.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use governance_entities::event;
use tokio::sync::broadcast;

/// How many events a subscriber may fall behind before it is told it lagged.
const CAPACITY: usize = 4096;

/// A broadcast of committed events.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<event::Model>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        Self { sender }
    }

    /// Publish a committed event to everyone subscribed now. Never blocks.
    pub fn publish(&self, event: event::Model) {
        // No subscriber is not an error.
        let _ = self.sender.send(Arc::new(event));
    }

    /// Subscribe; events published from now on are received.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            receiver: self.sender.subscribe(),
        }
    }
}

/// One subscriber's view of the bus.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<event::Model>>,
}

impl Subscription {
    /// The events as a stream. A subscriber that falls more than the buffer behind gets the
    /// stream ended rather than a silent gap; it resumes from its last cursor.
    pub fn into_stream(self) -> impl Stream<Item = Arc<event::Model>> + Send + 'static {
        futures::stream::unfold(self.receiver, |mut receiver| async move {
            match receiver.recv().await {
                Ok(event) => Some((event, receiver)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "subscriber lagged; ending its stream so it resumes from its cursor"
                    );
                    None
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .boxed()
    }
}
