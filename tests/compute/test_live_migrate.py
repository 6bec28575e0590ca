"""Live migration (os-migrateLive) with two fake-hypervisor agents
(nimbus-api + nimbus-scheduler + two nimbus-compute, real image caches and
qcow2 overlays; docs/compute.md "Moving servers between hosts").

The fake provider moves a guest to the fake of another agent process
through the destination's state directory (its fake-arrivals directory);
removing that directory makes the source's migration fail.  The server
has a port throughout: Nimbus moves servers with ports live.
test_live_migrate_libvirt.py moves a running guest for real,
tests/network/test_live_migrate_e2e.py with real network agents.

- refusals: a member (project B) 403, project B's view of the server 404,
  Nova 2.1 body checks 400, the server's own host 400, an unknown host and
  a host whose agent registered no libvirt URI 400 "No valid host" (the
  attempt recorded, nothing changed), a stopped server 409, a container
  409.
- a live migration that fails on the source: 202 with task_state
  migrating and a live-migration row; the destination claims the flavor
  and prepares the storage (the overlay on its own cached base, no guest
  defined); the port shows binding:profile.migrating_to = the destination
  (binding:host_id still the source; project B sees no port); the
  source's failure undoes it: ACTIVE on the source, the row error, the
  destination's claim given back and its storage deleted, the instance
  action ends in Error with the reason, the port bound to the source
  without migrating_to.
- a live migration that succeeds: ACTIVE on the destination, the row
  completed, the source's usage given back, the port bound to the
  destination without migrating_to.
- deleted during a live migration: both hosts give everything back, the
  port goes with the server."""
import atexit
import os
import signal

import compute_lib
from compute_lib import NET, Compute, Schedulers, check, done, sql


NODES = ('lm-node-a', 'lm-node-b')

cloud, tok, admin_project, api = compute_lib.admin_cloud()
IMAGE = compute_lib.blank_image(cloud, tok, min_ram=0)

run = compute_lib.MoveRun(cloud, api, NODES)
agents, states = run.agents, run.states
scheds = Schedulers(cloud, 1)


def cleanup():
    for p in list(agents.values()) + scheds.procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()


atexit.register(cleanup)
wait_for, server, status_is, act = run.wait_for, run.server, run.status_is, run.act
used, host_of, other = run.used, run.host_of, run.other


def live(sid, host=None, block='auto', a=None, **extra):
    return act(sid, {'os-migrateLive': {'host': host, 'block_migration': block,
                                        'disk_over_commit': False, **extra}}, a)


def migrations(sid):
    st, _, b = api.req('GET', f'/os-migrations?instance_uuid={sid}')
    return b['migrations'] if st == 200 else []


def live_events(sid):
    st, _, b = api.req('GET', f'/servers/{sid}/os-instance-actions')
    out = []
    for a in b.get('instanceActions', []) if st == 200 else []:
        if a['action'] != 'live-migration':
            continue
        st2, _, b2 = api.req('GET', f'/servers/{sid}/os-instance-actions/{a["request_id"]}')
        out.append((a, b2.get('instanceAction', {}).get('events', []) if st2 == 200 else []))
    return out


def unchanged(sid, what, host):
    s = server(sid)
    check(s['status'] == 'ACTIVE' and s['OS-EXT-STS:task_state'] is None
          and s['OS-EXT-SRV-ATTR:hypervisor_hostname'] == host and not migrations(sid),
          f'{what}: nothing changed (ACTIVE on {host}, no task, no migration row)')


wait_for('both agents register, with the libvirt URI other nodes reach them at',
         lambda: sql(cloud, """SELECT count(*) FROM agent_nodes
                               WHERE libvirt_uri LIKE 'qemu+tcp://lm-node-_.example/system'""")
         == '2')

st, _, b = api.req('POST', '/servers', {'server': {'name': 'lm1', 'imageRef': IMAGE,
                                                  'flavorRef': '1', 'networks': [{'uuid': NET}]}})
check(st == 202, f'server create 202 ({st} {b})')
sid = b['server']['id']
wait_for('lm1 ACTIVE', status_is(sid, 'ACTIVE'))
src = host_of(sid)
dst = other(src)

port = sql(cloud, f"SELECT id FROM net.ports WHERE device_id = '{sid}'")
check(len(port) == 36, f'the server has a port ({port})')


def port_of(token=tok):
    """The server's port as GET /v2.0/ports?device_id= shows it to 'token'
    (None when not listed)."""
    st, _, b = cloud.request('network', 'GET', f'/v2.0/ports?device_id={sid}', None,
                             {'X-Auth-Token': token})
    ports = b.get('ports', []) if st == 200 else []
    return ports[0] if ports else None


def binding():
    """(binding:host_id, binding:profile.migrating_to) of the port."""
    p = port_of() or {}
    return p.get('binding:host_id'), (p.get('binding:profile') or {}).get('migrating_to')


check(binding() == (src, None), f'the port is bound to {src}, no migrating_to ({binding()})')
base = {n: used(n) for n in NODES}

# ---- Refusals.
pid_b, tok_b = compute_lib.make_project(cloud, tok, 'lm-b')
B = Compute(cloud, tok_b)
st, _, b = live(sid, a=B)
check(st == 403, f'os-migrateLive is admin-only: project B gets 403 ({st} {b})')
check(server(sid, B) == 404, "project B does not see the server (404)")
for body, what in (({'host': None}, 'no block_migration'),
                   ({'block_migration': False}, 'no host'),
                   ({'host': None, 'block_migration': 'maybe'}, 'block_migration "maybe"'),
                   ({'host': None, 'block_migration': False, 'disk_over_commit': 3},
                    'disk_over_commit 3'),
                   ({'host': None, 'block_migration': False, 'force': True}, 'an unknown key'),
                   ({'host': 7, 'block_migration': False}, 'host 7')):
    st, _, b = act(sid, {'os-migrateLive': body})
    check(st == 400 and 'badRequest' in b, f'os-migrateLive with {what} -> 400 ({st} {b})')
unchanged(sid, 'bad bodies', src)
st, _, b = live(sid, host=src)
check(st == 400 and 'current host' in str(b), f'to its own host -> 400 ({st} {b})')
st, _, b = live(sid, host='no-such-host')
check(st == 400 and 'No valid host was found' in str(b), f'to an unknown host -> 400 ({st} {b})')
unchanged(sid, 'no valid host', src)
sql(cloud, f"UPDATE agent_nodes SET libvirt_uri = NULL WHERE name = '{dst}'")
st, _, b = live(sid)
check(st == 400 and 'No valid host was found' in str(b),
      f'the only other host registered no libvirt URI -> 400 No valid host ({st} {b})')
unchanged(sid, 'no libvirt URI', src)
check(used(dst) == base[dst], f'nothing claimed on {dst} ({used(dst)})')
sql(cloud, f"UPDATE agent_nodes SET libvirt_uri = 'qemu+tcp://{dst}.example/system' "
           f"WHERE name = '{dst}'")
acts = live_events(sid)
check(len(acts) == 2 and all(a['message'] == 'Error' for a, _ in acts)
      and all(any(e['event'] == 'conductor_live_migrate_instance' and e['result'] == 'Error'
                  for e in ev) for _, ev in acts),
      f'each "No valid host" is an instance action in Error ({[(a["message"], ev) for a, ev in acts]})')
fmt = sql(cloud, f"SELECT container_format FROM images WHERE id = '{IMAGE}'")
sql(cloud, f"UPDATE images SET container_format = 'docker' WHERE id = '{IMAGE}'")
st, _, b = live(sid)
check(st == 409 and 'containers' in str(b), f'a container -> 409 ({st} {b})')
sql(cloud, f"UPDATE images SET container_format = '{fmt}' WHERE id = '{IMAGE}'")
check(act(sid, {'os-stop': None})[0] == 202, 'os-stop 202')
wait_for('lm1 SHUTOFF', status_is(sid, 'SHUTOFF'))
st, _, b = live(sid)
check(st == 409 and 'vm_state stopped' in str(b), f'a stopped server -> 409 ({st} {b})')
check(act(sid, {'os-start': None})[0] == 202, 'os-start 202')
wait_for('lm1 ACTIVE again', status_is(sid, 'ACTIVE'))
unchanged(sid, 'refusals', src)

# ---- A live migration the source cannot carry out (no fake receives at
# the destination: its arrivals directory removed): the destination
# prepares, the source fails, everything is given back.  The source agent
# is frozen first so that the destination's preparation can be looked at.
arrivals = {n: os.path.join(states[n], 'fake-arrivals') for n in NODES}
check(all(os.path.isdir(d) for d in arrivals.values()), 'each fake receives guests moved live')
os.rmdir(arrivals[dst])
agents[src].send_signal(signal.SIGSTOP)
st, _, b = live(sid, block=False)
check(st == 202, f'os-migrateLive accepted ({st} {b})')
s = server(sid)
check(s['status'] == 'MIGRATING' and s['OS-EXT-STS:task_state'] == 'migrating'
      and s['OS-EXT-SRV-ATTR:hypervisor_hostname'] == src,
      f'MIGRATING, still on the source ({s["status"]}, {s["OS-EXT-STS:task_state"]})')
m = migrations(sid)
check(len(m) == 1 and m[0]['status'] in ('preparing', 'running')
      and m[0]['source_compute'] == src and m[0]['dest_compute'] == dst,
      f'a live-migration row from {src} to {dst} ({m})')
check(sql(cloud, f"SELECT migration_type FROM migrations WHERE instance_uuid = '{sid}'")
      == 'live-migration', 'of type live-migration')
check(used(dst) != base[dst], f'the destination claimed the flavor ({base[dst]} -> {used(dst)})')
st, _, b = live(sid)
check(st == 409 and 'task_state migrating' in str(b), f'a second os-migrateLive -> 409 ({st})')
overlay = os.path.join(states[dst], 'instances', sid, 'disk.qcow2')
wait_for('the destination prepared: its overlay made, the row running',
         lambda: os.path.exists(overlay) and migrations(sid)[0]['status'] == 'running')
xml = sql(cloud, f"SELECT live_dest_xml FROM migrations WHERE instance_uuid = '{sid}'")
check(f"node='{dst}'" in xml and overlay in xml,
      f"the destination's definition (its node, its overlay) kept for the source ({xml[:200]})")
check(sql(cloud, f"SELECT agent_action FROM instances WHERE uuid = '{sid}'") == 'live_migrate',
      "the source's turn")
check(binding() == (src, dst),
      f'while it moves the port is still bound to {src}, migrating_to {dst} ({binding()})')
check(port_of(tok_b) is None, 'project B does not see the port')
st, _, b = cloud.request('network', 'GET', f'/v2.0/ports/{port}', None, {'X-Auth-Token': tok_b})
check(st == 404 and 'NeutronError' in b, f"project B's GET of the port -> 404 ({st})")
st, _, b = cloud.request('network', 'GET', f'/v2.0/ports?binding:profile.migrating_to={dst}',
                         None, {'X-Auth-Token': tok})
check(st == 200 and [p['id'] for p in b['ports']] == [port],
      f'the list filter binding:profile.migrating_to={dst} finds it ({st} {b})')
st, _, b = cloud.request('network', 'GET', f'/v2.0/ports?binding:profile.migrating_to={dst}',
                         None, {'X-Auth-Token': tok_b})
check(st == 200 and b['ports'] == [], f'but not for project B ({st} {b})')
# A profile written through the port API (as network agents write back the
# one they read) neither sets nor drops migrating_to.
st, _, b = cloud.request('network', 'PUT', f'/v2.0/ports/{port}',
                         {'port': {'binding:profile': {'migrating_to': 'elsewhere'}}},
                         {'X-Auth-Token': tok})
check(st == 200 and b['port']['binding:profile'].get('migrating_to') == dst,
      f'a PUT of binding:profile does not change migrating_to ({st} {b})')
agents[src].send_signal(signal.SIGCONT)
wait_for('the failure undoes the move: ACTIVE on the source, no task',
         lambda: status_is(sid, 'ACTIVE')() and host_of(sid) == src)
m = migrations(sid)
check(m and m[0]['status'] == 'error', f'the row is error ({m})')
wait_for("the destination's claim given back",
         lambda: used(dst) == base[dst] and used(src) == base[src])
wait_for("and its storage deleted", lambda: not os.path.exists(os.path.dirname(overlay)))
wait_for('no copy held any more', lambda: sql(cloud, f"""SELECT coalesce(move_held_node, 'none')
                                                         FROM instances WHERE uuid = '{sid}'""")
         == 'none')
acts = live_events(sid)
ev = acts[0][1] if acts else []
check(acts and acts[0][0]['message'] == 'Error'
      and any(e['event'] == 'compute_live_migration' and e['result'] == 'Error'
              and 'live migration' in (e.get('traceback') or '') for e in ev),
      f'the instance action ends in Error with the reason ({acts[:1]})')
check(sql(cloud, f"SELECT vm_state || '/' || power_state FROM instances WHERE uuid = '{sid}'")
      == 'active/1', 'the guest still runs on the source')
s = server(sid)
check(s['status'] == 'ACTIVE' and 'fault' not in s, f'no fault on the server ({s.get("fault")})')
check(binding() == (src, None),
      f'the port stays bound to {src}, migrating_to gone ({binding()})')

# The server still acts: a reboot on the source.
check(act(sid, {'reboot': {'type': 'SOFT'}})[0] == 202, 'reboot 202')
wait_for('ACTIVE after the reboot', status_is(sid, 'ACTIVE'))

# ---- A live migration that succeeds (the destination receives again).
os.mkdir(arrivals[dst])
st, _, b = live(sid, host=dst)
check(st == 202, f'os-migrateLive to {dst} 202 ({st} {b})')
wait_for(f'ACTIVE on {dst}, no task',
         lambda: status_is(sid, 'ACTIVE')() and host_of(sid) == dst, timeout=60)
m = migrations(sid)
check(m and m[0]['status'] == 'completed', f'the row is completed ({m[:1]})')
check(binding() == (dst, None), f'the port is bound to {dst}, no migrating_to ({binding()})')
wait_for("the source's usage given back, the destination's kept",
         lambda: used(src) == base[dst] and used(dst) == base[src])
check(port_of(tok_b) is None, 'project B still does not see the port')
src, dst = dst, src
overlay = os.path.join(states[dst], 'instances', sid, 'disk.qcow2')

# ---- Deleted during a live migration: both hosts give everything back.
agents[src].send_signal(signal.SIGSTOP)
st, _, b = live(sid)
check(st == 202, f'os-migrateLive again 202 ({st} {b})')
wait_for('prepared again', lambda: migrations(sid)[0]['status'] == 'running')
check(binding() == (src, dst), f'migrating_to {dst} again ({binding()})')
check(api.req('DELETE', f'/servers/{sid}')[0] == 204, 'deleted while migrating: 204')
agents[src].send_signal(signal.SIGCONT)
wait_for('gone', lambda: server(sid) == 404)
check(port_of() is None and sql(cloud, f"SELECT count(*) FROM net.ports WHERE id = '{port}'")
      == '0', 'the port the server created went with it')
wait_for('both hosts gave their usage back',
         lambda: used(dst) == '0/0/0' and used(src) == '0/0/0', timeout=60)
wait_for("the destination's storage deleted",
         lambda: not os.path.exists(os.path.dirname(overlay)), timeout=60)
done()
