//! The failure state machine of scheduled refreshes, without I/O: from an instance's
//! [`Schedule`], what a refresh attempt came to ([`RefreshOutcome`]), the time and a jitter
//! source, the next [`Schedule`]. The caller does the I/O (the vendor call, the write) and
//! passes the time; tests pass a fixed time and a fixed jitter.
//!
//! ```text
//!            failed (backoff with jitter, Retry-After honoured)
//!   fresh ────────────────────────────► retrying ──┐ failed, rejected (< max): backoff again
//!     ▲          rejected (< max)          │  ▲ ───┘
//!     │                                    │
//!     └──── refreshed (from any state) ────┘
//!                                          │ rejected (max consecutive rejections)
//!                                          ▼
//!                                    needs-reauth ── until someone re-authenticates
//! ```
//!
//! While retrying the instance cools down until its retry is due: callers are answered at once
//! ([`Schedule::cooling_down`]) and the vendor is not called.

use std::time::Duration;

use engine_store::{Schedule, ScheduleStatus};

/// What a refresh attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The vendor gave a token (or another process had refreshed it).
    Refreshed,
    /// A transient failure (the network, a 429, a 5xx, a timeout), with the vendor's
    /// `Retry-After` when it sent one.
    Failed {
        /// How long the vendor asked to wait.
        retry_after: Option<Duration>,
    },
    /// The vendor rejected the credentials (`invalid_grant`, a 4xx other than 429): retrying
    /// the same credentials is doomed.
    Rejected,
}

/// A source of randomness for the backoff's jitter.
pub trait Jitter {
    /// A number in `0..bound` (0 when `bound` is 0), uniformly.
    fn below(&mut self, bound: u64) -> u64;
}

/// A [`Jitter`] from a seed (splitmix64): the same seed, the same sequence. Seed it with
/// [`SeededJitter::from_entropy`] in production and with a constant in tests.
#[derive(Debug, Clone)]
pub struct SeededJitter(u64);

impl SeededJitter {
    /// A jitter source starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A jitter source seeded by the operating system (a fixed seed when it has none to give:
    /// jitter spreads retries, it guards no secret).
    pub fn from_entropy() -> Self {
        let mut seed = [0_u8; 8];
        let _ = getrandom::fill(&mut seed);
        Self(u64::from_le_bytes(seed))
    }
}

impl Jitter for SeededJitter {
    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^= mixed >> 31;
        mixed % bound
    }
}

/// How scheduled refreshes back off and give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// The wait after the first failure; it doubles with each consecutive one.
    pub first_backoff: Duration,
    /// The longest wait between two attempts (before a vendor's `Retry-After`).
    pub max_backoff: Duration,
    /// Up to `1 / jitter_divisor` of each wait is taken off at random, so that instances that
    /// failed together do not retry together (0: no jitter).
    pub jitter_divisor: u32,
    /// The longest `Retry-After` honoured; a longer one waits this long.
    pub max_retry_after: Duration,
    /// Consecutive rejections after which the instance needs re-authentication.
    pub max_rejections: u32,
}

impl Default for RefreshPolicy {
    /// 30 s doubling up to an hour, a fifth of jitter, `Retry-After` up to an hour, and
    /// `needs-reauth` after 3 rejections (`engine refresh --max-failures`).
    fn default() -> Self {
        Self {
            first_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_hours(1),
            jitter_divisor: 5,
            max_retry_after: Duration::from_hours(1),
            max_rejections: 3,
        }
    }
}

impl RefreshPolicy {
    /// The schedule after a refresh of `schedule` came to `outcome` at `now_ms`:
    ///
    /// - refreshed: fresh, every count and the cooldown cleared; due at once
    ///   ([`Schedule::cleared`]) until the writer computes the next refresh from the new token
    ///   ([`crate::schedule_of`]);
    /// - failed: retrying after the backoff (jittered), or the vendor's `Retry-After` when
    ///   longer; rejections neither added nor ended;
    /// - rejected: retrying after the backoff, until [`RefreshPolicy::max_rejections`]
    ///   consecutive ones: then `needs-reauth`, nothing scheduled.
    ///
    /// A retry's time is also the end of the cooldown: until then callers are answered at once.
    #[must_use]
    pub fn next(
        &self,
        schedule: &Schedule,
        outcome: RefreshOutcome,
        now_ms: u64,
        jitter: &mut dyn Jitter,
    ) -> Schedule {
        let failures = schedule.consecutive_failures.saturating_add(1);
        let (rejections, retry_after) = match outcome {
            RefreshOutcome::Refreshed => return schedule.cleared(),
            RefreshOutcome::Failed { retry_after } => {
                (schedule.consecutive_rejections, retry_after)
            }
            RefreshOutcome::Rejected => (schedule.consecutive_rejections.saturating_add(1), None),
        };
        if (outcome == RefreshOutcome::Rejected && rejections >= self.max_rejections)
            || schedule.status == ScheduleStatus::NeedsReauth
        {
            return Schedule {
                next_refresh_at_ms: None,
                status: ScheduleStatus::NeedsReauth,
                consecutive_failures: failures,
                consecutive_rejections: rejections,
                cooldown_until_ms: None,
                ..*schedule
            };
        }
        let wait = self
            .backoff(failures, jitter)
            .max(retry_after.map_or(0, |asked| millis(asked.min(self.max_retry_after))));
        let retry_at = now_ms.saturating_add(wait);
        Schedule {
            next_refresh_at_ms: Some(retry_at),
            status: ScheduleStatus::Retrying,
            consecutive_failures: failures,
            consecutive_rejections: rejections,
            cooldown_until_ms: Some(retry_at),
            ..*schedule
        }
    }

    /// The wait after `failures` consecutive failures, in milliseconds: the first backoff
    /// doubled `failures - 1` times, at most the longest, less a random part of at most
    /// `1 / jitter_divisor` of it.
    pub fn backoff(&self, failures: u32, jitter: &mut dyn Jitter) -> u64 {
        let doublings = failures.saturating_sub(1).min(63);
        let full = millis(self.first_backoff)
            .saturating_mul(1_u64 << doublings)
            .min(millis(self.max_backoff));
        let spread = full
            .checked_div(u64::from(self.jitter_divisor))
            .unwrap_or(0);
        full - jitter.below(spread.saturating_add(1)).min(spread)
    }
}

/// `duration` in whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    /// A jitter that always takes the most (`bound - 1`), or nothing.
    struct Fixed(bool);

    impl Jitter for Fixed {
        fn below(&mut self, bound: u64) -> u64 {
            if self.0 { bound.saturating_sub(1) } else { 0 }
        }
    }

    fn fresh() -> Schedule {
        Schedule {
            next_refresh_at_ms: Some(NOW + 600_000),
            expires_at_ms: Some(NOW + 720_000),
            ..Schedule::default()
        }
    }

    #[test]
    fn transient_failures_back_off_doubling_up_to_the_longest_wait() {
        let policy = RefreshPolicy::default();
        let mut schedule = fresh();
        let mut waits = Vec::new();
        for _ in 0..9 {
            schedule = policy.next(
                &schedule,
                RefreshOutcome::Failed { retry_after: None },
                NOW,
                &mut Fixed(false),
            );
            assert_eq!(schedule.status, ScheduleStatus::Retrying);
            assert_eq!(schedule.cooldown_until_ms, schedule.next_refresh_at_ms);
            waits.push(schedule.next_refresh_at_ms.unwrap() - NOW);
        }
        assert_eq!(
            waits,
            [30, 60, 120, 240, 480, 960, 1920, 3600, 3600].map(|seconds| seconds * 1000)
        );
        assert_eq!(
            (
                schedule.consecutive_failures,
                schedule.consecutive_rejections
            ),
            (9, 0)
        );
        assert_eq!(
            schedule.expires_at_ms,
            Some(NOW + 720_000),
            "the token is unchanged"
        );
    }

    #[test]
    fn jitter_takes_off_at_most_a_fifth() {
        let policy = RefreshPolicy::default();
        let most = policy.backoff(1, &mut Fixed(true));
        assert_eq!(most, 24_000);
        assert_eq!(policy.backoff(1, &mut Fixed(false)), 30_000);
        let none = RefreshPolicy {
            jitter_divisor: 0,
            ..policy
        };
        assert_eq!(none.backoff(2, &mut Fixed(true)), 60_000);
    }

    #[test]
    fn a_retry_after_is_honoured_up_to_its_cap() {
        let policy = RefreshPolicy::default();
        let failed = |seconds| {
            policy
                .next(
                    &fresh(),
                    RefreshOutcome::Failed {
                        retry_after: Some(Duration::from_secs(seconds)),
                    },
                    NOW,
                    &mut Fixed(false),
                )
                .next_refresh_at_ms
                .unwrap()
                - NOW
        };
        assert_eq!(
            failed(120),
            120_000,
            "longer than the backoff: the vendor's"
        );
        assert_eq!(failed(5), 30_000, "shorter: the backoff's");
        assert_eq!(failed(86_400), 3_600_000, "capped");
    }

    #[test]
    fn consecutive_rejections_end_in_needs_reauth_and_a_transient_failure_does_not_reset_them() {
        let policy = RefreshPolicy::default();
        let jitter = &mut Fixed(false);
        let once = policy.next(&fresh(), RefreshOutcome::Rejected, NOW, jitter);
        assert_eq!(
            (
                once.status,
                once.consecutive_rejections,
                once.cooldown_until_ms
            ),
            (ScheduleStatus::Retrying, 1, Some(NOW + 30_000))
        );
        let failed = policy.next(
            &once,
            RefreshOutcome::Failed { retry_after: None },
            NOW + 30_000,
            jitter,
        );
        assert_eq!(failed.consecutive_rejections, 1);
        let twice = policy.next(&failed, RefreshOutcome::Rejected, NOW + 90_000, jitter);
        assert_eq!(twice.status, ScheduleStatus::Retrying);
        let thrice = policy.next(&twice, RefreshOutcome::Rejected, NOW + 200_000, jitter);
        assert_eq!(
            thrice,
            Schedule {
                next_refresh_at_ms: None,
                expires_at_ms: Some(NOW + 720_000),
                status: ScheduleStatus::NeedsReauth,
                consecutive_failures: 4,
                consecutive_rejections: 3,
                cooldown_until_ms: None,
            }
        );
        // Nothing but a success (a sign-in, a re-provisioning) leaves it.
        let still = policy.next(
            &thrice,
            RefreshOutcome::Failed { retry_after: None },
            NOW,
            jitter,
        );
        assert_eq!(
            (still.status, still.next_refresh_at_ms),
            (ScheduleStatus::NeedsReauth, None)
        );
    }

    #[test]
    fn a_cooling_down_instance_says_for_how_long_and_recovers_on_success() {
        let policy = RefreshPolicy::default();
        let failed = policy.next(
            &fresh(),
            RefreshOutcome::Failed { retry_after: None },
            NOW,
            &mut Fixed(false),
        );
        assert_eq!(failed.cooling_down(NOW), Some(30_000));
        assert_eq!(failed.cooling_down(NOW + 29_999), Some(1));
        assert_eq!(failed.cooling_down(NOW + 30_000), None);
        let recovered = policy.next(
            &failed,
            RefreshOutcome::Refreshed,
            NOW + 30_000,
            &mut Fixed(false),
        );
        assert_eq!(
            recovered,
            Schedule {
                next_refresh_at_ms: Some(0),
                expires_at_ms: Some(NOW + 720_000),
                ..Schedule::default()
            }
        );
        assert_eq!(recovered.cooling_down(NOW), None);
    }

    #[test]
    fn a_seeded_jitter_repeats_and_stays_below_its_bound() {
        let sample = |seed| {
            let mut jitter = SeededJitter::new(seed);
            (0..64).map(|_| jitter.below(1000)).collect::<Vec<_>>()
        };
        assert_eq!(sample(7), sample(7));
        assert_ne!(sample(7), sample(8));
        assert!(sample(7).iter().all(|value| *value < 1000));
        assert_eq!(SeededJitter::new(1).below(0), 0);
    }

    proptest! {
        #![proptest_config(crate::properties::config(256))]

        /// Whatever the count, the jitter and the `Retry-After`, a retry is due after at least
        /// four fifths of the backoff (or the vendor's wait), never beyond the longest wait or
        /// the capped `Retry-After`, and the cooldown ends when it is due.
        #[test]
        fn retries_stay_within_their_bounds(
            failures in 0_u32..80,
            seed in any::<u64>(),
            retry_after in proptest::option::of(0_u64..200_000),
        ) {
            let policy = RefreshPolicy::default();
            let schedule = Schedule { consecutive_failures: failures, ..fresh() };
            let next = policy.next(
                &schedule,
                RefreshOutcome::Failed { retry_after: retry_after.map(Duration::from_secs) },
                NOW,
                &mut SeededJitter::new(seed),
            );
            let wait = next.next_refresh_at_ms.unwrap() - NOW;
            let full = (30_000_u64.saturating_mul(1 << failures.min(63))).min(3_600_000);
            let asked = retry_after.map_or(0, |seconds| (seconds * 1000).min(3_600_000));
            prop_assert!(wait >= (full - full / 5).max(asked), "{wait} {full} {asked}");
            prop_assert!(wait <= full.max(asked), "{wait} {full} {asked}");
            prop_assert_eq!(next.cooldown_until_ms, next.next_refresh_at_ms);
            prop_assert_eq!(next.status, ScheduleStatus::Retrying);
        }
    }
}
