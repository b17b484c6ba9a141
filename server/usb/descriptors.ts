/**
 * Builders for standard USB descriptors (USB 2.0 spec, chapter 9), used by the simulated boards so that
 * a real kernel could enumerate them. All multi-byte fields are little-endian, as on the USB wire.
 */

/** USB 2.0 spec table 9-5 (descriptor types) and table 9-4 (standard request codes). */
export const DescriptorType = { device: 1, configuration: 2, string: 3, interface: 4, endpoint: 5, deviceQualifier: 6 } as const;
export const Request = {
  GET_STATUS: 0, CLEAR_FEATURE: 1, SET_FEATURE: 3, SET_ADDRESS: 5, GET_DESCRIPTOR: 6, SET_DESCRIPTOR: 7,
  GET_CONFIGURATION: 8, SET_CONFIGURATION: 9, GET_INTERFACE: 10, SET_INTERFACE: 11,
} as const;
/** Feature selector for CLEAR_FEATURE(ENDPOINT_HALT). */
export const ENDPOINT_HALT = 0;

export interface DeviceDescriptorFields {
  bcdUSB: number;
  deviceClass: number;
  deviceSubClass: number;
  deviceProtocol: number;
  maxPacketSize0: number;
  vendorId: number;
  productId: number;
  bcdDevice: number;
  iManufacturer: number;
  iProduct: number;
  iSerialNumber: number;
  numConfigurations: number;
}

export function deviceDescriptor(f: DeviceDescriptorFields): Buffer {
  const b = Buffer.alloc(18);
  b[0] = 18; b[1] = DescriptorType.device;
  b.writeUInt16LE(f.bcdUSB, 2);
  b[4] = f.deviceClass; b[5] = f.deviceSubClass; b[6] = f.deviceProtocol; b[7] = f.maxPacketSize0;
  b.writeUInt16LE(f.vendorId, 8); b.writeUInt16LE(f.productId, 10); b.writeUInt16LE(f.bcdDevice, 12);
  b[14] = f.iManufacturer; b[15] = f.iProduct; b[16] = f.iSerialNumber; b[17] = f.numConfigurations;
  return b;
}

/** Device qualifier (what the device would look like at the other speed) for high-speed capable devices. */
export function deviceQualifier(f: DeviceDescriptorFields): Buffer {
  const b = Buffer.alloc(10);
  b[0] = 10; b[1] = DescriptorType.deviceQualifier;
  b.writeUInt16LE(f.bcdUSB, 2);
  b[4] = f.deviceClass; b[5] = f.deviceSubClass; b[6] = f.deviceProtocol; b[7] = f.maxPacketSize0;
  b[8] = f.numConfigurations; b[9] = 0;
  return b;
}

export interface EndpointFields {
  address: number;
  /** 2 bulk, 3 interrupt (bmAttributes transfer type). */
  type: 'bulk' | 'interrupt';
  maxPacketSize: number;
  interval: number;
}

export interface InterfaceFields {
  number: number;
  alternate?: number;
  class: number;
  subclass: number;
  protocol: number;
  iInterface?: number;
  /** Class-specific descriptors placed between the interface and its endpoints (e.g. CDC functional). */
  extra?: Buffer[];
  endpoints: EndpointFields[];
}

export function configurationDescriptor(value: number, interfaces: InterfaceFields[], maxPowerMa = 100): Buffer {
  const parts: Buffer[] = [];
  for (const i of interfaces) {
    parts.push(Buffer.from([9, DescriptorType.interface, i.number, i.alternate ?? 0, i.endpoints.length, i.class, i.subclass, i.protocol, i.iInterface ?? 0]));
    for (const x of i.extra ?? []) parts.push(x);
    for (const e of i.endpoints) {
      const b = Buffer.from([7, DescriptorType.endpoint, e.address, e.type === 'bulk' ? 2 : 3, 0, 0, e.interval]);
      b.writeUInt16LE(e.maxPacketSize, 4);
      parts.push(b);
    }
  }
  const body = Buffer.concat(parts);
  const numInterfaces = new Set(interfaces.map((i) => i.number)).size;
  const head = Buffer.from([9, DescriptorType.configuration, 0, 0, numInterfaces, value, 0, 0x80, Math.ceil(maxPowerMa / 2)]);
  head.writeUInt16LE(head.length + body.length, 2);
  return Buffer.concat([head, body]);
}

/** String descriptor 0 lists the supported language ids; the others hold UTF-16LE text. */
export function stringDescriptor(index: number, text: string): Buffer {
  if (index === 0) return Buffer.from([4, DescriptorType.string, 0x09, 0x04]); // en-US
  const utf16 = Buffer.from(text, 'utf16le');
  return Buffer.concat([Buffer.from([2 + utf16.length, DescriptorType.string]), utf16]);
}
