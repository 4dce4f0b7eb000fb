//! The ITSM tools beyond ServiceNow and Jira, each against a fake that
//! keeps to the vendor's documented contract (`tests/support/…`, citing
//! its pages): one ticket per incident even when a create's answer is
//! lost, every update once and in order through an outage and rate
//! limiting, the ticket's status following the incident's, notes for the
//! timeline, and changes made in the tool read back (polling, webhooks).

mod support;

use axum::http::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::{call, freshservice, servicedeskplus, start, teamdynamix};

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until incident `id` is resolved, by `actor` (a ticket changed
/// in its tool, read back).
async fn wait_resolved_by(r: &incidentd::app::Running, id: i64, actor: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, d) = call(r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
        if d["state"] == "resolved" {
            let by = d["timeline"]
                .as_array()
                .expect("timeline")
                .iter()
                .any(|e| e["kind"] == "resolved" && e["actor"] == actor);
            assert!(by, "resolved, not by {actor}: {d}");
            return;
        }
        assert!(Instant::now() < deadline, "not resolved by the poll: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Freshservice destination at `url` with `extra` settings.
fn freshservice_config(url: &str, extra: &str) -> String {
    format!(
        "[incident]\nauto_resolve_hold = \"0s\"\n\n[[outbound.destinations]]\nname = \"fs\"\nkind = \"freshservice\"\nurl = \"{url}\"\napi_key = \"{}\"\nrequester_email = \"noc@example.com\"\ngroup_id = 7\nsource = {}\ncategory = \"Infrastructure\"\nfields = {{ cf_root_ci = \"{{root_ci}}\", cf_services = \"{{services}}\" }}\nbackoff_base = \"20ms\"\nbackoff_max = \"200ms\"\n{extra}\n",
        freshservice::API_KEY,
        freshservice::MONITORING_SOURCE,
    )
}

async fn open(r: &incidentd::app::Running, name: &str) -> i64 {
    support::open_incident(r, name, &format!("{name}:9100"), "critical").await
}

async fn act_by(r: &incidentd::app::Running, id: i64, action: &str, body: Value) {
    let (s, v) = call(r, "POST", &format!("/api/v1/incidents/{id}/{action}"), body).await;
    assert_eq!(s, StatusCode::OK, "{action}: {v}");
}

/// One Freshservice ticket per incident with everything the account
/// requires, found again by its tag after a lost create answer; hold,
/// resume and resolution set Pending, Open and Resolved; every change a
/// private note, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshservice_ticket_follows_the_incident() {
    let (url, fs) = freshservice::start().await;
    fs.lock().expect("fs").lose_next_create = true;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = support::config_in(dir.path(), &freshservice_config(&url, ""));
    let r = start(&cfg).await;
    let id = open(&r, "CheckoutErrors").await;
    wait_for("the ticket", || fs.lock().expect("fs").notes.len() == 1).await;
    act_by(&r, id, "ack", json!({"by": "bob"})).await;
    act_by(
        &r,
        id,
        "hold",
        json!({"by": "bob", "reason": "awaiting-vendor"}),
    )
    .await;
    act_by(&r, id, "resume", Value::Null).await;
    act_by(&r, id, "resolve", json!({"by": "bob"})).await;
    wait_for("the resolution", || fs.lock().expect("fs").notes.len() == 5).await;
    let (_, d) = call(&r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
    {
        let s = fs.lock().expect("fs");
        assert_eq!(
            s.tickets.len(),
            1,
            "one ticket despite the lost create answer"
        );
        let t = &s.tickets[0];
        let tid = t["id"].as_i64().expect("id");
        assert_eq!(t["email"], "noc@example.com");
        assert_eq!(
            t["subject"],
            format!(
                "[{}] {} (incidentd-{id})",
                d["priority"].as_str().expect("priority"),
                d["title"].as_str().expect("title")
            )
        );
        assert_eq!(t["tags"], json!([format!("incidentd-{id}")]));
        // P2 is Freshservice's High (3); the ticket ends Resolved (4).
        assert_eq!(d["priority"], "P2", "{d}");
        assert_eq!(
            (t["priority"].as_i64(), t["status"].as_i64()),
            (Some(3), Some(4))
        );
        assert_eq!(t["source"], freshservice::MONITORING_SOURCE);
        assert_eq!(
            (t["group_id"].as_i64(), t["category"].as_str()),
            (Some(7), Some("Infrastructure"))
        );
        assert!(t["custom_fields"]["cf_root_ci"].is_string(), "{t}");
        assert_eq!(
            s.notes_of(tid),
            [
                format!("incidentd opened incident {id}"),
                "incidentd: acknowledged by bob".into(),
                "incidentd: on hold (awaiting-vendor) by bob".into(),
                "incidentd: taken off hold".into(),
                "incidentd: resolved".into(),
            ]
        );
        assert!(
            s.notes.iter().all(|(_, _, private)| *private),
            "{:?}",
            s.notes
        );
        let filter = format!("filter \"tag:'incidentd-{id}'\"");
        let status = |n: u8| format!("update {tid} {{\"status\":{n}}}");
        let note = format!("note {tid}");
        assert_eq!(
            s.calls,
            [
                filter.clone(),
                "create".into(),
                // The lost create is found by its tag.
                filter,
                note.clone(),
                note.clone(),
                status(3),
                note.clone(),
                status(2),
                note.clone(),
                status(4),
                note,
            ]
        );
    }
    assert!(
        d["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .all(|e| e["kind"] != "outbound_failed"),
        "{d}"
    );
    r.shutdown().await;
}

/// An outage (503s) and then the account's rate limit (429 +
/// Retry-After; the destination's own limit raised above the account's so
/// that it binds) while three incidents are opened, acknowledged and
/// resolved: every ticket once, each one's notes complete and in order,
/// and no call made sooner than the 429 asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshservice_outage_and_rate_limit_lose_and_repeat_nothing() {
    let (url, fs) = freshservice::start().await;
    {
        let mut s = fs.lock().expect("fs");
        s.outage = 6;
        s.per_window = Some(4);
        s.window = Duration::from_secs(2);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = support::config_in(
        dir.path(),
        &freshservice_config(
            &url,
            "breaker_failures = 100\nrate_limit = 10.0\nburst = 10\n",
        ),
    );
    let r = start(&cfg).await;
    let mut ids = Vec::new();
    for name in ["DiskFull", "QueueStuck", "CertExpiry"] {
        let id = open(&r, name).await;
        act_by(&r, id, "ack", json!({"by": "ann"})).await;
        act_by(&r, id, "resolve", json!({"by": "ann"})).await;
        ids.push(id);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs.lock().expect("fs").notes.len() < 6 {
        assert!(
            Instant::now() < deadline,
            "updates still missing: {:?}",
            fs.lock().expect("fs").calls
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let s = fs.lock().expect("fs");
        assert!(
            s.throttled > 0,
            "the rate limit was never reached: {:?}",
            s.calls
        );
        assert_eq!(s.early, 0, "calls made before Retry-After had passed");
        assert_eq!(s.tickets.len(), 3, "{:?}", s.calls);
        for id in ids {
            let t = s
                .tickets
                .iter()
                .find(|t| t["tags"] == json!([format!("incidentd-{id}")]))
                .unwrap_or_else(|| panic!("no ticket for {id}"));
            assert_eq!(t["status"], 4, "{t}");
            assert_eq!(
                s.notes_of(t["id"].as_i64().expect("id")),
                [
                    "incidentd: acknowledged by ann".to_string(),
                    "incidentd: resolved".into()
                ],
                "ticket of {id}"
            );
        }
    }
    r.shutdown().await;
}

/// A ticket resolved by an agent in Freshservice resolves its incident
/// here, read back by polling (the filter matches tags; tickets are mapped
/// back by their ids); a Workflow Automator webhook with the destination's
/// token acknowledges another, and without it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshservice_changes_come_back_by_polling_and_webhook() {
    let (url, fs) = freshservice::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = support::config_in(
        dir.path(),
        &freshservice_config(
            &url,
            "poll_interval = \"1s\"\ninbound_token = \"fs-hook-t0ken\"\n",
        ),
    );
    let r = start(&cfg).await;
    let first = open(&r, "PaymentsDown").await;
    let second = open(&r, "SearchSlow").await;
    wait_for("both tickets", || fs.lock().expect("fs").tickets.len() == 2).await;
    {
        let mut s = fs.lock().expect("fs");
        let t = s
            .tickets
            .iter_mut()
            .find(|t| t["tags"] == json!([format!("incidentd-{first}")]))
            .expect("ticket");
        t["status"] = json!(4);
        t["responder_id"] = json!(77);
    }
    wait_resolved_by(&r, first, "freshservice:agent-77").await;
    assert!(
        fs.lock().expect("fs").calls.iter().any(|c| c.starts_with("filter \"(tag:")
            && c.ends_with("AND (status:4 OR status:5)\"")),
        "{:?}",
        fs.lock().expect("fs").calls
    );
    let body = json!({"ticket": {"id": "382", "tags": format!("incidentd-{second}"), "status": "Open", "agent": "Dana"}})
        .to_string();
    let (s, v) = support::oneshot(
        &r.router,
        "POST",
        "/api/v1/webhooks/fs",
        &[],
        body.clone().into_bytes(),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "{}",
        String::from_utf8_lossy(&v)
    );
    let (s, v) = support::oneshot(
        &r.router,
        "POST",
        "/api/v1/webhooks/fs",
        &[("authorization", "Bearer fs-hook-t0ken")],
        body.into_bytes(),
    )
    .await;
    let v: Value = serde_json::from_slice(&v).unwrap_or(Value::Null);
    assert_eq!(
        (s, v["action"].as_str()),
        (StatusCode::OK, Some("acknowledged")),
        "{v}"
    );
    let (_, d) = call(
        &r,
        "GET",
        &format!("/api/v1/incidents/{second}"),
        Value::Null,
    )
    .await;
    assert_eq!(d["acknowledged_by"], "freshservice:Dana", "{d}");
    r.shutdown().await;
}

/// The fake refuses what Freshservice refuses, so that a test passing
/// against it is not passing because it is lenient.
#[tokio::test]
async fn the_freshservice_fake_keeps_to_the_contract() {
    let (url, _fs) = freshservice::start().await;
    let c = reqwest::Client::new();
    let send =
        async |method: reqwest::Method, path: &str, key: Option<&str>, body: Option<Value>| {
            let mut rb = c.request(method, format!("{url}{path}"));
            if let Some(k) = key {
                rb = rb.basic_auth(k, Some("X"));
            }
            if let Some(b) = body {
                rb = rb.json(&b);
            }
            let r = rb.send().await.expect("send");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        };
    let post = reqwest::Method::POST;
    let key = Some(freshservice::API_KEY);
    let good = json!({"email": "noc@example.com", "subject": "s", "description": "d", "status": 2, "priority": 4});
    assert_eq!(
        send(
            post.clone(),
            "/api/v2/tickets",
            Some("wrong"),
            Some(good.clone())
        )
        .await
        .0,
        401
    );
    let (s, v) = send(
        post.clone(),
        "/api/v2/tickets",
        key,
        Some(json!({"subject": "s"})),
    )
    .await;
    assert_eq!(s, 400);
    let fields: Vec<&str> = v["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        ["requester_id", "description", "status", "priority"],
        "{v}"
    );
    for (field, bad) in [
        ("priority", json!(5)),
        ("urgency", json!(4)),
        ("status", json!(1)),
        ("source", json!(99)),
        ("group_id", json!(1)),
        ("category", json!("Sundry")),
        ("subject", json!("x".repeat(256))),
    ] {
        let mut b = good.clone();
        b[field] = bad;
        let (s, v) = send(post.clone(), "/api/v2/tickets", key, Some(b)).await;
        assert_eq!(
            (s, v["errors"][0]["field"].as_str()),
            (400, Some(field)),
            "{v}"
        );
    }
    let mut b = good.clone();
    b["custom_fields"] = json!({"cf_nope": "x"});
    assert_eq!(
        send(post.clone(), "/api/v2/tickets", key, Some(b)).await.0,
        400
    );
    let (s, v) = send(post.clone(), "/api/v2/tickets", key, Some(good)).await;
    assert_eq!((s, v["ticket"]["id"].is_number()), (201, true), "{v}");
    let get = reqwest::Method::GET;
    assert_eq!(
        send(
            get.clone(),
            "/api/v2/tickets/filter?query=status:2",
            key,
            None
        )
        .await
        .0,
        400
    );
    let long = format!("\"{}\"", vec!["status:2"; 60].join(" OR "));
    assert_eq!(
        send(
            get.clone(),
            &format!("/api/v2/tickets/filter?query={}", urlencode(&long)),
            key,
            None
        )
        .await
        .0,
        400
    );
    let (s, v) = send(
        get.clone(),
        &format!("/api/v2/tickets/filter?query={}", urlencode("\"status:2\"")),
        key,
        None,
    )
    .await;
    assert_eq!((s, v["total"].as_u64()), (200, Some(1)), "{v}");
    assert!(v["tickets"][0].get("tags").is_none(), "{v}");
    assert_eq!(send(get, "/helpdesk/tickets.json", key, None).await.0, 404);
    let (s, _) = send(
        post,
        "/api/v2/tickets/99999/notes",
        key,
        Some(json!({"body": "x"})),
    )
    .await;
    assert_eq!(s, 404);
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A Freshservice destination without a requester, a ServiceDesk Plus one
/// with two kinds of credential or half of one, a TeamDynamix one without
/// its login and ids, and their settings on another kind are refused, each
/// field named.
#[test]
fn ticket_tool_settings_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("incidentd.toml");
    std::fs::write(
        &file,
        "[[outbound.destinations]]\nname = \"fs\"\nkind = \"freshservice\"\nurl = \"https://acme.freshservice.com\"\napi_key = \"k\"\ngroup_id = -1\nfields = { \"CF Bad\" = \"x\" }\n\n[[outbound.destinations]]\nname = \"pd\"\nkind = \"pagerduty\"\nrouting_key = \"R0UTINGKEYR0UTINGKEYR0UTINGKEY00\"\nrequester_email = \"a@b.c\"\ntechnician_key = \"k\"\n\n[[outbound.destinations]]\nname = \"sdp\"\nkind = \"servicedeskplus\"\nurl = \"https://sdp.example.com\"\ntechnician_key = \"k\"\nclient_id = \"c\"\nimpact_names = { huge = \"x\" }\nfields = { cf_x = \"y\" }\n\n[[outbound.destinations]]\nname = \"sdp2\"\nkind = \"servicedeskplus\"\nurl = \"https://sdpondemand.manageengine.com/app/itdesk\"\nclient_id = \"c\"\n\n[[outbound.destinations]]\nname = \"tdx\"\nkind = \"teamdynamix\"\nurl = \"https://acme.teamdynamix.com/TDWebApi\"\n",
    )
    .expect("write");
    let e = incidentd::config::load(Some(&file), &incidentd::config::Overrides::default())
        .expect_err("invalid")
        .to_string();
    for needle in [
        "outbound.destinations[0].requester_email: set one of requester_email or requester_id",
        "outbound.destinations[0].group_id: an id is a positive number",
        "outbound.destinations[0].fields.CF Bad",
        "outbound.destinations[1].requester_email: only for freshservice and teamdynamix destinations",
        "outbound.destinations[4].beid: required",
        "outbound.destinations[4].web_services_key: required",
        "outbound.destinations[4].app_id: required",
        "outbound.destinations[4].account_id: required",
        "outbound.destinations[4].requestor_uid: set one of requestor_uid",
        "outbound.destinations[1].technician_key: only for servicedeskplus destinations",
        "outbound.destinations[2].technician_key: set technician_key (on-premises) or client_id",
        "outbound.destinations[2].impact_names.huge: \"huge\": one of high, medium, low",
        "outbound.destinations[2].fields.cf_x: a user-defined field's API name",
        "outbound.destinations[3].client_secret: required",
        "outbound.destinations[3].refresh_token: required",
    ] {
        assert!(e.contains(needle), "{needle} not in:\n{e}");
    }
}

/// A ServiceDesk Plus destination at `url` (on-premises, technician key)
/// with `extra` settings.
fn sdp_config(url: &str, extra: &str) -> String {
    format!(
        "[incident]\nauto_resolve_hold = \"0s\"\n\n[[outbound.destinations]]\nname = \"sdp\"\nkind = \"servicedeskplus\"\nurl = \"{url}\"\nrequester = \"incidentd\"\nassignment_group = \"Database\"\nfields = {{ udf_sline_1 = \"{{key}}\" }}\nbackoff_base = \"20ms\"\nbackoff_max = \"200ms\"\n{extra}\n"
    )
}

/// The statuses a ServiceDesk Plus request went through, by `update` call.
fn sdp_statuses(calls: &[String], id: &str) -> Vec<String> {
    let prefix = format!("update {id} ");
    calls
        .iter()
        .filter_map(|c| c.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

/// One ServiceDesk Plus request per incident (found again by the key in
/// its subject after a lost create answer), every lookup named as the
/// instance has it, bodies as `input_data`; acknowledgement, hold, resume
/// and resolution move its status (a resolution with its resolution text,
/// a hold with its comment), each with a note hidden from the requester.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicedeskplus_request_follows_the_incident() {
    let (url, sdp) = servicedeskplus::start().await;
    sdp.lock().expect("sdp").lose_next_create = true;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = support::config_in(
        dir.path(),
        &sdp_config(
            &url,
            &format!("technician_key = \"{}\"\n", servicedeskplus::TECHNICIAN_KEY),
        ),
    );
    let r = start(&cfg).await;
    let id = open(&r, "LdapDown").await;
    wait_for("the request", || sdp.lock().expect("sdp").notes.len() == 1).await;
    act_by(&r, id, "ack", json!({"by": "bob"})).await;
    act_by(
        &r,
        id,
        "hold",
        json!({"by": "bob", "reason": "awaiting-vendor"}),
    )
    .await;
    act_by(&r, id, "resume", Value::Null).await;
    act_by(&r, id, "resolve", json!({"by": "bob"})).await;
    wait_for("the resolution", || {
        sdp.lock().expect("sdp").notes.len() == 5
    })
    .await;
    {
        let s = sdp.lock().expect("sdp");
        assert_eq!(
            s.requests.len(),
            1,
            "one request despite the lost create answer"
        );
        let q = &s.requests[0];
        let rid = q["id"].as_str().expect("id").to_string();
        assert!(
            q["subject"]
                .as_str()
                .is_some_and(|t| t.ends_with(&format!("(incidentd-{id})"))),
            "{q}"
        );
        assert_eq!(q["group"], json!({"name": "Database"}));
        assert_eq!(q["requester"], json!({"name": "incidentd"}));
        assert_eq!(
            q["udf_fields"],
            json!({"udf_sline_1": format!("incidentd-{id}")})
        );
        assert_eq!(q["status"], json!({"name": "Resolved"}));
        assert!(q["resolution"]["content"].is_string(), "{q}");
        assert_eq!(
            sdp_statuses(&s.calls, &rid),
            ["In Progress", "On Hold", "Open", "Resolved"]
        );
        assert_eq!(
            s.notes_of(&rid),
            [
                format!("incidentd opened incident {id}"),
                "incidentd: acknowledged by bob".into(),
                "incidentd: on hold (awaiting-vendor) by bob".into(),
                "incidentd: taken off hold".into(),
                "incidentd: resolved".into(),
            ]
        );
        assert!(s.notes.iter().all(|(_, _, shown)| !shown), "{:?}", s.notes);
        assert_eq!(&s.calls[..3], ["search", "create", "search"]);
    }
    let (_, d) = call(&r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
    assert!(
        d["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .all(|e| e["kind"] != "outbound_failed"),
        "{d}"
    );
    r.shutdown().await;
}

/// ServiceDesk Plus Cloud: calls carry an OAuth access token from Zoho
/// Accounts, fetched with the refresh token and renewed before it expires
/// (a token lasting a second here), never refused for an expired one. A
/// destination with a wrong refresh token (Zoho answers 200 with an
/// error) records the refusal on the incident instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicedeskplus_cloud_renews_its_oauth_token() {
    let (url, sdp) = servicedeskplus::start().await;
    sdp.lock().expect("sdp").token_life = Duration::from_secs(1);
    let oauth = |refresh: &str| {
        format!(
            "client_id = \"{}\"\nclient_secret = \"{}\"\nrefresh_token = \"{refresh}\"\naccounts_url = \"{url}\"\n",
            servicedeskplus::CLIENT_ID,
            servicedeskplus::CLIENT_SECRET,
        )
    };
    let good = sdp_config(&url, &oauth(servicedeskplus::REFRESH_TOKEN));
    let bad = sdp_config(&url, &oauth("revoked"))
        .replace("[incident]\nauto_resolve_hold = \"0s\"\n\n", "")
        .replace("name = \"sdp\"", "name = \"sdp-bad\"");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = support::config_in(dir.path(), &format!("{good}\n{bad}"));
    let r = start(&cfg).await;
    let id = open(&r, "VpnDown").await;
    wait_for("the request", || {
        sdp.lock().expect("sdp").requests.len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    act_by(&r, id, "ack", json!({"by": "bob"})).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    act_by(&r, id, "resolve", json!({"by": "bob"})).await;
    wait_for("the resolution", || {
        sdp.lock().expect("sdp").requests[0]["status"] == json!({"name": "Resolved"})
    })
    .await;
    {
        let s = sdp.lock().expect("sdp");
        assert!(
            s.tokens_issued() >= 3,
            "a token per second of use: {:?}",
            s.calls
        );
        assert_eq!(
            s.unauthorized, 0,
            "a call went with an expired token: {:?}",
            s.calls
        );
        assert_eq!(s.requests.len(), 1);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, d) = call(&r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
        let refused = d["timeline"].as_array().expect("timeline").iter().any(|e| {
            e["kind"] == "outbound_failed"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("sdp-bad") && m.contains("no session token"))
        });
        if refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refused token is not on the timeline: {d}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.shutdown().await;
}

/// A request resolved by a technician in ServiceDesk Plus resolves its
/// incident here by polling; a custom trigger's "Invoke URL" body with
/// the token acknowledges another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicedeskplus_changes_come_back_by_polling_and_webhook() {
    let (url, sdp) = servicedeskplus::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = support::config_in(
        dir.path(),
        &sdp_config(
            &url,
            &format!(
                "technician_key = \"{}\"\npoll_interval = \"1s\"\ninbound_token = \"sdp-hook\"\n",
                servicedeskplus::TECHNICIAN_KEY
            ),
        ),
    );
    let r = start(&cfg).await;
    let first = open(&r, "MailQueue").await;
    let second = open(&r, "PrinterJam").await;
    wait_for("both requests", || {
        sdp.lock().expect("sdp").requests.len() == 2
    })
    .await;
    {
        let mut s = sdp.lock().expect("sdp");
        let q = s
            .requests
            .iter_mut()
            .find(|q| {
                q["subject"]
                    .as_str()
                    .is_some_and(|t| t.ends_with(&format!("(incidentd-{first})")))
            })
            .expect("request");
        q["status"] = json!({"name": "Resolved"});
        q["technician"] = json!({"name": "Ravi"});
    }
    wait_resolved_by(&r, first, "servicedeskplus:Ravi").await;
    let body = json!({"request": {"id": "1802", "subject": format!("[P2] PrinterJam (incidentd-{second})"), "status": "In Progress", "technician": "Ravi"}});
    let (s, v) = support::oneshot(
        &r.router,
        "POST",
        "/api/v1/webhooks/sdp",
        &[("authorization", "Bearer sdp-hook")],
        body.to_string().into_bytes(),
    )
    .await;
    let v: Value = serde_json::from_slice(&v).unwrap_or(Value::Null);
    assert_eq!(
        (s, v["action"].as_str()),
        (StatusCode::OK, Some("acknowledged")),
        "{v}"
    );
    r.shutdown().await;
}

/// The ServiceDesk Plus fake refuses what the product refuses.
#[tokio::test]
async fn the_servicedeskplus_fake_keeps_to_the_contract() {
    let (url, _sdp) = servicedeskplus::start().await;
    let c = reqwest::Client::new();
    let accept = "application/vnd.manageengine.sdp.v3+json";
    let form = |v: Value| format!("input_data={}", urlencode(&v.to_string()));
    let post = async |key: &str, accept: &str, ct: &str, body: String| {
        let r = c
            .post(format!("{url}/api/v3/requests"))
            .header("authtoken", key)
            .header("accept", accept)
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let fct = "application/x-www-form-urlencoded";
    let key = servicedeskplus::TECHNICIAN_KEY;
    let good = json!({"request": {"subject": "s", "priority": {"name": "High"}}});
    assert_eq!(post("wrong", accept, fct, form(good.clone())).await.0, 401);
    assert_eq!(
        post(key, "application/json", fct, form(good.clone()))
            .await
            .0,
        400
    );
    let (s, v) = post(key, accept, "application/json", good.to_string()).await;
    assert_eq!(
        (s, v["response_status"]["messages"][0]["field"].as_str()),
        (400, Some("input_data")),
        "{v}"
    );
    for (field, bad) in [
        ("priority", json!({"name": "P1"})),
        ("status", json!({"name": "Done"})),
        ("group", json!({"name": "Nobody"})),
        ("subject", json!("x".repeat(251))),
    ] {
        let mut b = good.clone();
        b["request"][field] = bad;
        let (s, v) = post(key, accept, fct, form(b)).await;
        assert_eq!(
            (s, v["response_status"]["messages"][0]["field"].as_str()),
            (400, Some(field)),
            "{v}"
        );
    }
    let mut b = good.clone();
    b["request"]["status"] = json!({"name": "Resolved"});
    let (s, v) = post(key, accept, fct, form(b)).await;
    assert_eq!(
        (s, v["response_status"]["messages"][0]["field"].as_str()),
        (400, Some("resolution")),
        "{v}"
    );
    let (s, v) = post(key, accept, fct, form(good)).await;
    assert_eq!((s, v["request"]["id"].is_string()), (201, true), "{v}");
    let list = json!({"list_info": {"row_count": 101}}).to_string();
    let r = c
        .get(format!(
            "{url}/api/v3/requests?input_data={}",
            urlencode(&list)
        ))
        .header("authtoken", key)
        .header("accept", accept)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400);
    let r = c
        .post(format!("{url}/sdpapi/request/"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 404);
    let r = c
        .post(format!("{url}/oauth/v2/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "x"),
            ("client_secret", "y"),
            ("refresh_token", "z"),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "invalid_code"
    );
}

/// A TeamDynamix destination at `url` with `extra` settings.
fn tdx_config(url: &str, extra: &str) -> String {
    format!(
        "[incident]\nauto_resolve_hold = \"0s\"\n\n[[outbound.destinations]]\nname = \"tdx\"\nkind = \"teamdynamix\"\nurl = \"{url}\"\nbeid = \"{}\"\nweb_services_key = \"{}\"\napp_id = {}\naccount_id = {}\nrequestor_uid = \"{}\"\nbackoff_base = \"20ms\"\nbackoff_max = \"200ms\"\n{extra}\n",
        teamdynamix::BEID,
        teamdynamix::WEB_SERVICES_KEY,
        teamdynamix::APP_ID,
        teamdynamix::ACCOUNT_ID,
        teamdynamix::REQUESTOR_UID,
    )
}

/// One TeamDynamix ticket per incident, its type, status and priority ids
/// looked up by name and status class (once, not per call), found again by
/// its title's key after a lost create answer; each change one private
/// feed entry that moves the status (In Process, On Hold, New, Resolved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teamdynamix_ticket_follows_the_incident() {
    let (url, tdx) = teamdynamix::start().await;
    tdx.lock().expect("tdx").lose_next_create = true;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = support::config_in(dir.path(), &tdx_config(&url, ""));
    let r = start(&cfg).await;
    let id = open(&r, "DnsDown").await;
    wait_for("the ticket", || tdx.lock().expect("tdx").feed.len() == 1).await;
    act_by(&r, id, "ack", json!({"by": "bob"})).await;
    act_by(
        &r,
        id,
        "hold",
        json!({"by": "bob", "reason": "awaiting-vendor"}),
    )
    .await;
    act_by(&r, id, "resume", Value::Null).await;
    act_by(&r, id, "resolve", json!({"by": "bob"})).await;
    wait_for("the resolution", || {
        tdx.lock().expect("tdx").feed.len() == 5
    })
    .await;
    let (_, d) = call(&r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
    {
        let s = tdx.lock().expect("tdx");
        assert_eq!(
            s.tickets.len(),
            1,
            "one ticket despite the lost create answer"
        );
        let t = &s.tickets[0];
        let tid = t["ID"].as_i64().expect("id");
        assert!(
            t["Title"]
                .as_str()
                .is_some_and(|x| x.ends_with(&format!("(incidentd-{id})"))),
            "{t}"
        );
        assert_eq!(
            (t["TypeID"].as_i64(), t["StatusID"].as_i64()),
            (Some(410), Some(1603))
        );
        // P2 is High (2202) by default.
        assert_eq!(d["priority"], "P2", "{d}");
        assert_eq!(t["PriorityID"], 2202);
        assert_eq!(
            s.feed_of(tid),
            [
                (format!("incidentd opened incident {id}"), None),
                ("incidentd: acknowledged by bob".into(), Some(1602)),
                (
                    "incidentd: on hold (awaiting-vendor) by bob".into(),
                    Some(1605)
                ),
                ("incidentd: taken off hold".into(), Some(1601)),
                ("incidentd: resolved".into(), Some(1603)),
            ]
        );
        assert!(
            s.feed.iter().all(|(_, _, private, _)| *private),
            "{:?}",
            s.feed
        );
        assert_eq!(
            &s.calls[..7],
            [
                "login",
                "types",
                "statuses",
                "priorities",
                "search",
                "create",
                "search"
            ],
            "{:?}",
            s.calls
        );
        assert_eq!(
            s.calls.iter().filter(|c| *c == "login").count(),
            1,
            "{:?}",
            s.calls
        );
        assert_eq!(
            s.calls.iter().filter(|c| *c == "types").count(),
            1,
            "{:?}",
            s.calls
        );
    }
    assert!(
        d["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .all(|e| e["kind"] != "outbound_failed"),
        "{d}"
    );
    r.shutdown().await;
}

/// The per-method rate limit (429 with `X-RateLimit-Reset`, an RFC 1123
/// date, no `Retry-After`) and a JWT that expires while three incidents
/// are opened, acknowledged and resolved: no call before the period's end,
/// a new login when the token runs out, and every feed entry once, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teamdynamix_rate_limit_and_expiring_token_lose_nothing() {
    let (url, tdx) = teamdynamix::start().await;
    {
        let mut s = tdx.lock().expect("tdx");
        s.per_period = 4;
        s.period = Duration::from_secs(1);
        s.token_life = Duration::from_secs(2);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = support::config_in(
        dir.path(),
        &tdx_config(
            &url,
            "rate_limit = 10.0\nburst = 10\nbreaker_failures = 100\n",
        ),
    );
    let r = start(&cfg).await;
    let mut ids = Vec::new();
    for name in ["NtpDrift", "CacheCold", "KeyRotation"] {
        let id = open(&r, name).await;
        act_by(&r, id, "ack", json!({"by": "ann"})).await;
        act_by(&r, id, "resolve", json!({"by": "ann"})).await;
        ids.push(id);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while tdx.lock().expect("tdx").feed.len() < 6 {
        assert!(
            Instant::now() < deadline,
            "feed entries missing: {:?}",
            tdx.lock().expect("tdx").calls
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Long enough for the token to expire, then one more change.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late = open(&r, "LateOne").await;
    wait_for("the late ticket", || {
        tdx.lock().expect("tdx").tickets.len() == 4
    })
    .await;
    {
        let s = tdx.lock().expect("tdx");
        assert!(
            s.throttled > 0,
            "the rate limit was never reached: {:?}",
            s.calls
        );
        assert_eq!(
            s.early, 0,
            "calls made before X-RateLimit-Reset: {:?}",
            s.calls
        );
        assert!(
            s.logins() >= 2,
            "no new login after the token expired: {:?}",
            s.calls
        );
        for id in ids {
            let t = s
                .tickets
                .iter()
                .find(|t| {
                    t["Title"]
                        .as_str()
                        .is_some_and(|x| x.ends_with(&format!("(incidentd-{id})")))
                })
                .unwrap_or_else(|| panic!("no ticket for {id}"));
            let statuses: Vec<Option<i64>> = s
                .feed_of(t["ID"].as_i64().expect("id"))
                .into_iter()
                .map(|(_, st)| st)
                .collect();
            assert_eq!(statuses, [Some(1602), Some(1603)], "ticket of {id}");
        }
    }
    let (_, d) = call(&r, "GET", &format!("/api/v1/incidents/{late}"), Value::Null).await;
    assert!(
        d["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .all(|e| e["kind"] != "outbound_failed"),
        "{d}"
    );
    r.shutdown().await;
}

/// A ticket completed in TeamDynamix resolves its incident here, read back
/// by polling (completed and cancelled tickets of the last day, matched by
/// id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teamdynamix_completed_tickets_resolve_by_polling() {
    let (url, tdx) = teamdynamix::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = support::config_in(dir.path(), &tdx_config(&url, "poll_interval = \"1s\"\n"));
    let r = start(&cfg).await;
    let id = open(&r, "BackupFailed").await;
    wait_for("the ticket", || tdx.lock().expect("tdx").tickets.len() == 1).await;
    {
        let mut s = tdx.lock().expect("tdx");
        let t = &mut s.tickets[0];
        t["StatusID"] = json!(1604);
        t["StatusClass"] = json!(3);
        t["ModifiedFullName"] = json!("Kim Lee");
    }
    wait_resolved_by(&r, id, "teamdynamix:Kim Lee").await;
    r.shutdown().await;
}

/// The StackStorm fake (for the remediation destination) refuses what
/// st2api refuses and plays its actions as scripted: an execution is
/// requested, runs, and ends as its action says; one that hangs can be
/// cancelled, one that ended cannot.
#[tokio::test]
async fn the_stackstorm_fake_keeps_to_the_contract() {
    use support::stackstorm::{API_KEY, Action, Ends};
    let actions = [
        (
            "ops.restart_consumer".to_string(),
            Action {
                parameters: vec![("host", true), ("incident", false)],
                ends: Ends::Succeeds(Duration::from_millis(300), json!({"stdout": "restarted"})),
            },
        ),
        (
            "ops.hang".to_string(),
            Action {
                parameters: vec![],
                ends: Ends::Hangs,
            },
        ),
    ]
    .into_iter()
    .collect();
    let (api, st2) = support::stackstorm::start(actions).await;
    let c = reqwest::Client::new();
    let run = async |key: &str, body: Value| {
        let r = c
            .post(format!("{api}/v1/executions"))
            .header("St2-Api-Key", key)
            .json(&body)
            .send()
            .await
            .expect("send");
        let s = r.status().as_u16();
        (s, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let get = async |path: &str| {
        let r = c
            .get(format!("{api}{path}"))
            .header("St2-Api-Key", API_KEY)
            .send()
            .await
            .expect("send");
        let s = r.status().as_u16();
        (s, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let restart = json!({"action": "ops.restart_consumer", "parameters": {"host": "kafka-1"}});
    assert_eq!(run("wrong", restart.clone()).await.0, 401);
    let (s, v) = run(API_KEY, json!({"action": "ops.nope"})).await;
    assert_eq!((s, v["faultstring"].is_string()), (400, true), "{v}");
    let (s, v) = run(
        API_KEY,
        json!({"action": "ops.restart_consumer", "parameters": {}}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = run(
        API_KEY,
        json!({"action": "ops.restart_consumer", "parameters": {"host": "h", "x": 1}}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = run(API_KEY, restart).await;
    assert_eq!((s, v["status"].as_str()), (201, Some("requested")), "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 24);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        get(&format!("/v1/executions/{id}")).await.1["status"],
        "running"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, done) = get(&format!("/v1/executions/{id}")).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["end_timestamp"].is_string(), "{done}");
    assert_eq!(get("/v1/executions/ffffffffffffffffffffffff").await.0, 404);
    assert_eq!(
        get("/v1/executions?action=ops.restart_consumer&limit=101")
            .await
            .0,
        400
    );
    let (_, list) = get("/v1/executions?action=ops.restart_consumer&limit=10").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let (_, hung) = run(API_KEY, json!({"action": "ops.hang"})).await;
    let hid = hung["id"].as_str().expect("id").to_string();
    let cancel = async |id: &str| {
        c.delete(format!("{api}/v1/executions/{id}"))
            .header("St2-Api-Key", API_KEY)
            .send()
            .await
            .expect("send")
            .status()
            .as_u16()
    };
    assert_eq!(cancel(&hid).await, 200);
    assert_eq!(
        get(&format!("/v1/executions/{hid}")).await.1["status"],
        "canceled"
    );
    assert_eq!(
        cancel(&id).await,
        400,
        "a finished execution cannot be cancelled"
    );
    assert_eq!(st2.lock().expect("st2").cancelled(), 1);
}

/// As deployed: every new tool over HTTPS with a certificate from a
/// private CA the destinations trust by `ca_file` (ServiceDesk Plus Cloud's
/// token endpoint too); each does its work there. A destination without
/// that CA refuses the server's certificate and says so on the timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tools_are_reached_over_https_with_a_private_ca() {
    use support::stackstorm::{Action, Ends};
    use support::tls::{TestCa, serve_https, server_config};
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("incidentd test CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let leaf = ca.server(dir.path(), "tools", &["127.0.0.1", "localhost"]);
    let https = async |router: axum::Router| {
        serve_https(router, server_config(&leaf, None), "localhost")
            .await
            .0
    };
    let (fs_router, fs) = freshservice::router();
    let (sdp_router, sdp) = servicedeskplus::router();
    let (tdx_router, tdx) = teamdynamix::router();
    let actions = [(
        "ops.restart_consumer".to_string(),
        Action {
            parameters: vec![("incident", true)],
            ends: Ends::Succeeds(Duration::from_millis(200), json!({"stdout": "ok"})),
        },
    )]
    .into_iter()
    .collect();
    let (st2_router, st2) = support::stackstorm::router(actions);
    let fs_url = https(fs_router).await;
    let sdp_url = https(sdp_router).await;
    let tdx_url = https(tdx_router).await;
    let st2_url = format!("{}/api", https(st2_router).await);
    let trust = format!("ca_file = {:?}\n", ca_file.display().to_string());
    let strip = |c: String| c.replace("[incident]\nauto_resolve_hold = \"0s\"\n\n", "");
    let config = format!(
        "[incident]\nauto_resolve_hold = \"0s\"\n\n{}\n{}\n{}\n{}\n[[outbound.destinations]]\nname = \"st2\"\nkind = \"stackstorm\"\nurl = \"{st2_url}\"\napi_key = \"{}\"\naction = \"ops.restart_consumer\"\nparameters = {{ incident = \"{{key}}\" }}\nfollow_interval = \"100ms\"\n{trust}\n{}",
        strip(freshservice_config(&fs_url, &trust)),
        strip(sdp_config(
            &sdp_url,
            &format!(
                "client_id = \"{}\"\nclient_secret = \"{}\"\nrefresh_token = \"{}\"\naccounts_url = \"{sdp_url}\"\n{trust}",
                servicedeskplus::CLIENT_ID,
                servicedeskplus::CLIENT_SECRET,
                servicedeskplus::REFRESH_TOKEN
            ),
        )),
        strip(tdx_config(&tdx_url, &trust)),
        // The same Freshservice account, without the CA.
        strip(freshservice_config(&fs_url, "")).replace("name = \"fs\"", "name = \"fs-untrusted\""),
        support::stackstorm::API_KEY,
        "",
    );
    let cfg = support::config_in(dir.path(), &config);
    let r = start(&cfg).await;
    let id = open(&r, "TlsEverywhere").await;
    wait_for("a ticket in each tool and a remediation run", || {
        fs.lock().expect("fs").tickets.len() == 1
            && sdp.lock().expect("sdp").requests.len() == 1
            && tdx.lock().expect("tdx").tickets.len() == 1
            && st2
                .lock()
                .expect("st2")
                .runs_of("ops.restart_consumer")
                .len()
                == 1
    })
    .await;
    assert!(sdp.lock().expect("sdp").tokens_issued() >= 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, d) = call(&r, "GET", &format!("/api/v1/incidents/{id}"), Value::Null).await;
        let t = d["timeline"].as_array().expect("timeline");
        let refused = t.iter().any(|e| {
            e["kind"] == "outbound_retrying"
                && e["message"].as_str().is_some_and(|m| {
                    m.starts_with("fs-untrusted") && m.contains("invalid peer certificate")
                })
        });
        let remediated = t.iter().any(|e| {
            e["kind"] == "remediation"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("succeeded"))
        });
        if refused && remediated {
            break;
        }
        assert!(Instant::now() < deadline, "{d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        fs.lock().expect("fs").tickets.len(),
        1,
        "the untrusted destination reached nothing"
    );
    r.shutdown().await;
}
