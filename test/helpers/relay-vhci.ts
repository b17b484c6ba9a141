/**
 * A stand-in for vhci_hcd and the helper that hands each attached device's USB/IP socket to this process,
 * so a test or the bench can play the kernel (FakeVhci) against the real attach path — wherever that path
 * runs (this thread, or the extension's byte-path worker process). The helper script marks the port used
 * in a fake vhci status file, leaves a relay process holding the socket (as the kernel would) that pipes it
 * to a unix socket here, and exits; when the connection ends the relay marks the port free again.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AttachSettings } from '../../extension/core/worker/messages.js';

const PORTS = 16;

function statusText(used: Record<string, string>): string {
  let s = 'hub port sta spd dev      sockfd local_busid\n';
  for (let port = 0; port < PORTS; port++) {
    const p4 = String(port).padStart(4, '0');
    const hub = port < PORTS / 2 ? 'hs' : 'ss';
    const d = used[port];
    s += d === undefined ? `${hub}  ${p4} 004 000 00000000 000000 0-0\n` : `${hub}  ${p4} 006 003 ${Number(d).toString(16).padStart(8, '0')} 000003 3-1\n`;
  }
  return s;
}

// Shared by the helper and the relay: the status file's text, kept in a JSON map of used ports.
const STATE = `
const fs = require('fs'), path = require('path');
const dir = __dirname;
const usedFile = path.join(dir, 'used.json');
const render = ${statusText.toString()};
const PORTS = ${PORTS};
const mark = (port, devid) => {
  const used = fs.existsSync(usedFile) ? JSON.parse(fs.readFileSync(usedFile, 'utf8')) : {};
  if (devid === undefined) delete used[port]; else used[port] = devid;
  fs.writeFileSync(usedFile, JSON.stringify(used));
  fs.writeFileSync(path.join(dir, 'sys', 'vhci_hcd.0', 'status'), render(used));
};
`;

const HELPER = `${STATE}
const [verb, port, devid] = process.argv.slice(2);
if (verb === 'attach') {
  mark(port, devid);
  require('child_process').spawn(process.execPath, [path.join(dir, 'relay.js'), port], { stdio: [0, 'ignore', 'ignore'], detached: true }).unref();
  process.stdout.write('attached port ' + port + ' (relay)\\n');
} else if (verb === 'detach') {
  mark(port, undefined);
}
process.exit(0);
`;

const RELAY = `${STATE}
const net = require('net');
const port = process.argv[2];
const kernel = new net.Socket({ fd: 0, readable: true, writable: true });
const here = net.connect(path.join(dir, 'relay.sock'));
kernel.pipe(here).pipe(kernel);
const done = () => { mark(port, undefined); process.exit(0); };
kernel.on('close', done); here.on('close', done);
kernel.on('error', () => {}); here.on('error', () => {});
`;

export class RelayVhci {
  readonly dir = mkdtempSync(join(tmpdir(), 'remote-usb-relay-'));
  private readonly server: Server;
  private readonly waiting: ((s: Socket) => void)[] = [];
  private readonly arrived: Socket[] = [];

  constructor() {
    mkdirSync(join(this.dir, 'sys', 'vhci_hcd.0'), { recursive: true });
    mkdirSync(join(this.dir, 'sockets'));
    writeFileSync(join(this.dir, 'sys', 'vhci_hcd.0', 'status'), statusText({}));
    for (const [name, body] of [['remote-usb-helper', HELPER], ['relay.js', RELAY]]) {
      writeFileSync(join(this.dir, name), `#!${process.execPath}\n'use strict';\n${body}`);
      chmodSync(join(this.dir, name), 0o755);
    }
    this.server = createServer((s) => {
      const w = this.waiting.shift();
      if (w) w(s);
      else this.arrived.push(s);
    });
  }

  async listen(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(join(this.dir, 'relay.sock'), r));
    return this;
  }

  /** What attachDevice (or the worker's attach) needs to use this stand-in. */
  get settings(): AttachSettings {
    return { helperPath: join(this.dir, 'remote-usb-helper'), runAsRoot: 'direct', sysfsRoot: join(this.dir, 'sys'), socketDir: join(this.dir, 'sockets'), detachWaitMs: 300 };
  }

  /** The next attached device's USB/IP socket: play the kernel on it. */
  next(): Promise<Socket> {
    const s = this.arrived.shift();
    if (s) return Promise.resolve(s);
    return new Promise((r) => this.waiting.push(r));
  }

  async close(): Promise<void> {
    await new Promise((r) => this.server.close(r));
    // the relay process may still be marking its port free: retry, as rm -rf would race it too
    rmSync(this.dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
  }
}
