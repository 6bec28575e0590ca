#!/usr/bin/python3
"""bench/image_bench.py: upload and download throughput of nimbus-image for
one file, in the same run as `cp` of the file on the same disk and as md5
and sha512 of the same bytes computed in parallel (what any honest upload
must at least do).  Starts nimbus-api and nimbus-image against a throwaway
PostgreSQL (tests/ harness), prints figures and ratios, never asserts.

  bench/image_bench.py [SIZE_MIB]        default 1024

The hashing reference is OpenSSL's (`openssl dgst -md5` and `-sha512`, one
process each, in parallel): the fastest implementation on the machine, and
the one nimbus-image itself uses (libcrypto's EVP).  coreutils' md5sum and
sha512sum are printed too; their SHA-512 is about 2x slower, which made the
old reference an easy one.

Uploads are sent by two clients: curl -T (streams the file; what a user
runs) and a plain socket sender that sends the file with sendfile(2) (the
least a client can cost, so the figure is the server's).

Downloads are timed with curl writing the file to the same disk (what a
user does; curl's own copies from the socket and into the file count), with
curl discarding the bytes (-o /dev/null), and with a plain socket reader
that receives into one 4 MiB buffer and discards it (what the server and
the loopback sustain: the bytes still reach the client's memory).  curl
copying the local file with a file:// URL shows what curl alone costs when
it writes a file.  The first download after each upload is timed apart: the
store writes uploads with O_DIRECT, so that one reads from the disk; the
others are served from the page cache, as `cp` reads its source.

The CPU time nimbus-image spends per GiB uploaded and downloaded (from
/proc, all threads), and that of the clients and of the hashing reference,
are what a loaded machine disturbs least: on 2 CPUs the upload's wall time
cannot be much below its CPU time (server and client) over 2, when the
reference's is its CPU time over 2, so the CPU ratio printed is about the
best wall time ratio the machine allows when quiet.  Each figure
is the best of BENCH_ROUNDS rounds (default 3), the rounds interleaved, so
that a busy shared machine disturbs the ratios less.  The load average is
printed with the figures.

Environment: NIMBUS_BUILD (default <repo>/build), NIMBUS_TEST_PG (a running
cluster; otherwise one is started), BENCH_ROUNDS."""
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('NIMBUS_SOURCE', REPO)
os.environ.setdefault('NIMBUS_BUILD', os.path.join(REPO, 'build'))
sys.path.insert(0, os.path.join(REPO, 'tests', 'api'))
sys.path.insert(0, os.path.join(REPO, 'tests', 'image'))
import image_test  # noqa: E402

GLANCE_UPLOAD_MIBS = 298.0     # Measured with real Glance (the issue).


def cpu_seconds(pid):
    """User + system CPU time of process 'pid' (all its threads) so far."""
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def own_cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


class Cpu:
    """CPU time of this process and its children between two points."""
    def __init__(self):
        self.c0 = own_cpu(resource.RUSAGE_CHILDREN)
        self.s0 = own_cpu(resource.RUSAGE_SELF)

    def children(self):
        return own_cpu(resource.RUSAGE_CHILDREN) - self.c0

    def self(self):
        return own_cpu(resource.RUSAGE_SELF) - self.s0


def timed(cmd, **kw):
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, **kw)
    return time.monotonic() - t0


def parallel(cmds):
    """Wall time of the commands run at once."""
    t0 = time.monotonic()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in cmds]
    for p in procs:
        if p.wait():
            raise RuntimeError(f'{p.args} failed')
    return time.monotonic() - t0


def read_head(s, buf):
    """Reads an HTTP answer's head into 'buf'; returns (status, headers,
    bytes of body already received)."""
    view = memoryview(buf)
    n = 0
    while True:
        k = s.recv_into(view[n:])
        if not k:
            raise RuntimeError('connection closed in the answer head')
        n += k
        end = bytes(view[:n]).find(b'\r\n\r\n')
        if end >= 0:
            break
    lines = bytes(view[:end]).decode('latin-1').split('\r\n')
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip()
               for k, v in (ln.split(':', 1) for ln in lines[1:] if ':' in ln)}
    return status, headers, n - end - 4


def raw_put(port, path, tok, src, size):
    """PUT the file with sendfile(2) on a plain socket; returns the time."""
    t0 = time.monotonic()
    with socket.create_connection(('127.0.0.1', port)) as s, open(src, 'rb') as f:
        s.sendall((f'PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n'
                   f'X-Auth-Token: {tok}\r\nContent-Type: application/octet-stream\r\n'
                   f'Content-Length: {size}\r\n\r\n').encode())
        s.sendfile(f)
        status, _, _ = read_head(s, bytearray(65536))
    if status != 204:
        raise RuntimeError(f'upload answered {status}')
    return time.monotonic() - t0


def raw_get(port, path, tok, size):
    """GET into one 4 MiB buffer, discarding the bytes; returns the time."""
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    t0 = time.monotonic()
    with socket.create_connection(('127.0.0.1', port)) as s:
        s.sendall((f'GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n'
                   f'X-Auth-Token: {tok}\r\n\r\n').encode())
        status, headers, got = read_head(s, buf)
        if status != 200 or int(headers['content-length']) != size:
            raise RuntimeError(f'download answered {status} {headers}')
        while got < size:
            k = s.recv_into(view)
            if not k:
                raise RuntimeError('download ended early')
            got += k
    return time.monotonic() - t0


def tcp_bound(src, size):
    """The same bytes over loopback TCP with nothing but sendfile(2) on one
    side and the socket reader of raw_get() on the other: what any server
    could reach on this machine; returns the time."""
    ls = socket.create_server(('127.0.0.1', 0))
    port = ls.getsockname()[1]

    def serve():
        c, _ = ls.accept()
        with c, open(src, 'rb') as f:
            c.sendfile(f)

    th = threading.Thread(target=serve)
    th.start()
    view = memoryview(bytearray(4 << 20))
    t0 = time.monotonic()
    with socket.create_connection(('127.0.0.1', port)) as s:
        got = 0
        while got < size:
            k = s.recv_into(view)
            if not k:
                raise RuntimeError('loopback transfer ended early')
            got += k
    secs = time.monotonic() - t0
    th.join()
    ls.close()
    return secs


def main():
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    work = tempfile.mkdtemp(prefix='nimbus-image-bench-', dir='/var/tmp')
    src = os.path.join(work, 'data')
    subprocess.run(['dd', 'if=/dev/urandom', f'of={src}', 'bs=1M', f'count={mib}',
                    'status=none'], check=True)
    size = os.path.getsize(src)
    cloud = image_test.ImageCloud(image_conf={'max_image_size': size * 2},
                                  extra_conf={'log': {'level': 'warn'}})
    loads = [os.getloadavg()[0]]
    try:
        tok = cloud.admin_token()
        port = cloud.image_port
        rounds = int(os.environ.get('BENCH_ROUNDS', '3'))
        inf = float('inf')
        t = dict.fromkeys(('cp', 'curl_file', 'hash', 'hash_coreutils', 'up_curl', 'up_raw',
                           'down_cold', 'down_file', 'down_null', 'down_raw', 'tcp'), inf)
        same = True
        pid = cloud.image_pid()
        cpu_down = 0.0
        n_down = 0
        # Least CPU seconds of one round: hashing reference, and server and
        # client of each upload.
        cpu = dict.fromkeys(('hash', 'up_curl', 'up_raw'), (inf, inf))

        def best(key, secs):
            t[key] = min(t[key], secs)

        for _ in range(rounds):
            best('cp', timed(['cp', src, os.path.join(work, 'copy')]))
            os.unlink(os.path.join(work, 'copy'))
            best('curl_file', timed(['curl', '-sf', '-o', os.path.join(work, 'copy'),
                                     'file://' + src]))
            os.unlink(os.path.join(work, 'copy'))
            # md5 and sha512 in parallel over the bytes (page cache warm).
            c = Cpu()
            best('hash', parallel([['openssl', 'dgst', '-md5', src],
                                   ['openssl', 'dgst', '-sha512', src]]))
            cpu['hash'] = min(cpu['hash'], (c.children(), 0.0))
            best('hash_coreutils', parallel([['md5sum', src], ['sha512sum', src]]))
            best('tcp', tcp_bound(src, size))

            for client in ('curl', 'raw'):
                img = cloud.create_image(tok, name='bench', disk_format='raw')
                path = f"/v2/images/{img['id']}/file"
                url = cloud.url('image', path)
                c0 = cpu_seconds(pid)
                c = Cpu()
                if client == 'curl':
                    # -T streams the file (--data-binary @F would read it all
                    # into memory first and time that too).
                    best('up_curl', timed(['curl', '-sf', '-T', src, '-H', f'X-Auth-Token: {tok}',
                                           '-H', 'Content-Type: application/octet-stream',
                                           '-H', 'Expect:', url]))
                else:
                    best('up_raw', raw_put(port, path, tok, src, size))
                key = 'up_' + client
                cpu[key] = min(cpu[key], (cpu_seconds(pid) - c0,
                                          c.children() if client == 'curl' else c.self()),
                               key=sum)
                loads.append(os.getloadavg()[0])
                if client == 'curl':
                    # The first read of a new image comes from the disk.
                    best('down_cold', raw_get(port, path, tok, size))
                    out = os.path.join(work, 'download')
                    c0 = cpu_seconds(pid)
                    best('down_file', timed(['curl', '-sf', '-H', f'X-Auth-Token: {tok}',
                                             '-o', out, url]))
                    same = same and subprocess.run(['cmp', '-s', src, out]).returncode == 0
                    os.unlink(out)
                    best('down_null', timed(['curl', '-sf', '-H', f'X-Auth-Token: {tok}',
                                             '-o', '/dev/null', url]))
                    best('down_raw', raw_get(port, path, tok, size))
                    cpu_down += cpu_seconds(pid) - c0
                    n_down += 3
                subprocess.run(['curl', '-sf', '-X', 'DELETE', '-H', f'X-Auth-Token: {tok}',
                                cloud.url('image', f"/v2/images/{img['id']}")], check=True)
        mb = size / (1 << 20)
        gib = size / (1 << 30)
        loads.append(os.getloadavg()[0])

        def rate(key):
            return f'{mb / t[key]:8.1f} MiB/s'

        print(f'image bench: {mb:.0f} MiB, best of {rounds}, load average (1 min) '
              f'{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs, nimbus-image RSS '
              f'after {image_test.vm_rss_kib(cloud.image_pid())} KiB, downloads identical: '
              f'{same}')
        print(f'  cp                          {rate("cp")}')
        print(f'  curl file:// to a file      {rate("curl_file")}   '
              f'(the client alone) / cp = {t["cp"] / t["curl_file"]:.2f}')
        print(f'  md5 + sha512, OpenSSL       {rate("hash")}   (parallel: the reference)')
        print(f'  md5sum + sha512sum          {rate("hash_coreutils")}   (coreutils, parallel)')
        for key, what in (('up_curl', 'upload, curl -T'), ('up_raw', 'upload, sendfile client')):
            print(f'  {what:<27} {rate(key)}   time / hashing time = '
                  f'{t[key] / t["hash"]:.2f} (aim <= 1.2); / Glance = '
                  f'{mb / t[key] / GLANCE_UPLOAD_MIBS:.2f} (aim >= 2)')
        print(f'  CPU per GiB: hashing reference {cpu["hash"][0] / gib:.2f} s; uploads '
              f'(nimbus-image + client) / hashing: ' + ', '.join(
                  f'{w} {cpu[k][0] / gib:.2f} + {cpu[k][1] / gib:.2f} s = '
                  f'{sum(cpu[k]) / cpu["hash"][0]:.2f}'
                  for k, w in (('up_curl', 'curl'), ('up_raw', 'sendfile'))))
        print(f'  download, first (from disk) {rate("down_cold")}   '
              f'download / cp = {t["cp"] / t["down_cold"]:.2f}   (socket reader)')
        print(f'  download, curl to a file    {rate("down_file")}   '
              f'download / cp = {t["cp"] / t["down_file"]:.2f} (aim >= 0.9)')
        print(f'  download, curl discarding   {rate("down_null")}   '
              f'download / cp = {t["cp"] / t["down_null"]:.2f}')
        print(f'  download, socket reader     {rate("down_raw")}   '
              f'download / cp = {t["cp"] / t["down_raw"]:.2f}   (server-bound)')
        print(f'  loopback TCP, sendfile      {rate("tcp")}   '
              f'/ cp = {t["cp"] / t["tcp"]:.2f}   (no HTTP, no server: the transport\'s bound)')
        print(f'  download, socket reader / loopback TCP bound = {t["tcp"] / t["down_raw"]:.2f}')
        print(f'  nimbus-image CPU per GiB downloaded: {cpu_down / n_down / gib:.3f} s')
    finally:
        cloud.close()
        subprocess.run(['rm', '-rf', work])


if __name__ == '__main__':
    main()
