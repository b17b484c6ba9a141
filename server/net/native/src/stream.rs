//! One bidirectional QUIC stream. Bytes come in and go out as Buffers: a read returns what QUIC
//! holds (up to maxLen, in a Buffer JS owns), a write copies the caller's bytes once.
//! Send and receive halves lock separately, so a read and a write can be in flight together;
//! two writes on one stream are serialised by the lock, in call order.
use std::sync::Arc;

use bytes::Bytes;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use tokio::sync::Mutex;

use crate::{connection::var_int, error::{invalid, iroh as iroh_err}};

#[napi]
pub struct Stream {
    send: Arc<Mutex<iroh::endpoint::SendStream>>,
    // The receive half and a scratch buffer reads land in (reused: no per-read allocation of maxLen).
    recv: Arc<Mutex<(iroh::endpoint::RecvStream, Vec<u8>)>>,
}

impl Stream {
    pub fn new(send: iroh::endpoint::SendStream, recv: iroh::endpoint::RecvStream) -> Self {
        Stream { send: Arc::new(Mutex::new(send)), recv: Arc::new(Mutex::new((recv, Vec::new()))) }
    }
}

#[napi]
impl Stream {
    /// Up to `maxLen` bytes (at least 1), or null at a clean end of stream.
    #[napi]
    pub async fn read(&self, max_len: u32) -> Result<Option<Buffer>> {
        if max_len == 0 {
            return Err(invalid("maxLen must be at least 1"));
        }
        let mut guard = self.recv.lock().await;
        let (r, scratch) = &mut *guard;
        scratch.resize(max_len as usize, 0);
        // read() takes everything QUIC holds up to maxLen (read_chunk would give one packet's worth),
        // then the bytes are copied once more into a Buffer of exactly their size.
        match r.read(scratch).await {
            Ok(Some(n)) => Ok(Some(Buffer::from(scratch[..n].to_vec()))),
            Ok(None) => Ok(None),
            Err(e) => Err(iroh_err("read failed", e)),
        }
    }

    /// Writes all of `data` (copied once, synchronously: the caller may reuse it at once).
    /// Resolves when QUIC has taken it, which waits for flow control: that is the backpressure.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn write<'e>(&self, env: &'e Env, data: Uint8Array) -> Result<PromiseRaw<'e, ()>> {
        let bytes = Bytes::copy_from_slice(&data);
        let send = self.send.clone();
        env.spawn_future(async move {
            send.lock().await.write_chunk(bytes).await.map_err(|e| iroh_err("write failed", e))
        })
    }

    /// Ends the send side; the peer reads the end of stream after the data.
    #[napi]
    pub async fn finish(&self) -> Result<()> {
        self.send.lock().await.finish().map_err(|e| iroh_err("finish failed", e))
    }

    /// Abandons the send side; the peer's reads fail with this code.
    #[napi]
    pub fn reset(&self, code: BigInt) -> Result<()> {
        let code = var_int(code)?;
        // A write in flight holds the lock: take it on the runtime rather than block the JS thread.
        let send = self.send.clone();
        napi::bindgen_prelude::spawn(async move {
            let _ = send.lock().await.reset(code);
        });
        Ok(())
    }

    /// Asks the peer to stop sending; its writes fail with this code.
    #[napi]
    pub fn stop(&self, code: BigInt) -> Result<()> {
        let code = var_int(code)?;
        let recv = self.recv.clone();
        napi::bindgen_prelude::spawn(async move {
            let _ = recv.lock().await.0.stop(code);
        });
        Ok(())
    }
}
