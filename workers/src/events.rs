//! Fan-out of committed outbox events to live subscribers. The outbox table is the source of
//! truth; the bus only spares subscribers from polling it.
//!
//! - In-process by default: a bounded broadcast channel. Publishing never blocks; a subscriber
//!   that falls more than the buffer behind is told (`Lagged`) and catches up from the outbox.
//! - With Redis: every committed event is also published on the channel `{namespace}:events`,
//!   and every replica relays what it receives there into its own broadcast. So a subscriber on
//!   any replica sees events committed on any replica. A replica's own events arrive twice
//!   (locally at once, then through Redis); streams drop the second by its sequence number.
//!   When the Redis subscription is (re)established, subscribers are told to resync from the
//!   outbox, so an event published while it was down is not lost.
//!
//! [`tenant_stream`] turns the bus into what clients need: every event of one tenant after a
//! cursor, in sequence order, with no gap and no duplicate, replayed from the outbox and then
//! live.

use std::{sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use governance_core::{events as outbox, outcome::StepNotice};
use governance_entities::{event, trace_step};
use sea_orm::DatabaseConnection;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How many messages a subscriber may fall behind before it must catch up from the outbox.
const CAPACITY: usize = 4096;
/// Outbox rows read per catch-up query.
const CATCH_UP_BATCH: u64 = 500;
/// An idle stream looks at the database this often anyway, so an event whose live message
/// never arrived (published by a process that shares no bus with this one, or lost while Redis
/// was away) is delivered late rather than not at all.
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// Pause before reconnecting a lost Redis subscription (doubling to a minute).
const REDIS_RETRY: Duration = Duration::from_millis(500);

/// What the bus carries.
#[derive(Debug, Clone)]
pub enum BusMessage {
    /// A committed event.
    Event(Arc<event::Model>),
    /// A committed step (read it from the trace).
    Step(Arc<StepNotice>),
    /// Messages may have been missed (the Redis relay reconnected): read the database.
    Resync,
}

/// A bus message as it travels through Redis.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
enum Wire {
    Event(event::Model),
    Step(StepNotice),
}

/// A broadcast of committed events, optionally across replicas through Redis.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<BusMessage>,
    redis: Option<RedisRelay>,
}

#[derive(Clone)]
struct RedisRelay {
    publisher: redis::aio::ConnectionManager,
    channel: String,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// An in-process bus.
    pub fn new() -> Self {
        Self::with_capacity(CAPACITY)
    }

    /// An in-process bus whose subscribers may fall `capacity` messages behind before they
    /// must catch up from the database.
    pub fn with_capacity(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        Self {
            sender,
            redis: None,
        }
    }

    /// A bus that also fans out through Redis pub/sub on `{namespace}:events`. The relay task
    /// runs until `shutdown`.
    pub async fn with_redis(
        url: &str,
        namespace: &str,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let client = crate::redis_client::client(url)?;
        let publisher = redis::aio::ConnectionManager::new(client.clone()).await?;
        let channel = format!("{namespace}:events");
        let bus = Self {
            sender: broadcast::channel(CAPACITY).0,
            redis: Some(RedisRelay {
                publisher,
                channel: channel.clone(),
            }),
        };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(relay(
            client,
            channel,
            bus.sender.clone(),
            shutdown,
            Some(ready_tx),
        ));
        // Subscribed before we serve: an event committed after start-up is not missed.
        let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
        Ok(bus)
    }

    /// Publish a committed event to everyone subscribed now (and to other replicas). Never
    /// blocks on subscribers; a failed Redis publish is logged (subscribers elsewhere pick the
    /// event up from the outbox at their next catch-up).
    pub fn publish(&self, event: event::Model) {
        let event = Arc::new(event);
        // No subscriber is not an error.
        let _ = self.sender.send(BusMessage::Event(event.clone()));
        self.to_redis(&Wire::Event((*event).clone()));
    }

    /// Tell followers of a run that a step was recorded.
    pub fn notify_step(&self, notice: StepNotice) {
        let _ = self.sender.send(BusMessage::Step(Arc::new(notice.clone())));
        self.to_redis(&Wire::Step(notice));
    }

    /// Send a message to the other replicas without waiting for Redis: the caller (a request
    /// that has just committed) answers at once. Messages may reach Redis out of order; streams
    /// order them by sequence number and read what they miss from the database.
    fn to_redis(&self, message: &Wire) {
        let Some(relay) = &self.redis else {
            return;
        };
        let payload = match serde_json::to_string(message) {
            Ok(payload) => payload,
            Err(err) => {
                tracing::error!(error = %err, "cannot encode a bus message for Redis");
                return;
            }
        };
        let mut conn = relay.publisher.clone();
        let channel = relay.channel.clone();
        tokio::spawn(async move {
            let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async(&mut conn)
                .await;
            if let Err(err) = published {
                tracing::warn!(error = %err, "cannot publish to Redis");
            }
        });
    }

    /// Subscribe; messages published from now on are received.
    pub fn subscribe(&self) -> broadcast::Receiver<BusMessage> {
        self.sender.subscribe()
    }
}

/// Relay Redis messages into the local broadcast, reconnecting with backoff until `shutdown`.
async fn relay(
    client: redis::Client,
    channel: String,
    sender: broadcast::Sender<BusMessage>,
    shutdown: CancellationToken,
    mut ready: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let mut pause = REDIS_RETRY;
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            redis::RedisResult::Ok(pubsub)
        }
        .await;
        match subscribed {
            Ok(mut pubsub) => {
                pause = REDIS_RETRY;
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                // Anything published while we were not subscribed is in the outbox.
                let _ = sender.send(BusMessage::Resync);
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        message = messages.next() => match message {
                            Some(message) => forward(&sender, message),
                            None => break,
                        },
                    }
                }
                tracing::warn!("Redis event subscription ended; reconnecting");
            }
            Err(err) => {
                tracing::warn!(error = %err, ?pause, "cannot subscribe to Redis events; retrying")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(60));
    }
}

fn forward(sender: &broadcast::Sender<BusMessage>, message: redis::Msg) {
    let decoded = message
        .get_payload::<String>()
        .map_err(anyhow::Error::from)
        .and_then(|text| Ok(serde_json::from_str::<Wire>(&text)?));
    let message = match decoded {
        Ok(Wire::Event(event)) => BusMessage::Event(Arc::new(event)),
        Ok(Wire::Step(notice)) => BusMessage::Step(Arc::new(notice)),
        Err(err) => {
            tracing::warn!(error = %err, "ignoring an undecodable Redis message");
            return;
        }
    };
    let _ = sender.send(message);
}

/// Where a tenant stream stands.
struct StreamState {
    db: DatabaseConnection,
    tenant_id: String,
    receiver: broadcast::Receiver<BusMessage>,
    /// The last sequence number delivered (or skipped as seen).
    last: i64,
    /// Events read from the outbox, not yet delivered.
    pending: std::collections::VecDeque<event::Model>,
    /// Read the outbox before the next live message.
    catch_up: bool,
}

impl StreamState {
    /// Fill `pending` from the outbox after `last`. Returns false on a database error (the
    /// stream then ends; the client resumes from its cursor).
    async fn read_outbox(&mut self) -> bool {
        match outbox::after(&self.db, &self.tenant_id, self.last, CATCH_UP_BATCH).await {
            Ok(rows) => {
                // A full batch means there may be more: read again once these are delivered.
                self.catch_up = rows.len() as u64 == CATCH_UP_BATCH;
                self.pending.extend(rows);
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the outbox; ending the stream");
                false
            }
        }
    }
}

/// Every event of `tenant_id` after sequence number `after`, in order, with no gap and no
/// duplicate: first what the outbox holds, then live. The bus is subscribed before the outbox is
/// read, so an event committed in between is in both and delivered once. A live event that
/// skips sequence numbers (another request's publish overtook it, or a message was lost) and a
/// lagged receiver both send the stream back to the outbox for what it missed.
pub fn tenant_stream(
    db: DatabaseConnection,
    bus: &EventBus,
    tenant_id: String,
    after: i64,
) -> impl Stream<Item = event::Model> + Send + use<> {
    let state = StreamState {
        db,
        tenant_id,
        receiver: bus.subscribe(),
        last: after,
        pending: Default::default(),
        catch_up: true,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                if event.seq <= state.last {
                    continue;
                }
                state.last = event.seq;
                return Some((event, state));
            }
            if state.catch_up {
                if !state.read_outbox().await {
                    return None;
                }
                continue;
            }
            let Ok(received) = tokio::time::timeout(IDLE_CHECK, state.receiver.recv()).await else {
                state.catch_up = true;
                continue;
            };
            match received {
                Ok(BusMessage::Event(event)) => {
                    if event.tenant_id != state.tenant_id || event.seq <= state.last {
                        continue;
                    }
                    if event.seq == state.last + 1 {
                        state.last = event.seq;
                        return Some(((*event).clone(), state));
                    }
                    // A gap: what lies between is committed (sequence numbers are taken in
                    // commit order), so the outbox has it.
                    state.catch_up = true;
                }
                Ok(BusMessage::Resync) => state.catch_up = true,
                Ok(BusMessage::Step(_)) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "subscriber lagged; catching up from the outbox");
                    state.catch_up = true;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// What a follower of one run sees.
#[derive(Debug, Clone)]
pub enum RunItem {
    /// An outbox event of the run (started, stopped, completed).
    Event(event::Model),
    /// A recorded step.
    Step(trace_step::Model),
}

struct RunStreamState {
    db: DatabaseConnection,
    tenant_id: String,
    run_id: String,
    receiver: broadcast::Receiver<BusMessage>,
    last_seq: i64,
    last_step: i64,
    pending: std::collections::VecDeque<RunItem>,
    catch_up: bool,
}

impl RunStreamState {
    /// Read what is new for the run: its events and its steps, in the order they belong in
    /// (the start, then the steps, then the end; a stop and its step commit together).
    async fn read(&mut self) -> anyhow::Result<()> {
        let events = outbox::of_run(&self.db, &self.tenant_id, &self.run_id).await?;
        let steps = governance_core::records::steps_after(
            &self.db,
            &self.tenant_id,
            &self.run_id,
            self.last_step,
        )
        .await?;
        let (start, end): (Vec<_>, Vec<_>) = events
            .into_iter()
            .filter(|e| e.seq > self.last_seq)
            .partition(|e| e.kind == "RUN_STARTED");
        self.pending.extend(start.into_iter().map(RunItem::Event));
        self.pending.extend(steps.into_iter().map(RunItem::Step));
        self.pending.extend(end.into_iter().map(RunItem::Event));
        self.catch_up = false;
        Ok(())
    }
}

/// Everything that happens to one run, from its start: its events (from the outbox) and its
/// steps (from the trace), each once and in order, then live as they are committed, on any
/// replica. Live messages only say "something is new"; the database says what.
pub fn run_stream(
    db: DatabaseConnection,
    bus: &EventBus,
    tenant_id: String,
    run_id: String,
) -> impl Stream<Item = RunItem> + Send + use<> {
    let state = RunStreamState {
        db,
        tenant_id,
        run_id,
        receiver: bus.subscribe(),
        last_seq: 0,
        last_step: -1,
        pending: Default::default(),
        catch_up: true,
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(item) = state.pending.pop_front() {
                match &item {
                    RunItem::Event(e) if e.seq <= state.last_seq => continue,
                    RunItem::Event(e) => state.last_seq = e.seq,
                    RunItem::Step(s) if s.step_index <= state.last_step => continue,
                    RunItem::Step(s) => state.last_step = s.step_index,
                }
                return Some((item, state));
            }
            if state.catch_up {
                if let Err(err) = state.read().await {
                    tracing::warn!(error = %err, "cannot read the run; ending the stream");
                    return None;
                }
                continue;
            }
            let Ok(received) = tokio::time::timeout(IDLE_CHECK, state.receiver.recv()).await else {
                state.catch_up = true;
                continue;
            };
            match received {
                Ok(BusMessage::Event(event)) => {
                    state.catch_up = event.run_id.as_deref() == Some(state.run_id.as_str())
                        && event.tenant_id == state.tenant_id
                        && event.seq > state.last_seq;
                }
                Ok(BusMessage::Step(notice)) => {
                    state.catch_up = notice.run_id == state.run_id
                        && notice.tenant_id == state.tenant_id
                        && notice.step_index > state.last_step;
                }
                Ok(BusMessage::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    state.catch_up = true
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
