#!/usr/bin/python3
"""bench/scheduler_bench.py: placements per second of nimbus-scheduler.

Creates a throwaway database (tests/api/nimbus_test.py harness, which also
starts a nimbus-api that the benchmark does not use), inserts HOSTS fake
compute hosts and REQUESTS build requests (through compute_server_create, the
function the API uses), starts SCHEDULERS nimbus-scheduler processes, and
prints placements/s from the first lease to the last placement, the
schedulers' decision latency p50/p99 (lease to claim, from their logs), lost
races, and an overbooking check.  It prints figures and never judges them.

    bench/scheduler_bench.py [HOSTS REQUESTS SCHEDULERS]...
        default: 1000 10000 1, 1000 10000 2, 10000 10000 1, 10000 10000 2

Environment: NIMBUS_BUILD (build directory), NIMBUS_TEST_PG (cluster
conninfo; without it a cluster is started), BENCH_SUBSET ([scheduler]
host_subset_size, default 1), BENCH_BATCH (batch_size, 200), BENCH_SAMPLED
(hosts_sampled, default 0 = every host)."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'compute'))
from compute_lib import Schedulers, add_hosts, nt, seed, sql  # noqa: E402


def run(hosts, requests, nsched):
    cloud = nt.Cloud()
    seed(cloud)
    _, body = cloud.token()
    project = body['token']['project']['id']
    add_hosts(cloud, hosts, vcpus=64, ram=262144, disk=4000)
    for r in ('instances', 'cores', 'ram'):
        sql(cloud, f"INSERT INTO quotas VALUES ('{project}', '{r}', -1)")
    left = requests
    while left > 0:
        k = min(left, 500)
        sql(cloud, f"""SELECT compute_server_create(jsonb_build_object('project_id', '{project}',
            'user_id', 'u', 'name', 'b', 'image_ref', '11111111-1111-1111-1111-111111111111',
            'flavor_ref', '1', 'admin', true, 'request_id', 'req-bench',
            'min_count', {k}, 'max_count', {k}))""")
        left -= k
    extra = (f"host_subset_size = {os.environ.get('BENCH_SUBSET', '1')}\n"
             f"hosts_sampled = {os.environ.get('BENCH_SAMPLED', '0')}\n"
             f"batch_size = {os.environ.get('BENCH_BATCH', '200')}\n")
    s = Schedulers(cloud, nsched, extra)
    s.wait_idle(3600)
    s.stop()
    span = sql(cloud, """SELECT extract(epoch FROM max(e.finish_time) - min(e.start_time))
        FROM instance_action_events e WHERE e.event = 'schedule_instance'""")
    placed = int(sql(cloud, "SELECT count(*) FROM instances WHERE host IS NOT NULL"))
    over = sql(cloud, """SELECT count(*) FROM compute_nodes WHERE vcpus_used > vcpus * cpu_allocation_ratio
        OR memory_mb_used > memory_mb * ram_allocation_ratio OR local_gb_used > local_gb * disk_allocation_ratio""")
    logs = s.logs()
    p50 = [float(x) for x in re.findall(r'decision latency p50 ([0-9.]+) ms', logs)]
    p99 = [float(x) for x in re.findall(r'p99 ([0-9.]+) ms', logs)]
    races = sum(int(x) for x in re.findall(r'lost races (\d+)', logs))
    split = '; '.join(re.findall(r'time: (lease .*? cycles)', logs))
    # The first placement's event has no start of the lease; use the span
    # between the earliest and latest scheduling events (+ one decision).
    secs = float(span or 0) or 1e-9
    batch = os.environ.get('BENCH_BATCH', '200')
    print(f'hosts {hosts:6d} requests {requests:6d} schedulers {nsched} batch {batch}: '
          f'placed {placed}, '
          f'{placed / secs:8.0f} placements/s, decision p50 {max(p50 or [0]):.2f} ms '
          f'p99 {max(p99 or [0]):.2f} ms, lost races {races}, overbooked hosts {over}', flush=True)
    print(f'    time per scheduler: {split}', flush=True)
    cloud.close()


args = [int(a) for a in sys.argv[1:]]
cases = [tuple(args[i:i + 3]) for i in range(0, len(args), 3)] or [
    (1000, 10000, 1), (1000, 10000, 2), (10000, 10000, 1), (10000, 10000, 2)]
for c in cases:
    run(*c)
