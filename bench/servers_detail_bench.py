#!/usr/bin/python3
"""bench/servers_detail_bench.py: GET /v2.1/servers/detail requests per second
with SERVERS servers (default 1000).

Creates a throwaway database and nimbus-api (tests/api/nimbus_test.py
harness), 100 fake compute hosts, a subnet on the shared network (so that
every server has a port with an address), SERVERS servers through
compute_server_create (the function POST /servers runs) placed by one
nimbus-scheduler run, then loads GET /servers/detail as the admin (all
servers of the admin project: the default page, and ?limit=100), GET
/servers and GET /servers/{id} with wrk (-t2 -c16 -d10s --latency) when
installed, else with a small threaded Python client.  Each load runs
BENCH_RUNS times (the machine may be shared); prints every run, then the
best and the median requests/s, p50/p99 latency and the servers and bytes
per answer; it never judges them.

    bench/servers_detail_bench.py [SERVERS]

Environment: NIMBUS_BUILD (build directory), NIMBUS_TEST_PG (cluster
conninfo; without it a cluster is started), BENCH_DURATION (10),
BENCH_CONNECTIONS (16), BENCH_WORKERS ([api] workers, 1), BENCH_RUNS (3),
BENCH_PATHS (comma-separated paths to load instead of the four)."""
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
RUNS = int(os.environ.get('BENCH_RUNS', '3'))


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
                          '--timeout', '60s',
                          '-s', script, f'http://127.0.0.1:{port}{path}'],
                         capture_output=True, text=True, check=True).stdout

    def ms(label):
        m = re.search(label + r'\s+([0-9.]+)(us|ms|s)', out)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == 'us' else v * 1000 if m.group(2) == 's' else v
    non2xx = re.search(r'Non-2xx or 3xx responses: (\d+)', out)
    if non2xx:
        print(f'    wrk: {non2xx.group(1)} answers were not 2xx', flush=True)
    errors = re.search(r'Socket errors: .*', out)
    if errors:
        print(f'    wrk: {errors.group(0)}', flush=True)
    return (float(re.search(r'Requests/sec:\s+([0-9.]+)', out).group(1)), ms('50%'), ms('99%'))


cloud = nt.Cloud(extra_conf={'api': {'workers': os.environ.get('BENCH_WORKERS', '1')}})
seed(cloud)
token, body = cloud.token()
project = body['token']['project']['id']
for r in ('instances', 'cores', 'ram'):
    sql(cloud, f"INSERT INTO quotas VALUES ('{project}', '{r}', -1)")
# Neutron's default port quota (500) would stop the creates at 500 servers.
sql(cloud, f"INSERT INTO net.quotas VALUES ('{project}', 'port', -1)")
st, _, b = cloud.request('network', 'POST', '/v2.0/subnets',
                         {'subnet': {'network_id': NET, 'ip_version': 4, 'cidr': '10.20.0.0/16',
                                     'name': 'bench-sub'}}, {'X-Auth-Token': token})
assert st == 201, (st, b)
add_hosts(cloud, 100, vcpus=64, ram=262144, disk=4000)
left = SERVERS
while left > 0:
    k = min(left, 500)
    r = sql(cloud, f"""SELECT compute_server_create(jsonb_build_object('project_id', '{project}',
        'user_id', 'u', 'name', 'detail', 'image_ref', '{IMAGE}', 'flavor_ref', '1',
        'networks', '[{{"uuid": "{NET}"}}]'::jsonb, 'metadata', '{{"role": "bench"}}'::jsonb,
        'admin', true, 'request_id', 'req-bench', 'min_count', {k}, 'max_count', {k}))""")
    assert '"code": 202' in r, r
    left -= k
s = Schedulers(cloud, 1)
s.wait_idle(600)
s.stop()
sql(cloud, 'ANALYZE')
port = cloud.ports['compute']
h = {'X-Auth-Token': token}
one = json.loads(sql(cloud, "SELECT json_build_object('id', uuid) FROM instances LIMIT 1"))['id']
paths = ['/v2.1/servers/detail', '/v2.1/servers/detail?limit=100', '/v2.1/servers',
         '/v2.1/servers/' + one]
if os.environ.get('BENCH_PATHS'):
    paths = os.environ['BENCH_PATHS'].split(',')
for path in paths:
    st, _, b = cloud.request('compute', 'GET', path, None, h)
    n = len(b.get('servers', [])) if st == 200 and 'servers' in b else int(st == 200)
    size = len(json.dumps(b, separators=(',', ':')))
    results = []
    for run in range(RUNS):
        if shutil.which('wrk'):
            rps, p50, p99 = wrk_load(port, path, token, cloud.dir)
            tool = 'wrk'
        else:
            rps, p50, p99 = python_load(port, path, token)
            tool = 'python client'
        results.append((rps, p50, p99))
        print(f'  run {run + 1}: {rps:.0f} requests/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms',
              flush=True)
    results.sort(key=lambda r: -r[0])
    best, med = results[0], results[len(results) // 2]
    print(f'GET {path}: {SERVERS} servers, {n} per answer (status {st}, {size / 1024:.0f} KiB): '
          f'best {best[0]:.0f} requests/s (p50 {best[1]:.2f} ms, p99 {best[2]:.2f} ms), '
          f'median {med[0]:.0f} requests/s (p50 {med[1]:.2f} ms, p99 {med[2]:.2f} ms) '
          f'({tool}, {CONNECTIONS} connections, {DURATION}s x {RUNS})', flush=True)
cloud.close()
