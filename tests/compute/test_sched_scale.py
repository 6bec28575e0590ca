"""The scheduler simulation: 10,000 fake hosts and 10,000 build requests
placed by 2 nimbus-scheduler processes at once, against a real PostgreSQL.

Capacity is tight on purpose (9,900 hosts that take one instance, 100 that
take sixteen: 11,500 slots for 10,000 requests), so the schedulers race for
the last slots of hosts.  Afterwards, by SQL: no host is overbooked, every
host's used_* equals the sum of the instances bound to it, every request is
placed (except affinity members whose group's host filled up: the first
member does not reserve room for the rest, as in Nova), the members of each anti-affinity group are on distinct hosts and
those of each affinity group on one host.  The rate is printed, not judged
(bench/scheduler_bench.py measures it).

SCHED_SCALE_HOSTS / SCHED_SCALE_REQUESTS shrink the run (the defaults are
the issue's figures)."""
import atexit
import os
import re
import time

from compute_lib import IMAGE, Schedulers, add_hosts, check, done, nt, seed, sql

N_HOSTS = int(os.environ.get('SCHED_SCALE_HOSTS', '10000'))
N_REQ = int(os.environ.get('SCHED_SCALE_REQUESTS', '10000'))
N_BIG = max(N_HOSTS // 100, 4)
N_ANTI, ANTI_SIZE = 20, 10           # server_group_members quota is 10
N_AFF, AFF_SIZE = 20, 5

cloud = nt.Cloud()
seed(cloud)
_, body = cloud.token()
project = body['token']['project']['id']
for r in ('instances', 'cores', 'ram', 'server_groups'):
    sql(cloud, f"INSERT INTO quotas VALUES ('{project}', '{r}', -1)")
t0 = time.time()
add_hosts(cloud, N_HOSTS - N_BIG, vcpus=1, ram=1024, disk=20, cpu_ratio=1.0, prefix='small')
add_hosts(cloud, N_BIG, vcpus=16, ram=16384, disk=400, cpu_ratio=1.0, prefix='big')
slots = int(sql(cloud, 'SELECT sum(vcpus) FROM compute_nodes'))
check(int(sql(cloud, 'SELECT count(*) FROM compute_nodes')) == N_HOSTS,
      f'{N_HOSTS} hosts ({slots} one-vCPU slots)')

# Server groups, then their members, then the plain requests, all through
# compute_server_create (the function POST /servers runs).
groups = []
for policy, count in (('anti-affinity', N_ANTI), ('affinity', N_AFF)):
    for g in range(count):
        gid = sql(cloud, f"""INSERT INTO server_groups (uuid, name, policy, project_id, user_id)
            VALUES (gen_random_uuid(), '{policy}-{g}', '{policy}', '{project}', 'u')
            RETURNING uuid""")
        groups.append((gid, policy))


def create(name, n, group=None):
    extra = f", 'group', '{group}'" if group else ''
    out = sql(cloud, f"""SELECT compute_server_create(jsonb_build_object('project_id', '{project}',
        'user_id', 'u', 'name', '{name}', 'image_ref', '{IMAGE}', 'flavor_ref', '1',
        'admin', true, 'request_id', 'req-scale', 'min_count', {n}, 'max_count', {n}{extra}))->>'code'""")
    assert out == '202', out


n_group = 0
for gid, policy in groups:
    size = ANTI_SIZE if policy == 'anti-affinity' else AFF_SIZE
    create(f'{policy}-m', size, gid)
    n_group += size
left = N_REQ - n_group
while left > 0:
    k = min(left, 500)
    create('plain', k)
    left -= k
check(sql(cloud, 'SELECT count(*) FROM build_requests') == str(N_REQ),
      f'{N_REQ} build requests ({n_group} in {len(groups)} server groups), '
      f'set up in {time.time() - t0:.1f}s')

t1 = time.time()
scheds = Schedulers(cloud, 2, 'batch_size = 200\n')
atexit.register(scheds.stop)   # also when a check raises
idle = scheds.wait_idle(600)
elapsed = time.time() - t1
codes = scheds.stop()
check(idle, f'2 schedulers drained {N_REQ} requests on {N_HOSTS} hosts')
check(all(c == 0 for c in codes), f'schedulers exit 0 on SIGTERM ({codes})')

overbooked = sql(cloud, """SELECT count(*) FROM compute_nodes
    WHERE vcpus_used > vcpus * cpu_allocation_ratio
       OR memory_mb_used > (memory_mb - reserved_host_memory_mb) * ram_allocation_ratio
       OR local_gb_used > local_gb * disk_allocation_ratio""")
check(overbooked == '0', 'zero overbooked hosts (SQL over compute_nodes)')
mismatch = sql(cloud, """SELECT count(*) FROM compute_nodes n LEFT JOIN (
    SELECT node, sum(vcpus) v, sum(memory_mb) m, sum(root_gb) d, count(*) c FROM instances
     WHERE node IS NOT NULL AND NOT deleted GROUP BY node) i ON i.node = n.hypervisor_hostname
    WHERE n.vcpus_used <> coalesce(i.v, 0) OR n.memory_mb_used <> coalesce(i.m, 0)
       OR n.local_gb_used <> coalesce(i.d, 0) OR n.running_vms <> coalesce(i.c, 0)""")
check(mismatch == '0', "every host's used_* equals the sum of the instances bound to it")
placed = int(sql(cloud, "SELECT count(*) FROM instances WHERE host IS NOT NULL"
                        " AND task_state = 'spawning'"))
errors = sql(cloud, "SELECT coalesce(string_agg(DISTINCT fault->>'message', ' | '), '')"
                    " FROM instances WHERE vm_state = 'error'")
# An affinity group's first member does not reserve room for the others
# (Nova's rule too): when it lands on a host that fills up, the members
# that follow find no host, and the affinity filter says so.  Everything
# else must be placed.
unplaced_other = sql(cloud, """SELECT count(*) FROM instances i LEFT JOIN server_groups g
    ON g.uuid = i.server_group WHERE i.host IS NULL AND g.policy IS DISTINCT FROM 'affinity'""")
unplaced_aff_bad = sql(cloud, """SELECT count(*) FROM instances i JOIN server_groups g
    ON g.uuid = i.server_group AND g.policy = 'affinity' WHERE i.host IS NULL
    AND (i.vm_state <> 'error' OR i.fault->>'message' NOT LIKE '%filter affinity removed%')""")
check(unplaced_other == '0' and unplaced_aff_bad == '0',
      f'every request placed but affinity members whose group host is full ({placed} of {N_REQ}; '
      f'errors: {errors[:300] or "none"})')
stuck = sql(cloud, "SELECT count(*) FROM instances WHERE vm_state = 'building' AND host IS NULL")
check(stuck == '0', 'no instance left in BUILD without a host')
full = sql(cloud, "SELECT count(*) FROM compute_nodes WHERE vcpus_used = vcpus")
check(int(full) >= N_REQ // 2, f'{full} hosts filled to the last vCPU (the races were real)')

# Server groups, per group by SQL.
bad_anti = sql(cloud, """SELECT count(*) FROM (SELECT server_group FROM instances i
    JOIN server_groups g ON g.uuid = i.server_group AND g.policy = 'anti-affinity'
    WHERE i.host IS NOT NULL GROUP BY server_group
    HAVING count(DISTINCT i.host) <> count(*)) x""")
anti_placed = sql(cloud, """SELECT count(*) FROM instances i JOIN server_groups g
    ON g.uuid = i.server_group AND g.policy = 'anti-affinity' WHERE i.host IS NOT NULL""")
check(bad_anti == '0' and anti_placed == str(N_ANTI * ANTI_SIZE),
      f'anti-affinity: the {anti_placed} members of {N_ANTI} groups on distinct hosts per group')
bad_aff = sql(cloud, """SELECT count(*) FROM (SELECT server_group FROM instances i
    JOIN server_groups g ON g.uuid = i.server_group AND g.policy = 'affinity'
    WHERE i.host IS NOT NULL GROUP BY server_group HAVING count(DISTINCT i.host) <> 1) x""")
aff_placed = sql(cloud, """SELECT count(*) FROM instances i JOIN server_groups g
    ON g.uuid = i.server_group AND g.policy = 'affinity' WHERE i.host IS NOT NULL""")
aff_groups = sql(cloud, """SELECT count(DISTINCT server_group) FROM instances i JOIN server_groups g
    ON g.uuid = i.server_group AND g.policy = 'affinity' WHERE i.host IS NOT NULL""")
check(bad_aff == '0' and aff_groups == str(N_AFF),
      f'affinity: every group placed, its {aff_placed} placed members on one host per group')

logs = scheds.logs()
per = [int(x) for x in re.findall(r'stopped: placed (\d+)', logs)]
check(len(per) == 2 and all(x > 0 for x in per), f'both schedulers placed requests ({per})')
races = sum(int(x) for x in re.findall(r'lost races (\d+)', logs))
print(f'{N_REQ} placements on {N_HOSTS} hosts by 2 schedulers in {elapsed:.2f}s '
      f'(~{N_REQ / elapsed:.0f}/s including start-up and polling), lost races {races}')
for line in re.findall(r'(stopped: .*|time: .*)', logs):
    print('  scheduler', line)
cloud.close()
done()
