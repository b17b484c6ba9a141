/**
 * Standard requests that must become host operations instead of being forwarded, exactly as the
 * kernel's usbip-host does (kernel: drivers/usb/usbip/stub_rx.c, tweak_special_requests): the bench's
 * USB stack owns the device's address and configuration, so a client's SET_ADDRESS is answered without
 * touching the device, and SET_CONFIGURATION / SET_INTERFACE / CLEAR_FEATURE(ENDPOINT_HALT) are done
 * through the host API so its view stays consistent. Forwarding them raw stalls enumeration.
 */
import { NO_DATA, parseSetup, SetupPacket, UrbRequest, UrbResult, UrbStatus } from '../protocol/urb.js';
import type { OpenedDevice } from './backend.js';
import { ENDPOINT_HALT, Request } from './descriptors.js';

/** bmRequestType values: direction OUT, type standard, recipient device / interface / endpoint. */
const TO_DEVICE = 0x00;
const TO_INTERFACE = 0x01;
const TO_ENDPOINT = 0x02;

export type SpecialRequest = 'set-address' | 'set-configuration' | 'set-interface' | 'clear-halt';

export function classifySpecialRequest(s: SetupPacket): SpecialRequest | undefined {
  if (s.bmRequestType === TO_DEVICE && s.bRequest === Request.SET_ADDRESS) return 'set-address';
  if (s.bmRequestType === TO_DEVICE && s.bRequest === Request.SET_CONFIGURATION) return 'set-configuration';
  if (s.bmRequestType === TO_INTERFACE && s.bRequest === Request.SET_INTERFACE) return 'set-interface';
  if (s.bmRequestType === TO_ENDPOINT && s.bRequest === Request.CLEAR_FEATURE && s.wValue === ENDPOINT_HALT) return 'clear-halt';
  return undefined;
}

/** Runs one URB on an opened device, turning the special standard requests into host operations. */
export async function executeUrb(device: OpenedDevice, urb: UrbRequest, signal: AbortSignal): Promise<UrbResult> {
  const s = urb.type === 'control' && urb.setup ? parseSetup(urb.setup) : undefined;
  const special = s && classifySpecialRequest(s);
  if (!s || special === undefined) return device.transfer(urb, signal);
  try {
    switch (special) {
      case 'set-address':
        break; // the bench's host controller already addressed the device
      case 'set-configuration':
        await device.setConfiguration(s.wValue & 0xff);
        break;
      case 'set-interface':
        await device.setInterface(s.wIndex & 0xff, s.wValue & 0xff);
        break;
      case 'clear-halt':
        await device.clearHalt(s.wIndex & 0xff);
        break;
    }
    return { status: UrbStatus.OK, actual: 0, data: NO_DATA };
  } catch {
    return { status: UrbStatus.EPIPE, actual: 0, data: NO_DATA };
  }
}
