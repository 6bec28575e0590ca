"""nimbus-scheduler against a real PostgreSQL: several schedulers at once on
many build requests never overbook a host; affinity and anti-affinity;
no valid host ends in ERROR with a fault naming the filter."""
import atexit
import os
import re
import time

from compute_lib import (Compute, Schedulers, add_hosts, check, done, nt, seed, sql)

N_REQ = int(os.environ.get('SCHED_TEST_REQUESTS', '1000'))
N_HOSTS = int(os.environ.get('SCHED_TEST_HOSTS', '50'))
N_SCHED = int(os.environ.get('SCHED_TEST_SCHEDULERS', '3'))

cloud = nt.Cloud()
seed(cloud)
tok, body = cloud.token()
admin_project = body['token']['project']['id']
api = Compute(cloud, tok)

# ---- Scale: N_REQ requests (mixed flavors) on N_HOSTS hosts, N_SCHED schedulers.
add_hosts(cloud, N_HOSTS)
for r in ('instances', 'cores', 'ram'):
    sql(cloud, f"INSERT INTO quotas VALUES ('{admin_project}', '{r}', -1)")
# Requests go in through the same function the API uses.
sql(cloud, f"""DO $$ BEGIN FOR k IN 1..{N_REQ} LOOP
    PERFORM compute_server_create(jsonb_build_object('project_id', '{admin_project}',
        'user_id', 'u', 'name', 'scale-' || k, 'image_ref', '{nt and "11111111-1111-1111-1111-111111111111"}',
        'flavor_ref', CASE WHEN k % 3 = 0 THEN '2' ELSE '1' END, 'admin', true,
        'request_id', 'req-scale'));
    END LOOP; END $$""")
check(sql(cloud, 'SELECT count(*) FROM build_requests') == str(N_REQ), f'{N_REQ} build requests')
t0 = time.time()
scheds = Schedulers(cloud, N_SCHED)
atexit.register(scheds.stop)   # also when a check raises
idle = scheds.wait_idle(300)
elapsed = time.time() - t0
check(idle, f'{N_SCHED} schedulers drained {N_REQ} requests on {N_HOSTS} hosts in {elapsed:.2f}s')
overbooked = sql(cloud, """SELECT count(*) FROM compute_nodes
    WHERE vcpus_used > vcpus * cpu_allocation_ratio
       OR memory_mb_used > (memory_mb - reserved_host_memory_mb) * ram_allocation_ratio
       OR local_gb_used > local_gb * disk_allocation_ratio""")
check(overbooked == '0', 'no host overbooked (SQL over compute_nodes)')
mismatch = sql(cloud, """SELECT count(*) FROM compute_nodes n LEFT JOIN (
    SELECT node, sum(vcpus) v, sum(memory_mb) m, sum(root_gb) d, count(*) c FROM instances
     WHERE node IS NOT NULL AND NOT deleted GROUP BY node) i ON i.node = n.hypervisor_hostname
    WHERE n.vcpus_used <> coalesce(i.v, 0) OR n.memory_mb_used <> coalesce(i.m, 0)
       OR n.local_gb_used <> coalesce(i.d, 0) OR n.running_vms <> coalesce(i.c, 0)""")
check(mismatch == '0', 'every host\'s used_* equals the sum of the instances placed on it')
placed = int(sql(cloud, "SELECT count(*) FROM instances WHERE host IS NOT NULL"))
errored = int(sql(cloud, "SELECT count(*) FROM instances WHERE vm_state = 'error' AND host IS NULL"
                         " AND fault->>'message' LIKE 'No valid host%'"))
check(placed + errored == N_REQ, f'every request placed ({placed}) or ERROR with a fault ({errored})')
# No false "no valid host": hosts only fill up during the run, so a request
# that failed must not fit on any host even at the end.
wrong = sql(cloud, """SELECT count(*) FROM instances i WHERE i.vm_state = 'error' AND EXISTS (
    SELECT 1 FROM compute_nodes n
     WHERE n.vcpus_used + i.vcpus <= n.vcpus * n.cpu_allocation_ratio
       AND n.memory_mb_used + i.memory_mb <= (n.memory_mb - n.reserved_host_memory_mb) * n.ram_allocation_ratio
       AND n.local_gb_used + i.root_gb <= n.local_gb * n.disk_allocation_ratio)""")
used = sql(cloud, 'SELECT sum(vcpus_used) || \'/\' || sum(vcpus * cpu_allocation_ratio)::int || \' vCPUs, \' || '
                  'sum(local_gb_used) || \'/\' || sum(local_gb) || \' GB\' FROM compute_nodes')
check(wrong == '0', f'no ERROR request would have fit on any host ({used} used)')
stuck = sql(cloud, "SELECT count(*) FROM instances WHERE vm_state = 'building' AND host IS NULL")
check(stuck == '0', 'no instance left in BUILD without a host')
codes = scheds.stop()
check(all(c == 0 for c in codes), f'schedulers exit 0 on SIGTERM ({codes})')
print(f'placements: {placed + errored} decisions in {elapsed:.2f}s = '
      f'{(placed + errored) / elapsed:.0f}/s with {N_SCHED} schedulers')
races = sum(int(x) for x in re.findall(r'lost races (\d+)', scheds.logs()))
print(f'lost races (host refreshed, decided again): {races}')

# ---- Affinity / anti-affinity / no valid host, on a fresh cloud.
cloud.close()
cloud = nt.Cloud()
seed(cloud)
tok, body = cloud.token()
api = Compute(cloud, tok)
add_hosts(cloud, 3, prefix='aff')
st, _, g_anti = api.req('POST', '/os-server-groups',
                        {'server_group': {'name': 'anti', 'policies': ['anti-affinity']}})
st2, _, g_aff = api.req('POST', '/os-server-groups',
                        {'server_group': {'name': 'aff', 'policies': ['affinity']}})
check(st == 200 and st2 == 200, 'server groups created')
anti_ids, aff_ids = [], []
for i in range(5):
    st, _, b = api.create(f'anti-{i}', hints={'group': g_anti['server_group']['id']})
    anti_ids.append(b['server']['id'])
for i in range(4):
    st, _, b = api.create(f'aff-{i}', hints={'group': g_aff['server_group']['id']})
    aff_ids.append(b['server']['id'])
st, _, b = api.create('huge', flavor='5')   # 16 GB RAM fits no 16 GB host at ratio 1.0 + others
huge = b['server']['id']
scheds = Schedulers(cloud, 2)
atexit.register(scheds.stop)   # also when a check raises
check(scheds.wait_idle(60), 'group requests drained')
rows = sql(cloud, "SELECT host FROM instances WHERE name LIKE 'anti-%' AND host IS NOT NULL")
hosts = rows.split('\n') if rows else []
check(len(hosts) == 3 and len(set(hosts)) == 3, f'anti-affinity: 3 members on 3 distinct hosts ({hosts})')
nerr = sql(cloud, "SELECT count(*) FROM instances WHERE name LIKE 'anti-%' AND vm_state = 'error'")
check(nerr == '2', 'anti-affinity: the 2 extra members are ERROR')
rows = sql(cloud, "SELECT DISTINCT host FROM instances WHERE name LIKE 'aff-%'")
check(rows.count('\n') == 0 and rows.startswith('aff'), f'affinity: all 4 members on one host ({rows})')
st, _, b = api.req('GET', '/servers/' + huge)
s = b.get('server', {})
check(s.get('status') == 'ERROR' and 'No valid host' in s.get('fault', {}).get('message', '')
      and 'filter ram removed 3' in s['fault']['message'],
      f"no valid host: ERROR with a fault naming the filter ({s.get('fault')})")
err_anti = [i for i in anti_ids if api.req('GET', '/servers/' + i)[2]['server']['status'] == 'ERROR']
st, _, b = api.req('GET', '/servers/' + err_anti[0])
check('anti_affinity' in b['server']['fault']['message'],
      f"anti-affinity failure names the filter ({b['server']['fault']['message']})")
st, _, b = api.req('GET', '/os-services')
check(any(x['binary'] == 'nova-scheduler' and x['state'] == 'up' for x in b['services']),
      'schedulers appear in os-services as nova-scheduler, up')
# Instance actions record the scheduling event.
st, _, b = api.req('GET', f'/servers/{aff_ids[0]}/os-instance-actions')
rid = b['instanceActions'][0]['request_id']
st, _, b = api.req('GET', f'/servers/{aff_ids[0]}/os-instance-actions/{rid}')
check(st == 200 and any(e['event'] == 'schedule_instance' and e['result'] == 'Success'
                        for e in b['instanceAction']['events']), 'instance action has the schedule event')

# ---- Container images (container_format docker) only on runc hosts, and
# other images never there (the emptiest host, so spread would pick it).
add_hosts(cloud, 1, prefix='runc', ram=65536)
sql(cloud, f"INSERT INTO quotas VALUES ('{body['token']['project']['id']}', 'instances', -1)")
sql(cloud, "UPDATE compute_nodes SET hypervisor_type = 'RUNC' WHERE host = 'runc1'")
CONTAINER = '33333333-3333-3333-3333-333333333333'
sql(cloud, "INSERT INTO images (id, name, owner, status, visibility, disk_format, "
           f"container_format, size) VALUES ('{CONTAINER}', 'alpine', 'seed', 'active', "
           "'public', 'raw', 'docker', 1024)")
st, _, b = api.create('ctr', imageRef=CONTAINER)
ctr = b['server']['id']
st2, _, b = api.create('vm-next-to-ctr')
vm = b['server']['id']
check(st == 202 and st2 == 202, 'a container server and a VM created')
check(scheds.wait_idle(60), 'container and VM requests drained')
check(sql(cloud, f"SELECT host FROM instances WHERE uuid = '{ctr}'") == 'runc1',
      'the docker image was placed on the runc host')
h = sql(cloud, f"SELECT coalesce(host, '-') FROM instances WHERE uuid = '{vm}'")
check(h not in ('runc1', '-'), f'the VM was placed on a hypervisor host, not the runc one ({h})')

# ---- A host that dies: its builds go elsewhere, or ERROR, never BUILD forever.
add_hosts(cloud, 1, prefix='spare')
dead = sql(cloud, f"SELECT host FROM instances WHERE uuid = '{aff_ids[0]}'")
sql(cloud, f"UPDATE compute_nodes SET last_heartbeat = now() - interval '1 hour' WHERE host = '{dead}'")
sql(cloud, f"UPDATE instances SET updated_at = now() - interval '1 hour' WHERE host = '{dead}'")
deadline = time.time() + 30
while time.time() < deadline:
    left = sql(cloud, f"SELECT count(*) FROM instances WHERE host = '{dead}' AND vm_state = 'building'")
    if left == '0' and sql(cloud, 'SELECT count(*) FROM build_requests') == '0':
        break
    time.sleep(0.2)
check(left == '0', f'builds on the dead host {dead} were moved')
rows = sql(cloud, "SELECT vm_state || ' ' || coalesce(host, '-') FROM instances WHERE name LIKE 'aff-%'")
# The affinity group had all members on the dead host: they must all move
# together to the one host left with room, or fail; none stays in BUILD on it.
check(all(r.startswith('error') or (r.startswith('building') and not r.endswith(dead))
          for r in rows.split('\n')), f'affinity members rescheduled or ERROR ({rows})')
used = sql(cloud, f"SELECT vcpus_used FROM compute_nodes WHERE host = '{dead}'")
check(used == '0', 'the dead host\'s claims were released')
check(all(c == 0 for c in scheds.stop()), 'schedulers stop cleanly')
cloud.close()
done()
