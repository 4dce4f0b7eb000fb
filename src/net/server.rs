//! The HTTP(S) server. axum's own `serve` has no header-read or idle
//! timeout and no connection limit, so idle and slowloris sockets could
//! pile up until file descriptors ran out and `/healthz` itself timed out.
//! Here every connection is registered: a sweeper closes one that takes
//! longer than `header_read_timeout` to deliver a request head (or its TLS
//! handshake) and one idle between requests for longer than
//! `idle_timeout`; at `max_connections` the connection waiting longest
//! without a request in progress gives way to the new one, and only when
//! every connection is busy is a newcomer refused (a JSON 503 on plain
//! HTTP). A request in progress is never cut by any of this.

use super::listener::TlsCell;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The connection rules of the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    pub max_connections: usize,
    /// From a connection's opening (or the first byte of a new request) to
    /// the end of the request head; the TLS handshake included.
    pub header_read_timeout: Duration,
    /// Between the end of one response and the first byte of the next
    /// request on a kept-alive connection.
    pub idle_timeout: Duration,
    /// At shutdown, how long requests in progress may take to finish.
    pub drain: Duration,
}

/// Why the server closed a connection (a closed set: a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Idle longer than `idle_timeout`.
    Idle,
    /// No complete request head (or TLS handshake) in `header_read_timeout`.
    HeaderTimeout,
    /// Closed to make room for a new connection at `max_connections`.
    Evicted,
    /// Refused at `max_connections`, every connection being busy.
    Refused,
    /// The TLS handshake failed.
    Handshake,
}

impl CloseReason {
    pub const ALL: [CloseReason; 5] = [
        CloseReason::Idle,
        CloseReason::HeaderTimeout,
        CloseReason::Evicted,
        CloseReason::Refused,
        CloseReason::Handshake,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::Evicted => "evicted",
            CloseReason::Refused => "refused",
            CloseReason::Handshake => "handshake",
        }
    }

    fn code(self) -> u8 {
        match self {
            CloseReason::Idle => 1,
            CloseReason::HeaderTimeout => 2,
            CloseReason::Evicted => 3,
            CloseReason::Refused => 4,
            CloseReason::Handshake => 5,
        }
    }
}

/// Told of connections opening and closing (the metrics, in `app`).
pub trait ConnObserver: Send + Sync {
    /// `open` connections now.
    fn open(&self, open: usize);
    /// The server closed one, for `reason`.
    fn closed(&self, reason: CloseReason);
}

/// One connection as the sweeper sees it. Times are milliseconds since
/// the registry's start.
struct Slot {
    /// Requests in progress (handler running or response being written).
    busy: AtomicU32,
    /// When it last became free of requests (or opened).
    since: AtomicU64,
    /// When the head now being read started (0: none is being read).
    head_at: AtomicU64,
    /// Why the server closes it (0: it does not).
    closing: AtomicU8,
    close: CancellationToken,
}

impl Slot {
    fn close(&self, reason: CloseReason) {
        if self
            .closing
            .compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.close.cancel();
        }
    }
}

struct Registry {
    base: Instant,
    next: AtomicU64,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Registry {
    fn now(&self) -> u64 {
        // At least 1: 0 means "unset" in the slots.
        u64::try_from(self.base.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.slots().len()
    }

    /// Close the connection that has waited longest without a request in
    /// progress; false when every connection is busy.
    fn evict_one(&self) -> bool {
        let victim = self
            .slots()
            .values()
            .filter(|s| {
                s.busy.load(Ordering::Acquire) == 0 && s.closing.load(Ordering::Acquire) == 0
            })
            .min_by_key(|s| s.since.load(Ordering::Acquire))
            .cloned();
        match victim {
            Some(v) => {
                v.close(CloseReason::Evicted);
                true
            }
            None => false,
        }
    }

    /// Close what has outstayed its timeout.
    fn sweep(&self, s: &ServerSettings) {
        let now = self.now();
        let header = u64::try_from(s.header_read_timeout.as_millis()).unwrap_or(u64::MAX);
        let idle = u64::try_from(s.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        for slot in self.slots().values() {
            if slot.busy.load(Ordering::Acquire) > 0 {
                continue;
            }
            let head = slot.head_at.load(Ordering::Acquire);
            if head != 0 {
                if now.saturating_sub(head) > header {
                    slot.close(CloseReason::HeaderTimeout);
                }
            } else if now.saturating_sub(slot.since.load(Ordering::Acquire)) > idle {
                slot.close(CloseReason::Idle);
            }
        }
    }
}

/// Serve `router` on `tcp` (HTTPS with `tls`) until `shutdown` resolves;
/// then stop accepting, let requests in progress finish for up to
/// `settings.drain`, and return.
pub async fn serve(
    tcp: TcpListener,
    tls: Option<TlsCell>,
    router: axum::Router,
    settings: ServerSettings,
    observer: Arc<dyn ConnObserver>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let reg = Arc::new(Registry {
        base: Instant::now(),
        next: AtomicU64::new(1),
        slots: Mutex::new(HashMap::new()),
    });
    let stop_sweeper = CancellationToken::new();
    {
        let reg = reg.clone();
        let stop = stop_sweeper.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => reg.sweep(&settings),
                }
            }
        });
    }
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let tasks = tokio_util::task::TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            r = tcp.accept() => r,
        };
        let (stream, _peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors (or memory for sockets): make room
                // by closing the longest-waiting connection, and warn at
                // most every 10 s.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, open = reg.len(), "cannot accept connections; closing idle ones");
                    last_warning = Some(Instant::now());
                }
                reg.evict_one();
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if reg.len() >= settings.max_connections && !reg.evict_one() {
            observer.closed(CloseReason::Refused);
            tasks.spawn(refuse(stream, tls.is_some()));
            continue;
        }
        let _ = stream.set_nodelay(true);
        let now = reg.now();
        let slot = Arc::new(Slot {
            busy: AtomicU32::new(0),
            since: AtomicU64::new(now),
            // A new connection owes its head (and handshake) at once.
            head_at: AtomicU64::new(now),
            closing: AtomicU8::new(0),
            close: CancellationToken::new(),
        });
        let id = reg.next.fetch_add(1, Ordering::Relaxed);
        let open = {
            let mut slots = reg.slots();
            slots.insert(id, slot.clone());
            slots.len()
        };
        observer.open(open);
        let conn = Connection {
            slot,
            reg: reg.clone(),
            router: router.clone(),
            watcher: graceful.watcher(),
            observer: observer.clone(),
        };
        let tls = tls.clone();
        let (reg, observer) = (reg.clone(), observer.clone());
        tasks.spawn(async move {
            conn.run(stream, tls).await;
            let open = {
                let mut slots = reg.slots();
                slots.remove(&id);
                slots.len()
            };
            observer.open(open);
        });
    }
    drop(tcp);
    // Connections without a request in progress close now; the others
    // finish theirs (or are cut after the drain time).
    for slot in reg.slots().values() {
        if slot.busy.load(Ordering::Acquire) == 0 {
            slot.close.cancel();
        }
    }
    if tokio::time::timeout(settings.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(drain = ?settings.drain, "requests still in progress at shutdown were cut");
        for slot in reg.slots().values() {
            slot.close.cancel();
        }
    }
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), tasks.wait()).await;
    stop_sweeper.cancel();
    Ok(())
}

/// A newcomer when every connection is busy: told so (in JSON, on plain
/// HTTP) and closed.
async fn refuse(mut stream: TcpStream, tls: bool) {
    if tls {
        return;
    }
    let body = r#"{"error":"too many connections: every connection is busy; retry","detail":{"reason":"max_connections"}}"#;
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(resp.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

struct Connection {
    slot: Arc<Slot>,
    reg: Arc<Registry>,
    router: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
    observer: Arc<dyn ConnObserver>,
}

impl Connection {
    async fn run(self, stream: TcpStream, tls: Option<TlsCell>) {
        match tls {
            None => self.http(stream).await,
            Some(cell) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(cell.current());
                let handshake = tokio::select! {
                    () = self.slot.close.cancelled() => None,
                    r = acceptor.accept(stream) => Some(r),
                };
                match handshake {
                    Some(Ok(tls)) => self.http(tls).await,
                    Some(Err(e)) => {
                        self.observer.closed(CloseReason::Handshake);
                        tracing::debug!(error = %super::error::chain(&e), "TLS handshake failed");
                    }
                    None => report_close(&self.slot, self.observer.as_ref()),
                }
            }
        }
    }

    async fn http<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            slot,
            reg,
            router,
            watcher,
            observer,
        } = self;
        let io = TokioIo::new(Tracked {
            inner: io,
            slot: slot.clone(),
            reg: reg.clone(),
        });
        let service = Track {
            inner: router,
            slot: slot.clone(),
            reg,
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, service);
        let conn = watcher.watch(conn);
        tokio::select! {
            r = conn => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            () = slot.close.cancelled() => report_close(&slot, observer.as_ref()),
        }
    }
}

/// Count a close the server decided (eviction, a timeout).
fn report_close(slot: &Slot, observer: &dyn ConnObserver) {
    let reason = match slot.closing.load(Ordering::Acquire) {
        1 => Some(CloseReason::Idle),
        2 => Some(CloseReason::HeaderTimeout),
        3 => Some(CloseReason::Evicted),
        _ => None,
    };
    if let Some(r) = reason {
        observer.closed(r);
    }
}

/// The connection's IO: notes when the bytes of a new request head start
/// to arrive, for the header-read timeout.
struct Tracked<I> {
    inner: I,
    slot: Arc<Slot>,
    reg: Arc<Registry>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let s = &self.slot;
            if s.busy.load(Ordering::Acquire) == 0 && s.head_at.load(Ordering::Acquire) == 0 {
                s.head_at.store(self.reg.now(), Ordering::Release);
            }
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The router, marking the connection busy from the request's dispatch
/// until its response body has been written (or dropped).
#[derive(Clone)]
struct Track {
    inner: axum::Router,
    slot: Arc<Slot>,
    reg: Arc<Registry>,
}

/// Marks its connection free again when dropped.
struct Busy {
    slot: Arc<Slot>,
    reg: Arc<Registry>,
}

impl Busy {
    fn new(slot: Arc<Slot>, reg: Arc<Registry>) -> Busy {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        slot.head_at.store(0, Ordering::Release);
        Busy { slot, reg }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.slot.since.store(self.reg.now(), Ordering::Release);
        self.slot.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for Track {
    type Response = hyper::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        use tower::ServiceExt;
        let busy = Busy::new(self.slot.clone(), self.reg.clone());
        let router = self.inner.clone();
        Box::pin(async move {
            let resp = router.oneshot(req.map(Body::new)).await?;
            // Free again once the body has gone out, not when the handler
            // returned: a long answer is still a request in progress.
            Ok(resp.map(|b| {
                Body::new(Guarded {
                    body: b,
                    _busy: busy,
                })
            }))
        })
    }
}

/// A response body holding its connection's [`Busy`] mark.
struct Guarded {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
