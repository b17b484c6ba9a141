/**
 * The transfer type of each endpoint of a remote device, which USB/IP does not carry: a CMD_SUBMIT
 * names only an endpoint number and a direction, and vhci_hcd knows the type from the descriptors it
 * read through us. The bridge needs it twice — to run the URB on the bench as bulk or interrupt, and
 * to recognise isochronous URBs (which carry packet descriptors after the data and which the bench
 * cannot run).
 *
 * We read every configuration descriptor through the device once, before attaching (GET_DESCRIPTOR
 * device, then each configuration: 9 bytes for wTotalLength, then all of it), and follow the
 * SET_CONFIGURATION / SET_INTERFACE requests that succeed through the bridge, so an endpoint address
 * that means different things in different alternate settings resolves to the active one.
 *
 * Sources: USB 2.0 §9.6.3 (configuration), §9.6.5 (interface), §9.6.6 (endpoint: bmAttributes bits 1..0
 * 0 control, 1 isochronous, 2 bulk, 3 interrupt); kernel drivers/usb/core/config.c (how Linux walks a
 * configuration descriptor: skip unknown descriptors by bLength, stop at a bLength < 2).
 */
import { encodeSetup, UrbRequest, UrbResult } from '../../../server/protocol/urb.js';

export type EndpointType = 'control' | 'isochronous' | 'bulk' | 'interrupt';

const TYPES: readonly EndpointType[] = ['control', 'isochronous', 'bulk', 'interrupt'];

/** USB 2.0 table 9-5 */
const DT_DEVICE = 1;
const DT_CONFIG = 2;
const DT_INTERFACE = 4;
const DT_ENDPOINT = 5;
const CONFIG_HEADER_SIZE = 9;
const DEVICE_DESCRIPTOR_SIZE = 18;
/** USB allows 255 configurations; real devices have 1-3. More than this is a broken or hostile device. */
const MAX_CONFIGURATIONS = 8;

export interface EndpointInfo {
  /** bEndpointAddress, direction bit included (0x81 = EP 1 IN). */
  address: number;
  type: EndpointType;
  maxPacketSize: number;
  interval: number;
}

export interface AlternateSetting {
  interface: number;
  alternate: number;
  class: number;
  endpoints: EndpointInfo[];
}

export interface ConfigurationInfo {
  /** bConfigurationValue (what SET_CONFIGURATION takes). */
  value: number;
  settings: AlternateSetting[];
}

/** A descriptor error names the byte where the walk failed. */
export class DescriptorError extends Error {
  override name = 'DescriptorError';
}

/** Walks one configuration descriptor (with its interfaces, endpoints and class-specific extras). */
export function parseConfigurationDescriptor(buf: Buffer): ConfigurationInfo {
  if (buf.length < CONFIG_HEADER_SIZE) throw new DescriptorError(`configuration descriptor is ${buf.length} bytes, less than 9`);
  if (buf[1] !== DT_CONFIG) throw new DescriptorError(`descriptor type ${buf[1]} at offset 0 is not a configuration (2)`);
  const total = Math.min(buf.readUInt16LE(2), buf.length);
  const config: ConfigurationInfo = { value: buf[5], settings: [] };
  let current: AlternateSetting | undefined;
  let off = buf[0];
  if (off < CONFIG_HEADER_SIZE) throw new DescriptorError(`configuration bLength ${off} is less than 9`);
  while (off + 2 <= total) {
    const len = buf[off];
    const type = buf[off + 1];
    if (len < 2) throw new DescriptorError(`descriptor at offset ${off} has bLength ${len}`);
    if (off + len > total) break; // a truncated trailing descriptor: Linux ignores it too
    if (type === DT_INTERFACE && len >= 9) {
      current = { interface: buf[off + 2], alternate: buf[off + 3], class: buf[off + 5], endpoints: [] };
      config.settings.push(current);
    } else if (type === DT_ENDPOINT && len >= 7) {
      if (!current) throw new DescriptorError(`endpoint descriptor at offset ${off} comes before any interface`);
      current.endpoints.push({
        address: buf[off + 2],
        type: TYPES[buf[off + 3] & 3],
        maxPacketSize: buf.readUInt16LE(off + 4),
        interval: buf[off + 6],
      });
    }
    off += len;
  }
  return config;
}

/**
 * The endpoints of every configuration and alternate setting, and which of them are active.
 * typeOf() answers from the active configuration and alternate settings first and falls back to any
 * setting that has the address (the kernel only submits to endpoints it believes are active, so the
 * fallback matters only when a SET_* went past us unseen).
 */
export class EndpointTable {
  private activeConfig: number;
  private readonly alternates = new Map<number, number>();

  constructor(readonly configurations: readonly ConfigurationInfo[], activeConfiguration = 0) {
    this.activeConfig = activeConfiguration;
  }

  get activeConfiguration(): number {
    return this.activeConfig;
  }

  setConfiguration(value: number): void {
    this.activeConfig = value;
    this.alternates.clear();
  }

  setInterface(iface: number, alternate: number): void {
    this.alternates.set(iface, alternate);
  }

  /** The transfer type of an endpoint address (direction bit included), or undefined if no setting has it. */
  typeOf(address: number): EndpointType | undefined {
    if ((address & 0x0f) === 0) return 'control';
    const active = this.configurations.find((c) => c.value === this.activeConfig);
    if (active) {
      for (const s of active.settings) {
        if (s.alternate !== (this.alternates.get(s.interface) ?? 0)) continue;
        const ep = s.endpoints.find((e) => e.address === address);
        if (ep) return ep.type;
      }
    }
    for (const c of this.configurations) {
      for (const s of c.settings) {
        const ep = s.endpoints.find((e) => e.address === address);
        if (ep) return ep.type;
      }
    }
    return undefined;
  }

  /** Every isochronous endpoint, for the refusal message ("EP 0x81 IN, interface 1 alt 1"). */
  isochronousEndpoints(): { configuration: number; interface: number; alternate: number; address: number }[] {
    const out: { configuration: number; interface: number; alternate: number; address: number }[] = [];
    for (const c of this.configurations) {
      for (const s of c.settings) {
        for (const e of s.endpoints) {
          if (e.type === 'isochronous') out.push({ configuration: c.value, interface: s.interface, alternate: s.alternate, address: e.address });
        }
      }
    }
    return out;
  }
}

/** What readEndpointTable needs of a device: one URB at a time (ClaimedDevice.submit). */
export interface DescriptorSource {
  submit(urb: UrbRequest): Promise<UrbResult>;
  info: { configuration: number };
}

function getDescriptor(type: number, index: number, length: number): UrbRequest {
  return {
    type: 'control',
    ep: 0x80,
    length,
    timeout: 5000,
    setup: encodeSetup({ bmRequestType: 0x80, bRequest: 6, wValue: (type << 8) | index, wIndex: 0, wLength: length }),
  };
}

async function fetchDescriptor(dev: DescriptorSource, what: string, urb: UrbRequest, min: number): Promise<Buffer> {
  const r = await dev.submit(urb);
  if (r.status !== 0) throw new DescriptorError(`GET_DESCRIPTOR ${what} failed with status ${r.status}${r.error ? ` (${r.error})` : ''}`);
  const data = r.data.subarray(0, r.actual || r.data.length);
  if (data.length < min) throw new DescriptorError(`GET_DESCRIPTOR ${what} returned ${data.length} bytes, expected at least ${min}`);
  return data;
}

/** Reads the device's configuration descriptors through the bench (before the kernel sees the device). */
export async function readEndpointTable(dev: DescriptorSource): Promise<EndpointTable> {
  const device = await fetchDescriptor(dev, 'device', getDescriptor(DT_DEVICE, 0, DEVICE_DESCRIPTOR_SIZE), DEVICE_DESCRIPTOR_SIZE);
  if (device[1] !== DT_DEVICE) throw new DescriptorError(`device descriptor has type ${device[1]}, not 1`);
  const count = Math.min(device[17], MAX_CONFIGURATIONS);
  const configs: ConfigurationInfo[] = [];
  for (let i = 0; i < count; i++) {
    const head = await fetchDescriptor(dev, `configuration ${i}`, getDescriptor(DT_CONFIG, i, CONFIG_HEADER_SIZE), CONFIG_HEADER_SIZE);
    const total = head.readUInt16LE(2);
    if (total < CONFIG_HEADER_SIZE) throw new DescriptorError(`configuration ${i} has wTotalLength ${total}`);
    const full = total === CONFIG_HEADER_SIZE ? head : await fetchDescriptor(dev, `configuration ${i}`, getDescriptor(DT_CONFIG, i, total), CONFIG_HEADER_SIZE);
    configs.push(parseConfigurationDescriptor(full));
  }
  return new EndpointTable(configs, dev.info.configuration);
}

/** `EP 0x81 IN` */
export function endpointName(address: number): string {
  return `EP 0x${address.toString(16).padStart(2, '0')} ${address & 0x80 ? 'IN' : 'OUT'}`;
}
