"""Servers get real ports (Nova with Neutron), against nimbus-api,
nimbus-scheduler, nimbus-image and nimbus-compute (fake hypervisor) on a
throwaway database, through the HTTP APIs and the real openstack client.

Ports created with the server and visible in the network API (device_id,
device_owner, security groups); `addresses` exactly as Nova 2.1 shows them
(show, detail, /ips, /ips/{label}); fixed_ip, user ports, security groups
by name, max_count; Nova's rule when no network is named; project
isolation; IP exhaustion fails the create with nothing left behind; the
port bound to the node the scheduler claims (binding:host_id, vif_type
bridge) and carried in the agent's desired document; delete removes the
ports the server created and releases the user's."""
import atexit
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import compute_lib
from compute_lib import Compute, Schedulers, check, done, make_project, nt, sql

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'image'))
from image_test import ImageCloud  # noqa: E402

NODE = 'ports-node-1'
cloud = ImageCloud()
tok, body = cloud.token()
admin_project = body['token']['project']['id']
adm = Compute(cloud, tok)
IMAGE = cloud.create_image(tok, name='blank', disk_format='raw', visibility='public')['id']
st, _ = cloud.upload(tok, IMAGE, bytes(range(256)) * 64)
check(st == 204, 'image uploaded to nimbus-image')

pa, ta = make_project(cloud, tok, 'proj-a')
pb, tb = make_project(cloud, tok, 'proj-b')
pc, tc = make_project(cloud, tok, 'proj-c')
A, B, C = Compute(cloud, ta), Compute(cloud, tb), Compute(cloud, tc)


def net(token, method, path, body=None):
    return cloud.request('network', method, '/v2.0' + path, body, {'X-Auth-Token': token})


def mknet(token, name, cidr):
    st, _, b = net(token, 'POST', '/networks', {'network': {'name': name}})
    assert st == 201, (st, b)
    nid = b['network']['id']
    st, _, b = net(token, 'POST', '/subnets', {'subnet': {'network_id': nid, 'ip_version': 4,
                                                          'cidr': cidr, 'name': name + '-sub'}})
    assert st == 201, (st, b)
    return nid, b['subnet']['id']


def create(api, name, nets=None, **extra):
    srv = {'name': name, 'imageRef': IMAGE, 'flavorRef': '1'}
    if nets is not None:
        srv['networks'] = nets
    srv.update(extra)
    return api.req('POST', '/servers', {'server': srv})


def ports_of(token, sid):
    st, _, b = net(token, 'GET', f'/ports?device_id={sid}')
    return b['ports'] if st == 200 else st


def server(api, sid):
    st, _, b = api.req('GET', f'/servers/{sid}')
    return b['server'] if st == 200 else st


neta, suba = mknet(ta, 'net-a', '10.10.0.0/24')
netb, subb = mknet(tb, 'net-b', '10.10.0.0/24')   # same range, another project

# ---- A port per requested network, visible in the network API.
st, _, b = create(A, 'vm1', [{'uuid': neta}])
check(st == 202, f'create with a network: 202 ({st} {b})')
sid = b['server']['id']
ports = ports_of(ta, sid)
check(isinstance(ports, list) and len(ports) == 1, f'one port with device_id = the server ({ports})')
p = ports[0]
st, _, sgs = net(ta, 'GET', '/security-groups?name=default')
default_sg = sgs['security_groups'][0]['id']
check(p['network_id'] == neta and p['device_owner'] == 'compute:nova'
      and p['fixed_ips'][0]['subnet_id'] == suba
      and p['fixed_ips'][0]['ip_address'].startswith('10.10.0.')
      and p['security_groups'] == [default_sg] and p['project_id'] == pa,
      'the port: network, compute:nova, an address of the subnet, the default group')
ip, mac = p['fixed_ips'][0]['ip_address'], p['mac_address']

# ---- addresses as Nova 2.1 shows them.
s = server(A, sid)
check(s['addresses'] == {'net-a': [{'version': 4, 'addr': ip, 'OS-EXT-IPS:type': 'fixed',
                                    'OS-EXT-IPS-MAC:mac_addr': mac}]},
      f"GET /servers/{{id}} addresses ({s['addresses']})")
st, _, b = A.req('GET', '/servers/detail')
d = [x for x in b['servers'] if x['id'] == sid]
check(d and d[0]['addresses'] == s['addresses'], '/servers/detail addresses')
st, _, b = A.req('GET', '/servers')
check(all('addresses' not in x for x in b['servers']), 'GET /servers (not detail) has no addresses')
st, _, b = A.req('GET', f'/servers/{sid}/ips')
check(st == 200 and b == {'addresses': {'net-a': [{'version': 4, 'addr': ip}]}},
      f'/servers/{{id}}/ips ({st} {b})')
st, _, b = A.req('GET', f'/servers/{sid}/ips/net-a')
check(st == 200 and b == {'net-a': [{'version': 4, 'addr': ip}]}, f'/ips/net-a ({st} {b})')
st, _, b = A.req('GET', f'/servers/{sid}/ips/net-b')
check(st == 404 and 'itemNotFound' in b, f'/ips of a network the server is not on: 404 ({st})')
st, _, _ = B.req('GET', f'/servers/{sid}/ips')
check(st == 404, "another project cannot read the server's addresses (404)")

# ---- fixed_ip, the user's own port, security groups by name.
st, _, b = create(A, 'vm-fixed', [{'uuid': neta, 'fixed_ip': '10.10.0.50'}])
check(st == 202, f'fixed_ip 10.10.0.50: 202 ({st} {b})')
fixed_id = b['server']['id'] if st == 202 else None
check(fixed_id and server(A, fixed_id)['addresses']['net-a'][0]['addr'] == '10.10.0.50',
      'the server has the fixed IP it asked for')
n_inst = sql(cloud, f"SELECT count(*) FROM instances WHERE project_id = '{pa}'")
n_ports = sql(cloud, f"SELECT count(*) FROM net.ports WHERE project_id = '{pa}'")
st, _, b = create(A, 'vm-dup', [{'uuid': neta, 'fixed_ip': '10.10.0.50'}])
check(st == 400 and 'badRequest' in b, f'the same fixed IP again: 400 ({st} {b})')
st, _, b = create(A, 'vm-out', [{'uuid': neta, 'fixed_ip': '10.99.0.5'}])
check(st == 400, f'a fixed IP outside the subnets: 400 ({st} {b})')
st, _, b = create(A, 'vm-fx2', [{'uuid': neta, 'fixed_ip': '10.10.0.60'}], max_count=2)
check(st == 400, f'fixed_ip with max_count 2: 400 ({st})')
check(sql(cloud, f"SELECT count(*) FROM instances WHERE project_id = '{pa}'") == n_inst
      and sql(cloud, f"SELECT count(*) FROM net.ports WHERE project_id = '{pa}'") == n_ports,
      'failed creates leave no instance and no port')

st, _, b = net(ta, 'POST', '/ports', {'port': {'network_id': neta, 'name': 'mine'}})
user_port = b['port']['id']
st, _, b = net(ta, 'POST', '/security-groups', {'security_group': {'name': 'web'}})
web_sg = b['security_group']['id']
st, _, b = create(A, 'vm-port', [{'port': user_port}, {'uuid': neta}],
                  security_groups=[{'name': 'web'}])
check(st == 202, f'a user port and a network, security group "web": 202 ({st} {b})')
vp = b['server']['id']
ports = {x['id']: x for x in ports_of(ta, vp)}
created = [x for x in ports.values() if x['id'] != user_port]
check(user_port in ports and ports[user_port]['device_owner'] == 'compute:nova'
      and len(created) == 1 and created[0]['security_groups'] == [web_sg],
      'the user port is taken over; the new port gets the named group')
st, _, b = create(A, 'vm-port2', [{'port': user_port}])
check(st == 409 and 'conflictingRequest' in b, f'a port in use: 409 ({st} {b})')
st, _, b = create(A, 'vm-sg', [{'uuid': neta}], security_groups=[{'name': 'nope'}])
check(st == 400, f'an unknown security group: 400 ({st} {b})')
st, _, b = net(ta, 'POST', '/ports', {'port': {'network_id': neta}})
a_free_port = b['port']['id']
st, _, b = create(A, 'vm-pm', [{'port': a_free_port}], max_count=2)
check(st == 400, f'one port for max_count 2: 400 ({st})')

# ---- Isolation.
st, _, b = create(B, 'steal', [{'port': a_free_port}])
check(st == 400 and 'could not be found' in b.get('badRequest', {}).get('message', ''),
      f"another project's port: 400 not found ({st} {b})")
st, _, b = create(B, 'steal2', [{'uuid': neta}])
check(st == 400, f"another project's network: 400 ({st})")
st, _, b = net(ta, 'GET', f'/ports/{a_free_port}')
check(b['port']['device_id'] == '', 'the port stays free')

# ---- Nova's rule without networks.
st, _, b = create(B, 'vm-auto')
check(st == 202, f'B (one network) without networks: 202 ({st} {b})')
ports = ports_of(tb, b['server']['id']) if st == 202 else []
check(len(ports) == 1 and ports[0]['network_id'] == netb, 'its port is on the one network')
net(ta, 'POST', '/networks', {'network': {'name': 'net-a2'}})
st, _, b = create(A, 'vm-amb')
check(st == 409 and 'Multiple possible networks found' in b['conflictingRequest']['message'],
      f'A (two networks) without networks: 409 ({st} {b})')
st, _, b = create(C, 'vm-none')
check(st == 202, f'C (no network) without networks: 202 ({st})')
check(st == 202 and server(C, b['server']['id'])['addresses'] == {}, 'no port, addresses {}')
st, _, b = create(C, 'vm-sg0', security_groups=[{'name': 'nope'}])
check(st == 400, f'an unknown security group without any port: 400 ({st})')

# ---- max_count: a port per instance.
st, _, b = create(B, 'multi', [{'uuid': netb}], min_count=2, max_count=2)
check(st == 202, f'max_count 2: 202 ({st})')
ids = sql(cloud, f"SELECT string_agg(uuid::text, ' ') FROM instances WHERE project_id = '{pb}' "
                 "AND name LIKE 'multi-%'").split()
check(len(ids) == 2 and all(len(ports_of(tb, i)) == 1 for i in ids)
      and len({ports_of(tb, i)[0]['fixed_ips'][0]['ip_address'] for i in ids}) == 2,
      'each instance has its own port and address')

# ---- IP exhaustion: a /29 has 5 addresses.
nets_, subs_ = mknet(tb, 'net-small', '10.20.0.0/29')
before = (sql(cloud, f"SELECT count(*) FROM instances WHERE project_id = '{pb}'"),
          sql(cloud, f"SELECT count(*) FROM net.ports WHERE project_id = '{pb}'"),
          sql(cloud, f"SELECT count(*) FROM net.ip_allocations WHERE subnet_id = '{subs_}'"))
st, _, b = create(B, 'flood', [{'uuid': nets_}], min_count=6, max_count=6)
check(st == 409 and 'No more IP addresses' in b.get('conflictingRequest', {}).get('message', ''),
      f'6 servers on 5 addresses: 409 with the compute error shape ({st} {b})')
after = (sql(cloud, f"SELECT count(*) FROM instances WHERE project_id = '{pb}'"),
         sql(cloud, f"SELECT count(*) FROM net.ports WHERE project_id = '{pb}'"),
         sql(cloud, f"SELECT count(*) FROM net.ip_allocations WHERE subnet_id = '{subs_}'"))
check(before == after, f'nothing left behind: instances, ports, addresses ({before} {after})')
st, _, b = create(B, 'fit', [{'uuid': nets_}], min_count=5, max_count=5)
check(st == 202, f'5 servers on 5 addresses: 202 ({st})')

# ---- Concurrent creates on a shared /27 (29 addresses): no address twice,
# a clean 409 for the rest, and deletes that give every address back.
for r in ('instances', 'cores', 'ram'):
    for proj in (admin_project, pa):
        sql(cloud, f"INSERT INTO quotas VALUES ('{proj}', '{r}', -1)")
st, _, b = net(tok, 'POST', '/networks', {'network': {'name': 'shared-27', 'shared': True}})
n27 = b['network']['id']
st, _, b = net(tok, 'POST', '/subnets', {'subnet': {'network_id': n27, 'ip_version': 4,
                                                    'cidr': '10.40.0.0/27'}})
s27 = b['subnet']['id']
with ThreadPoolExecutor(max_workers=20) as ex:
    res = list(ex.map(lambda k: create(A if k % 2 else adm, f'c-{k}', [{'uuid': n27}]), range(40)))
ok = [b['server']['id'] for st, _, b in res if st == 202]
codes = sorted({st for st, _, _ in res})
ips = sql(cloud, f"SELECT count(*), count(DISTINCT ip_address) FROM net.ip_allocations "
                 f"WHERE subnet_id = '{s27}'")
check(len(ok) == 29 and codes == [202, 409] and ips == '29|29',
      f'40 concurrent creates on 29 addresses: 29 servers, the rest 409, no address twice '
      f'({len(ok)}, {codes}, {ips})')
for sid_ in ok:
    api_ = A if sql(cloud, f"SELECT project_id FROM instances WHERE uuid = '{sid_}'") == pa else adm
    api_.req('DELETE', f'/servers/{sid_}')
check(sql(cloud, f"SELECT count(*) FROM net.ip_allocations WHERE subnet_id = '{s27}'") == '0'
      and sql(cloud, f"SELECT count(*) FROM net.ports WHERE network_id = '{n27}'") == '0',
      'deleting them frees every port and address')

# ---- Port quota.
sql(cloud, f"INSERT INTO net.quotas VALUES ('{pc}', 'port', 0)")
st, _, b = net(tc, 'POST', '/networks', {'network': {'name': 'net-c'}})
st, _, b = create(C, 'q', [{'uuid': b['network']['id']}])
check(st == 403 and 'Maximum number of ports exceeded' in b['forbidden']['message'],
      f'port quota exhausted: 403 ({st} {b})')

# ---- Delete of an unscheduled server.
st, _, _ = A.req('DELETE', f'/servers/{vp}')
check(st == 204, 'delete the server with the user port')
st, _, b = net(ta, 'GET', f'/ports/{user_port}')
check(st == 200 and b['port']['device_id'] == '' and b['port']['device_owner'] == '',
      'the user port remains, released (device_id and owner empty)')
check(all(net(ta, 'GET', f'/ports/{x["id"]}')[0] == 404 for x in created),
      'the port the server created is gone')

# ---- Scheduling binds; the agent's document carries the ports; delete
# through the agent removes them.
token_file = os.path.join(cloud.dir, 'node.token')
cloud.manage('node', 'add', NODE, '--output', token_file)
agent_conf = compute_lib.write_agent_conf(cloud, NODE, token_file)
agent = compute_lib.start_agent(agent_conf, os.path.join(cloud.dir, 'agent.log'))
scheds = Schedulers(cloud, 1)


def cleanup():
    for pr in [agent] + scheds.procs:
        if pr.poll() is None:
            pr.kill()


atexit.register(cleanup)


def wait_for(what, fn, timeout=30):
    deadline = time.time() + timeout
    v = None
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    check(False, f'{what} (last: {v!r})')
    return None


wait_for('the agent registers', lambda: sql(cloud, "SELECT count(*) FROM compute_nodes WHERE "
                                                   f"hypervisor_hostname = '{NODE}'") == '1')
# The servers created so far may be placed on it too; this one must be.
st, _, b = create(A, 'vm-bound', [{'uuid': neta}])
bid = b['server']['id']
s = wait_for('vm-bound ACTIVE', lambda: (lambda x: x if isinstance(x, dict)
                                         and x['status'] == 'ACTIVE' else None)(server(adm, bid)))
check(s is not None and s['OS-EXT-SRV-ATTR:hypervisor_hostname'] == NODE,
      'vm-bound ACTIVE on the agent node (fake hypervisor)')
st, _, b = net(tok, 'GET', f'/ports?device_id={bid}')
bp = b['ports'][0]
check(bp['binding:host_id'] == NODE and bp['binding:vif_type'] == 'bridge',
      f"the port is bound to the node ({bp['binding:host_id']}, {bp['binding:vif_type']})")
st, _, b = cloud.request('compute', 'GET', f'/agent/v1/nodes/{NODE}/desired?since=0', None,
                         {'Authorization': 'Bearer ' + open(token_file).read().strip()})
inst = [i for i in b['instances'] if i['uuid'] == bid]
want = {'id': bp['id'], 'mac': bp['mac_address'],
        'tap': 'tap' + bp['id'].replace('-', '')[:11], 'kind': 'tap', 'network_id': neta,
        'mtu': 1450, 'fixed_ips': [{'ip_address': bp['fixed_ips'][0]['ip_address'],
                                    'prefixlen': 24, 'gateway': '10.10.0.1'}]}
check(inst and inst[0]['ports'] == [want],
      f"the desired document carries the port ({inst[0]['ports'] if inst else None})")

# ---- os-interface on the ACTIVE server.
st, _, b = A.req('GET', f'/servers/{bid}/os-interface')
check(st == 200 and b == {'interfaceAttachments': [{
    'port_state': bp['status'], 'port_id': bp['id'], 'net_id': neta,
    'mac_addr': bp['mac_address'], 'fixed_ips': bp['fixed_ips']}]},
    f'os-interface list ({st} {b})')
st, _, b = A.req('POST', f'/servers/{bid}/os-interface',
                 {'interfaceAttachment': {'net_id': neta, 'fixed_ips': [{'ip_address': '10.10.0.77'}]}})
check(st == 200 and b['interfaceAttachment']['fixed_ips'][0]['ip_address'] == '10.10.0.77',
      f'os-interface attach a network with a fixed IP ({st} {b})')
att = b['interfaceAttachment']['port_id'] if st == 200 else ''
st, _, b = net(tok, 'GET', f'/ports/{att}')
check(st == 200 and b['port']['device_id'] == bid and b['port']['binding:host_id'] == NODE,
      'the new port belongs to the server and is bound to its node')
st, _, b = A.req('POST', f'/servers/{bid}/os-interface',
                 {'interfaceAttachment': {'port_id': user_port}})
check(st == 200 and b['interfaceAttachment']['port_id'] == user_port,
      f'os-interface attach the user port ({st})')
st, _, b = A.req('POST', f'/servers/{bid}/os-interface',
                 {'interfaceAttachment': {'port_id': user_port}})
check(st == 409, f'attaching a port in use: 409 ({st})')
st, _, b = B.req('POST', f'/servers/{bid}/os-interface',
                 {'interfaceAttachment': {'net_id': netb}})
check(st == 404, f"another project's server: 404 ({st})")
st, _, b = A.req('POST', f'/servers/{bid}/os-interface',
                 {'interfaceAttachment': {'port_id': user_port, 'net_id': neta}})
check(st == 400, f'port_id and net_id together: 400 ({st})')
st, _, b = A.req('POST', f'/servers/{bid}/os-interface',
                 {'interfaceAttachment': {'net_id': netb}})
check(st == 404, f"another project's network: 404 ({st})")
st, _, b = cloud.request('compute', 'GET', f'/agent/v1/nodes/{NODE}/desired?since=0', None,
                         {'Authorization': 'Bearer ' + open(token_file).read().strip()})
inst = [i for i in b['instances'] if i['uuid'] == bid]
check(inst and [x['id'] for x in inst[0]['ports']] == [bp['id'], att, user_port],
      'the desired document lists the three ports in attach order')
v1 = b['version']
st, _, b = net(ta, 'PUT', f"/ports/{bp['id']}",
               {'port': {'fixed_ips': [{'subnet_id': suba, 'ip_address': '10.10.0.99'}]}})
check(st == 200, f'the owner changes the address of the port through the network API ({st})')
st, _, b = cloud.request('compute', 'GET', f'/agent/v1/nodes/{NODE}/desired?since={v1}&wait=5',
                         None, {'Authorization': 'Bearer ' + open(token_file).read().strip()})
inst = [i for i in b['instances'] if i['uuid'] == bid] if st == 200 else []
check(inst and inst[0]['ports'][0]['fixed_ips'][0]['ip_address'] == '10.10.0.99'
      and server(A, bid)['addresses']['net-a'][0]['addr'] == '10.10.0.99',
      f'the desired document (new version) and addresses follow ({st})')
st, _, b = A.req('GET', f'/servers/{bid}/os-interface/{att}')
check(st == 200 and b['interfaceAttachment']['port_id'] == att, 'os-interface show')
st, _, b = A.req('GET', f'/servers/{bid}/os-interface/{a_free_port}')
check(st == 404, f'os-interface show of a port not attached: 404 ({st})')
st, _, _ = A.req('DELETE', f'/servers/{bid}/os-interface/{att}')
check(st == 202 and net(tok, 'GET', f'/ports/{att}')[0] == 404,
      'detach of a port the server created: 202, the port is deleted')
st, _, _ = A.req('DELETE', f'/servers/{bid}/os-interface/{user_port}')
st2, _, b = net(tok, 'GET', f'/ports/{user_port}')
check(st == 202 and b['port']['device_id'] == '' and b['port']['binding:host_id'] == '',
      'detach of the user port: 202, released')
st, _, _ = A.req('DELETE', f'/servers/{bid}/os-interface/{user_port}')
check(st == 404, f'detach again: 404 ({st})')

st, _, b = A.req('DELETE', f'/servers/{bid}')
check(st == 204, f'delete vm-bound (through the agent) ({st} {b})')
wait_for('vm-bound gone', lambda: server(A, bid) == 404)
check(ports_of(tok, bid) == [] and sql(cloud, f"SELECT count(*) FROM net.ports WHERE id = "
                                              f"'{bp['id']}'") == '0',
      'its port is deleted once the agent confirmed')

# ---- The real client: server create --network, server show, port list --server.
OPENSTACK = '/usr/bin/openstack'
if os.path.exists(OPENSTACK):
    def osc(*args):
        r = cloud.osc(*args, fmt=True)
        if r.returncode:
            print(f'command failed: {" ".join(args)}\n{r.stderr}')
            return None
        return json.loads(r.stdout)

    adm_net, _ = mknet(tok, 'cli-net', '10.30.0.0/24')
    srv = osc('server', 'create', '--image', IMAGE, '--flavor', 'm1.tiny', '--network',
              'cli-net', '--wait', 'cli-vm')
    check(srv is not None, 'openstack server create --network cli-net --wait')
    shown = osc('server', 'show', 'cli-vm')
    addrs = shown and shown['addresses']
    check(isinstance(addrs, (dict, str)) and '10.30.0.' in json.dumps(addrs),
          f'openstack server show: addresses ({addrs})')
    pl = osc('port', 'list', '--server', 'cli-vm')
    check(pl and len(pl) == 1 and pl[0]['Fixed IP Addresses'][0]['ip_address'].startswith('10.30.0.')
          if pl and isinstance(pl[0]['Fixed IP Addresses'], list)
          else pl and len(pl) == 1 and '10.30.0.' in str(pl[0]['Fixed IP Addresses']),
          f'openstack port list --server cli-vm ({pl})')
    st, _, b = net(tok, 'POST', '/ports', {'port': {'network_id': adm_net, 'name': 'extra'}})
    extra = b['port']['id']
    r = cloud.osc('server', 'add', 'port', 'cli-vm', 'extra')
    pl = osc('port', 'list', '--server', 'cli-vm')
    check(r.returncode == 0 and pl and {x['ID'] for x in pl} >= {extra},
          f'openstack server add port ({r.stderr[-300:]})')
    r = cloud.osc('server', 'remove', 'port', 'cli-vm', 'extra')
    pl = osc('port', 'list', '--server', 'cli-vm')
    check(r.returncode == 0 and pl is not None and extra not in {x['ID'] for x in pl},
          f'openstack server remove port ({r.stderr[-300:]})')
    r = cloud.osc('server', 'delete', '--wait', 'cli-vm')
    check(r.returncode == 0, f'openstack server delete --wait ({r.stderr[-300:]})')
    check(osc('port', 'list', '--network', 'cli-net', '--device-owner', 'compute:nova') == [],
          'no port left on cli-net')
else:
    print('SKIP (client part): python3-openstackclient is not installed')

codes = scheds.stop()
if compute_lib.failures:
    print('---- api log\n' + cloud.log_tail(40))
agent.terminate()
check(agent.wait(30) == 0 and codes == [0], 'agent and scheduler exit cleanly')
check(cloud.stop() == 0, 'nimbus-api exits cleanly')
cloud.close()
done()
