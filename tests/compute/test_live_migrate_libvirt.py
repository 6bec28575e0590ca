"""Live migration of a real QEMU guest between two libvirt "hosts" on this
machine, end to end: nimbus-api, nimbus-image, nimbus-scheduler, node A's
nimbus-compute on the system libvirtd and node B's on the second libvirtd
of tests/agent/libvirt_pair.sh (its own mount and UTS namespaces), each
registering the URI the other libvirtd reaches it at.

- a guest (no ports: the cloud has no network) boots on its node printing a
  heartbeat on its serial console every second;
- `openstack server migrate --live-migration` (python-openstackclient,
  os-migrateLive at 2.1): MIGRATING, then ACTIVE on the other node, the
  domain gone from the source's libvirtd and running on the destination's
  with the destination's overlay, without a reboot: no "init started" in
  the destination's console log, the heartbeat counts on there with the
  guest's uptime growing; the source's storage and usage are given back;
  `openstack server migration list` shows the row completed;
- delete removes the domain.
Exits 77 (skipped) without root, libvirtd, the test guest or the client.
Run under `flock -o /tmp/nimbus-libvirt.lock` like every test that uses the
shared libvirtd."""
import atexit
import json
import os
import re
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'image'))
import compute_lib  # noqa: E402
from compute_lib import Compute, Schedulers, check, done, nt, sql  # noqa: E402

OPENSTACK = '/usr/bin/openstack'
PAIR = os.path.join(nt.SOURCE, 'tests', 'agent', 'libvirt_pair.sh')
GUEST = compute_lib.libvirt_guest_or_skip()
if not os.path.exists(OPENSTACK):
    print('skipped: python3-openstackclient is not installed')
    sys.exit(77)

from image_test import ImageCloud  # noqa: E402

NODES = ('lv-live-a', 'lv-live-b')
cloud = ImageCloud()
tok, body = cloud.token()
api = Compute(cloud, tok)
os.chmod(cloud.dir, 0o755)   # QEMU reads the overlays.

# The second libvirtd; the URIs each side reaches the other at.
pair_dir = os.path.join(cloud.dir, 'pair')
r = subprocess.run([PAIR, 'start', pair_dir], capture_output=True, text=True)
if r.returncode != 0:
    print(f'cannot start the second libvirtd: {r.stderr[-500:]}')
    sys.exit(1)
atexit.register(subprocess.run, [PAIR, 'stop', pair_dir], capture_output=True)
env = dict(re.findall(r"^(\w+)='([^']*)'$", r.stdout, re.M))
URI = {NODES[0]: 'qemu:///system', NODES[1]: env['NIMBUS_PAIR_URI']}
REACH = {NODES[0]: env['NIMBUS_SYSTEM_URI'], NODES[1]: env['NIMBUS_PAIR_URI']}

servers = []


def virsh(n, *args):
    return subprocess.run(['virsh', '-q', '-c', URI[n], *args], capture_output=True, text=True)


kernel, ramdisk, image = compute_lib.upload_guest(
    cloud, tok, GUEST, cmdline='console=ttyS0 quiet nimbus.heartbeat=1')
run = compute_lib.MoveRun(cloud, api, NODES, hypervisor='libvirt', poll=0.5,
                          hv_extra={n: f'libvirt_uri = {URI[n]}\nmigration_uri = {REACH[n]}\n'
                                    for n in NODES},
                          reconcile_interval=2, stop_timeout=5, source_extra='heartbeat = 2\n')
scheds = Schedulers(cloud, 1)
states, wait_for, console_file = run.states, run.wait_for, run.console_file


def cleanup():
    run.kill()
    compute_lib.kill_procs(scheds.procs)
    compute_lib.remove_domains(servers, URI.values())


atexit.register(cleanup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def server(sid):
    s = run.server(sid)
    return {'status': s} if isinstance(s, int) else s


def heartbeats(n, sid):
    return [(int(k), float(u)) for k, u in
            re.findall(r'nimbus-guest: heartbeat (\d+) uptime ([0-9.]+)', console_file(n, sid))]


def domstate(n, sid):
    r = virsh(n, 'domstate', 'nimbus-' + sid)
    return r.stdout.strip() if r.returncode == 0 else 'none'


wait_for('both agents register with the URI the other libvirtd reaches them at',
         lambda: sql(cloud, "SELECT count(*) FROM agent_nodes WHERE libvirt_uri LIKE "
                            "'qemu+unix:///system?socket=%'") == '2', 30)
# No network in this cloud: the server has no ports (Nova's networks
# "none", which needs microversion 2.37).
st, _, b = api.req('POST', '/servers', {'server': {'name': 'live', 'imageRef': image,
                                                  'flavorRef': '1'}})
check(st == 202, f'server create with no network ({st} {b})')
sid = b['server']['id'] if st == 202 else None
if sid:
    servers.append(sid)
    wait_for('ACTIVE with a real QEMU guest', lambda: server(sid)['status'] == 'ACTIVE', 180)
    src = server(sid)['OS-EXT-SRV-ATTR:hypervisor_hostname']
    dst = NODES[1] if src == NODES[0] else NODES[0]
    wait_for(f'the guest runs on {src}, its heartbeat on the console',
             lambda: len(heartbeats(src, sid)) >= 3, 600)
    before = heartbeats(src, sid)[-1]
    used_src = sql(cloud, f"SELECT vcpus_used FROM compute_nodes "
                          f"WHERE hypervisor_hostname = '{src}'")

    r = cloud.osc('server', 'migrate', '--live-migration', sid)
    check(r.returncode == 0, f'openstack server migrate --live-migration ({r.stderr[-500:]})')
    s = server(sid)
    check(s['status'] == 'MIGRATING' or s['OS-EXT-SRV-ATTR:hypervisor_hostname'] == dst,
          f'MIGRATING ({s["status"]})')
    wait_for(f'ACTIVE on {dst}', lambda: server(sid)['status'] == 'ACTIVE'
             and server(sid)['OS-EXT-SRV-ATTR:hypervisor_hostname'] == dst
             and server(sid)['OS-EXT-STS:task_state'] is None, 300)
    check(domstate(dst, sid) == 'running', f"the domain runs on {dst}'s libvirtd")
    wait_for(f"and is gone from {src}'s", lambda: domstate(src, sid) == 'none', 30)
    dxml = virsh(dst, 'dumpxml', 'nimbus-' + sid).stdout
    check(os.path.join(states[dst], 'instances', sid, 'disk.qcow2') in dxml
          and f'>{dst}<' in dxml, f"with {dst}'s overlay and node name")
    wait_for('the heartbeat goes on in the destination console log',
             lambda: len(heartbeats(dst, sid)) >= 3, 60)
    hb = heartbeats(dst, sid)
    check(hb and hb[0][0] > before[0] and hb[-1][1] > before[1],
          f'counting on, uptime growing: no reboot ({before} -> {hb[:1]} .. {hb[-1:]})')
    check('nimbus-guest: init started' not in console_file(dst, sid),
          'no "init started" on the destination')
    st, _, b = api.req('GET', f'/os-migrations?instance_uuid={sid}')
    m = b['migrations'][0] if st == 200 and b['migrations'] else {}
    check(m.get('status') == 'completed' and m.get('source_compute') == src
          and m.get('dest_compute') == dst, f'the migration row is completed ({m})')
    r = cloud.osc('server', 'migration', 'list', fmt=True)
    rows = json.loads(r.stdout) if r.returncode == 0 else []
    check(any(x.get('Status') == 'completed' and x.get('Server UUID', x.get('Instance UUID')) == sid
              for x in rows), f'openstack server migration list: completed ({rows} {r.stderr[-300:]})')
    wait_for("the source's storage deleted",
             lambda: not os.path.exists(os.path.join(states[src], 'instances', sid)), 60)
    check(sql(cloud, f"SELECT vcpus_used FROM compute_nodes WHERE hypervisor_hostname = '{src}'")
          == str(int(used_src) - 1), "the source's usage given back")

    st, _, _ = api.req('DELETE', f'/servers/{sid}')
    check(st == 204, 'delete 204')
    wait_for('deleted: 404', lambda: server(sid)['status'] == 404, 120)
    check(domstate(dst, sid) == 'none' and domstate(src, sid) == 'none', 'no domain left')

if compute_lib.failures:
    for n in NODES:
        print(f'---- {n} log\n' + run.node_log_tail(n))
done()
