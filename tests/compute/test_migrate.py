"""Moving servers between hosts, end to end with two fake-hypervisor agents
(nimbus-api + nimbus-scheduler + two nimbus-compute, real image caches and
qcow2 overlays, base image from nimbus-image; docs/compute.md "Moving
servers between hosts").

- migrate (admin) -> VERIFY_RESIZE on the other host; the overlay's bytes
  (a marker written into it on the source) arrived on the destination,
  which points it at its own cached base; both hosts hold the flavor until
  revertResize (back on the source, the destination's copy and usage gone)
  or confirmResize (the source's copy and usage gone); migration rows and
  GET /os-migrations (admin only, filters); `openstack server migration
  list` and `nova migration-list` at 2.1; a stopped server stays stopped.
- while the disk moves: the port binding is on the destination, the
  source serves the overlay (size and SHA-256 announced) only to the
  move's secret; the destination agent, killed (-9) and restarted with a
  stale half-pulled file, converges.
- a source that cannot give the guest up: the move is undone.
- anti-affinity: no move onto another member's host.
- resize when the current host is full goes to the other host (the disk
  grows to the new flavor there).
- no valid host -> 400 and nothing changed; members get 403; another
  project 404; the disk endpoint refuses a wrong secret.
- evacuate: 409 while the host is alive; onSharedStorage true -> 400; with
  the host forced down the server is rebuilt on the other host (ACTIVE),
  the source's usage is released, and the source agent, still running,
  deletes its now-foreign copy after its grace period.
- each agent registers its libvirt URI (for live migration: test_live_migrate)."""
import atexit
import hashlib
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request

import compute_lib
from compute_lib import NET, Compute, Schedulers, check, done, nt, sql


NODES = ('mig-node-a', 'mig-node-b')

cloud, tok, admin_project, api = compute_lib.admin_cloud()
sql(cloud, "INSERT INTO flavors (id, name, vcpus, ram, disk) VALUES "
           "('r2', 'r2.small', 2, 1024, 2)")
IMAGE = compute_lib.blank_image(cloud, tok, min_ram=0)

run = compute_lib.MoveRun(cloud, api, NODES)
agents, logs, states, confs = run.agents, run.logs, run.states, run.confs
scheds = Schedulers(cloud, 1)


def cleanup():
    for p in list(agents.values()) + scheds.procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()


atexit.register(cleanup)
log_tail, wait_for = run.node_log_tail, run.wait_for
server, status_is, act = run.server, run.status_is, run.act
used, host_of, other = run.used, run.host_of, run.other


def disk(n, sid):
    return os.path.join(states[n], 'instances', sid, 'disk.qcow2')


def qemu_info(path):
    r = subprocess.run(['qemu-img', 'info', '-U', '--output=json', path],
                       capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def marker_reads(path, pattern):
    r = subprocess.run(['qemu-io', '-r', '-U', '-f', 'qcow2', '-c',
                        f'read -P {pattern} 1M 64k', path], capture_output=True, text=True)
    return r.returncode == 0 and 'Pattern verification failed' not in r.stdout + r.stderr


def migration(sid):
    st, _, b = api.req('GET', f'/os-migrations?instance_uuid={sid}')
    return b['migrations'][0] if st == 200 and b['migrations'] else None


wait_for('both agents register with their console URL', lambda: sql(cloud, """SELECT count(*)
    FROM agent_nodes WHERE console_url IS NOT NULL""") == '2')
check(sql(cloud, f"SELECT libvirt_uri FROM agent_nodes WHERE name = '{NODES[0]}'")
      == f'qemu+tcp://{NODES[0]}.example/system',
      'and with the libvirt URI other nodes reach them at (for live migration)')

# ---- Members and other projects.
pid_b, tok_b = compute_lib.make_project(cloud, tok, 'mig-b')
B = Compute(cloud, tok_b)
st, _, b = api.req('POST', '/servers', {'server': {'name': 'vm1', 'imageRef': IMAGE,
                                                  'flavorRef': '1', 'networks': [{'uuid': NET}]}})
check(st == 202, f'server create 202 ({st} {b})')
sid = b['server']['id']
wait_for('vm1 ACTIVE', status_is(sid, 'ACTIVE'))
src = host_of(sid)
dst = other(src)
base_src = {n: used(n) for n in NODES}
check(act(sid, {'migrate': None}, B)[0] == 403, 'a member cannot migrate (403)')
check(act(sid, {'confirmResize': None}, B)[0] == 404, "another project's server: 404")
check(B.req('GET', '/os-migrations')[0] == 403, 'a member cannot list migrations (403)')

# ---- A marker written into the source's overlay (outside the base's
# bytes), to be read back on the destination.
r = subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x5a 1M 64k',
                    disk(src, sid)], capture_output=True, text=True)
check(r.returncode == 0, f'marker written into the source overlay ({r.stderr[-200:]})')

# ---- Migrate, revert.  The destination agent is frozen (SIGSTOP) for a
# while so that the source's half can be looked at: the source stops and
# serves the disk; a stale half-pulled file waits on the destination, whose
# agent is then killed (-9) and started again.
agents[dst].send_signal(signal.SIGSTOP)
st, _, b = act(sid, {'migrate': None})
check(st == 202, f'migrate accepted ({st} {b})')
s = server(sid)
check(s['status'] == 'RESIZE' and s['OS-EXT-STS:task_state'] in ('resize_migrating', 'resize_migrated'),
      f'RESIZE right after ({s["status"]}, {s["OS-EXT-STS:task_state"]})')
check(sql(cloud, f"SELECT host_id FROM net.ports WHERE device_id = '{sid}'") == dst,
      "the port's binding moved to the destination with the claim")
wait_for('the source stopped the guest and serves its disk: resize_migrated',
         lambda: server(sid)['OS-EXT-STS:task_state'] == 'resize_migrated'
         and (migration(sid) or {}).get('status') == 'post-migrating')
secret = sql(cloud, f"SELECT disk_secret FROM migrations WHERE instance_uuid = '{sid}'")
src_url = sql(cloud, f"SELECT console_url FROM agent_nodes WHERE name = '{src}'")
try:
    with urllib.request.urlopen(urllib.request.Request(
            f'{src_url}/migration/{sid}/disk',
            headers={'X-Nimbus-Migration-Secret': secret}), timeout=10) as r:
        got, hdrs = r.read(), r.headers
    with open(disk(src, sid), 'rb') as f:
        want = f.read()
    check(got == want and int(hdrs['Content-Length']) == len(want)
          and hdrs['X-Nimbus-Disk-SHA256'] == hashlib.sha256(want).hexdigest(),
          f"the source serves the overlay with the move's secret: size and SHA-256 ({len(got)} bytes)")
except urllib.error.HTTPError as e:
    check(False, f'the source serves the overlay with the secret ({e.code})')
try:
    urllib.request.urlopen(urllib.request.Request(
        f'{src_url}/migration/{sid}/disk',
        headers={'X-Nimbus-Migration-Secret': 'cd' * 32}), timeout=10)
    check(False, 'another secret is refused')
except urllib.error.HTTPError as e:
    check(e.code == 403, f'another secret is refused (403: {e.code})')
os.makedirs(os.path.dirname(disk(dst, sid)), exist_ok=True)
with open(disk(dst, sid) + '.part', 'wb') as f:
    f.write(b'half a disk from an earlier attempt' * 1000)
# kill -9 of the frozen destination agent, and a new one: it converges.
agents[dst].kill()
agents[dst].wait()
agents[dst] = compute_lib.start_agent(confs[dst], logs[dst])
wait_for('migrate -> VERIFY_RESIZE', status_is(sid, 'VERIFY_RESIZE'))
check(host_of(sid) == dst, f'the server is on the other host now ({host_of(sid)})')
check(used(dst) != base_src[dst] and used(src) == base_src[src],
      f'both hosts hold the flavor while unconfirmed ({used(src)} {used(dst)})')
info = qemu_info(disk(dst, sid))
check(info.get('backing-filename', '').startswith(os.path.join(states[dst], 'images')),
      f"the destination's overlay sits on its own cached base ({info.get('backing-filename')})")
check(marker_reads(disk(dst, sid), '0x5a'), "the marker written on the source is in the destination's overlay")
check(not os.path.exists(disk(dst, sid) + '.part'), 'no partial file left')
m = migration(sid)
check(m and m['status'] == 'finished' and m['source_compute'] == src and m['dest_compute'] == dst
      and m['source_node'] == src and m['dest_node'] == dst and m['old_instance_type_id'] == 1
      and m['new_instance_type_id'] == 1 and m['created_at'] and m['updated_at'] and 'id' in m,
      f'GET /os-migrations shows the finished migration ({m})')
secret = sql(cloud, f"SELECT coalesce(disk_secret, 'none') FROM migrations WHERE instance_uuid = '{sid}'")
check(secret == 'none', 'the one-time secret is gone once the disk moved')
st, _, b = act(sid, {'revertResize': None})
check(st == 202, f'revertResize accepted ({st} {b})')
wait_for('revert -> ACTIVE', status_is(sid, 'ACTIVE'))
check(host_of(sid) == src, 'back on the source')
wait_for("the destination's copy is deleted", lambda: not os.path.exists(os.path.dirname(disk(dst, sid))))
check(used(dst) == base_src[dst] and used(src) == base_src[src],
      f'the destination gave its usage back ({used(src)} {used(dst)})')
check(marker_reads(disk(src, sid), '0x5a'), "the source's overlay is untouched")
wait_for('migration reverted', lambda: (migration(sid) or {}).get('status') == 'reverted')
check(sql(cloud, f"SELECT count(*) FROM instances WHERE uuid = '{sid}' AND move_held_node IS NULL") == '1',
      'nothing held any more')

# ---- The disk endpoint of an agent refuses what is not a move's.
url = sql(cloud, f"SELECT console_url FROM agent_nodes WHERE name = '{src}'")
req = urllib.request.Request(f'{url}/migration/{sid}/disk',
                             headers={'X-Nimbus-Migration-Secret': 'ab' * 32})
try:
    urllib.request.urlopen(req, timeout=10)
    check(False, 'the disk endpoint answers a wrong secret')
except urllib.error.HTTPError as e:
    check(e.code in (403, 409), f'the disk endpoint refuses a guessed secret ({e.code})')

# ---- The source cannot give the guest up (its export mark cannot be
# written: a directory is in the way): the move is undone, the server back
# on the source as it was, the migration and the instance action in error.
block = os.path.join(os.path.dirname(disk(src, sid)), 'migration.export')
os.mkdir(block)
before = (used(src), used(dst))
check(act(sid, {'migrate': None})[0] == 202, 'migrate (the source will fail)')
wait_for('the move is undone: ACTIVE on the source, the migration in error',
         lambda: status_is(sid, 'ACTIVE')() and host_of(sid) == src
         and (migration(sid) or {}).get('status') == 'error', timeout=60)
check((used(src), used(dst)) == before, f"the destination's claim was given back ({used(dst)})")
st, _, b = api.req('GET', f'/servers/{sid}/os-instance-actions')
check(st == 200 and b['instanceActions'][0]['action'] == 'migrate'
      and b['instanceActions'][0]['message'] == 'Error', 'the migrate action ended in error')
os.rmdir(block)

# ---- Migrate a stopped server, confirm.
check(act(sid, {'os-stop': None})[0] == 202, 'os-stop')
wait_for('SHUTOFF', status_is(sid, 'SHUTOFF'))
check(act(sid, {'migrate': None})[0] == 202, 'migrate a stopped server')
wait_for('VERIFY_RESIZE', status_is(sid, 'VERIFY_RESIZE'))
check(server(sid)['OS-EXT-STS:power_state'] == 4, 'still powered off on the destination')
st, _, _ = act(sid, {'confirmResize': None})
check(st == 204, f'confirmResize 204 ({st})')
check(status_is(sid, 'SHUTOFF')() and host_of(sid) == dst, 'SHUTOFF on the destination')
check((used(src), used(dst)) == (base_src[dst], base_src[src]),
      f'the source gave its usage back ({used(src)} {used(dst)})')
wait_for("the source's copy is deleted", lambda: not os.path.exists(os.path.dirname(disk(src, sid))))
check(marker_reads(disk(dst, sid), '0x5a'), 'the marker made it through the confirmed move')
check((migration(sid) or {}).get('status') == 'confirmed', 'migration confirmed')
check(act(sid, {'os-start': None})[0] == 202, 'os-start')
wait_for('ACTIVE on the destination', status_is(sid, 'ACTIVE'))
src, dst = dst, src

# ---- Resize to another host when this one is full.
full = sql(cloud, f"SELECT memory_mb FROM compute_nodes WHERE hypervisor_hostname = '{src}'")
sql(cloud, f"UPDATE compute_nodes SET ram_allocation_ratio = 1.0, memory_mb_used = memory_mb - 400 "
           f"WHERE hypervisor_hostname = '{src}'")
st, _, b = act(sid, {'resize': {'flavorRef': 'r2'}})
check(st == 202, f'resize with the current host full is accepted ({st} {b})')
wait_for('resize -> VERIFY_RESIZE on the other host', status_is(sid, 'VERIFY_RESIZE'))
check(host_of(sid) == dst and server(sid)['flavor']['id'] == 'r2',
      f'on the other host with the new flavor ({host_of(sid)})')
check(qemu_info(disk(dst, sid)).get('virtual-size') == 2 << 30, "the disk grew to the new flavor's 2 GiB")
m = migration(sid)
check(m and m['status'] == 'finished' and m['new_instance_type_id'] is None, f'a resize row ({m})')
check(act(sid, {'confirmResize': None})[0] == 204, 'confirmResize')
sql(cloud, f"UPDATE compute_nodes SET memory_mb_used = 0, ram_allocation_ratio = 1.5 "
           f"WHERE hypervisor_hostname = '{src}'")
src, dst = dst, src

# ---- No valid host: nothing changes.
sql(cloud, f"UPDATE compute_nodes SET disabled = true WHERE hypervisor_hostname = '{dst}'")
before = (used(src), used(dst))
st, _, b = act(sid, {'migrate': None})
check(st == 400 and 'No valid host was found' in str(b), f'no other enabled host -> 400 ({st} {b})')
s = server(sid)
check((s['status'], s['OS-EXT-STS:task_state'], host_of(sid)) == ('ACTIVE', None, src)
      and (used(src), used(dst)) == before, 'the server and the hosts are as they were')
sql(cloud, f"UPDATE compute_nodes SET disabled = false WHERE hypervisor_hostname = '{dst}'")
# A source whose agent serves no disks (no console listener): refused, and
# the claim on the destination given back.
saved = sql(cloud, f"SELECT console_url FROM agent_nodes WHERE name = '{src}'")
sql(cloud, f"UPDATE agent_nodes SET console_url = NULL WHERE name = '{src}'")
st, _, b = act(sid, {'migrate': None})
check(st == 409 and 'does not serve disks' in str(b), f'a source serving no disks -> 409 ({st} {b})')
check(status_is(sid, 'ACTIVE')() and (used(src), used(dst)) == before,
      'nothing changed, the claim was given back')
sql(cloud, f"UPDATE agent_nodes SET console_url = '{saved}' WHERE name = '{src}'")
saved = sql(cloud, f"SELECT hypervisor_type FROM compute_nodes WHERE hypervisor_hostname = '{src}'")
sql(cloud, "UPDATE compute_nodes SET hypervisor_type = 'RUNC'")
st, _, b = act(sid, {'migrate': None})
check(st == 409 and 'containers cannot move' in str(b), f'a container -> 409 ({st} {b})')
check(status_is(sid, 'ACTIVE')() and (used(src), used(dst)) == before, 'nothing changed')
sql(cloud, f"UPDATE compute_nodes SET hypervisor_type = '{saved}'")

# ---- Anti-affinity: a member cannot move to the host of another member.
st, _, g = api.req('POST', '/os-server-groups', {'server_group': {
    'name': 'apart', 'policies': ['anti-affinity']}})
gid = g['server_group']['id']
members = []
for name in ('g1', 'g2'):
    st, _, b = api.req('POST', '/servers', {'server': {
        'name': name, 'imageRef': IMAGE, 'flavorRef': '1', 'networks': [{'uuid': NET}]},
        'os:scheduler_hints': {'group': gid}})
    check(st == 202, f'group member {name} created ({st})')
    members.append(b['server']['id'])
for m_id in members:
    wait_for('member ACTIVE', status_is(m_id, 'ACTIVE'))
check(host_of(members[0]) != host_of(members[1]), 'the members are on different hosts')
st, _, b = act(members[0], {'migrate': None})
check(st == 400 and 'No valid host' in str(b),
      f'migrating a member onto the other member\'s host -> 400 ({st} {b})')
check(status_is(members[0], 'ACTIVE')(), 'the member is as it was')
for m_id in members:
    check(api.req('DELETE', f'/servers/{m_id}')[0] == 204, 'member deleted')
for m_id in members:
    wait_for('member gone', lambda: server(m_id) == 404)

# ---- Evacuate.
st, _, b = act(sid, {'evacuate': {'onSharedStorage': False}})
check(st == 409 and f'Compute service of {src} is still in use' in str(b),
      f'evacuate while the host is alive -> 409 ({st} {b})')
st, _, b = api.req('PUT', '/os-services/force-down', {'host': src, 'binary': 'nova-compute',
                                                      'forced_down': True})
check(st == 200, f'host forced down ({st} {b})')
st, _, b = act(sid, {'evacuate': {'onSharedStorage': True}})
check(st == 400 and 'shared' in str(b), f'onSharedStorage true -> 400 ({st} {b})')
check(act(sid, {'evacuate': {'onSharedStorage': False}}, B)[0] == 403, 'a member cannot evacuate')
st, _, b = act(sid, {'evacuate': {'onSharedStorage': False}})
check(st == 200 and 'adminPass' in b, f'evacuate accepted ({st} {b})')
wait_for('evacuate -> ACTIVE on the other host',
         lambda: status_is(sid, 'ACTIVE')() and host_of(sid) == dst)
check(used(src) == '0/0/0', f"the dead host's usage is released ({used(src)})")
wait_for('evacuation done', lambda: (migration(sid) or {}).get('status') == 'done')
check((migration(sid) or {}).get('dest_compute') == dst, 'the evacuation row names the destination')
wait_for("the source agent deletes its now-foreign copy after its grace period",
         lambda: not os.path.exists(os.path.dirname(disk(src, sid))), timeout=60)
check('orphan-deleted' in log_tail(src) or 'deleted' in log_tail(src), 'the source agent says so')

# ---- The list, its filters, and the openstack client.
st, _, b = api.req('GET', '/os-migrations')
types = sorted(m['status'] for m in b['migrations'])
check(st == 200 and len(b['migrations']) == 5
      and types == ['confirmed', 'confirmed', 'done', 'error', 'reverted'],
      f'GET /os-migrations: every move ({types})')
st, _, b = api.req('GET', '/os-migrations?status=reverted')
check(st == 200 and [m['status'] for m in b['migrations']] == ['reverted'], 'filter status')
st, _, b = api.req('GET', f'/os-migrations?host={NODES[0]}')
check(st == 200 and len(b['migrations']) == 5, 'filter host (source or destination)')
OSC = '/usr/bin/openstack'
if os.path.exists(OSC):
    r = cloud.osc('server', 'migration', 'list', fmt=True)
    rows = json.loads(r.stdout) if r.returncode == 0 else []
    check(len(rows) == 5 and all(x['Server UUID'] == sid for x in rows),
          f'openstack server migration list (2.1) ({r.returncode} {r.stderr[-300:]})')
NOVA = '/usr/bin/nova'
if os.path.exists(NOVA):
    env = {k: v for k, v in os.environ.items() if not k.startswith('OS_')}
    env.update(OS_AUTH_URL=cloud.url('identity', '/v3'), OS_USERNAME='admin',
               OS_PASSWORD=nt.ADMIN_PASSWORD, OS_PROJECT_NAME='admin',
               OS_USER_DOMAIN_NAME='Default', OS_PROJECT_DOMAIN_NAME='Default',
               OS_COMPUTE_API_VERSION='2.1')
    r = subprocess.run([NOVA, 'migration-list', '--instance-uuid', sid], env=env,
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0 and r.stdout.count(sid) == 5 and 'reverted' in r.stdout,
          f'nova migration-list (2.1) ({r.returncode} {r.stderr[-300:]})')
done()
