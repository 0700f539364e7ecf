//! Per-application rate limits, costed in events: a batch of 100 costs 100.
//!
//! Each application gets its own GCRA limiter (`governor`) with the quota in force for it;
//! the limiter is rebuilt when the quota changes. One noisy application exhausts only its own
//! quota.
//!
//! An application's rate holds for the whole deployment: every instance writes a heartbeat
//! to ClickHouse's `instances` table every `auth.instance_heartbeat_ms` and counts the live
//! ones (a heartbeat younger than three intervals, and no goodbye), and enforces its share,
//! rate / live count (rounded up), with the burst shared the same way but never below a full
//! request. This needs nothing but the ClickHouse The Eye already uses. It assumes the load
//! balancer spreads an application's requests evenly: an instance that gets more than its
//! share limits early, so the deployment accepts less than the rate, never more (beyond the
//! transitions below). When the live count changes, shares follow at the next heartbeat: a
//! clean stop within one interval, a killed instance within three; in between the deployment
//! accepts less (an instance joined) or more (one died) than the rate. A new share starts
//! from the bucket level the old one had left, not with a fresh burst.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// The answer to "may this application send `cost` events now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead; `remaining` events could still be sent at once.
    Allowed { limit: u32, remaining: u32 },
    /// Over the rate; try again after `retry_after`.
    Limited { limit: u32, retry_after: Duration },
    /// The request alone costs more than the burst: waiting cannot help.
    ExceedsBurst { burst: u32 },
}

/// An application's limiter and the quota (rate, burst) it was built for.
struct Allowance {
    rate: u32,
    burst: u32,
    limiter: Arc<Limiter>,
    /// What the limiter had left after its last allowed request: when the quota changes,
    /// the new limiter starts from this level instead of a full bucket, so that a change of
    /// the live count does not hand out a fresh burst.
    remaining: Arc<AtomicU32>,
}

/// Every application's limiter on this instance, and the number of live instances that
/// share each rate.
pub struct RateLimits {
    /// Hashed with foldhash rather than std's SipHash (~180 instructions a request): keyed by
    /// authenticated applications, never free client input; foldhash's seed is still random.
    limiters: Mutex<HashMap<Arc<str>, Allowance, foldhash::fast::RandomState>>,
    /// Live instances, this one included (at least 1).
    live: AtomicU32,
    /// The smallest burst share: a full request (`ingest.max_batch_events`) must still fit.
    min_burst: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::new(u32::MAX)
    }
}

impl RateLimits {
    /// Limits for one instance, alone until told otherwise; a burst share never drops below
    /// `min_burst` events (nor above the application's burst).
    pub fn new(min_burst: u32) -> Self {
        Self {
            limiters: Mutex::default(),
            live: AtomicU32::new(1),
            min_burst,
        }
    }

    /// Sets the number of live instances that share every rate (0 counts as 1).
    pub fn set_live_instances(&self, live: u32) {
        self.live.store(live.max(1), Ordering::Relaxed);
    }

    /// The number of live instances the rates are shared between.
    pub fn live_instances(&self) -> u32 {
        self.live.load(Ordering::Relaxed)
    }

    /// This instance's share of `rate` and `burst`.
    fn share(&self, rate: u32, burst: u32) -> (u32, u32) {
        let live = self.live_instances();
        let burst_share = burst.div_ceil(live).max(self.min_burst.min(burst));
        (rate.div_ceil(live), burst_share)
    }

    /// Takes `cost` events from this instance's share of `application`'s allowance of `rate`
    /// per second with `burst`; `limit` in the answer is the whole `rate`.
    pub fn check(&self, application: &Arc<str>, rate: u32, burst: u32, cost: u32) -> Decision {
        let limit = rate;
        let (rate, burst) = self.share(rate, burst);
        let (Some(rate_nz), Some(burst_nz)) = (NonZeroU32::new(rate), NonZeroU32::new(burst))
        else {
            return Decision::ExceedsBurst { burst: 0 };
        };
        let Some(cost_nz) = NonZeroU32::new(cost) else {
            return Decision::Allowed {
                limit,
                remaining: burst,
            };
        };
        let (limiter, remaining) = {
            let mut limiters = self
                .limiters
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            match limiters.get(application) {
                Some(allowance) if allowance.rate == rate && allowance.burst == burst => {
                    (allowance.limiter.clone(), allowance.remaining.clone())
                }
                previous => {
                    let limiter = Arc::new(
                        RateLimiter::direct(Quota::per_second(rate_nz).allow_burst(burst_nz))
                            .with_middleware::<StateInformationMiddleware>(),
                    );
                    let left = previous.map_or(burst, |p| p.remaining.load(Ordering::Relaxed));
                    if let Some(spent) = NonZeroU32::new(burst.saturating_sub(left)) {
                        let _ = limiter.check_n(spent);
                    }
                    let allowance = Allowance {
                        rate,
                        burst,
                        limiter: limiter.clone(),
                        remaining: Arc::new(AtomicU32::new(left.min(burst))),
                    };
                    let remaining = allowance.remaining.clone();
                    limiters.insert(application.clone(), allowance);
                    (limiter, remaining)
                }
            }
        };
        match limiter.check_n(cost_nz) {
            Ok(Ok(snapshot)) => {
                remaining.store(snapshot.remaining_burst_capacity(), Ordering::Relaxed);
                Decision::Allowed {
                    limit,
                    remaining: snapshot.remaining_burst_capacity(),
                }
            }
            Ok(Err(not_until)) => Decision::Limited {
                limit,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
            Err(_) => Decision::ExceedsBurst { burst },
        }
    }
}

/// Writes this instance's heartbeat every `interval` and keeps `limits`' live count current;
/// on `shutdown`, says goodbye so that the others' shares grow at their next heartbeat. A
/// failed heartbeat keeps the previous count (ClickHouse being away stops ingestion's
/// inserts, not its rate limits).
pub fn spawn_heartbeat(
    limits: Arc<RateLimits>,
    store: crate::store::Store,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let instance_id = uuid::Uuid::new_v4().to_string();
    tokio::spawn(async move {
        loop {
            let counted = async {
                store.heartbeat(&instance_id, true).await?;
                store.live_instances(interval * 3).await
            };
            match counted.await {
                Ok(live) => limits.set_live_instances(live),
                Err(error) => {
                    tracing::warn!(%error, "could not count the live instances; keeping the last count")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
        if let Err(error) = store.heartbeat(&instance_id, false).await {
            tracing::warn!(%error, "could not record this instance's stop");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_instances_share_the_rate_and_the_burst_down_to_a_full_request() {
        let limits = RateLimits::new(100);
        let app: Arc<str> = "app".into();
        limits.set_live_instances(3);
        assert_eq!(limits.share(1_000, 2_000), (334, 667));
        assert_eq!(limits.share(10, 120), (4, 100), "a full request still fits");
        assert_eq!(
            limits.share(10, 50),
            (4, 50),
            "never above the application's burst"
        );
        assert!(matches!(
            limits.check(&app, 1_000, 2_000, 667),
            Decision::Allowed {
                limit: 1_000,
                remaining: 0
            }
        ));
        assert!(matches!(
            limits.check(&app, 1_000, 2_000, 10),
            Decision::Limited { .. }
        ));
        limits.set_live_instances(1);
        assert!(
            matches!(
                limits.check(&app, 1_000, 2_000, 1_000),
                Decision::Limited { .. }
            ),
            "a larger share starts from the level the smaller one left, not a full bucket"
        );
        limits.set_live_instances(0);
        assert_eq!(limits.live_instances(), 1);
        assert_eq!(limits.share(1_000, 2_000), (1_000, 2_000));
    }

    #[test]
    fn each_application_spends_its_own_allowance_in_events() {
        let limits = RateLimits::default();
        let noisy: Arc<str> = "noisy".into();
        let quiet: Arc<str> = "quiet".into();
        assert_eq!(
            limits.check(&noisy, 10, 100, 100),
            Decision::Allowed {
                limit: 10,
                remaining: 0
            }
        );
        match limits.check(&noisy, 10, 100, 1) {
            Decision::Limited { retry_after, .. } => {
                assert!(retry_after <= Duration::from_millis(100))
            }
            other => panic!("expected Limited, got {other:?}"),
        }
        assert!(matches!(
            limits.check(&quiet, 10, 100, 50),
            Decision::Allowed { remaining: 50, .. }
        ));
        assert_eq!(
            limits.check(&quiet, 10, 100, 101),
            Decision::ExceedsBurst { burst: 100 }
        );
    }
}
