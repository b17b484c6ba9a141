//! A QUIC connection to a peer.
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::{error::{invalid, iroh as iroh_err}, stream::Stream};

#[napi]
pub struct Connection {
    inner: iroh::endpoint::Connection,
    // Held so the endpoint outlives its connections even when JS drops (and GCs) its Endpoint.
    _endpoint: iroh::Endpoint,
}

impl Connection {
    pub fn new(endpoint: iroh::Endpoint, inner: iroh::endpoint::Connection) -> Self {
        Connection { inner, _endpoint: endpoint }
    }
}

pub fn var_int(code: BigInt) -> Result<iroh::endpoint::VarInt> {
    let (signed, v, lossless) = code.get_u64();
    if signed || !lossless {
        return Err(invalid("a code is an integer from 0 to 2^62-1"));
    }
    iroh::endpoint::VarInt::from_u64(v).map_err(|_| invalid("a code is an integer from 0 to 2^62-1"))
}

#[napi]
impl Connection {
    #[napi]
    pub fn remote_id(&self) -> String {
        self.inner.remote_id().to_string()
    }

    #[napi]
    pub async fn open_stream(&self) -> Result<Stream> {
        let (s, r) = self.inner.open_bi().await.map_err(|e| iroh_err("cannot open a stream", e))?;
        Ok(Stream::new(s, r))
    }

    /// The next stream the peer opened; rejects once the connection is gone.
    #[napi]
    pub async fn accept_stream(&self) -> Result<Stream> {
        let (s, r) = self.inner.accept_bi().await.map_err(|e| iroh_err("no more streams", e))?;
        Ok(Stream::new(s, r))
    }

    /// Resolves with the reason once the connection has ended, whoever ended it.
    #[napi]
    pub async fn closed(&self) -> String {
        self.inner.closed().await.to_string()
    }

    /// Round-trip time of the path in use, in ms (fractional), if known.
    #[napi]
    pub fn rtt_ms(&self) -> Option<f64> {
        self.inner.paths().iter().find(|p| p.is_selected()).map(|p| p.rtt().as_secs_f64() * 1000.0)
    }

    /// "direct" (UDP to the peer), "relay", or null before a path is selected.
    #[napi]
    pub fn path_kind(&self) -> Option<String> {
        let paths = self.inner.paths();
        let p = paths.iter().find(|p| p.is_selected())?;
        Some(if p.is_relay() { "relay" } else { "direct" }.to_string())
    }

    /// Closes at once with an application code and a reason (at most ~1 KiB is sent).
    #[napi]
    pub fn close(&self, code: BigInt, reason: Uint8Array) -> Result<()> {
        self.inner.close(var_int(code)?, &reason);
        Ok(())
    }
}
