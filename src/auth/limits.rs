//! Per-application rate limits, costed in events: a batch of 100 costs 100.
//!
//! Each application gets its own GCRA limiter (`governor`) with the quota in force for it;
//! the limiter is rebuilt when the quota changes. One noisy application exhausts only its own
//! quota.

use std::collections::HashMap;
use std::num::NonZeroU32;
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
}

#[derive(Default)]
pub struct RateLimits {
    limiters: Mutex<HashMap<Arc<str>, Allowance>>,
}

impl RateLimits {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes `cost` events from `application`'s allowance of `rate` per second with `burst`.
    pub fn check(&self, application: &Arc<str>, rate: u32, burst: u32, cost: u32) -> Decision {
        let (Some(rate_nz), Some(burst_nz)) = (NonZeroU32::new(rate), NonZeroU32::new(burst))
        else {
            return Decision::ExceedsBurst { burst: 0 };
        };
        let Some(cost_nz) = NonZeroU32::new(cost) else {
            return Decision::Allowed {
                limit: rate,
                remaining: burst,
            };
        };
        let limiter = {
            let mut limiters = self
                .limiters
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            match limiters.get(application) {
                Some(allowance) if allowance.rate == rate && allowance.burst == burst => {
                    allowance.limiter.clone()
                }
                _ => {
                    let limiter = Arc::new(
                        RateLimiter::direct(Quota::per_second(rate_nz).allow_burst(burst_nz))
                            .with_middleware::<StateInformationMiddleware>(),
                    );
                    let allowance = Allowance {
                        rate,
                        burst,
                        limiter: limiter.clone(),
                    };
                    limiters.insert(application.clone(), allowance);
                    limiter
                }
            }
        };
        match limiter.check_n(cost_nz) {
            Ok(Ok(snapshot)) => Decision::Allowed {
                limit: rate,
                remaining: snapshot.remaining_burst_capacity(),
            },
            Ok(Err(not_until)) => Decision::Limited {
                limit: rate,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
            Err(_) => Decision::ExceedsBurst { burst },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_application_spends_its_own_allowance_in_events() {
        let limits = RateLimits::new();
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
