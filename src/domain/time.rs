//! Event time: milliseconds since the Unix epoch, UTC. Small, `Copy`, and
//! exact enough for alert timestamps (Alertmanager sends milliseconds).

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    pub fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn now() -> Timestamp {
        Timestamp(Utc::now().timestamp_millis())
    }

    /// RFC 3339. Go's zero time (`0001-01-01T00:00:00Z`) and anything before
    /// 1970 mean "not set" in Alertmanager payloads, so they map to `None`.
    pub fn parse_rfc3339(s: &str) -> Result<Option<Timestamp>, chrono::ParseError> {
        let t = DateTime::parse_from_rfc3339(s)?;
        let ms = t.timestamp_millis();
        Ok((ms > 0).then_some(Timestamp(ms)))
    }

    pub fn to_rfc3339(self) -> String {
        match Utc.timestamp_millis_opt(self.0).single() {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
            None => format!("@{}ms", self.0),
        }
    }

    pub fn saturating_add(self, d: Duration) -> Timestamp {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    pub fn saturating_sub(self, d: Duration) -> Timestamp {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(ms))
    }

    /// `self - earlier`, zero when negative.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// `Option<Timestamp>` in 8 bytes instead of 16 (`Timestamp::MIN`, which
/// no event or engine time is, stands for none): for fields of the
/// incidents the engine keeps in memory. Serialized as the option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaybeTime(Timestamp);

impl Default for MaybeTime {
    fn default() -> MaybeTime {
        MaybeTime::NONE
    }
}

impl MaybeTime {
    pub const NONE: MaybeTime = MaybeTime(Timestamp::MIN);

    pub fn of(t: Option<Timestamp>) -> MaybeTime {
        t.map_or(MaybeTime::NONE, MaybeTime)
    }

    pub fn at(t: Timestamp) -> MaybeTime {
        MaybeTime(t)
    }

    pub fn get(self) -> Option<Timestamp> {
        (self != MaybeTime::NONE).then_some(self.0)
    }

    pub fn is_some(self) -> bool {
        self != MaybeTime::NONE
    }

    pub fn is_none(self) -> bool {
        self == MaybeTime::NONE
    }

    /// For serde's `skip_serializing_if`.
    pub fn is_none_ref(&self) -> bool {
        self.is_none()
    }

    /// The value, leaving none.
    pub fn take(&mut self) -> Option<Timestamp> {
        std::mem::replace(self, MaybeTime::NONE).get()
    }

    /// Set to `t`; the value before.
    pub fn replace(&mut self, t: Timestamp) -> Option<Timestamp> {
        std::mem::replace(self, MaybeTime(t)).get()
    }
}

impl From<Option<Timestamp>> for MaybeTime {
    fn from(t: Option<Timestamp>) -> MaybeTime {
        MaybeTime::of(t)
    }
}

impl Serialize for MaybeTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

impl<'de> Deserialize<'de> for MaybeTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MaybeTime, D::Error> {
        Option::<Timestamp>::deserialize(d).map(MaybeTime::of)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        match Timestamp::parse_rfc3339(&s) {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Ok(Timestamp(0)),
            Err(e) => Err(serde::de::Error::custom(format!(
                "invalid RFC 3339 time {s:?}: {e}"
            ))),
        }
    }
}

/// A duration as [`parse_duration`] reads it back, largest units first
/// (`7d`, `1h30m`, `250ms`): for messages that quote a setting.
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, per) in [
        ("d", 86_400_000u64),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= per {
            out.push_str(&format!("{}{unit}", ms / per));
            ms %= per;
        }
    }
    out
}

/// Prometheus-style duration: `30s`, `5m`, `1h30m`, `7d`, `2w`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("invalid duration {s:?}: expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms_per: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: missing unit (ms, s, m, h, d, w, y)"
                ));
            }
            u => return Err(format!("invalid duration {s:?}: unknown unit {u:?}")),
        };
        total = n
            .checked_mul(ms_per)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
    }
    Ok(Duration::from_millis(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_roundtrip_and_zero_time() {
        let t = Timestamp::parse_rfc3339("2026-03-02T08:00:01.000Z")
            .unwrap()
            .unwrap();
        assert_eq!(t.to_rfc3339(), "2026-03-02T08:00:01.000Z");
        assert_eq!(
            Timestamp::parse_rfc3339("0001-01-01T00:00:00Z").unwrap(),
            None
        );
        let nanos = Timestamp::parse_rfc3339("2026-03-02T08:00:01.123456789+01:00")
            .unwrap()
            .unwrap();
        assert_eq!(nanos.to_rfc3339(), "2026-03-02T07:00:01.123Z");
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }
}

/// Injected time source, so tests can drive the daemon's clock. Waits
/// measured in event time (an outbox retry due at `t`) go through it too,
/// so a test can let five minutes pass without waiting them.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// Resolves once `now() >= t`. This default suits any clock that keeps
    /// pace with real time.
    fn sleep_until(&self, t: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(t.since(self.now())))
    }
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock tests set by hand; its sleepers wake when it is moved past
/// their instant.
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicI64,
    moved: tokio::sync::Notify,
}

impl ManualClock {
    pub fn new(t: Timestamp) -> Self {
        ManualClock {
            ms: AtomicI64::new(t.0),
            moved: tokio::sync::Notify::new(),
        }
    }
    pub fn set(&self, t: Timestamp) {
        self.ms.store(t.0, Ordering::SeqCst);
        self.moved.notify_waiters();
    }
    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.ms.fetch_add(ms, Ordering::SeqCst);
        self.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.ms.load(Ordering::SeqCst))
    }

    fn sleep_until(&self, t: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                // Registered before the check, so a move in between is seen.
                let moved = self.moved.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if self.now() >= t {
                    return;
                }
                moved.await;
            }
        })
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleepers_wake_when_the_clock_passes_them() {
        let clock = std::sync::Arc::new(ManualClock::new(Timestamp(1_000)));
        let c = clock.clone();
        let sleeper = tokio::spawn(async move { c.sleep_until(Timestamp(301_000)).await });
        clock.advance(Duration::from_secs(200));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke before its instant");
        clock.advance(Duration::from_secs(100));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woke once the clock passed its instant")
            .expect("sleeper");
        // Already due: no wait at all.
        clock.sleep_until(Timestamp(2_000)).await;
    }
}
