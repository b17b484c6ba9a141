/**
 * The pure half of the USB/IP bridge: what a kernel's CMD_SUBMIT asks the bench to do, and what the
 * bench's answer becomes in RET_SUBMIT. No sockets, no state: bridge.ts does the bookkeeping and writing.
 */
import { isIn, parseSetup, UrbRequest, UrbResult, UrbStatus } from '../../../server/protocol/urb.js';
import type { UsbipCmdSubmit } from './codec.js';
import { USBIP_DIR_IN, USBIP_URB_SHORT_NOT_OK, USBIP_URB_ZERO_PACKET } from './constants.js';
import type { EndpointTable } from './endpoints.js';

/** bEndpointAddress (direction bit included) of a command; endpoint 0 counts as 0x80 when IN. */
export function endpointAddress(cmd: { ep: number; direction: number }): number {
  return cmd.ep | (cmd.direction === USBIP_DIR_IN ? 0x80 : 0);
}

/** A URB the bench will not run: answered at once with `status`; `unknownEndpoint` is worth a warning. */
export interface Refusal {
  status: number;
  why: string;
  unknownEndpoint?: boolean;
}

/**
 * The bench request for a CMD_SUBMIT, or why it is refused. Endpoint 0: the setup packet says what to
 * do, and a data stage must agree with the USB/IP direction. Others: bulk or interrupt by the endpoint's
 * descriptor. Throws nothing: a command that puts the stream out of step is the codec's to reject.
 */
export function requestOf(cmd: UsbipCmdSubmit, endpoints: EndpointTable): UrbRequest | Refusal {
  const urbIn = cmd.direction === USBIP_DIR_IN;
  if (cmd.ep === 0) {
    const setup = parseSetup(cmd.setup);
    const setupIn = isIn({ type: 'control', ep: 0, setup: cmd.setup });
    // With no data stage (wLength 0) the kernel's pipe is OUT whatever bmRequestType says
    // (usb_submit_urb's "BOGUS control dir" check), so only a data stage must match.
    if (setup.wLength > 0 && setupIn !== urbIn) {
      const request = `bmRequestType 0x${setup.bmRequestType.toString(16).padStart(2, '0')} bRequest ${setup.bRequest} wLength ${setup.wLength}`;
      return { status: UrbStatus.EINVAL, why: `control request (${request}) is ${setupIn ? 'IN' : 'OUT'} but the URB is ${urbIn ? 'IN' : 'OUT'}` };
    }
    const dataIn = setupIn && setup.wLength > 0;
    return {
      type: 'control',
      ep: dataIn ? 0x80 : 0x00,
      setup: cmd.setup,
      data: dataIn ? undefined : cmd.data,
      length: dataIn ? Math.min(cmd.transfer_buffer_length, setup.wLength) : 0,
    };
  }
  const address = endpointAddress(cmd);
  const type = endpoints.typeOf(address);
  if (type === undefined) return { status: UrbStatus.EPIPE, why: 'unknown endpoint', unknownEndpoint: true };
  if (type === 'isochronous') return { status: UrbStatus.EINVAL, why: 'isochronous endpoint (Remote USB does not carry isochronous transfers)' };
  if (type === 'control') return { status: UrbStatus.EINVAL, why: 'control endpoints other than 0 are not supported' };
  // URB_ZERO_PACKET must reach the bench's host controller; URB_SHORT_NOT_OK is applied here (replyOf).
  const flags = cmd.transfer_flags & USBIP_URB_ZERO_PACKET;
  return { type, ep: address, data: urbIn ? undefined : cmd.data, length: urbIn ? cmd.transfer_buffer_length : undefined, flags: flags || undefined };
}

export function isRefusal(r: UrbRequest | Refusal): r is Refusal {
  return 'why' in r;
}

/**
 * RET_SUBMIT's status, actual_length and data for a bench answer. actual_length never exceeds
 * transfer_buffer_length (vhci drops the device if it does: `clamped` says it was cut); a short IN
 * transfer with URB_SHORT_NOT_OK is -EREMOTEIO, as a host controller reports it.
 */
export function replyOf(cmd: Pick<UsbipCmdSubmit, 'direction' | 'transfer_buffer_length' | 'transfer_flags'>, r: UrbResult): { status: number; actual: number; data?: Buffer; clamped: boolean } {
  const length = cmd.transfer_buffer_length;
  if (cmd.direction === USBIP_DIR_IN) {
    const n = Math.min(r.data.length, length);
    let status = r.status;
    if (status === 0 && n < length && cmd.transfer_flags & USBIP_URB_SHORT_NOT_OK) status = UrbStatus.EREMOTEIO;
    return { status, actual: n, data: n > 0 ? r.data.subarray(0, n) : undefined, clamped: r.data.length > length };
  }
  return { status: r.status, actual: Math.max(0, Math.min(r.actual, length)), clamped: false };
}
