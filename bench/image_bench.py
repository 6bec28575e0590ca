#!/usr/bin/python3
"""bench/image_bench.py: upload and download throughput of nimbus-image for
one file, in the same run as `cp` of the file on the same disk and as md5
and sha512 of the same bytes computed in parallel (what any honest upload
must at least do).  Starts nimbus-api and nimbus-image against a throwaway
PostgreSQL (tests/ harness), prints figures and ratios, never asserts.

  bench/image_bench.py [SIZE_MIB]        default 1024

Downloads are timed twice: curl writing the file to the same disk (what a
user does; curl's own copies from the socket and into the file count), and
curl discarding the bytes (-o /dev/null: what the server and the loopback
sustain).  curl copying the local file with a file:// URL shows what the
client side alone costs when it writes a file.  The CPU time nimbus-image
spends per GiB downloaded (from /proc, all threads) is what copying through
user space or not changes most, and what a loaded machine disturbs least.
Each figure is the best of BENCH_ROUNDS rounds (default 3), the
rounds interleaved, so that a busy shared machine disturbs the ratios less.

Environment: NIMBUS_BUILD (default <repo>/build), NIMBUS_TEST_PG (a running
cluster; otherwise one is started)."""
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('NIMBUS_SOURCE', REPO)
os.environ.setdefault('NIMBUS_BUILD', os.path.join(REPO, 'build'))
sys.path.insert(0, os.path.join(REPO, 'tests', 'api'))
sys.path.insert(0, os.path.join(REPO, 'tests', 'image'))
import image_test  # noqa: E402


def cpu_seconds(pid):
    """User + system CPU time of process 'pid' (all its threads) so far."""
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def timed(cmd, **kw):
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, **kw)
    return time.monotonic() - t0


def main():
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    work = tempfile.mkdtemp(prefix='nimbus-image-bench-', dir='/var/tmp')
    src = os.path.join(work, 'data')
    subprocess.run(['dd', 'if=/dev/urandom', f'of={src}', 'bs=1M', f'count={mib}',
                    'status=none'], check=True)
    size = os.path.getsize(src)
    cloud = image_test.ImageCloud(image_conf={'max_image_size': size * 2},
                                  extra_conf={'log': {'level': 'warn'}})
    try:
        tok = cloud.admin_token()
        rounds = int(os.environ.get('BENCH_ROUNDS', '3'))
        t_cp = t_hash = t_up = t_down = t_null = t_curl = float('inf')
        same = True
        pid = cloud.image_pid()
        cpu_down = 0.0
        n_down = 0
        for _ in range(rounds):
            t_cp = min(t_cp, timed(['cp', src, os.path.join(work, 'copy')]))
            os.unlink(os.path.join(work, 'copy'))
            t_curl = min(t_curl, timed(['curl', '-sf', '-o', os.path.join(work, 'copy'),
                                        'file://' + src]))
            os.unlink(os.path.join(work, 'copy'))
            # md5 and sha512 in parallel over the bytes (page cache warm).
            t0 = time.monotonic()
            procs = [subprocess.Popen([h, src], stdout=subprocess.DEVNULL)
                     for h in ('md5sum', 'sha512sum')]
            for p in procs:
                p.wait()
            t_hash = min(t_hash, time.monotonic() - t0)

            img = cloud.create_image(tok, name='bench', disk_format='raw')
            url = cloud.url('image', f"/v2/images/{img['id']}/file")
            # -T streams the file (--data-binary @F would read it all into
            # memory first and time that too).
            t_up = min(t_up, timed(['curl', '-sf', '-T', src, '-H', f'X-Auth-Token: {tok}',
                                    '-H', 'Content-Type: application/octet-stream',
                                    '-H', 'Expect:', url]))
            out = os.path.join(work, 'download')
            c0 = cpu_seconds(pid)
            t_down = min(t_down, timed(['curl', '-sf', '-H', f'X-Auth-Token: {tok}',
                                        '-o', out, url]))
            same = same and subprocess.run(['cmp', '-s', src, out]).returncode == 0
            os.unlink(out)
            t_null = min(t_null, timed(['curl', '-sf', '-H', f'X-Auth-Token: {tok}',
                                        '-o', '/dev/null', url]))
            cpu_down += cpu_seconds(pid) - c0
            n_down += 2
            subprocess.run(['curl', '-sf', '-X', 'DELETE', '-H', f'X-Auth-Token: {tok}',
                            cloud.url('image', f"/v2/images/{img['id']}")], check=True)
        mb = size / (1 << 20)
        print(f'image bench: {mb:.0f} MiB, best of {rounds}, nimbus-image RSS after '
              f'{image_test.vm_rss_kib(cloud.image_pid())} KiB, downloads identical: {same}')
        print(f'  cp                      {mb / t_cp:8.1f} MiB/s')
        print(f'  curl file:// to a file  {mb / t_curl:8.1f} MiB/s   '
              f'(the client alone) / cp = {t_cp / t_curl:.2f}')
        print(f'  md5 + sha512 (parallel) {mb / t_hash:8.1f} MiB/s')
        print(f'  upload                  {mb / t_up:8.1f} MiB/s   '
              f'time / hashing time = {t_up / t_hash:.2f} (aim <= 1.2)')
        print(f'  download to a file      {mb / t_down:8.1f} MiB/s   '
              f'download / cp = {t_cp / t_down:.2f} (aim >= 0.9)')
        print(f'  download, discarded     {mb / t_null:8.1f} MiB/s   '
              f'download / cp = {t_cp / t_null:.2f}')
        print(f'  nimbus-image CPU per GiB downloaded: '
              f'{cpu_down / n_down / (size / (1 << 30)):.3f} s')
    finally:
        cloud.close()
        subprocess.run(['rm', '-rf', work])


if __name__ == '__main__':
    main()
