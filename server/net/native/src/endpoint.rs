//! An iroh endpoint: bind, our address, connect, accept, close.
use std::{net::SocketAddr, str::FromStr};

use iroh::endpoint::{presets, presets::Preset as _, Builder};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::{
    connection::Connection,
    error::{invalid, iroh as iroh_err},
    key::secret_key_from,
    ticket::{from_iroh, to_iroh, PeerAddr},
};

#[napi(object)]
pub struct BindOptions {
    /// 32 bytes.
    pub secret_key: Uint8Array,
    /// "default" (n0's relays and discovery), "disabled" or "custom" (with `relayUrls`).
    pub relay: String,
    pub relay_urls: Option<Vec<String>>,
    /// `host:port`; default: any free port on all interfaces.
    pub bind_addr: Option<String>,
    /// Protocols to accept; none: this endpoint only dials out.
    pub alpns: Option<Vec<Uint8Array>>,
}

#[napi]
pub struct Endpoint {
    inner: iroh::Endpoint,
}

#[napi]
impl Endpoint {
    /// Binds a new endpoint. Argument errors throw synchronously; bind errors reject.
    #[napi(ts_return_type = "Promise<Endpoint>")]
    pub fn bind(env: &Env, options: BindOptions) -> Result<PromiseRaw<'_, Endpoint>> {
        let mut b = match options.relay.as_str() {
            "default" => presets::N0.apply(Builder::empty()),
            "disabled" => presets::Minimal.apply(Builder::empty()).relay_mode(iroh::RelayMode::Disabled),
            "custom" => {
                let urls = options
                    .relay_urls
                    .unwrap_or_default()
                    .iter()
                    .map(|u| iroh::RelayUrl::from_str(u).map_err(|e| invalid(format!("'{u}' is not a relay URL: {e}"))))
                    .collect::<Result<Vec<_>>>()?;
                presets::Minimal.apply(Builder::empty()).relay_mode(iroh::RelayMode::custom(urls))
            }
            other => return Err(invalid(format!("relay must be default, disabled or custom, not '{other}'"))),
        };
        b = b.secret_key(secret_key_from(&options.secret_key)?);
        if let Some(alpns) = options.alpns {
            b = b.alpns(alpns.iter().map(|a| a.to_vec()).collect());
        }
        if let Some(addr) = &options.bind_addr {
            let s = SocketAddr::from_str(addr).map_err(|_| invalid(format!("'{addr}' is not an IP:port address")))?;
            b = b.bind_addr(s).map_err(|e| invalid(format!("cannot bind {addr}: {e}")))?;
        }
        env.spawn_future(async move {
            let inner = b.bind().await.map_err(|e| iroh_err("bind failed", e))?;
            Ok(Endpoint { inner })
        })
    }

    /// This endpoint's id (64 hex digits).
    #[napi]
    pub fn id(&self) -> String {
        self.inner.id().to_string()
    }

    /// Local UDP sockets, `ip:port`.
    #[napi]
    pub fn bound_sockets(&self) -> Vec<String> {
        self.inner.bound_sockets().into_iter().map(|a| a.to_string()).collect()
    }

    /// Our address as peers should dial it: home relay (if any) and direct addresses.
    #[napi]
    pub fn addr(&self) -> PeerAddr {
        from_iroh(&self.inner.addr())
    }

    /// Connects to a peer with one ALPN. Argument errors throw synchronously.
    #[napi(ts_return_type = "Promise<Connection>")]
    pub fn connect<'e>(&self, env: &'e Env, peer: PeerAddr, alpn: Uint8Array) -> Result<PromiseRaw<'e, Connection>> {
        let addr = to_iroh(&peer)?;
        let alpn = alpn.to_vec();
        let ep = self.inner.clone();
        env.spawn_future(async move {
            let conn = ep.connect(addr, &alpn).await.map_err(|e| iroh_err("connect failed", e))?;
            Ok(Connection::new(ep, conn))
        })
    }

    /// The next incoming connection with its handshake done, or null once the endpoint is closed.
    /// A handshake that fails concerns only that peer: it is skipped.
    #[napi]
    pub async fn accept(&self) -> Option<Connection> {
        loop {
            let incoming = self.inner.accept().await?;
            let Ok(accepting) = incoming.accept() else { continue };
            if let Ok(conn) = accepting.await {
                return Some(Connection::new(self.inner.clone(), conn));
            }
        }
    }

    /// Closes every connection (code 0) and the sockets; waits for peers to learn of it.
    #[napi]
    pub async fn close(&self) {
        self.inner.close().await;
    }

    #[napi]
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}
