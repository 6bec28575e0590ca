"""Compute through the real openstack client (python3-openstackclient 6.0
with novaclient, Debian): flavor list/show, keypair create/list/delete,
server list/show/set/delete, console log, stop/start/reboot state errors.

`openstack server create --image I --network N` first looks the image up in
Glance and the network in Neutron; this test creates the server through the
API with the client's exact body (CLIENT-CAPTURES.md) and drives the rest
with the client."""
import json
import os
import sys

from compute_lib import IMAGE, Compute, check, done, nt, seed, sql

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'image'))
import image_test  # noqa: E402

OPENSTACK = '/usr/bin/openstack'
if not os.path.exists(OPENSTACK):
    print('SKIP: python3-openstackclient is not installed')
    sys.exit(77)

# The real image service: the client looks 'cirros' up in it by name.
cloud = image_test.ImageCloud()
tok, _ = cloud.token()
api = Compute(cloud, tok)
cloud.create_image(tok, id=IMAGE, name='cirros', disk_format='raw', visibility='public')
st, _ = cloud.upload(tok, IMAGE, b'\0' * 65536)
check(st == 204, 'image cirros uploaded to nimbus-image')
seed(cloud)   # the shared network the client's captured body names


def osc(*args, fmt=True, check_rc=True):
    r = cloud.osc(*args, fmt=fmt)
    if check_rc and r.returncode != 0:
        print(f'command failed: {" ".join(args)}\n{r.stderr}\n{cloud.log_tail(10)}')
    return r


def js(*args):
    r = osc(*args)
    return json.loads(r.stdout) if r.returncode == 0 else None


fl = js('flavor', 'list')
check(fl is not None and {'m1.tiny', 'm1.small', 'm1.medium'} <= {f['Name'] for f in fl},
      'openstack flavor list')
f = js('flavor', 'show', 'm1.tiny')
check(f is not None and f['ram'] == 512 and f['vcpus'] == 1 and f['id'] == '1',
      'openstack flavor show m1.tiny (404 by name, then lookup in the list)')
r = osc('flavor', 'create', '--ram', '128', '--vcpus', '1', '--disk', '0', '--private', 'cli.flavor')
check(r.returncode == 0 and json.loads(r.stdout)['os-flavor-access:is_public'] is False,
      'openstack flavor create --private')
r = osc('flavor', 'delete', 'cli.flavor', fmt=False)
check(r.returncode == 0, 'openstack flavor delete')

r = osc('keypair', 'create', 'k', fmt=False)
check(r.returncode == 0 and r.stdout.startswith('-----BEGIN OPENSSH PRIVATE KEY'),
      'openstack keypair create k prints the generated OpenSSH private key')
pubfile = os.path.join(cloud.dir, 'k2.pub')
with open(pubfile, 'w') as fh:
    fh.write('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZm x@y\n')
k2 = js('keypair', 'create', '--public-key', pubfile, 'k2')
check(k2 is not None and k2['name'] == 'k2', 'openstack keypair create --public-key')
kl = js('keypair', 'list')
check(kl is not None and sorted(k['Name'] for k in kl) == ['k', 'k2'], 'openstack keypair list')
r = osc('keypair', 'delete', 'k2', fmt=False)
check(r.returncode == 0, 'openstack keypair delete')

# The client's exact create body (CLIENT-CAPTURES.md).
st, _, b = api.req('POST', '/servers', {'server': {
    'name': 'vm1', 'imageRef': '11111111-1111-1111-1111-111111111111', 'flavorRef': '1',
    'min_count': 1, 'max_count': 1, 'key_name': 'k',
    'networks': [{'uuid': '22222222-2222-2222-2222-222222222222'}]}})
check(st == 202, 'server create with the client\'s body -> 202')
sid = b['server']['id']
sl = js('server', 'list')
check(sl is not None and [s['Name'] for s in sl] == ['vm1'] and sl[0]['Status'] == 'BUILD',
      'openstack server list')
sl = js('server', 'list', '--long', '--name-lookup-one-by-one')
check(sl is not None and len(sl) == 1, 'openstack server list --long')
ss = js('server', 'show', 'vm1')
check(ss is not None and ss['id'] == sid and ss['status'] == 'BUILD' and ss['key_name'] == 'k',
      'openstack server show vm1 (404 by name, then ?name= lookup)')
r = osc('server', 'stop', 'vm1', fmt=False, check_rc=False)
check(r.returncode != 0 and '409' in r.stderr, 'openstack server stop while BUILD fails with 409')
sql(cloud, f"UPDATE instances SET vm_state = 'active', task_state = NULL, power_state = 1,"
           f" console_output = E'boot\\nlogin:' WHERE uuid = '{sid}'")
r = osc('server', 'stop', 'vm1', fmt=False)
check(r.returncode == 0, 'openstack server stop')
sql(cloud, f"UPDATE instances SET vm_state = 'stopped', task_state = NULL, power_state = 4"
           f" WHERE uuid = '{sid}'")
r = osc('server', 'start', 'vm1', fmt=False)
check(r.returncode == 0, 'openstack server start')
sql(cloud, f"UPDATE instances SET vm_state = 'active', task_state = NULL, power_state = 1"
           f" WHERE uuid = '{sid}'")
r = osc('server', 'reboot', '--hard', 'vm1', fmt=False)
check(r.returncode == 0, 'openstack server reboot --hard')
sql(cloud, f"UPDATE instances SET task_state = NULL WHERE uuid = '{sid}'")
r = osc('console', 'log', 'show', 'vm1', fmt=False)
check(r.returncode == 0 and 'login:' in r.stdout, 'openstack console log show')
r = osc('server', 'set', '--name', 'vm1b', '--property', 'a=b', 'vm1', fmt=False)
check(r.returncode == 0, 'openstack server set --name --property')
ss = js('server', 'show', 'vm1b')
check(ss is not None and ss['name'] == 'vm1b' and 'a' in str(ss.get('properties')),
      'renamed server with its property')
r = osc('server', 'delete', '--wait', 'vm1b', fmt=False)
check(r.returncode == 0, 'openstack server delete --wait')
sl = js('server', 'list')
check(sl == [], 'server list is empty again')
r = osc('server', 'show', sid, check_rc=False)
check(r.returncode != 0 and 'No server with a name or ID' in r.stderr, 'show of the deleted server fails')
h = js('hypervisor', 'list')
check(h == [], 'openstack hypervisor list (admin)')
lim = js('limits', 'show', '--absolute')
check(lim is not None and any(x['Name'] == 'maxTotalInstances' for x in lim), 'openstack limits show --absolute')
q = js('quota', 'show', '--compute') if False else None
az = js('availability', 'zone', 'list', '--compute')
check(az is not None, 'openstack availability zone list --compute')

# `openstack server create` end to end needs a network service: use the
# network API of this build when it answers, else say what was skipped.
net = js('network', 'create', 'cli-net')
if net and net.get('id'):
    srv = js('server', 'create', '--flavor', 'm1.tiny', '--image', 'cirros', '--network', 'cli-net',
             '--key-name', 'k', 'vm2')
    check(srv is not None and srv.get('status') == 'BUILD' and srv.get('name') == 'vm2',
          'openstack server create --flavor m1.tiny --image cirros --network cli-net vm2')
    if srv:
        r = osc('server', 'delete', '--wait', 'vm2', fmt=False)
        check(r.returncode == 0, 'openstack server delete --wait vm2')
else:
    print('SKIP openstack server create: no network service in this build')
cloud.close()
done()
