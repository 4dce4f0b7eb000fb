//! Secrets in URLs kept out of everything a person or a log shipper reads:
//! passwords in the userinfo, query values whose names say key, token,
//! secret, password or signature, and the path of Slack-style hook URLs
//! (the path *is* the credential there). Used for logs, `check` output,
//! error messages and the outbox's `last_error`.

use regex::Regex;
use std::sync::LazyLock;

const MASK: &str = "***";

/// Hosts whose URL path is itself the credential.
const HOOK_HOSTS: [&str; 3] = ["hooks.slack.com", "hooks.slack-gov.com", "discord.com"];

/// Whether a query parameter name marks its value as secret.
pub fn sensitive_name(name: &str) -> bool {
    let n: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    [
        "key",
        "token",
        "secret",
        "pass",
        "pwd",
        "sig",
        "auth",
        "credential",
        "session",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// `url` with its secrets masked; text that is no URL comes back as is.
pub fn redact_url(url: &str) -> String {
    redact(url, false)
}

/// As [`redact_url`], and the whole path masked too: for URLs whose path
/// is a credential whatever the host (a Slack incoming webhook behind a
/// corporate relay, say).
pub fn redact_url_path(url: &str) -> String {
    redact(url, true)
}

fn redact(url: &str, mask_path: bool) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..auth_end];
    let tail = &rest[auth_end..];
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..rest_start]);
    let host = match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            &authority[at + 1..]
        }
        None => authority,
    };
    out.push_str(host);
    let host_name = host
        .rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
        .to_ascii_lowercase();
    let (path, query_and_fragment) = match tail.find(['?', '#']) {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    let hook = HOOK_HOSTS.iter().any(|h| host_name == *h);
    if (mask_path || hook) && path.len() > 1 {
        // Keep the first segment (`/services`, `/api`): it says what the
        // URL is without saying what unlocks it.
        let first = path[1..].find('/').map_or(0, |i| i + 1);
        if first > 0 && !mask_path {
            out.push_str(&path[..first]);
        }
        out.push('/');
        out.push_str(MASK);
    } else {
        out.push_str(path);
    }
    let (query, fragment) = match query_and_fragment.find('#') {
        Some(i) => query_and_fragment.split_at(i),
        None => (query_and_fragment, ""),
    };
    if let Some(q) = query.strip_prefix('?') {
        out.push('?');
        let pairs: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if sensitive_name(k) => format!("{k}={MASK}"),
                _ => kv.to_string(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out.push_str(fragment);
    out
}

static URL_IN_TEXT: LazyLock<Regex> = LazyLock::new(|| {
    // Scheme, `://`, then everything up to white space or a delimiter
    // that does not belong to a URL in prose or in Debug output. A
    // literal pattern, exercised by the tests below: it cannot fail.
    Regex::new(r#"[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>()\[\]{}`]+"#).expect("valid literal pattern")
});

/// Every URL inside `text` (an error message, a log line) redacted.
pub fn redact_text(text: &str) -> String {
    URL_IN_TEXT
        .replace_all(text, |c: &regex::Captures<'_>| redact_url(&c[0]))
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_userinfo_are_masked() {
        assert_eq!(
            redact_url("postgres://incidentd:s3cret@db:5432/incidentd?sslmode=require"),
            "postgres://incidentd:***@db:5432/incidentd?sslmode=require"
        );
        assert_eq!(
            redact_url("https://admin:pa:ss@x.service-now.com/api"),
            "https://admin:***@x.service-now.com/api"
        );
        assert_eq!(
            redact_url("postgres://incidentd@db/incidentd"),
            "postgres://incidentd@db/incidentd"
        );
    }

    #[test]
    fn secret_query_values_are_masked_and_others_kept() {
        assert_eq!(
            redact_url(
                "https://h/x?apikey=A1&api_key=A2&token=T&page=2&X-Amz-Signature=S&password=P&sslmode=verify-full#frag"
            ),
            "https://h/x?apikey=***&api_key=***&token=***&page=2&X-Amz-Signature=***&password=***&sslmode=verify-full#frag"
        );
    }

    #[test]
    fn hook_paths_are_masked() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T000/B000/XXXXSECRET"),
            "https://hooks.slack.com/services/***"
        );
        assert_eq!(
            redact_url_path("https://relay.example.com/hook/XXXXSECRET"),
            "https://relay.example.com/***"
        );
        assert_eq!(
            redact_url("https://events.pagerduty.com/v2/enqueue"),
            "https://events.pagerduty.com/v2/enqueue"
        );
    }

    #[test]
    fn urls_inside_text_are_found() {
        let t = "error sending request for url (https://u:pw@h/p?token=abc): connection refused; \"postgres://a:b@c/d\"";
        assert_eq!(
            redact_text(t),
            "error sending request for url (https://u:***@h/p?token=***): connection refused; \"postgres://a:***@c/d\""
        );
        assert_eq!(redact_text("no url here"), "no url here");
    }
}
