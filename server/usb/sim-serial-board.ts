/**
 * A CDC-ACM serial board (like an Arduino or a Pico running a USB-serial firmware): full speed, one
 * communication interface with an interrupt endpoint, one data interface with bulk IN/OUT. It prints a
 * banner when DTR goes up (the host opened the port) and echoes everything it receives.
 */
import { NO_DATA, SetupPacket, UrbRequest, UrbResult, UrbStatus } from '../protocol/urb.js';
import type { BackendDevice } from './backend.js';
import { configurationDescriptor, DeviceDescriptorFields } from './descriptors.js';
import { ByteFifo, SimBoard, SimBoardIdentity } from './sim-board.js';

/** CDC PSTN subclass requests (CDC PSTN 1.2, table 13). */
const SET_LINE_CODING = 0x20;
const GET_LINE_CODING = 0x21;
const SET_CONTROL_LINE_STATE = 0x22;
const SEND_BREAK = 0x23;

export const SERIAL_EP_NOTIFY = 0x83;
export const SERIAL_EP_OUT = 0x02;
export const SERIAL_EP_IN = 0x82;

export class SimSerialBoard extends SimBoard {
  protected readonly deviceFields: DeviceDescriptorFields = {
    bcdUSB: 0x0200, deviceClass: 0x02, deviceSubClass: 0, deviceProtocol: 0, maxPacketSize0: 64,
    vendorId: 0x1209, productId: 0x0001, bcdDevice: 0x0100,
    iManufacturer: 1, iProduct: 2, iSerialNumber: 3, numConfigurations: 1,
  };
  protected readonly configDescriptor = configurationDescriptor(1, [
    {
      number: 0, class: 0x02, subclass: 0x02, protocol: 0x01,
      extra: [
        Buffer.from([5, 0x24, 0x00, 0x10, 0x01]), // CDC header, bcdCDC 1.10
        Buffer.from([5, 0x24, 0x01, 0x00, 0x01]), // call management
        Buffer.from([4, 0x24, 0x02, 0x02]), // ACM: line coding + control line state
        Buffer.from([5, 0x24, 0x06, 0x00, 0x01]), // union: master 0, slave 1
      ],
      endpoints: [{ address: SERIAL_EP_NOTIFY, type: 'interrupt', maxPacketSize: 16, interval: 16 }],
    },
    {
      number: 1, class: 0x0a, subclass: 0, protocol: 0,
      endpoints: [
        { address: SERIAL_EP_OUT, type: 'bulk', maxPacketSize: 64, interval: 0 },
        { address: SERIAL_EP_IN, type: 'bulk', maxPacketSize: 64, interval: 0 },
      ],
    },
  ]);
  protected readonly interfaceSummary: BackendDevice['interfaces'] = [
    { number: 0, class: 0x02, subclass: 0x02, protocol: 0x01 },
    { number: 1, class: 0x0a, subclass: 0, protocol: 0 },
  ];

  /** 115200 8N1 (dwDTERate, bCharFormat, bParityType, bDataBits). */
  lineCoding = Buffer.from([0x00, 0xc2, 0x01, 0x00, 0, 0, 8]);
  dtr = false;
  rts = false;
  private readonly toHost = new ByteFifo(64 * 1024);

  constructor(identity: SimBoardIdentity) {
    super(identity);
  }

  get banner(): string {
    return `Remote USB simulated serial board ${this.identity.serial}\r\nfirmware 1.0 ready; everything you type is echoed\r\n`;
  }

  /** Bytes the "firmware" prints (the host reads them from the bulk IN endpoint). */
  print(text: string | Uint8Array): void {
    this.toHost.push(typeof text === 'string' ? Buffer.from(text) : text);
    this.wake();
  }

  protected override onConfigured(): void {
    this.toHost.clear();
    this.dtr = false;
  }

  protected override classRequest(s: SetupPacket, data: Uint8Array | undefined): Uint8Array | 'ok' | undefined {
    if (s.bmRequestType === 0x21 && s.bRequest === SET_LINE_CODING && data?.length === 7) {
      this.lineCoding = Buffer.from(data);
      return 'ok';
    }
    if (s.bmRequestType === 0xa1 && s.bRequest === GET_LINE_CODING) return this.lineCoding;
    if (s.bmRequestType === 0x21 && s.bRequest === SET_CONTROL_LINE_STATE) {
      const dtr = (s.wValue & 1) !== 0;
      this.rts = (s.wValue & 2) !== 0;
      if (dtr && !this.dtr) this.print(this.banner); // like a board reset by DTR, it greets the new host
      this.dtr = dtr;
      return 'ok';
    }
    if (s.bmRequestType === 0x21 && s.bRequest === SEND_BREAK) return 'ok';
    return undefined;
  }

  protected endpoint(r: UrbRequest, signal: AbortSignal): Promise<UrbResult> {
    if (r.ep === SERIAL_EP_OUT) {
      const data = r.data ?? new Uint8Array(0);
      // Echo needs room in the FIFO; like a real board, the OUT transfer waits (NAKs) until there is.
      return this.waitFor(r, signal, () => {
        if (this.toHost.free < data.length && this.toHost.size > 0) return undefined;
        this.print(data);
        return { status: UrbStatus.OK, actual: data.length, data: NO_DATA };
      });
    }
    if (r.ep === SERIAL_EP_IN) {
      return this.waitFor(r, signal, () => {
        if (this.toHost.size === 0) return undefined;
        const out = this.toHost.take(r.length ?? 0);
        this.wake(); // room for pending OUT transfers
        return { status: UrbStatus.OK, data: out, actual: out.length };
      });
    }
    if (r.ep === SERIAL_EP_NOTIFY) return this.waitFor(r, signal, () => undefined); // no line-state changes to report
    return Promise.resolve({ status: UrbStatus.EPIPE, actual: 0, data: NO_DATA });
  }
}
