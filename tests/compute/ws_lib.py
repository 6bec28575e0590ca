"""A minimal WebSocket client for the console proxy tests (RFC 6455:
handshake, masked client frames, unmasked server frames)."""
import base64
import hashlib
import os
import socket
import struct
import urllib.parse


class WebSocket:
    def __init__(self, sock, buf):
        self.sock = sock
        self._ws_buf = buf

    def recv(self, n):
        return self.sock.recv(n)

    def sendall(self, data):
        self.sock.sendall(data)

    def close(self):
        self.sock.close()


def connect(url, timeout=10, protocol='binary'):
    """Opens ws(s)://host:port/path?query or http://... (the proxy's URL).
    Returns (status, socket or None, head text)."""
    u = urllib.parse.urlsplit(url)
    s = socket.create_connection((u.hostname, u.port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    path = (u.path or '/') + ('?' + u.query if u.query else '')
    req = (f'GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n'
           f'Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n'
           + (f'Sec-WebSocket-Protocol: {protocol}\r\n' if protocol else '') + '\r\n')
    s.sendall(req.encode())
    head = b''
    while b'\r\n\r\n' not in head:
        b = s.recv(4096)
        if not b:
            break
        head += b
    text, _, rest = head.partition(b'\r\n\r\n')
    text = text.decode(errors='replace')
    status = int(text.split(' ', 2)[1]) if text.startswith('HTTP/1.1 ') else 0
    if status != 101:
        s.close()
        return status, None, text
    want = base64.b64encode(hashlib.sha1((key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11')
                                         .encode()).digest()).decode()
    if f'Sec-WebSocket-Accept: {want}' not in text:
        s.close()
        return -1, None, text
    return status, WebSocket(s, rest), text


def _read(s, n):
    while len(s._ws_buf) < n:
        b = s.recv(65536)
        if not b:
            raise ConnectionError('closed')
        s._ws_buf += b
    out, s._ws_buf = s._ws_buf[:n], s._ws_buf[n:]
    return out


def recv(s):
    """One frame: (opcode, payload)."""
    h = _read(s, 2)
    op, ln = h[0] & 0x0f, h[1] & 0x7f
    if ln == 126:
        ln = struct.unpack('>H', _read(s, 2))[0]
    elif ln == 127:
        ln = struct.unpack('>Q', _read(s, 8))[0]
    return op, _read(s, ln)


def send(s, data, opcode=2):
    mask = os.urandom(4)
    n = len(data)
    h = bytes([0x80 | opcode])
    if n < 126:
        h += bytes([0x80 | n])
    elif n < 65536:
        h += bytes([0x80 | 126]) + struct.pack('>H', n)
    else:
        h += bytes([0x80 | 127]) + struct.pack('>Q', n)
    s.sendall(h + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(data)))


def recv_bytes(s, n):
    """Reads data frames until n payload bytes arrived."""
    out = b''
    while len(out) < n:
        op, p = recv(s)
        if op == 8:
            break
        if op in (0, 1, 2):
            out += p
    return out
