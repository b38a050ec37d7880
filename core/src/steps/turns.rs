//! What the recorder of this process knows of each run, and whose turn it is.
//!
//! Reports of one run take turns (they wait for each other, never for other runs), so they do
//! not overtake each other's decisions. And the run as the last report of this process left it
//! (with the step times its rate limits look back on) is kept, so the next report of the run is
//! decided without reading the database. What is kept can be out of date — another process may
//! have written to the run — which costs nothing but a second decision: the write path checks
//! every decision against the run as stored and refuses one made on an older state.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use governance_entities::run;

/// The run as this process last saw it.
#[derive(Debug, Clone)]
pub(super) struct Known {
    pub(super) run: run::Model,
    pub(super) times: StepTimes,
}

impl Known {
    pub(super) fn new(run: run::Model) -> Self {
        Self {
            run,
            times: StepTimes::default(),
        }
    }

    /// A step of the run was written; `run` is the run after it.
    pub(super) fn stepped(&mut self, run: run::Model, at: DateTime<Utc>) {
        self.run = run;
        self.times.push(at);
    }
}

/// The times of a run's steps, as far back as its rate limits looked.
///
/// A decision is handed the times it needs without a copy: they are shared with it, and copied
/// only if a step is written while a decision still holds them. The copy this replaced was the
/// whole window, on every step: at 2,092 steps/s over 64 runs with a 60 s rate limit, 24 KB per
/// step, and a third of the server's page faults in a soak.
#[derive(Debug, Clone, Default)]
pub(super) struct StepTimes {
    /// Times of the run's steps after `complete_since` (all of them, whatever their order).
    times: Arc<Vec<DateTime<Utc>>>,
    /// Since when `times` is complete; `None` until the history was read.
    complete_since: Option<DateTime<Utc>>,
}

impl StepTimes {
    /// The step times after `since`, if what is kept covers them.
    pub(super) fn after(&mut self, since: DateTime<Utc>) -> Option<Arc<Vec<DateTime<Utc>>>> {
        let covered = self.complete_since.is_some_and(|from| from <= since);
        if !covered {
            return None;
        }
        // Older times will not be asked for again unless a step is stamped earlier, which
        // reads the history anew.
        if self.times.iter().any(|t| *t <= since) {
            Arc::make_mut(&mut self.times).retain(|t| *t > since);
        }
        self.complete_since = Some(since);
        Some(self.times.clone())
    }

    /// The history as read from the database: every step time after `since`. Returns them, shared
    /// with the decision as [`StepTimes::after`] does.
    pub(super) fn remember(
        &mut self,
        since: DateTime<Utc>,
        times: Vec<DateTime<Utc>>,
    ) -> Arc<Vec<DateTime<Utc>>> {
        self.times = Arc::new(times);
        self.complete_since = Some(since);
        self.times.clone()
    }

    /// A step was written at `at`. Kept only while the times are tracked (since the history
    /// was first read for a rate limit): a run whose snapshot looks back on none keeps nothing,
    /// however many steps it takes.
    fn push(&mut self, at: DateTime<Utc>) {
        if self.complete_since.is_some() {
            Arc::make_mut(&mut self.times).push(at);
        }
    }
}

/// One run's turn, holding what is known of it.
pub(super) type Turn = Arc<tokio::sync::Mutex<Option<Known>>>;

/// The turns of the runs this process reported on lately.
#[derive(Clone, Default)]
pub(super) struct RunTurns(Arc<Mutex<Turns>>);

#[derive(Default)]
struct Turns {
    by_run: HashMap<String, (Turn, u64)>,
    clock: u64,
}

impl RunTurns {
    /// Runs remembered; past this the least recently used quarter is forgotten.
    const CAPACITY: usize = 4096;

    pub(super) fn of(&self, run_id: &str) -> Turn {
        // A poisoned map only means a panic elsewhere mid-update; the map is still usable.
        let mut turns = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        turns.clock += 1;
        let now = turns.clock;
        if let Some((turn, used)) = turns.by_run.get_mut(run_id) {
            *used = now;
            return turn.clone();
        }
        if turns.by_run.len() >= Self::CAPACITY {
            let mut ages: Vec<u64> = turns.by_run.values().map(|(_, used)| *used).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 4];
            // A forgotten turn still held by a report only means a second decision if a report
            // of the same run comes in meanwhile.
            turns.by_run.retain(|_, (_, used)| *used > cutoff);
        }
        let turn: Turn = Arc::new(tokio::sync::Mutex::new(None));
        turns.by_run.insert(run_id.to_string(), (turn.clone(), now));
        turn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_run_gets_the_same_turn_and_old_runs_are_forgotten() {
        let turns = RunTurns::default();
        let first = turns.of("run_a");
        assert!(Arc::ptr_eq(&first, &turns.of("run_a")));
        for i in 0..RunTurns::CAPACITY {
            turns.of(&format!("run_{i}"));
        }
        let held = turns.0.lock().map(|t| t.by_run.len()).unwrap_or_default();
        assert!(held <= RunTurns::CAPACITY, "{held}");
        // run_a was the least recently used: it is a new turn now.
        assert!(!Arc::ptr_eq(&first, &turns.of("run_a")));
    }

    #[test]
    fn kept_times_answer_only_windows_they_cover() {
        let start = DateTime::<Utc>::UNIX_EPOCH;
        let at = |s: i64| start + chrono::Duration::seconds(s);
        let mut times = StepTimes::default();
        assert_eq!(times.after(at(0)), None);
        // Not tracked yet (no rate limit has asked): nothing is kept.
        for s in 0..1_000 {
            times.push(at(s));
        }
        assert!(times.times.is_empty());
        times.remember(at(10), vec![at(11), at(12)]);
        times.push(at(13));
        assert_eq!(times.after(at(11)).as_deref(), Some(&vec![at(12), at(13)]));
        // Earlier than what is kept: read again.
        assert_eq!(times.after(at(5)), None);
    }

    #[test]
    fn a_decision_shares_the_kept_times_and_a_step_copies_them_only_while_shared() {
        let start = DateTime::<Utc>::UNIX_EPOCH;
        let at = |s: i64| start + chrono::Duration::seconds(s);
        let mut times = StepTimes::default();
        times.remember(at(0), vec![at(1), at(2), at(3)]);
        let first = times.after(at(0)).expect("covered");
        // Nothing to drop from the window: the same times, not a copy.
        let again = times.after(at(0)).expect("covered");
        assert!(Arc::ptr_eq(&first, &again));
        // A step while a decision holds them: the decision keeps what it was given.
        times.push(at(4));
        assert_eq!(*first, vec![at(1), at(2), at(3)]);
        drop((first, again));
        // Once no decision holds them, a step and a narrower window change them in place.
        let before = Arc::as_ptr(&times.times);
        times.push(at(5));
        let narrowed = times.after(at(2)).expect("covered");
        assert_eq!(*narrowed, vec![at(3), at(4), at(5)]);
        assert_eq!(Arc::as_ptr(&narrowed), before);
    }
}
