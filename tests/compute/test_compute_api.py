"""Compute API (Nova v2.1) against a real nimbus-api and PostgreSQL:
flavors, key pairs, servers (create body, show keys, list filters and
paging), the action state machine, quotas under concurrency, project
isolation, admin-only calls, microversions and error shapes."""
import base64
import concurrent.futures
import json
import re

from compute_lib import IMAGE, NET, Compute, add_hosts, check, done, make_project, nt, sql, seed

cloud = nt.Cloud()
seed(cloud)
tok, body = cloud.token()
admin_project = body['token']['project']['id']
adm = Compute(cloud, tok)

# ---- Versions and microversions.
st, h, b = adm.req('GET', '/flavors', headers={'X-OpenStack-Nova-API-Version': '2.60'})
check(st == 406 and 'notAcceptable' in b, 'microversion 2.60 -> 406 notAcceptable')
st, h, b = adm.req('GET', '/flavors', headers={'OpenStack-API-Version': 'compute 2.1'})
check(st == 200 and h.get('openstack-api-version') == 'compute 2.1'
      and h.get('x-openstack-nova-api-version') == '2.1', 'version headers echoed')
st, h, b = cloud.request('compute', 'GET', '/v2.1/flavors')
check(st == 401, 'no token -> 401')

# ---- Flavors.
st, _, b = adm.req('GET', '/flavors')
names = [f['name'] for f in b['flavors']]
check(st == 200 and {'m1.tiny', 'm1.small', 'm1.medium'} <= set(names), 'flavor list has the seeded flavors')
check(all(set(f) == {'id', 'name', 'links'} for f in b['flavors']), 'flavor list entries: id, name, links')
st, _, b = adm.req('GET', '/flavors/1')
FLAVOR_KEYS = {'id', 'name', 'ram', 'vcpus', 'disk', 'OS-FLV-EXT-DATA:ephemeral', 'swap',
               'rxtx_factor', 'os-flavor-access:is_public', 'OS-FLV-DISABLED:disabled', 'links'}
check(st == 200 and set(b['flavor']) == FLAVOR_KEYS and b['flavor']['ram'] == 512
      and b['flavor']['id'] == '1', 'flavor show: 2.1 keys, m1.tiny = 512 MB, id "1"')
st, _, b = adm.req('GET', '/flavors/m1.tiny')
check(st == 404 and 'itemNotFound' in b, 'flavor by name -> 404 itemNotFound (client falls back)')
st, _, b = adm.req('POST', '/flavors', {'flavor': {'name': 'priv', 'ram': 256, 'vcpus': 1,
                                                   'disk': 0, 'id': 'priv1',
                                                   'os-flavor-access:is_public': False}})
check(st == 200 and b['flavor']['os-flavor-access:is_public'] is False, 'admin creates a private flavor')
st, _, b = adm.req('POST', '/flavors', {'flavor': {'name': 'priv', 'ram': 256, 'vcpus': 1, 'disk': 0}})
check(st == 409, 'duplicate flavor name -> 409')
st, _, b = adm.req('POST', '/flavors', {'flavor': {'name': 'bad', 'ram': 'x', 'vcpus': 1, 'disk': 0}})
check(st == 400 and 'badRequest' in b, 'malformed flavor -> 400 badRequest')
st, _, b = adm.req('GET', '/flavors/detail')
check('priv' not in [f['name'] for f in b['flavors']], 'detail default (is_public=true) hides private')
st, _, b = adm.req('GET', '/flavors/detail?is_public=None')
check('priv' in [f['name'] for f in b['flavors']], 'detail is_public=None shows private to admin')
st, _, b = adm.req('POST', '/flavors/priv1/os-extra_specs', {'extra_specs': {'hw:cpu_policy': 'shared'}})
check(st == 200 and b == {'extra_specs': {'hw:cpu_policy': 'shared'}}, 'extra specs set')
st, _, b = adm.req('GET', '/flavors/priv1/os-extra_specs/hw:cpu_policy')
check(st == 200 and b == {'hw:cpu_policy': 'shared'}, 'extra spec show')
st, _, b = adm.req('GET', '/flavors/?limit=2')
st, _, b = adm.req('GET', '/flavors?limit=2&marker=1')
check(st == 200 and [f['id'] for f in b['flavors']] == ['2', '3'], 'flavor paging marker/limit')

# ---- Projects A and B (members).
pa, ta = make_project(cloud, tok, 'proj-a')
pb, tb = make_project(cloud, tok, 'proj-b')
A, B = Compute(cloud, ta), Compute(cloud, tb)
st, _, b = A.req('GET', '/flavors/priv1')
check(st == 404, 'member cannot see a private flavor')
st, _, b = adm.req('POST', '/flavors/priv1/action', {'addTenantAccess': {'tenant': pa}})
check(st == 200 and b['flavor_access'] == [{'flavor_id': 'priv1', 'tenant_id': pa}], 'flavor access added')
st, _, b = A.req('GET', '/flavors/priv1')
check(st == 200, 'member of a project with access sees the private flavor')
st, _, b = B.req('GET', '/flavors/priv1')
check(st == 404, 'other project still cannot')
st, _, b = A.req('POST', '/flavors', {'flavor': {'name': 'x', 'ram': 1, 'vcpus': 1, 'disk': 0}})
check(st == 403 and 'forbidden' in b, 'member cannot create flavors (403 forbidden)')

# ---- Key pairs.
st, _, b = A.req('POST', '/os-keypairs', {'keypair': {'name': 'gen'}})
kp = b.get('keypair', {})
check(st == 200 and kp.get('private_key', '').startswith('-----BEGIN OPENSSH PRIVATE KEY')
      and kp['public_key'].startswith('ssh-ed25519 ') and re.match(r'^([0-9a-f]{2}:){15}[0-9a-f]{2}$', kp['fingerprint']),
      'keypair generated (ed25519, private key returned, MD5 fingerprint)')
pub = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZm test@x'
st, _, b = A.req('POST', '/os-keypairs', {'keypair': {'name': 'imp', 'public_key': pub}})
check(st == 200 and 'private_key' not in b['keypair'] and b['keypair']['public_key'] == pub, 'keypair imported')
st, _, b = A.req('POST', '/os-keypairs', {'keypair': {'name': 'imp', 'public_key': pub}})
check(st == 409, 'duplicate keypair -> 409')
st, _, b = A.req('POST', '/os-keypairs', {'keypair': {'name': 'bad', 'public_key': 'not a key'}})
check(st == 400, 'invalid public key -> 400')
st, _, b = A.req('GET', '/os-keypairs')
check(st == 200 and sorted(k['keypair']['name'] for k in b['keypairs']) == ['gen', 'imp'], 'keypair list')
st, _, b = B.req('GET', '/os-keypairs/imp')
check(st == 404, 'keypairs are per user (404 for another user)')
st, _, b = A.req('DELETE', '/os-keypairs/gen')
check(st == 202, 'keypair delete -> 202 (2.1)')
st, _, b = A.req('GET', '/os-keypairs/gen')
check(st == 404, 'deleted keypair -> 404')

# ---- Server create.
ud = base64.b64encode(b'#!/bin/sh\necho hi\n').decode()
st, h, b = A.create('vm1', key_name='imp', metadata={'k': 'v'}, user_data=ud,
                    security_groups=[{'name': 'default'}])
s = b.get('server', {})
check(st == 202 and set(s) == {'id', 'links', 'OS-DCF:diskConfig', 'security_groups', 'adminPass'},
      f'create -> 202 with exactly id, links, OS-DCF:diskConfig, security_groups, adminPass ({sorted(s)})')
check(h.get('location', '').endswith('/v2.1/servers/' + s.get('id', '')), 'create has a Location header')
vm1 = s['id']
st, _, b = A.req('GET', '/servers/' + vm1)
sv = b['server']
SHOW_KEYS = {'id', 'name', 'status', 'tenant_id', 'user_id', 'metadata', 'hostId', 'image', 'flavor',
             'created', 'updated', 'addresses', 'accessIPv4', 'accessIPv6', 'links', 'OS-DCF:diskConfig',
             'OS-EXT-AZ:availability_zone', 'config_drive', 'key_name', 'OS-SRV-USG:launched_at',
             'OS-SRV-USG:terminated_at', 'OS-EXT-STS:task_state', 'OS-EXT-STS:vm_state',
             'OS-EXT-STS:power_state', 'os-extended-volumes:volumes_attached', 'security_groups', 'progress'}
check(set(sv) == SHOW_KEYS, f'member show: exactly the 2.1 keys (extra {set(sv) - SHOW_KEYS}, missing {SHOW_KEYS - set(sv)})')
check(sv['status'] == 'BUILD' and sv['OS-EXT-STS:vm_state'] == 'building' and sv['tenant_id'] == pa
      and sv['image']['id'] == IMAGE and sv['flavor']['id'] == '1' and sv['key_name'] == 'imp'
      and sv['metadata'] == {'k': 'v'} and sv['addresses'] == {'seed-net': []},
      'show values (BUILD, image, flavor, key, metadata, the port on seed-net)')
st, _, b = adm.req('GET', '/servers/' + vm1)
ADMIN_KEYS = SHOW_KEYS | {'OS-EXT-SRV-ATTR:host', 'OS-EXT-SRV-ATTR:instance_name', 'OS-EXT-SRV-ATTR:hypervisor_hostname'}
check(st == 200 and set(b['server']) == ADMIN_KEYS, 'admin show adds the OS-EXT-SRV-ATTR fields')
for bad, what in [({'server': {'name': 'x', 'imageRef': 'nope', 'flavorRef': '1'}}, 'bad imageRef'),
                  ({'server': {'name': 'x', 'imageRef': IMAGE, 'flavorRef': 'nope'}}, 'unknown flavor'),
                  ({'server': {'name': 'x', 'imageRef': IMAGE, 'flavorRef': '1', 'networks': [{'uuid': 'net1'}]}}, 'bad network uuid'),
                  ({'server': {'name': 'x', 'imageRef': IMAGE, 'flavorRef': '1', 'key_name': 'nokey'}}, 'unknown key'),
                  ({'server': {'name': 'x', 'imageRef': IMAGE, 'flavorRef': '1', 'user_data': '***'}}, 'bad user_data'),
                  ({'server': {'name': 'x', 'imageRef': IMAGE, 'flavorRef': '1', 'description': 'd'}}, '2.19 field'),
                  ({'server': {'imageRef': IMAGE, 'flavorRef': '1'}}, 'no name'),
                  ({'server': {'name': 'x', 'imageRef': '33333333-3333-4333-8333-333333333333',
                               'flavorRef': '1'}}, 'unknown image'),
                  ({'server': {'name': 'x', 'imageRef': IMAGE, 'flavorRef': '1',
                               'networks': [{'uuid': '44444444-4444-4444-8444-444444444444'}]}},
                   'unknown network'),
                  ({'nothing': 1}, 'no server')]:
    st, _, b = A.req('POST', '/servers', bad)
    check(st == 400 and 'badRequest' in b, f'create with {what} -> 400 badRequest')
st, _, b = cloud.request('compute', 'POST', '/v2.1/servers', '{"server": ', {'X-Auth-Token': ta})
check(st == 400 and 'badRequest' in b, 'malformed JSON -> 400 badRequest')

# ---- Isolation matrix: B cannot see or act on A's server.
for method, path, body in [('GET', f'/servers/{vm1}', None), ('PUT', f'/servers/{vm1}', {'server': {'name': 'x'}}),
                           ('DELETE', f'/servers/{vm1}', None),
                           ('POST', f'/servers/{vm1}/action', {'os-stop': None}),
                           ('POST', f'/servers/{vm1}/action', {'reboot': {'type': 'HARD'}}),
                           ('GET', f'/servers/{vm1}/metadata', None), ('GET', f'/servers/{vm1}/ips', None),
                           ('GET', f'/servers/{vm1}/os-instance-actions', None)]:
    st, _, b = B.req(method, path, body)
    check(st == 404 and 'itemNotFound' in b, f'project B {method} {path.split("/")[-1]} on A\'s server -> 404')
st, _, b = B.req('GET', '/servers/detail')
check(st == 200 and b['servers'] == [], 'project B lists no servers of A')
st, _, b = B.req('GET', '/servers/detail?all_tenants=1')
check(st == 403, 'member all_tenants -> 403')
st, _, b = adm.req('GET', '/servers/detail?all_tenants=1')
check(vm1 in [x['id'] for x in b['servers']], 'admin all_tenants sees A\'s server')
st, _, b = A.req('GET', '/servers/vm1')
check(st == 404, 'server by name where an id is expected -> 404')

# ---- Admin-only calls are 403 for members.
for method, path, body in [('GET', '/os-hypervisors', None), ('GET', '/os-hypervisors/detail', None),
                           ('GET', '/os-hypervisors/statistics', None), ('GET', '/os-services', None),
                           ('PUT', '/os-services/disable', {'host': 'h', 'binary': 'nova-compute'}),
                           ('PUT', f'/os-quota-sets/{pa}', {'quota_set': {'instances': 100}}),
                           ('GET', '/os-availability-zone/detail', None),
                           ('POST', f'/servers/{vm1}/action', {'os-resetState': {'state': 'active'}}),
                           ('POST', f'/servers/{vm1}/action', {'migrate': None}),
                           ('POST', f'/servers/{vm1}/action', {'os-migrateLive': {'host': None, 'block_migration': False, 'disk_over_commit': False}}),
                           ('POST', f'/servers/{vm1}/action', {'evacuate': {'onSharedStorage': False}}),
                           ('DELETE', '/flavors/1', None)]:
    st, _, b = A.req(method, path, body)
    check(st == 403 and 'forbidden' in b, f'member {method} {path} -> 403')
st, _, b = A.req('GET', f'/os-quota-sets/{pb}')
check(st == 403, 'member cannot read another project\'s quota')

# ---- Action state machine (the agent is simulated by SQL).
def state(sid, vm, task=None, power=1):
    sql(cloud, f"UPDATE instances SET vm_state = '{vm}', task_state = {('%r' % task) if task else 'NULL'}, "
               f"power_state = {power} WHERE uuid = '{sid}'")

def act(c, sid, action, args=None):
    return c.req('POST', f'/servers/{sid}/action', {action: args})

st, _, b = act(A, vm1, 'os-stop')
check(st == 409 and 'conflictingRequest' in b, 'os-stop while BUILD -> 409 conflictingRequest')
state(vm1, 'active')
st, _, b = act(A, vm1, 'os-start')
check(st == 409, 'os-start while ACTIVE -> 409')
st, _, b = act(A, vm1, 'os-stop')
check(st == 202, 'os-stop while ACTIVE -> 202')
st, _, b = A.req('GET', f'/servers/{vm1}')
check(b['server']['OS-EXT-STS:task_state'] == 'powering-off' and b['server']['status'] == 'ACTIVE',
      'stop sets task_state powering-off')
st, _, b = act(A, vm1, 'os-stop')
check(st == 409, 'second os-stop while powering-off -> 409')
state(vm1, 'stopped', power=4)
st, _, b = A.req('GET', f'/servers/{vm1}')
check(b['server']['status'] == 'SHUTOFF', 'stopped -> SHUTOFF')
st, _, b = act(A, vm1, 'reboot', {'type': 'SOFT'})
check(st == 409, 'soft reboot while SHUTOFF -> 409')
st, _, b = act(A, vm1, 'reboot', {'type': 'HARD'})
check(st == 202, 'hard reboot while SHUTOFF -> 202')
st, _, b = A.req('GET', f'/servers/{vm1}')
check(b['server']['status'] == 'SHUTOFF' and b['server']['OS-EXT-STS:task_state'] == 'rebooting_hard',
      'hard reboot of a stopped server: SHUTOFF with task rebooting_hard (Nova\'s mapping)')
st, _, b = act(A, vm1, 'reboot', {'type': 'WARM'})
check(st == 400, 'reboot type WARM -> 400')
state(vm1, 'active')
for action, expect_task, status in [('pause', 'pausing', None), ('suspend', 'suspending', None)]:
    st, _, b = act(A, vm1, action)
    check(st == 202, f'{action} while ACTIVE -> 202')
    state(vm1, 'active')
state(vm1, 'paused')
st, _, b = act(A, vm1, 'pause')
check(st == 409, 'pause while PAUSED -> 409')
st, _, b = act(A, vm1, 'unpause')
check(st == 202, 'unpause while PAUSED -> 202')
state(vm1, 'active')
st, _, b = act(A, vm1, 'resume')
check(st == 409, 'resume while ACTIVE -> 409')
st, _, b = act(A, vm1, 'lock')
check(st == 202, 'lock -> 202')
st, _, b = act(A, vm1, 'os-stop')
check(st == 409 and 'locked' in b['conflictingRequest']['message'], 'action on a locked server -> 409')
st, _, b = A.req('DELETE', f'/servers/{vm1}')
check(st == 409, 'delete of a locked server -> 409')
st, _, b = act(A, vm1, 'unlock')
check(st == 202, 'unlock -> 202')
sql(cloud, f"UPDATE instances SET console_output = E'l1\\nl2\\nl3' WHERE uuid = '{vm1}'")
st, _, b = act(A, vm1, 'os-getConsoleOutput', {'length': 2})
check(st == 200 and b == {'output': 'l2\nl3'}, 'os-getConsoleOutput length 2 -> last 2 lines')
st, _, b = act(A, vm1, 'resize', {'flavorRef': '1'})
check(st == 400, 'resize to the same flavor -> 400')
st, _, b = act(A, vm1, 'resize', {'flavorRef': 'nope'})
check(st == 400, 'resize to an unknown flavor -> 400')
st, _, b = act(A, vm1, 'confirmResize')
check(st == 409, 'confirmResize when not resized -> 409')
# Resize and snapshot are carried out on the server's host: give vm1 one
# (removed again below, before the hypervisor checks).
sql(cloud, "INSERT INTO compute_nodes (host, hypervisor_hostname, vcpus, memory_mb, local_gb) "
           "VALUES ('rz-host', 'rz-host', 8, 16384, 100)")
sql(cloud, f"UPDATE instances SET host = 'rz-host', node = 'rz-host' WHERE uuid = '{vm1}'")
st, _, b = act(A, vm1, 'resize', {'flavorRef': '2'})
check(st == 202, 'resize -> 202')
st, _, b = A.req('GET', f'/servers/{vm1}')
check(b['server']['status'] == 'RESIZE', 'status RESIZE')
state(vm1, 'resized')
st, _, b = A.req('GET', f'/servers/{vm1}')
check(b['server']['status'] == 'VERIFY_RESIZE', 'status VERIFY_RESIZE')
st, _, b = act(A, vm1, 'confirmResize')
check(st == 204, 'confirmResize -> 204')
st, _, b = A.req('GET', f'/servers/{vm1}')
check(b['server']['flavor']['id'] == '2' and b['server']['status'] == 'ACTIVE', 'after confirmResize: new flavor, ACTIVE')
st, _, b = act(A, vm1, 'rebuild', {'imageRef': '44444444-4444-4444-4444-444444444444'})
check(st == 400 and 'badRequest' in b, f'rebuild with an unknown image -> 400 ({st})')
check(sql(cloud, f"SELECT coalesce(task_state, 'none') FROM instances WHERE uuid = '{vm1}'") == 'none',
      'a refused rebuild leaves no task_state')
st, _, b = act(A, vm1, 'rebuild', {'imageRef': IMAGE})
check(st == 202 and b['server']['status'] == 'REBUILD' and 'adminPass' in b['server']
      and b['server']['image']['id'] == IMAGE,
      'rebuild -> 202 with the server (REBUILD, new image) and adminPass')
check(sql(cloud, f"SELECT agent_action FROM instances WHERE uuid = '{vm1}'") == 'rebuild',
      'rebuild: the agent is asked to carry it out')
state(vm1, 'active')
st, h, b = act(A, vm1, 'createImage', {'name': 'snap'})
check(st == 202 and '/v2/images/' in h.get('location', ''),
      'createImage -> 202 with Location (a queued snapshot image; the agent uploads it)')
sql(cloud, f"UPDATE instances SET host = NULL, node = NULL WHERE uuid = '{vm1}'")
sql(cloud, "DELETE FROM compute_nodes WHERE host = 'rz-host'")
st, _, b = act(A, vm1, 'os-nope')
check(st == 400, 'unknown action -> 400')
st, _, b = act(adm, vm1, 'os-resetState', {'state': 'error'})
check(st == 202, 'admin os-resetState -> 202')
st, _, b = A.req('GET', f'/servers/{vm1}')
check(b['server']['status'] == 'ERROR', 'reset to ERROR')
st, _, b = act(adm, vm1, 'os-resetState', {'state': 'active'})
# Moving guests between hosts (docs/compute.md): with no other host the
# scheduler finds nothing (400) and nothing is left in a task; with another
# host that is disabled likewise.
# Moves that happen are tested with agents in test_migrate.py.
def no_task(what):
    check(sql(cloud, f"SELECT coalesce(task_state, 'none') || '/' || vm_state || '/' "
                     f"|| (intent IS NULL) FROM instances WHERE uuid = '{vm1}'") == 'none/active/true',
          f'{what}: no task_state, no intent, still active')

for action, args in (('migrate', None), ('evacuate', {'onSharedStorage': False})):
    st, _, b = act(adm, vm1, action, args)
    check(st == 400 and 'No valid host was found' in str(b) and 'badRequest' in b,
          f'admin {action} with no other host -> 400 No valid host ({st} {b})')
    no_task(action)
# vm1 has a port, which does not keep it from moving live: with no other
# host, or only hosts whose agent registered no libvirt URI, "No valid
# host" (the move itself is in test_live_migrate.py).
st, _, b = act(adm, vm1, 'os-migrateLive', {'host': None, 'block_migration': False,
                                            'disk_over_commit': False})
check(st == 400 and 'No valid host was found' in str(b) and 'badRequest' in b,
      f'admin os-migrateLive of a server with a port, no other host -> 400 ({st} {b})')
no_task('os-migrateLive')
sql(cloud, "INSERT INTO compute_nodes (host, hypervisor_hostname, vcpus, memory_mb, local_gb, "
           "last_heartbeat, disabled) VALUES ('mv-host', 'mv-host', 64, 65536, 1000, "
           "clock_timestamp(), true)")
for action, args in (('migrate', None), ('evacuate', {'onSharedStorage': False})):
    st, _, b = act(adm, vm1, action, args)
    check(st == 400 and 'No valid host was found' in str(b),
          f'admin {action} with only a disabled other host -> 400 ({st} {b})')
    no_task(action)
sql(cloud, "UPDATE compute_nodes SET disabled = false WHERE host = 'mv-host'")
st, _, b = act(adm, vm1, 'os-migrateLive', {'host': 'mv-host', 'block_migration': False,
                                            'disk_over_commit': False})
check(st == 400 and 'No valid host was found' in str(b),
      f'admin os-migrateLive of a server with a port, another host without a libvirt URI '
      f'-> 400 ({st} {b})')
no_task('os-migrateLive with another host')
sql(cloud, "DELETE FROM compute_nodes WHERE host = 'mv-host'")
# Rescue is carried out by the agent of the server's host (test_rescue.py):
# a server with no host cannot be rescued; unrescue of a server that is not
# rescued is refused in Nova's words; neither leaves a task behind.
st, _, b = act(A, vm1, 'rescue', None)
check(st == 409 and 'has no host' in str(b), f'rescue of a server with no host -> 409 ({st} {b})')
no_task('rescue')
st, _, b = act(A, vm1, 'unrescue', None)
check(st == 409 and "Cannot 'unrescue' instance" in str(b) and 'vm_state active' in str(b),
      f'unrescue of an active server -> 409 ({st} {b})')
no_task('unrescue')
st, _, b = act(B, vm1, 'rescue')
check(st == 404, f"rescue of another project's server -> 404 ({st})")
st, _, b = A.req('GET', f'/servers/{vm1}/os-instance-actions')
acts = [a['action'] for a in b['instanceActions']]
check(st == 200 and {'create', 'stop', 'reboot', 'lock', 'unlock', 'resize', 'confirmResize',
                     'migrate', 'evacuate', 'reset_state'} <= set(acts),
      f'instance actions recorded ({acts})')
rid = b['instanceActions'][0]['request_id']
st, _, b = A.req('GET', f'/servers/{vm1}/os-instance-actions/{rid}')
check(st == 200 and 'events' in b['instanceAction'], 'instance action show with events')

# ---- Rename, metadata, ips.
state(vm1, 'active')
st, _, b = A.req('PUT', f'/servers/{vm1}', {'server': {'name': 'renamed'}})
check(st == 200 and b['server']['name'] == 'renamed', 'rename -> 200 with the new name')
st, _, b = A.req('PUT', f'/servers/{vm1}', {'server': {'bogus': 1}})
check(st == 400, 'update with an unknown field -> 400')
st, _, b = A.req('POST', f'/servers/{vm1}/metadata', {'metadata': {'a': '1'}})
check(st == 200 and b['metadata'] == {'k': 'v', 'a': '1'}, 'metadata merge')
st, _, b = A.req('PUT', f'/servers/{vm1}/metadata/a', {'meta': {'a': '2'}})
check(st == 200 and b == {'meta': {'a': '2'}}, 'metadata item set')
st, _, b = A.req('DELETE', f'/servers/{vm1}/metadata/k')
check(st == 204, 'metadata item delete -> 204')
st, _, b = A.req('GET', f'/servers/{vm1}/metadata')
check(b == {'metadata': {'a': '2'}}, 'metadata after changes')
st, _, b = A.req('GET', f'/servers/{vm1}/ips')
check(st == 200 and b == {'addresses': {'seed-net': []}},
      f'ips: the port on seed-net (no subnet: no address) ({b})')

# ---- List filters and paging.
ids = []
for i in range(5):
    st, _, b = A.create(f'page-{i}', flavor='1' if i % 2 else '2')
    ids.append(b['server']['id'])
st, _, b = A.req('GET', '/servers')
check(st == 200 and all(set(x) == {'id', 'name', 'links'} for x in b['servers']) and len(b['servers']) == 6,
      'GET /servers: 6 servers with id, name, links')
st, _, b = A.req('GET', '/servers/detail?name=page-[13]')
check(sorted(x['name'] for x in b['servers']) == ['page-1', 'page-3'], 'name filter is a regular expression')
st, _, b = A.req('GET', '/servers/detail?name=age')
check(len(b['servers']) == 5, 'name filter matches substrings as Nova')
st, _, b = A.req('GET', '/servers/detail?flavor=2')
check(sorted(x['name'] for x in b['servers']) == ['page-0', 'page-2', 'page-4', 'renamed'], 'flavor filter (vm1 was resized to 2)')
st, _, b = A.req('GET', '/servers/detail?status=ACTIVE')
check([x['id'] for x in b['servers']] == [vm1], 'status filter ACTIVE')
st, _, b = A.req('GET', f'/servers/detail?image={IMAGE}&status=BUILD')
check(len(b['servers']) == 5, 'image + status filter')
seen, path, pages = [], '/servers/detail?limit=2', 0
while path and pages < 10:
    st, _, b = A.req('GET', path)
    seen += [x['id'] for x in b['servers']]
    links = b.get('servers_links', [])
    path = links[0]['href'].split('/v2.1', 1)[1] if links else None
    pages += 1
check(len(seen) == 6 and len(set(seen)) == 6 and pages == 4, f'paging with limit=2 and next links ({pages} pages)')
st, _, b = A.req('GET', f'/servers?marker={IMAGE}')
check(st == 400, 'unknown marker -> 400')
st, _, b = A.req('GET', '/servers?limit=-1')
check(st == 400, 'negative limit -> 400')
st, _, b = A.req('GET', '/servers/detail?changes-since=2000-01-01T00:00:00Z')
check(st == 200 and len(b['servers']) == 6, 'changes-since filter')
st, _, b = A.req('GET', '/servers/detail?host=anything')
check(len(b['servers']) == 6, 'host filter is ignored for members')

# ---- Delete.
st, _, b = A.req('DELETE', f'/servers/{ids[0]}')
check(st == 204, 'delete -> 204')
st, _, b = A.req('GET', f'/servers/{ids[0]}')
check(st == 404, 'deleted server (never scheduled) -> 404')
st, _, b = A.req('GET', '/servers/detail?changes-since=2000-01-01T00:00:00Z')
check(any(x['id'] == ids[0] and x['status'] == 'DELETED' for x in b['servers']),
      'changes-since includes deleted servers as DELETED')

# ---- Quotas: 50 parallel creates with an instance quota of 10.
st, _, b = adm.req('PUT', f'/os-quota-sets/{pb}', {'quota_set': {'instances': 10}})
check(st == 200 and b['quota_set']['instances'] == 10, 'admin sets instances quota to 10')
st, _, b = B.req('GET', f'/os-quota-sets/{pb}')
check(st == 200 and b['quota_set']['instances'] == 10 and b['quota_set']['id'] == pb, 'member reads own quota')
with concurrent.futures.ThreadPoolExecutor(50) as ex:
    results = list(ex.map(lambda i: B.create(f'q-{i}'), range(50)))
codes = sorted(r[0] for r in results)
check(codes.count(202) == 10 and codes.count(403) == 40,
      f'50 parallel creates, quota 10: 10 x 202, 40 x 403 ({sorted(set(codes))})')
msgs = [r[2] for r in results if r[0] == 403]
check(all('Quota exceeded for instances' in m['forbidden']['message'] for m in msgs), '403 says Quota exceeded for instances')
check(sql(cloud, f"SELECT count(*) FROM instances WHERE project_id = '{pb}' AND NOT deleted") == '10',
      'exactly 10 instances in the database')
st, _, b = B.req('GET', f'/os-quota-sets/{pb}/detail')
check(b['quota_set']['instances'] == {'limit': 10, 'in_use': 10, 'reserved': 0}, 'quota detail in_use 10')
st, _, b = B.req('GET', '/limits')
check(b['limits']['absolute']['totalInstancesUsed'] == 10 and b['limits']['absolute']['maxTotalInstances'] == 10, 'limits')
st, _, b = B.create('multi', min_count=1, max_count=3)
check(st == 403, 'min_count over quota -> 403')
st, _, b = B.req('GET', f'/os-quota-sets/{pb}/defaults')
check(b['quota_set']['instances'] == 10 and b['quota_set']['cores'] == 20, 'quota defaults')
st, _, b = adm.req('PUT', f'/os-quota-sets/{pa}', {'quota_set': {'cores': 3}})
st, _, b = A.create('toobig', flavor='3')
check(st == 403 and 'cores' in b['forbidden']['message'], 'cores quota -> 403')
adm.req('DELETE', f'/os-quota-sets/{pa}')
st, _, b = A.req('GET', f'/os-quota-sets/{pa}')
check(b['quota_set']['cores'] == 20, 'quota delete reverts to the defaults')

# ---- min/max count.
st, _, b = adm.create('many', min_count=2, max_count=3)
check(st == 202, 'admin min_count 2 max_count 3 -> 202')
check(sql(cloud, "SELECT count(*) FROM instances WHERE name LIKE 'many-%'") == '3', 'max_count creates 3 servers')

# ---- Server groups.
st, _, g = A.req('POST', '/os-server-groups', {'server_group': {'name': 'g1', 'policies': ['anti-affinity']}})
check(st == 200 and set(g['server_group']) == {'id', 'name', 'policies', 'members', 'metadata'}, 'server group create (2.1 keys)')
gid = g['server_group']['id']
st, _, b = A.req('POST', '/os-server-groups', {'server_group': {'name': 'g', 'policies': ['bogus']}})
check(st == 400, 'bad policy -> 400')
st, _, b = A.create('gm', hints={'group': gid})
st, _, b = A.req('GET', f'/os-server-groups/{gid}')
check(st == 200 and len(b['server_group']['members']) == 1, 'group member listed')
st, _, b = B.req('GET', f'/os-server-groups/{gid}')
check(st == 404, 'other project cannot see the group')
st, _, b = A.create('gm2', hints={'group': '33333333-3333-3333-3333-333333333333'})
check(st == 400, 'unknown group hint -> 400')
st, _, b = A.req('DELETE', f'/os-server-groups/{gid}')
check(st == 204, 'server group delete -> 204')

# ---- Hypervisors, services, availability zones.
add_hosts(cloud, 2, prefix='hv')
st, _, b = adm.req('GET', '/os-hypervisors')
check(st == 200 and len(b['hypervisors']) == 2 and set(b['hypervisors'][0]) == {'id', 'hypervisor_hostname', 'state', 'status'},
      'hypervisor list')
hid = b['hypervisors'][0]['id']
st, _, b = adm.req('GET', f'/os-hypervisors/{hid}')
check(st == 200 and b['hypervisor']['vcpus'] == 8 and b['hypervisor']['state'] == 'up', 'hypervisor show')
st, _, b = adm.req('GET', '/os-hypervisors/hv1.nimbus')
check(st == 404, 'hypervisor by name -> 404')
st, _, b = adm.req('GET', '/os-hypervisors/statistics')
check(b['hypervisor_statistics']['count'] == 2 and b['hypervisor_statistics']['vcpus'] == 16, 'hypervisor statistics')
st, _, b = adm.req('PUT', '/os-services/disable-log-reason', {'host': 'hv1', 'binary': 'nova-compute', 'disabled_reason': 'maint'})
check(st == 200 and b['service'] == {'host': 'hv1', 'binary': 'nova-compute', 'status': 'disabled', 'disabled_reason': 'maint'},
      'service disable with reason')
st, _, b = adm.req('GET', '/os-services?binary=nova-compute')
svc = {x['host']: x for x in b['services']}
check(svc['hv1']['status'] == 'disabled' and svc['hv1']['disabled_reason'] == 'maint' and svc['hv2']['status'] == 'enabled'
      and set(svc['hv1']) == {'id', 'binary', 'host', 'zone', 'status', 'state', 'updated_at', 'disabled_reason'},
      'service list shows it (2.1 keys)')
st, _, b = adm.req('PUT', '/os-services/force-down', {'host': 'hv2', 'binary': 'nova-compute', 'forced_down': True})
st, _, b = adm.req('GET', '/os-services?host=hv2')
check(b['services'][0]['state'] == 'down', 'forced down service is down')
st, _, b = adm.req('PUT', '/os-services/enable', {'host': 'nohost', 'binary': 'nova-compute'})
check(st == 404, 'unknown service host -> 404')
st, _, b = A.req('GET', '/os-availability-zone')
check(st == 200 and b['availabilityZoneInfo'] == [{'zoneName': 'nova', 'zoneState': {'available': False}, 'hosts': None}],
      'availability zones (both hosts unavailable now)')
adm.req('PUT', '/os-services/enable', {'host': 'hv1', 'binary': 'nova-compute'})
st, _, b = adm.req('GET', '/os-availability-zone/detail')
check(st == 200 and 'hv1' in b['availabilityZoneInfo'][0]['hosts'], 'availability zone detail lists hosts')
st, _, b = A.create('azvm', availability_zone='nowhere')
check(st == 400, 'unknown availability zone -> 400')

cloud.close()
done()
