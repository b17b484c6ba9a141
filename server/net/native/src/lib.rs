//! Remote USB's own N-API binding of the `iroh` crate: only what `server/net/` needs, with bytes
//! crossing as `Buffer` / `Uint8Array` (one memcpy at most) instead of `Array<number>`.
//! Thin on purpose: policy (timeouts, retries, limits, protocol) lives in TypeScript.
//! One file per concept: keys and ids, tickets, endpoint, connection, stream.

mod connection;
mod endpoint;
mod error;
mod key;
mod stream;
mod ticket;
