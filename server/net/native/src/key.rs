//! Secret keys and endpoint ids (public keys, 64 hex digits).
use std::str::FromStr;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::error::invalid;

pub fn secret_key_from(bytes: &[u8]) -> Result<iroh::SecretKey> {
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| invalid(format!("a secret key is 32 bytes, got {}", bytes.len())))?;
    Ok(iroh::SecretKey::from_bytes(&key))
}

pub fn endpoint_id_from(s: &str) -> Result<iroh::EndpointId> {
    iroh::EndpointId::from_str(s).map_err(|e| invalid(format!("not an endpoint id: {e}")))
}

/// The endpoint id (64 hex digits) belonging to a 32-byte secret key.
#[napi]
pub fn endpoint_id_of(secret_key: Uint8Array) -> Result<String> {
    Ok(secret_key_from(&secret_key)?.public().to_string())
}

/// The canonical form of an endpoint id; throws if `s` is not one.
#[napi]
pub fn parse_endpoint_id(s: String) -> Result<String> {
    Ok(endpoint_id_from(&s)?.to_string())
}
