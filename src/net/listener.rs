//! The HTTPS listener: TCP connections accepted in a task of their own,
//! TLS handshakes run concurrently (each bounded in time, their number
//! bounded), finished connections handed to axum. The server configuration
//! sits in a cell that SIGHUP refills from the files, so a rotated
//! certificate is served to new connections while open ones carry on.

use super::tls::{ServerTls, TlsError, server_config};
use rustls::ServerConfig;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; further connections wait in the
/// kernel's backlog.
const MAX_HANDSHAKES: usize = 256;

/// The listener's TLS configuration, replaceable while serving.
#[derive(Clone)]
pub struct TlsCell {
    settings: ServerTls,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl TlsCell {
    /// Read the certificate, key and client CA files.
    pub fn load(settings: ServerTls) -> Result<TlsCell, TlsError> {
        let config = Arc::new(server_config(&settings)?);
        Ok(TlsCell {
            settings,
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// Read the files again; on any error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(server_config(&self.settings)?);
        match self.current.write() {
            Ok(mut g) => *g = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    fn get(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// An [`axum::serve::Listener`] yielding connections whose handshake is
/// done.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serve TLS on `tcp` until `cancel` (or until this listener is
    /// dropped).
    pub fn new(
        tcp: TcpListener,
        cell: TlsCell,
        cancel: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(tcp, cell, tx, cancel));
        Ok(TlsListener { ready, local })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    cell: TlsCell,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    cancel: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            () = tx.closed() => return,
            r = tcp.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of
                // spinning; the connections in the backlog wait too.
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = TlsAcceptor::from(cell.get());
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %super::error::chain(&e), "TLS handshake failed")
                }
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop ended (shutdown): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
