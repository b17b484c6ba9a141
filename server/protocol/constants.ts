/** The wire contract shared by the daemon (server/) and the client core (extension/core/). */

/** QUIC ALPN: a peer speaking anything else is refused during the TLS handshake. */
export const ALPN = 'remote-usb/1';

/**
 * Bumped on any incompatible message change; both sides refuse a different version with a clear error.
 * 2: submits carry the URB's transfer flags (`flags`: zero packet), the bench cancels for real, and a
 *    session survives a dropped connection (hello `resume`, welcome `resume`/`resumed`, `ack`).
 * 3: a submit's `len` is `length` (requested) and a complete's is `actual` (moved), as in urb.ts.
 */
export const PROTOCOL_VERSION = 3;

/** The capability of peers that speak compressed URB payloads (compression.ts). */
export const COMPRESSION_CAPABILITY = 'brotli';

/** `z` of a submit or complete whose data is Brotli-compressed: the only scheme so far. */
export const Z_BROTLI = 1;

/** What this build can do; peers use this to switch optional behaviour on. */
export const CAPABILITIES: readonly string[] = ['urb', 'hotplug', 'ping', 'pairing', 'serial', 'resume', COMPRESSION_CAPABILITY];

/** Largest URB data we carry in one message (usb-storage and DFU use up to a few hundred KiB). */
export const MAX_URB_DATA = 4 * 1024 * 1024;

/** Largest frame body accepted: one URB's data plus room for its header fields. */
export const MAX_FRAME_BYTES = MAX_URB_DATA + 4096;

/** Bytes of the big-endian length prefix in front of each msgpack body. */
export const FRAME_HEADER_BYTES = 4;

/** Largest `data` in one serial-write / serial-data message (the bench batches reads far below this). */
export const MAX_SERIAL_DATA = 64 * 1024;

/** Highest baud rate a serial-open / serial-set may ask for (FTDI's fastest UARTs run 12 Mbaud). */
export const MAX_BAUD = 20_000_000;

/** Most serial ports one client may have open on one bench at a time. */
export const MAX_SERIAL_PER_CLIENT = 32;

/** Most URBs one client may have in flight on one device; more are refused, not queued without bound. */
export const MAX_URBS_IN_FLIGHT = 1024;

/**
 * Most URB bytes (OUT data, IN lengths) one client may have in flight on one bench at a time; more are
 * refused with 'busy'. 1024 URBs of 4 MiB would otherwise ask the bench for 4 GiB (Linux's usbfs allows
 * 16 MiB for all its users by default; a busy bulk stream needs about 2 MiB: 32 URBs of 64 KiB).
 */
export const MAX_URB_BYTES_IN_FLIGHT = 64 * 1024 * 1024;

/** Error codes in `error` messages; stable strings a client can switch on. */
export type ErrorCode =
  | 'unauthorized' // client id not on the allowlist and no valid pairing code
  | 'pairing-failed' // code unknown, used or expired
  | 'version' // protocol versions cannot talk
  | 'bad-message' // malformed frame or message
  | 'no-such-device'
  | 'not-shared' // device sharing switched off in the bench config
  | 'in-use' // claimed by another client
  | 'not-claimed' // URB or release for a device this client does not hold
  | 'unsupported' // e.g. isochronous endpoints
  | 'busy' // too many URBs in flight; serial port open by someone else, or its device claimed
  | 'no-such-port' // serial-open for a port that is neither a device here nor a tty the config shares
  | 'not-open' // serial request for a session id this client does not have open
  | 'serial-error' // the bench's OS refused to open or configure the tty
  | 'usb-error' // the bench's USB stack refused (permission, device error)
  | 'shutting-down' // the daemon is stopping: the session ends and cannot be resumed
  | 'internal';
