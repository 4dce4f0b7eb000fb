//! Hostile connections against the real binary, under a low file-descriptor
//! limit (`ulimit -n 256`): hundreds of idle sockets, slowloris sockets
//! that send a header byte now and then, idle keep-alive connections, and
//! every connection busy at the cap. `/healthz` must answer throughout, the
//! server must close what outstays its timeouts, and a newcomer that cannot
//! be served is told so in JSON.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};
use support::daemon::{Running, TestDaemon};

/// The daemon with `toml`, its open files limited to 256 as a small
/// container's might be.
fn start(dir: &Path, toml: &str) -> Running {
    let d = TestDaemon::new(&dir.join("data"), dir)
        .config(toml)
        .fd_limit(256)
        .start();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Ready, not only alive: until the store is open every other route
    // answers the starting 503.
    while !ready(d.port) {
        assert!(Instant::now() < deadline, "incidentd did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

/// `GET /readyz` answers 200.
fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// One `GET /healthz` on a fresh connection: its time, or why it failed.
fn healthz(port: u16, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)
        .map_err(|e| format!("{e} after {buf:?}"))?;
    if buf.starts_with("HTTP/1.1 200") && buf.contains(r#""status":"ok""#) {
        Ok(started.elapsed())
    } else {
        Err(format!("answer: {buf:?}"))
    }
}

/// `GET /metrics` and the value of one series.
fn metric(port: u16, series: &str) -> f64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("read");
    buf.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in the metrics"))
}

/// `/healthz` answers within a second, every 100 ms for `secs`, while
/// `hostile` runs.
fn healthz_throughout(port: u16, secs: u64, mut hostile: impl FnMut()) {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut worst = Duration::ZERO;
    while Instant::now() < end {
        hostile();
        let took =
            healthz(port, Duration::from_secs(1)).unwrap_or_else(|e| panic!("/healthz: {e}"));
        worst = worst.max(took);
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("slowest /healthz: {worst:?}");
}

/// Whether the server has closed `s` (a read gives end of file or an
/// error) within `within`.
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn idle_sockets_beyond_the_fd_limit_do_not_starve_healthz() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Generous timeouts: here only the cap (192 = 256 - 64) protects.
    let d = start(
        dir.path(),
        "[http]\nheader_read_timeout = \"60s\"\nidle_timeout = \"60s\"\n",
    );
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", d.port)) {
            idle.push(s);
        }
    }
    let mut more = 0;
    healthz_throughout(d.port, 5, || {
        // Keep opening idle sockets while /healthz is asked.
        if more < 100 {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", d.port)) {
                idle.push(s);
            }
            more += 1;
        }
    });
    let open = metric(d.port, "incidentd_http_connections");
    assert!(
        open <= 192.0,
        "connections capped below the fd limit: {open}"
    );
    assert!(
        metric(
            d.port,
            "incidentd_http_connections_closed_total{reason=\"evicted\"}"
        ) >= 100.0,
        "idle sockets made room"
    );
    drop(idle);
}

#[test]
fn slowloris_sockets_are_closed_and_healthz_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(
        dir.path(),
        "[http]\nheader_read_timeout = \"1s\"\nidle_timeout = \"60s\"\n",
    );
    // 300 sockets that start a request and then send a header byte every
    // 300 ms, never finishing it.
    let mut slow: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", d.port)).ok())
        .collect();
    for s in &mut slow {
        let _ = s.write_all(b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    }
    let mut last = Instant::now();
    healthz_throughout(d.port, 5, || {
        if last.elapsed() > Duration::from_millis(300) {
            for s in &mut slow {
                let _ = s.write_all(b"a");
            }
            last = Instant::now();
        }
    });
    // Every one of them has been closed by the server by now.
    let still_open = slow
        .iter_mut()
        .filter(|s| {
            !closed_by_server(
                &mut s.try_clone().expect("clone"),
                Duration::from_millis(50),
            )
        })
        .count();
    assert_eq!(still_open, 0, "slowloris sockets left open");
    assert!(
        metric(
            d.port,
            "incidentd_http_connections_closed_total{reason=\"header_timeout\"}"
        ) + metric(
            d.port,
            "incidentd_http_connections_closed_total{reason=\"evicted\"}"
        ) >= 300.0
    );
}

#[test]
fn idle_and_silent_connections_time_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(
        dir.path(),
        "[http]\nheader_read_timeout = \"1s\"\nidle_timeout = \"2s\"\n",
    );
    // Connected, never a byte: closed after the header-read timeout.
    let mut silent = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
    let t = Instant::now();
    assert!(closed_by_server(&mut silent, Duration::from_secs(4)));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    // One request, then idle on keep-alive: open past the header timeout,
    // closed after the idle timeout.
    let mut kept = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut b = [0u8; 512];
    let n = kept.read(&mut b).expect("answer");
    assert!(String::from_utf8_lossy(&b[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    assert!(closed_by_server(&mut kept, Duration::from_secs(5)));
    let idle = t.elapsed();
    assert!(
        idle >= Duration::from_millis(1800),
        "kept alive for the idle timeout, not the header one: {idle:?}"
    );
    assert!(
        metric(
            d.port,
            "incidentd_http_connections_closed_total{reason=\"idle\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            d.port,
            "incidentd_http_connections_closed_total{reason=\"header_timeout\"}"
        ) >= 1.0
    );
}

#[test]
fn at_the_cap_with_every_connection_busy_a_newcomer_is_refused_in_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(
        dir.path(),
        "[http]\nmax_connections = 4\nrequest_timeout = \"3s\"\nheader_read_timeout = \"1s\"\n",
    );
    // Four requests in progress: bodies announced, never sent in full.
    // Each asks `Expect: 100-continue`, so the server's "100 Continue"
    // says the request is in its handler (busy) before the next step.
    let mut busy: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
            s.write_all(
                b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
            )
            .expect("write");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut byte).expect("the interim answer");
                assert_eq!(n, 1, "closed before 100 Continue: {head:?}");
                head.push(byte[0]);
            }
            assert!(
                head.starts_with(b"HTTP/1.1 100"),
                "{}",
                String::from_utf8_lossy(&head)
            );
            s.write_all(b"[{").expect("write");
            s
        })
        .collect();
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("retry-after: 1"), "{answer:?}");
    assert!(
        answer.contains(r#""error":"too many connections"#),
        "{answer:?}"
    );
    // The requests in progress were not cut: they end with their own
    // answer (the request timeout's JSON 503), and then there is room.
    for b in &mut busy {
        b.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut a = [0u8; 512];
        let n = b.read(&mut a).expect("their own answer");
        let a = String::from_utf8_lossy(&a[..n]);
        assert!(
            a.starts_with("HTTP/1.1 503") && a.contains("took longer"),
            "{a}"
        );
    }
    drop(busy);
    let deadline = Instant::now() + Duration::from_secs(5);
    while healthz(d.port, Duration::from_secs(1)).is_err() {
        assert!(
            Instant::now() < deadline,
            "room again after the busy ones ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        metric(
            d.port,
            "incidentd_http_connections_closed_total{reason=\"refused\"}"
        ) >= 1.0
    );
}
