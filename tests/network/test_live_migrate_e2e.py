"""Live migration of a server with a port between two hosts with real
network agents: nimbus-api, nimbus-scheduler and nimbus-image in the root
network namespace; two "hosts" in network namespaces (netns_hosts), each
with nimbus-network (VXLAN, real taps and bridges) and nimbus-compute
(the fake hypervisor, network_agent = true, a registered migration URI;
the fake moves the guest to the other agent process through the
destination's state directory).

Checks: `openstack server migrate --live-migration` (the real client) of
a server with a port; while it moves the port carries binding:profile
migrating_to = the destination and stays bound to the source; the
destination's compute agent does not report itself prepared while its
nimbus-network (frozen) has not made the tap, and does once it has; the
definition it reports names that tap; the server ends ACTIVE on the
destination, the port bound there without migrating_to, the tap present
in the destination's namespace and gone from the source's; project B
does not see the port; delete leaves no tap on either host.  Needs root,
network namespaces, nsenter and python3-openstackclient; skips (77)
otherwise."""
import os
import shutil
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'compute'))
import compute_lib  # noqa: E402
from compute_lib import Compute, Schedulers, check, done, make_project, nt, sql  # noqa: E402
from netns_hosts import COMPUTE, NETAGENT, Hosts  # noqa: E402
from test_netagent_netns import can_netns  # noqa: E402

if not (os.path.exists(NETAGENT) and os.path.exists(COMPUTE)):
    print('nimbus-network or nimbus-compute is not built: skipped')
    sys.exit(77)
if not can_netns() or not shutil.which('nsenter') or not os.path.exists(nt.OPENSTACK):
    print('needs root, network namespaces, nsenter and python3-openstackclient: skipped')
    sys.exit(77)

HOSTS = ('ha', 'hb')
H = Hosts('lp', HOSTS)
cloud, wait_for = H.cloud, H.wait_for
tok, _ = cloud.token()
admin = Compute(cloud, tok)

for h in HOSTS:
    H.start_agents(h, hypervisor='fake',
                   hv_extra=f'migration_uri = qemu+tcp://{h}.example/system\n')
scheds = Schedulers(cloud, 1)
H.procs.extend(scheds.procs)
wait_for('both agents register, with the libvirt URI the other reaches them at',
         lambda: sql(cloud, "SELECT count(*) FROM agent_nodes WHERE libvirt_uri LIKE "
                            "'qemu+tcp://h_.example/system'") == '2')

image = compute_lib.blank_image(cloud, tok, visibility='public')

pa, ta = make_project(cloud, tok, 'lp-a')
pb, tb = make_project(cloud, tok, 'lp-b')
A = Compute(cloud, ta)


def neutron(token, method, path, body=None):
    st, _, b = cloud.request('network', method, '/v2.0' + path, body, {'X-Auth-Token': token})
    return st, b


st, b = neutron(ta, 'POST', '/networks', {'network': {'name': 'lp-net'}})
check(st == 201, f'network of project A ({st})')
net_id = b['network']['id']
st, _ = neutron(ta, 'POST', '/subnets', {'subnet': {'network_id': net_id, 'ip_version': 4,
                                                     'cidr': '10.9.0.0/24'}})
check(st == 201, f'its subnet ({st})')


def server(api, sid):
    st, _, b = api.req('GET', f'/servers/{sid}')
    return b['server'] if st == 200 else st


st, _, b = A.req('POST', '/servers', {'server': {'name': 'vm', 'imageRef': image,
                                                 'flavorRef': '1',
                                                 'networks': [{'uuid': net_id}]}})
check(st == 202, f'server create ({st} {b})')
sid = b['server']['id']
wait_for('vm ACTIVE', lambda: not isinstance(server(A, sid), int)
         and server(A, sid)['status'] == 'ACTIVE', timeout=90)
src = server(admin, sid)['OS-EXT-SRV-ATTR:hypervisor_hostname']
dst = next(h for h in HOSTS if h != src)
port = sql(cloud, f"SELECT id FROM net.ports WHERE device_id = '{sid}'")
tap = 'tap' + port.replace('-', '')[:11]


def binding():
    st, b = neutron(tok, 'GET', f'/ports/{port}')
    p = b.get('port', {}) if st == 200 else {}
    return p.get('binding:host_id'), (p.get('binding:profile') or {}).get('migrating_to')


def migration():
    return sql(cloud, f"SELECT status FROM migrations WHERE instance_uuid = '{sid}' "
                      "ORDER BY id DESC LIMIT 1")


wait_for(f'the tap {tap} in {src}', lambda: tap in H.links(src))
check(tap not in H.links(dst), f'no tap in {dst}')
check(binding() == (src, None), f'the port is bound to {src} ({binding()})')


# The destination's nimbus-network is frozen: its compute agent must wait.
H.agents[('net', dst)].send_signal(signal.SIGSTOP)
# --host needs compute API 2.30 in the client; Nimbus serves 2.1, and the
# destination is the only other host.
r = cloud.osc('server', 'migrate', '--live-migration', sid)
check(r.returncode == 0, f'openstack server migrate --live-migration ({r.stderr[-500:]})')
wait_for(f'while it moves: bound to {src}, migrating_to {dst}',
         lambda: binding() == (src, dst))
time.sleep(3)
s = server(admin, sid)
check(migration() == 'preparing' and s['status'] == 'MIGRATING'
      and s['OS-EXT-SRV-ATTR:hypervisor_hostname'] == src,
      f'no tap on {dst} yet: its compute agent has not reported itself prepared '
      f'({migration()}, {s["status"]})')
check(tap not in H.links(dst), f'and {dst} has no tap')
# The source's compute agent is frozen in turn, so that the destination's
# preparation can be looked at before the guest moves.
H.agents[('compute', src)].send_signal(signal.SIGSTOP)
H.agents[('net', dst)].send_signal(signal.SIGCONT)
wait_for(f"{dst}'s nimbus-network makes the tap", lambda: tap in H.links(dst))
wait_for(f'{dst} prepared once the tap is there', lambda: migration() == 'running')
xml = sql(cloud, f"SELECT live_dest_xml FROM migrations WHERE instance_uuid = '{sid}'")
check(f"node='{dst}'" in xml and f"target='{tap}'" in xml,
      f"the destination's definition names its node and the tap ({xml[:300]})")
check(tap in H.links(src) and binding() == (src, dst),
      f'the source keeps its tap and the binding meanwhile ({binding()})')
H.agents[('compute', src)].send_signal(signal.SIGCONT)

wait_for(f'ACTIVE on {dst}', lambda: server(admin, sid)['status'] == 'ACTIVE'
         and server(admin, sid)['OS-EXT-SRV-ATTR:hypervisor_hostname'] == dst
         and server(admin, sid)['OS-EXT-STS:task_state'] is None, timeout=60)
check(migration() == 'completed', f'the migration completed ({migration()})')
check(binding() == (dst, None), f'the port is bound to {dst}, no migrating_to ({binding()})')
wait_for(f'the tap is gone from {src}', lambda: tap not in H.links(src))
check(tap in H.links(dst), f'and is in {dst}')
r = cloud.osc('port', 'show', port, '-f', 'value', '-c', 'binding_host_id')
check(r.returncode == 0 and r.stdout.strip() == dst,
      f'openstack port show: binding_host_id {dst} ({r.stdout.strip()} {r.stderr[-300:]})')
st, b = neutron(tb, 'GET', f'/ports/{port}')
check(st == 404, f"project B's GET of the port -> 404 ({st})")
st, b = neutron(tb, 'GET', f'/ports?binding:profile.migrating_to={dst}')
check(st == 200 and b['ports'] == [], f'nor lists it ({st})')

# ---- Delete: no tap left on either host.
check(A.req('DELETE', f'/servers/{sid}')[0] == 204, 'delete 204')
wait_for('gone (404)', lambda: server(A, sid) == 404)
for h in HOSTS:
    wait_for(f'no tap left in {h}', lambda: not any(n.startswith('tap') for n in H.links(h)))

H.stop_agents()
scheds.stop()
if compute_lib.failures:
    for h in HOSTS:
        print(H.logs(h))
    print('---- api log\n' + cloud.log_tail(80))
done()
