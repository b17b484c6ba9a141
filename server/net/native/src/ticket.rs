//! Endpoint tickets (`endpoint…` strings): an endpoint id plus how to reach it.
use std::{net::SocketAddr, str::FromStr};

use iroh::{EndpointAddr, RelayUrl, TransportAddr};
use iroh_tickets::{endpoint::EndpointTicket, Ticket as _};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::{error::invalid, key::endpoint_id_from};

/// Where to find a peer.
#[napi(object)]
pub struct PeerAddr {
    pub id: String,
    pub relay_url: Option<String>,
    pub addrs: Vec<String>,
}

pub fn to_iroh(addr: &PeerAddr) -> Result<EndpointAddr> {
    let id = endpoint_id_from(&addr.id)?;
    let mut out = EndpointAddr::new(id);
    for a in &addr.addrs {
        let s = SocketAddr::from_str(a).map_err(|_| invalid(format!("'{a}' is not an IP:port address")))?;
        out.addrs.insert(TransportAddr::Ip(s));
    }
    if let Some(url) = &addr.relay_url {
        let u = RelayUrl::from_str(url).map_err(|e| invalid(format!("'{url}' is not a relay URL: {e}")))?;
        out.addrs.insert(TransportAddr::Relay(u));
    }
    Ok(out)
}

pub fn from_iroh(addr: &EndpointAddr) -> PeerAddr {
    let mut relay_url = None;
    let mut addrs = Vec::new();
    for a in &addr.addrs {
        match a {
            TransportAddr::Relay(u) => relay_url = Some(u.to_string()),
            TransportAddr::Ip(s) => addrs.push(s.to_string()),
            _ => {}
        }
    }
    PeerAddr { id: addr.id.to_string(), relay_url, addrs }
}

/// Encodes an address as a ticket string.
#[napi]
pub fn ticket_from_addr(addr: PeerAddr) -> Result<String> {
    Ok(EndpointTicket::new(to_iroh(&addr)?).to_string())
}

/// Decodes a ticket string; throws if it is not one.
#[napi]
pub fn ticket_to_addr(ticket: String) -> Result<PeerAddr> {
    let t = EndpointTicket::decode_string(&ticket).map_err(|e| invalid(format!("not a ticket: {e}")))?;
    Ok(from_iroh(t.endpoint_addr()))
}
