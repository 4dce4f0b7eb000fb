//! The listener's TLS configuration, in a cell that SIGHUP refills from the
//! files, so a rotated certificate is served to new connections while open
//! ones carry on (the handshakes themselves run in `server`).

use super::tls::{ServerTls, TlsError, server_config};
use rustls::ServerConfig;
use std::sync::{Arc, RwLock};

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

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}
