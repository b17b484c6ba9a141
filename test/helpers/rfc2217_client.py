"""pyserial's rfc2217:// client driven by test/integration/rfc2217.test.ts: the real peer of our RFC 2217 share.

Usage: python3 rfc2217_client.py <url> <scenario>
Prints one JSON object per line ({"step": ...}); after each step it waits for a line on stdin, so the test
can look at the bench (the simulated board, the pty's termios) before the next change.
Scenarios: sim (simulated serial board), pty (real tty through serialport), refused (expects to be refused),
esptool-reset (only the DTR/RTS timing of esptool's classic reset).
"""
import hashlib
import json
import statistics
import sys
import threading
import time

import serial


def pattern(seed, n):
    """The same bytes as pattern() in the test: sha256("<seed>:<i>") blocks."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


def step(name, **fields):
    print(json.dumps({"step": name, **fields}), flush=True)
    if sys.stdin.readline().strip() != "next":
        sys.exit("the test did not say next")


def read_exactly(ser, n, seconds=60):
    data = bytearray()
    end = time.monotonic() + seconds
    while len(data) < n and time.monotonic() < end:
        data += ser.read(n - len(data))
    return bytes(data)


def read_until(ser, marker, seconds=10):
    data = bytearray()
    end = time.monotonic() + seconds
    while marker not in data and time.monotonic() < end:
        data += ser.read(1)
    return bytes(data)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def toggles(ser, n=20):
    """Milliseconds each DTR / RTS change takes in pyserial (it waits for the server's answer)."""
    dtr, rts = [], []
    for _ in range(n):
        dtr.append(timed(lambda: setattr(ser, "dtr", not ser.dtr)))
        rts.append(timed(lambda: setattr(ser, "rts", not ser.rts)))
    ser.dtr = True
    ser.rts = True
    return {"dtr_ms": stats(dtr), "rts_ms": stats(rts)}


def stats(xs):
    return {"median": round(statistics.median(xs), 1), "min": round(min(xs), 1), "max": round(max(xs), 1)}


def esptool_reset(ser):
    """esptool's ClassicReset: DTR off, RTS on (EN low), 100 ms, DTR on, RTS off (IO0 low), 50 ms, DTR off."""
    t0 = time.perf_counter()
    ser.dtr = False
    ser.rts = True
    time.sleep(0.1)
    ser.dtr = True
    ser.rts = False
    time.sleep(0.05)
    ser.dtr = False
    return round((time.perf_counter() - t0) * 1000, 1)


def transfer(ser, out, expect_back):
    """Writes `out` (from a thread) while reading len(expect_back) bytes; returns (ok, seconds)."""
    t0 = time.perf_counter()
    writer = threading.Thread(target=lambda: [ser.write(out[i:i + 4096]) for i in range(0, len(out), 4096)])
    writer.start()
    got = read_exactly(ser, len(expect_back))
    writer.join()
    return got == expect_back, time.perf_counter() - t0, len(got)


def sim(url):
    ser = serial.serial_for_url(url, baudrate=115200, timeout=1)
    step("open")
    ser.dtr = False
    step("dtr-low")
    ser.reset_input_buffer()
    ser.dtr = True
    banner = read_until(ser, b"echoed\r\n")
    step("banner", text=banner.decode("latin1"))
    ser.rts = False
    step("rts-low")
    ser.rts = True
    step("rts-high")
    data = pattern(1, 256 * 1024)
    ok, seconds, n = transfer(ser, data, data)
    step("echo", ok=ok, bytes=n, seconds=round(seconds, 3))
    ser.baudrate = 921600
    step("baud")
    ser.bytesize = 7
    ser.parity = serial.PARITY_EVEN
    ser.stopbits = serial.STOPBITS_TWO
    step("line")
    ser.apply_settings({"bytesize": 8, "parity": serial.PARITY_NONE, "stopbits": serial.STOPBITS_ONE, "baudrate": 115200})
    step("8n1")
    step("toggles", **toggles(ser))
    step("esptool-reset", ms=esptool_reset(ser), nominal_ms=150)
    ser.send_break(0.1)
    step("break")
    ser.close()


def pty(url):
    ser = serial.serial_for_url(url, baudrate=115200, timeout=1)
    step("open")
    ser.baudrate = 230400
    step("baud")
    ser.bytesize = 7
    ser.parity = serial.PARITY_EVEN
    ser.stopbits = serial.STOPBITS_TWO
    step("line")
    ser.apply_settings({"bytesize": 8, "parity": serial.PARITY_NONE, "stopbits": serial.STOPBITS_ONE})
    step("8n1")
    up = pattern(2, 256 * 1024)
    t0 = time.perf_counter()
    for i in range(0, len(up), 4096):
        ser.write(up[i:i + 4096])
    step("up", seconds=round(time.perf_counter() - t0, 3))
    print(json.dumps({"step": "down-ready"}), flush=True)
    down = pattern(3, 256 * 1024)
    t0 = time.perf_counter()
    got = read_exactly(ser, len(down))
    step("down", ok=got == down, bytes=len(got), seconds=round(time.perf_counter() - t0, 3))
    step("toggles", **toggles(ser, 10))
    ser.close()


def refused(url):
    try:
        ser = serial.serial_for_url(url + "?timeout=2", baudrate=115200, timeout=1)
    except serial.SerialException as e:
        print(json.dumps({"step": "refused", "error": str(e)}), flush=True)
        return
    print(json.dumps({"step": "opened"}), flush=True)
    ser.close()


if __name__ == "__main__":
    {"sim": sim, "pty": pty, "refused": refused}[sys.argv[2]](sys.argv[1])
