//! The web board over HTTP, without a browser (tests/browser.rs drives a
//! real one): who may see and act, the cookie and form protections, the
//! live event stream, and the size of a board of a thousand incidents.

mod support;

use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;
use std::time::Duration;
use tower::ServiceExt;

/// One request to the in-process router: status, headers and body text.
async fn request(
    r: &incidentd::app::Running,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    if method == "POST" {
        req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(axum::body::Body::from(body.to_string()))
        .expect("request");
    let resp = r.router.clone().oneshot(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn set_cookies(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

/// `name=value` of the cookie `name` among the `Set-Cookie` headers.
fn cookie_pair(h: &HeaderMap, name: &str) -> String {
    set_cookies(h)
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .and_then(|c| c.split(';').next().map(str::to_string))
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", set_cookies(h)))
}

/// The form token of a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a form token") + 19;
    html[at..].split('"').next().expect("value").to_string()
}

/// Post one firing alert and find its incident through the API with the
/// operator token.
async fn open_incident(r: &incidentd::app::Running, name: &str, instance: &str) -> i64 {
    let (s, v) = support::call(
        r,
        "POST",
        "/api/v1/alerts",
        json!([{"labels": {"alertname": name, "instance": instance, "severity": "critical"},
                "status": "firing", "startsAt": "2026-11-30T10:00:00Z"}]),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, _, list) = request(
        r,
        "GET",
        "/api/v1/incidents?state=all",
        &[("authorization", "Bearer operator-secret-0123456789")],
        "",
    )
    .await;
    let list: serde_json::Value = serde_json::from_str(&list).expect("json");
    list["incidents"]
        .as_array()
        .expect("incidents")
        .iter()
        .find(|i| i["title"].as_str().is_some_and(|t| t.contains(name)))
        .and_then(|i| i["id"].as_i64())
        .unwrap_or_else(|| panic!("no incident for {name}: {list}"))
}

/// An incident as the API shows it to the operator token.
async fn api_incident(r: &incidentd::app::Running, id: i64) -> serde_json::Value {
    let (_, _, body) = request(
        r,
        "GET",
        &format!("/api/v1/incidents/{id}"),
        &[("authorization", "Bearer operator-secret-0123456789")],
        "",
    )
    .await;
    serde_json::from_str(&body).expect("json")
}

struct Signed {
    /// The `Cookie` header of the signed-in browser.
    cookies: String,
    csrf: String,
}

/// A browser that fetched the sign-in page and signed in with `token`.
async fn sign_in(r: &incidentd::app::Running, token: &str) -> Signed {
    let (s, h, html) = request(r, "GET", "/login?next=%2F", &[], "").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let session = cookie_pair(&h, "incidentd_session");
    let csrf = csrf_of(&html);
    let body = format!("csrf={csrf}&next=%2F&token={token}");
    let (s, h, html) = request(r, "POST", "/login", &[("cookie", &session)], &body).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{html}");
    let all = set_cookies(&h);
    let tok = all
        .iter()
        .find(|c| c.starts_with("incidentd_token="))
        .expect("token cookie");
    assert!(
        tok.contains("HttpOnly") && tok.contains("SameSite=Strict") && tok.contains("Path=/"),
        "{tok}"
    );
    let cookies = format!(
        "{}; {}",
        cookie_pair(&h, "incidentd_token"),
        cookie_pair(&h, "incidentd_session")
    );
    let (s, _, html) = request(r, "GET", "/", &[("cookie", &cookies)], "").await;
    assert_eq!(s, StatusCode::OK, "{html}");
    Signed {
        csrf: csrf_of(&html),
        cookies,
    }
}

/// A daemon with a read token (`viewer`) and an operator token (`alice`).
fn tokens_config(dir: &std::path::Path, extra: &str) -> incidentd::config::Config {
    let read = dir.join("read.token");
    let op = dir.join("op.token");
    std::fs::write(&read, "read-secret-0123456789\n").expect("write");
    std::fs::write(&op, "operator-secret-0123456789\n").expect("write");
    support::config_in(
        dir,
        &format!(
            "[api.read_tokens]\nviewer = {read:?}\n[api.operator_tokens]\nalice = {op:?}\n{extra}"
        ),
    )
}

#[tokio::test]
async fn without_a_token_the_board_asks_for_one_and_shows_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = support::start(&tokens_config(dir.path(), "")).await;
    open_incident(&r, "SecretDatabaseOutage", "db-1").await;
    for path in [
        "/",
        "/incidents/1",
        "/services",
        "/problems",
        "/changes",
        "/cis",
    ] {
        let (s, h, body) = request(&r, "GET", path, &[], "").await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{path}: {body}");
        let to = h.get(header::LOCATION).and_then(|v| v.to_str().ok());
        assert_eq!(
            to,
            Some(format!("/login?next={}", path.replace('/', "%2F")).as_str())
        );
        assert!(!body.contains("SecretDatabaseOutage"), "{path}: {body}");
    }
    // The script's partial refresh and the event stream say no, too.
    let (s, _, body) = request(&r, "GET", "/", &[("x-incidentd-partial", "1")], "").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(!body.contains("SecretDatabaseOutage"));
    let (s, _, _) = request(&r, "GET", "/ui/events", &[], "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A wrong token is refused on the form, which says so.
    let (_, h, html) = request(&r, "GET", "/login", &[], "").await;
    let session = cookie_pair(&h, "incidentd_session");
    let body = format!("csrf={}&token=guess", csrf_of(&html));
    let (s, h, html) = request(&r, "POST", "/login", &[("cookie", &session)], &body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(html.contains("not one of this daemon"), "{html}");
    assert!(set_cookies(&h).is_empty());
    // A forged cookie is no token either.
    let (s, _, _) = request(&r, "GET", "/", &[("cookie", "incidentd_token=guess")], "").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    // Assets are public (they hold no data).
    let (s, h, _) = request(&r, "GET", incidentd::ui::CSS_PATH, &[], "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|v| v.starts_with("text/css"))
    );
}

#[tokio::test]
async fn readers_see_operators_act_and_forms_are_protected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = support::start(&tokens_config(dir.path(), "")).await;
    let id = open_incident(&r, "DiskFull", "web-1").await;
    let reader = sign_in(&r, "read-secret-0123456789").await;
    let (s, _, html) = request(&r, "GET", "/", &[("cookie", &reader.cookies)], "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("DiskFull"), "{html}");
    assert!(html.contains("viewer (read-only)"));
    let page = format!("/incidents/{id}");
    let (_, _, html) = request(&r, "GET", &page, &[("cookie", &reader.cookies)], "").await;
    assert!(html.contains("may read but not act"), "{html}");
    let ack = format!("/incidents/{id}/ack");
    let (s, _, html) = request(
        &r,
        "POST",
        &ack,
        &[("cookie", &reader.cookies)],
        &format!("csrf={}", reader.csrf),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{html}");

    let alice = sign_in(&r, "operator-secret-0123456789").await;
    // No form token, another session's token, a post from another site:
    // all refused, and nothing changes.
    for (headers, body) in [
        (vec![("cookie", alice.cookies.as_str())], String::new()),
        (
            vec![("cookie", alice.cookies.as_str())],
            format!("csrf={}", reader.csrf),
        ),
        (
            vec![
                ("cookie", alice.cookies.as_str()),
                ("sec-fetch-site", "cross-site"),
            ],
            format!("csrf={}", alice.csrf),
        ),
        (
            vec![
                ("cookie", alice.cookies.as_str()),
                ("origin", "https://evil.example"),
                ("host", "incidentd.example.com"),
            ],
            format!("csrf={}", alice.csrf),
        ),
    ] {
        let (s, _, html) = request(&r, "POST", &ack, &headers, &body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{headers:?} {body}: {html}");
    }
    let inc = api_incident(&r, id).await;
    assert_eq!(inc["state"], "open", "{inc}");

    let (s, h, _) = request(
        &r,
        "POST",
        &ack,
        &[
            ("cookie", &alice.cookies),
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://incidentd.example.com"),
            ("host", "incidentd.example.com"),
        ],
        &format!("csrf={}", alice.csrf),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let to = h[header::LOCATION].to_str().expect("location").to_string();
    assert!(to.starts_with(&format!("/incidents/{id}?note=")), "{to}");
    let inc = api_incident(&r, id).await;
    assert_eq!(inc["state"], "acknowledged");
    assert_eq!(inc["acknowledged_by"], "alice");
    assert!(
        inc["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|e| e["kind"] == "acknowledged" && e["actor"] == "alice"),
        "{inc}"
    );
    let (_, _, html) = request(&r, "GET", &to, &[("cookie", &alice.cookies)], "").await;
    assert!(html.contains("Acknowledged by alice."), "{html}");
    // A hold needs a reason of the documented shape.
    let hold = format!("/incidents/{id}/hold");
    let (s, h, _) = request(
        &r,
        "POST",
        &hold,
        &[("cookie", &alice.cookies)],
        &format!("csrf={}&reason=Waiting+on+Bob", alice.csrf),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(
        h[header::LOCATION]
            .to_str()
            .is_ok_and(|l| l.contains("Not%20put%20on%20hold") || l.contains("Not+put+on+hold"))
    );
    let inc = api_incident(&r, id).await;
    assert!(inc["holds"].as_array().is_none_or(Vec::is_empty), "{inc}");
    // Signing out ends the token's cookie.
    let (s, h, _) = request(
        &r,
        "POST",
        "/logout",
        &[("cookie", &alice.cookies)],
        &format!("csrf={}", alice.csrf),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(
        set_cookies(&h)
            .iter()
            .any(|c| c.starts_with("incidentd_token=;") && c.contains("Max-Age=0"))
    );
}

#[tokio::test]
async fn a_trusted_proxy_names_who_acts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = tokens_config(
        dir.path(),
        "[ui]\ntrusted_proxy_header = \"X-Forwarded-User\"\nproxy_access = \"operator\"\npublic_url = \"https://incidentd.example.com/\"\n",
    );
    // Cookies over the public HTTPS URL are Secure.
    let r = support::start(&c).await;
    let id = open_incident(&r, "ProxyCase", "web-2").await;
    let (s, h, html) = request(
        &r,
        "GET",
        &format!("/incidents/{id}"),
        &[("x-forwarded-user", "bob@example.com")],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(html.contains("bob@example.com"));
    let session = cookie_pair(&h, "incidentd_session");
    assert!(set_cookies(&h).iter().all(|c| c.ends_with("; Secure")));
    let (s, _, _) = request(
        &r,
        "POST",
        &format!("/incidents/{id}/resolve"),
        &[
            ("x-forwarded-user", "bob@example.com"),
            ("cookie", &session),
            ("origin", "https://incidentd.example.com"),
            ("host", "127.0.0.1:9797"),
        ],
        &format!("csrf={}", csrf_of(&html)),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let inc = api_incident(&r, id).await;
    assert_eq!(inc["state"], "resolved", "{inc}");
    assert!(
        inc["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|e| e["kind"] == "resolved" && e["actor"] == "bob@example.com"),
        "{inc}"
    );
    // Without the header, the API's tokens apply as before.
    let (s, _, _) = request(&r, "GET", "/", &[], "").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
}

#[test]
fn the_public_url_is_every_destinations_details_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = support::config_in(
        dir.path(),
        "[ui]\npublic_url = \"https://incidentd.example.com\"\n\
         [[outbound.destinations]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T0/B0/x\"\n\
         [[outbound.destinations]]\nname = \"own\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T0/B0/y\"\nincident_url = \"https://grafana.example.com/d/x?id={id}\"\n",
    );
    let urls: Vec<Option<&str>> = c
        .outbound
        .iter()
        .map(|d| d.incident_url.as_deref())
        .collect();
    assert_eq!(
        urls,
        [
            Some("https://incidentd.example.com/incidents/{id}"),
            Some("https://grafana.example.com/d/x?id={id}")
        ]
    );
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[ui]\npublic_url = \"incidentd.example.com\"\nproxy_access = \"admin\"\n",
    )
    .expect("write");
    let errs = incidentd::config::load(Some(&file), &incidentd::config::Overrides::default())
        .expect_err("invalid");
    let incidentd::config::ConfigError::Invalid(errs) = errs else {
        panic!("{errs}");
    };
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert!(
        fields.contains(&"ui.public_url") && fields.contains(&"ui.proxy_access"),
        "{fields:?}"
    );
}

#[tokio::test]
async fn the_event_stream_tells_of_each_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = support::start(&support::config_in(dir.path(), "")).await;
    let req = axum::http::Request::builder()
        .uri("/ui/events")
        .body(axum::body::Body::empty())
        .expect("request");
    let resp = r.router.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = resp.into_body();
    let mut next = async || {
        let f = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an event within 5 s")
            .expect("stream open")
            .expect("frame");
        String::from_utf8_lossy(&f.into_data().expect("data")).into_owned()
    };
    assert!(next().await.starts_with("retry:"));
    support::open_incident(&r, "Burning", "web-9", "critical").await;
    let ev = next().await;
    assert!(ev.starts_with("event: changed\n"), "{ev}");
}

#[tokio::test]
async fn a_board_of_a_thousand_incidents_stays_small() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = support::config_in(dir.path(), "");
    c.limits.alert.max_alerts = 2_000;
    let r = support::start(&c).await;
    let alerts: Vec<_> = (0..1000)
        .map(|i| {
            let severity = ["critical", "warning", "info"][i % 3];
            json!({"labels": {"alertname": format!("ServiceLatencyHigh{i}"), "instance": format!("app-{i:04}.prod.example.com:9100"),
                "severity": severity},
                "annotations": {"summary": "p99 latency above 2 s for 10 minutes on the checkout path"},
                "status": "firing", "startsAt": "2026-11-30T10:00:00Z"})
        })
        .collect();
    let (s, v) = support::call(&r, "POST", "/api/v1/alerts", json!(alerts)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, html) = request(&r, "GET", "/", &[], "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(html.matches("<tr class=P").count(), 1000);
    let at = html.find("<tr class=P").expect("row");
    assert!(
        html.len() < 300_000,
        "{} bytes; a row: {}",
        html.len(),
        &html[at..at + 700]
    );
}

/// A browser with the board open keeps an event stream open; SIGTERM must
/// not wait for it (the server drains open requests for up to
/// `http.request_timeout`).
#[tokio::test]
async fn an_open_board_does_not_hold_up_a_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = support::daemon::TestDaemon::new(&dir.path().join("data"), dir.path()).start();
    d.wait_ready(Duration::from_secs(30)).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut stream = client
        .get(format!("{}/ui/events", d.base))
        .send()
        .await
        .expect("event stream");
    assert_eq!(stream.status(), reqwest::StatusCode::OK);
    let first = stream.chunk().await.expect("a chunk").expect("open");
    assert!(first.starts_with(b"retry:"));
    let asked = std::time::Instant::now();
    support::daemon::signal(d.pid(), "TERM");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived the stop");
    while d.exited().is_none() {
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "incidentd took more than 10 s to stop with a board open:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
