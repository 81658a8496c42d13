#!/usr/bin/env python3
"""The peer of `vftrace profile` in scripts/bench-profile: issue 13's throwaway prototype, a
plain gdb remote protocol client that, at a fixed rate, stops the VM (0x03), reads the
registers (g), reads 2 KiB of stack at rsp through the stub (m) and continues (c). It prints
the pause per sample (interrupt sent to continue sent) like vftrace does.

    gdb_peer.py HOST:PORT SECONDS HZ
"""
import socket
import statistics
import sys
import time


def checksum(data):
    return b"%02x" % (sum(data) & 0xFF)


class Stub:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(b"$" + data + b"#" + checksum(data))

    def recv(self):
        while True:
            start = self.buf.find(b"$")
            end = self.buf.find(b"#", start + 1) if start >= 0 else -1
            if end >= 0 and len(self.buf) >= end + 3:
                data = self.buf[start + 1:end]
                self.buf = self.buf[end + 3:]
                self.sock.sendall(b"+")
                return data
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the stub closed the connection")
            self.buf += chunk


def main():
    addr, seconds, hz = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    stub = Stub(addr)
    stub.send(b"qSupported")
    if stub.recv().startswith(b"T"):  # QEMU says it stopped the VM when we connected
        stub.recv()
    stub.send(b"c")
    pauses = []
    period = 1.0 / hz
    started = time.perf_counter()
    tick = started
    while time.perf_counter() - started < seconds:
        now = time.perf_counter()
        if now < tick:
            time.sleep(tick - now)
        t0 = time.perf_counter()
        stub.sock.sendall(b"\x03")
        stub.recv()  # stop reply
        stub.send(b"g")
        regs = bytes.fromhex(stub.recv().decode())
        rsp = int.from_bytes(regs[7 * 8:8 * 8], "little")
        stub.send(b"m%x,800" % rsp)
        stub.recv()
        stub.send(b"c")
        pauses.append(time.perf_counter() - t0)
        tick += period
        if tick < time.perf_counter():
            tick = time.perf_counter()
    elapsed = time.perf_counter() - started
    stub.sock.sendall(b"\x03")
    stub.recv()
    stub.send(b"D")
    stub.recv()
    ms = [p * 1e3 for p in pauses]
    print("samples %d rate %.1f min_ms %.3f median_ms %.3f max_ms %.3f"
          % (len(ms), len(ms) / elapsed, min(ms), statistics.median(ms), max(ms)))


if __name__ == "__main__":
    main()
