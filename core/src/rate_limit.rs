//! Per-tenant rate limits for the costly operations (`verifyRun`, `explain`, `requestExport`,
//! `requestAudit`): one token bucket per tenant and operation, holding a minute's quota and
//! refilled continuously. A refusal is `RATE_LIMITED` with the wait until the next token.
//!
//! The buckets live in the process: with several replicas each enforces the quota on what it
//! serves. The clock is passed in, so the arithmetic is tested without waiting.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, CoreResult};

/// An operation with a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Costly {
    VerifyRun,
    Explain,
    RequestExport,
    RequestAudit,
}

impl Costly {
    /// The GraphQL field, as a caller knows it.
    pub fn field(self) -> &'static str {
        match self {
            Costly::VerifyRun => "verifyRun",
            Costly::Explain => "explain",
            Costly::RequestExport => "requestExport",
            Costly::RequestAudit => "requestAudit",
        }
    }

    /// The setting that sets its quota.
    pub fn setting(self) -> &'static str {
        match self {
            Costly::VerifyRun => "rate_limits.verify_run_per_minute",
            Costly::Explain => "rate_limits.explain_per_minute",
            Costly::RequestExport => "rate_limits.request_export_per_minute",
            Costly::RequestAudit => "rate_limits.request_audit_per_minute",
        }
    }
}

/// Calls per minute allowed to one tenant, per operation; 0 means unlimited. The full minute's
/// quota can be used at once (a burst), then it comes back evenly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    pub verify_run_per_minute: u32,
    pub explain_per_minute: u32,
    pub request_export_per_minute: u32,
    pub request_audit_per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            verify_run_per_minute: 120,
            explain_per_minute: 600,
            request_export_per_minute: 30,
            request_audit_per_minute: 120,
        }
    }
}

impl RateLimits {
    fn per_minute(&self, op: Costly) -> u32 {
        match op {
            Costly::VerifyRun => self.verify_run_per_minute,
            Costly::Explain => self.explain_per_minute,
            Costly::RequestExport => self.request_export_per_minute,
            Costly::RequestAudit => self.request_audit_per_minute,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every tenant.
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<(String, Costly), Bucket>>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one call of `op` for `tenant_id` now, or refuse with `RATE_LIMITED`.
    pub fn check(&self, tenant_id: &str, op: Costly) -> CoreResult<()> {
        self.check_at(tenant_id, op, Instant::now())
    }

    /// [`Self::check`] at the instant `now`.
    pub fn check_at(&self, tenant_id: &str, op: Costly, now: Instant) -> CoreResult<()> {
        let quota = self.limits.per_minute(op);
        if quota == 0 {
            return Ok(());
        }
        let capacity = f64::from(quota);
        let per_ms = capacity / 60_000.0;
        // A poisoned lock only means another request panicked mid-update; the map is still usable.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket = buckets
            .entry((tenant_id.to_string(), op))
            .or_insert(Bucket {
                tokens: capacity,
                at: now,
            });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64() * 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * per_ms).min(capacity);
        bucket.at = now.max(bucket.at);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64(((1.0 - bucket.tokens) / per_ms).max(1.0) / 1000.0);
        let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        Err(CoreError::RateLimited {
            message: format!(
                "`{}` is limited to {quota} calls a minute per tenant ({}); retry in {retry_after_ms} ms",
                op.field(),
                op.setting()
            ),
            retry_after_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_minute: u32) -> RateLimiter {
        RateLimiter::new(RateLimits {
            verify_run_per_minute: per_minute,
            ..RateLimits::default()
        })
    }

    #[test]
    fn a_minutes_quota_then_refusal_with_the_wait() {
        let limiter = limiter(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter
                .check_at("t1", Costly::VerifyRun, t0)
                .expect("within quota");
        }
        let Err(CoreError::RateLimited {
            retry_after_ms,
            message,
        }) = limiter.check_at("t1", Costly::VerifyRun, t0)
        else {
            panic!("the fourth call is refused");
        };
        // One token every 20 s.
        assert!(
            (19_990..=20_000).contains(&retry_after_ms),
            "{retry_after_ms}"
        );
        assert!(message.contains("verifyRun"), "{message}");
        assert!(
            message.contains("rate_limits.verify_run_per_minute"),
            "{message}"
        );
        // Other tenants and other operations have their own buckets.
        limiter
            .check_at("t2", Costly::VerifyRun, t0)
            .expect("another tenant");
        limiter
            .check_at("t1", Costly::Explain, t0)
            .expect("another operation");
        // After the wait, one more.
        let later = t0 + Duration::from_millis(retry_after_ms);
        limiter
            .check_at("t1", Costly::VerifyRun, later)
            .expect("refilled");
        assert!(limiter.check_at("t1", Costly::VerifyRun, later).is_err());
    }

    #[test]
    fn zero_means_unlimited() {
        let limiter = limiter(0);
        let t0 = Instant::now();
        for _ in 0..1000 {
            limiter
                .check_at("t1", Costly::VerifyRun, t0)
                .expect("unlimited");
        }
    }
}
