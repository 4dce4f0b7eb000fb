//! Generic webhook: a JSON body per change, signed so the receiver can
//! tell it came from incidentd and was not replayed.
//!
//! Headers: `X-Incidentd-Delivery: <id>` (unique per outbox message, the
//! same on every retry: receivers deduplicate on it) and
//! `X-Incidentd-Signature: t=<unix seconds>,v1=<hex>` where `v1` is
//! HMAC-SHA256 with the shared secret over `"<t>.<body>"`. A receiver
//! recomputes it, compares in constant time, and refuses a `t` older than
//! its tolerance (5 minutes is usual): a captured request cannot be
//! replayed later, and a retried one carries a fresh `t`.

use super::destination::{Call, Destination, one_call};
use super::link::{Answer, Link};
use super::{EventKind, Request};
use crate::domain::{Incident, Timestamp};
use crate::store::{BoxFuture, OutboxRow, StoreError};
use hmac::{KeyInit, Mac};
use reqwest::RequestBuilder;
use serde_json::json;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub const DELIVERY_HEADER: &str = "X-Incidentd-Delivery";
pub const SIGNATURE_HEADER: &str = "X-Incidentd-Signature";

/// The body for one change (`delivery` is the outbox message's id).
pub fn body(inc: &Incident, kind: EventKind, delivery: i64) -> Request {
    Request::post(
        "",
        json!({
            "event": kind.as_str(),
            "delivery_id": delivery,
            "incident": inc,
        }),
    )
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length, so this cannot fail.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `X-Incidentd-Signature` value for `body` sent at `now`.
pub fn signature(secret: &[u8], body: &[u8], now: Timestamp) -> String {
    let t = now.millis().div_euclid(1000);
    let code = mac(secret, t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(code))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("malformed signature header")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
    #[error("signature timestamp outside the tolerance (replayed or clock skew)")]
    Stale,
}

/// What a receiver does: check `header` for `body` at `now`, refusing a
/// timestamp more than `tolerance_secs` away.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: Timestamp,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(SignatureError::Malformed);
    };
    if (now.millis().div_euclid(1000) - t).abs() > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    mac(secret, t, body)
        .verify_slice(&v1)
        .map_err(|_| SignatureError::Mismatch)
}

/// A generic webhook receiver sharing a signing secret.
pub struct Webhook {
    pub secret: String,
}

impl Destination for Webhook {
    fn authorize(&self, rb: RequestBuilder, call: &Call<'_>) -> RequestBuilder {
        let body = call.body.unwrap_or_default();
        let sig = signature(self.secret.as_bytes(), body, call.now);
        rb.header(DELIVERY_HEADER, call.delivery.to_string())
            .header(SIGNATURE_HEADER, sig)
    }

    fn deliver<'a>(
        &'a self,
        link: &'a Link,
        row: &'a OutboxRow,
    ) -> BoxFuture<'a, Result<Option<Answer>, StoreError>> {
        let req = body(&row.message.incident, row.message.kind, row.id);
        Box::pin(one_call(link, row, Some(req)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::tests::incident;

    #[test]
    fn signatures_verify_and_refuse_tampering_and_replay() {
        let inc = incident();
        let r = body(&inc, EventKind::Opened, 7);
        let b = r.body.expect("body");
        assert_eq!(b["event"], "opened");
        assert_eq!(b["delivery_id"], 7);
        assert_eq!(b["incident"]["id"], 42);
        let bytes = serde_json::to_vec(&b).expect("json");
        let now = Timestamp(1_795_000_000_123);
        let sig = signature(b"s3cret", &bytes, now);
        assert!(sig.starts_with("t=1795000000,v1="), "{sig}");
        assert_eq!(verify(b"s3cret", &sig, &bytes, now, 300), Ok(()));
        assert_eq!(
            verify(b"s3cret", &sig, &bytes, Timestamp(now.0 + 299_000), 300),
            Ok(())
        );
        assert_eq!(
            verify(b"s3cret", &sig, &bytes, Timestamp(now.0 + 301_000), 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(b"other", &sig, &bytes, now, 300),
            Err(SignatureError::Mismatch)
        );
        let mut tampered = bytes.clone();
        tampered[0] = b' ';
        assert_eq!(
            verify(b"s3cret", &sig, &tampered, now, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", "v1=00", &bytes, now, 300),
            Err(SignatureError::Malformed)
        );
        // A vector computed elsewhere (Python's hmac), so receivers in other
        // languages can check theirs: HMAC-SHA256("key", "1.{}").
        assert_eq!(
            signature(b"key", b"{}", Timestamp(1_000)),
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }
}
