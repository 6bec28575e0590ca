#!/usr/bin/python3
"""bench/servers_detail_bench.py: GET /v2.1/servers/detail requests per second
with SERVERS servers (default 1000).

Creates a throwaway database and nimbus-api (tests/api/nimbus_test.py
harness), 100 fake compute hosts, SERVERS servers through
compute_server_create (the function POST /servers runs) placed by one
nimbus-scheduler run, then loads GET /servers/detail as the admin (all
servers of the admin project: the default page, and ?limit=100) with wrk
(-t2 -c16 -d10s --latency) when installed, else with a small threaded
Python client.  Prints requests/s, p50/p99 latency and the servers per
answer; it never judges them.

    bench/servers_detail_bench.py [SERVERS]

Environment: NIMBUS_BUILD (build directory), NIMBUS_TEST_PG (cluster
conninfo; without it a cluster is started), BENCH_DURATION (10),
BENCH_CONNECTIONS (16), BENCH_WORKERS ([api] workers, 1)."""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'compute'))
from compute_lib import IMAGE, NET, Schedulers, add_hosts, nt, seed, sql  # noqa: E402

SERVERS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
DURATION = int(os.environ.get('BENCH_DURATION', '10'))
CONNECTIONS = int(os.environ.get('BENCH_CONNECTIONS', '16'))


def python_load(port, path, token):
    """Fallback without wrk: CONNECTIONS threads with keep-alive."""
    lat, lock, stop = [], threading.Lock(), time.time() + DURATION

    def worker():
        c = http.client.HTTPConnection('127.0.0.1', port, timeout=30)
        mine = []
        while time.time() < stop:
            t = time.time()
            c.request('GET', path, headers={'X-Auth-Token': token})
            r = c.getresponse()
            r.read()
            mine.append(time.time() - t)
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    lat.sort()
    return (len(lat) / DURATION, lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3)


def wrk_load(port, path, token, tmp):
    script = os.path.join(tmp, 'token.lua')
    with open(script, 'w') as f:
        f.write(f'wrk.headers["X-Auth-Token"] = "{token}"\n')
    out = subprocess.run(['wrk', '-t2', f'-c{CONNECTIONS}', f'-d{DURATION}s', '--latency',
                          '-s', script, f'http://127.0.0.1:{port}{path}'],
                         capture_output=True, text=True, check=True).stdout

    def ms(label):
        m = re.search(label + r'\s+([0-9.]+)(us|ms|s)', out)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == 'us' else v * 1000 if m.group(2) == 's' else v
    non2xx = re.search(r'Non-2xx or 3xx responses: (\d+)', out)
    if non2xx:
        print(f'    wrk: {non2xx.group(1)} answers were not 2xx', flush=True)
    return (float(re.search(r'Requests/sec:\s+([0-9.]+)', out).group(1)), ms('50%'), ms('99%'))


cloud = nt.Cloud(extra_conf={'api': {'workers': os.environ.get('BENCH_WORKERS', '1')}})
seed(cloud)
token, body = cloud.token()
project = body['token']['project']['id']
for r in ('instances', 'cores', 'ram'):
    sql(cloud, f"INSERT INTO quotas VALUES ('{project}', '{r}', -1)")
add_hosts(cloud, 100, vcpus=64, ram=262144, disk=4000)
left = SERVERS
while left > 0:
    k = min(left, 500)
    sql(cloud, f"""SELECT compute_server_create(jsonb_build_object('project_id', '{project}',
        'user_id', 'u', 'name', 'detail', 'image_ref', '{IMAGE}', 'flavor_ref', '1',
        'networks', '[{{"uuid": "{NET}"}}]'::jsonb, 'metadata', '{{"role": "bench"}}'::jsonb,
        'admin', true, 'request_id', 'req-bench', 'min_count', {k}, 'max_count', {k}))""")
    left -= k
s = Schedulers(cloud, 1)
s.wait_idle(600)
s.stop()
sql(cloud, 'ANALYZE')
port = cloud.ports['compute']
h = {'X-Auth-Token': token}
for path in ('/v2.1/servers/detail', '/v2.1/servers/detail?limit=100'):
    st, _, b = cloud.request('compute', 'GET', path, None, h)
    n = len(b.get('servers', [])) if st == 200 else 0
    size = len(json.dumps(b))
    if shutil.which('wrk'):
        rps, p50, p99 = wrk_load(port, path, token, cloud.dir)
        tool = 'wrk'
    else:
        rps, p50, p99 = python_load(port, path, token)
        tool = 'python client'
    print(f'GET {path}: {SERVERS} servers, {n} per answer (status {st}, ~{size // 1024} KiB): '
          f'{rps:.0f} requests/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms '
          f'({tool}, {CONNECTIONS} connections, {DURATION}s)', flush=True)
cloud.close()
