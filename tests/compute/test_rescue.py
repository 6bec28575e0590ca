"""Rescue and unrescue carried out by the agent, end to end with the fake
hypervisor: nimbus-api + nimbus-scheduler + nimbus-compute (http source,
real image cache and qcow2 overlays, images from nimbus-image).

- rescue of an ACTIVE server -> 200 {"adminPass"} (the one given, else a
  generated one), task rescuing, then RESCUE (vm_state rescued): the guest
  is defined on a separate rescue overlay of the rescue image
  (rescue_image_ref, else its own image) with its own disk, untouched, as
  the second disk (the fake hypervisor's console says which disks it
  booted); unrescue -> task unrescuing -> ACTIVE on its own disk, the
  rescue overlay deleted;
- rescue of a SHUTOFF server; a stop of a rescued server takes it out of
  rescue mode (SHUTOFF, rescue overlay gone); delete while rescued removes
  both overlays;
- refusals: rescue in RESCUE, unrescue when not rescued (409 in Nova's
  words), locked (409), a container (409), a rescue image the project
  cannot see, an unknown or non-disk one (400), bad arguments (400),
  another project (404); none leaves a task behind;
- `openstack server rescue --image ... --password ...` / `unrescue`;
- the password is in no log."""
import json
import os
import subprocess
import sys
import time

import compute_lib
from compute_lib import NET, Compute, Schedulers, check, done, sql

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'image'))
from image_test import ImageCloud  # noqa: E402

NODE = 'rescue-node-1'
SECRET = 'Rescue-S3cret-pw'

cloud = ImageCloud()
compute_lib.seed(cloud)
tok, body = cloud.token()
admin_project = body['token']['project']['id']
adm = Compute(cloud, tok)
pid, ptok = compute_lib.make_project(cloud, tok, 'rescuers')
api = Compute(cloud, ptok)
_, otok = compute_lib.make_project(cloud, tok, 'others')
other = Compute(cloud, otok)
for p in (admin_project, pid):
    for r in ('instances', 'cores', 'ram'):
        sql(cloud, f"INSERT INTO quotas VALUES ('{p}', '{r}', -1) ON CONFLICT DO NOTHING")

token_file = os.path.join(cloud.dir, 'node.token')
cloud.manage('node', 'add', NODE, '--output', token_file)


def image(name, data, **attrs):
    img = cloud.create_image(tok, name=name, **attrs)['id']
    st, _ = cloud.upload(tok, img, data)
    check(st == 204, f'image {name} uploaded ({st})')
    return img


IMAGE = image('blank', bytes(range(256)) * 4096, visibility='public')              # 1 MiB
RESCUE = image('rescue-img', bytes(reversed(range(256))) * 8192, visibility='public')  # 2 MiB
PRIVATE = image('admins-only', b'\0' * 65536, visibility='private')
KERNEL = image('a-kernel', b'\1' * 4096, visibility='public', disk_format='aki',
               container_format='aki')
state_dir = os.path.join(cloud.dir, 'agent-state')
agent_conf = compute_lib.write_agent_conf(cloud, NODE, token_file, state_dir=state_dir)
agent_log = os.path.join(cloud.dir, 'agent.log')
agent = compute_lib.start_agent(agent_conf, agent_log)
run = compute_lib.AgentRun(agent, agent_log, api)
wait_for, server, status_is, act = run.wait_for, run.server, run.status_is, run.act
scheds = Schedulers(cloud, 1)
compute_lib.kill_at_exit(agent, *scheds.procs)


def console(sid):
    st, _, r = act(sid, {'os-getConsoleOutput': {}})
    return r['output'] if st == 200 else ''


def last_define(sid):
    """The console lines of the guest's last definition."""
    out = console(sid)
    i = out.rfind(' defined with ')
    return out[out.rfind('\n', 0, i) + 1:] if i >= 0 else ''


def inst_file(sid, name):
    return os.path.join(state_dir, 'instances', sid, name)


def backing(path):
    r = subprocess.run(['qemu-img', 'info', '-U', '--output=json', path],
                       capture_output=True, text=True)
    return json.loads(r.stdout).get('backing-filename', '') if r.returncode == 0 else None


def task_none(sid, what):
    check(sql(cloud, f"SELECT coalesce(task_state, 'none') FROM instances "
                     f"WHERE uuid = '{sid}'") == 'none', f'{what}: no task left')


wait_for('the agent registers', lambda: sql(cloud, f"""SELECT count(*) FROM compute_nodes
    WHERE hypervisor_hostname = '{NODE}'""") == '1')
st, _, b = api.req('POST', '/servers', {'server': {'name': 'vm1', 'imageRef': IMAGE,
                                                  'flavorRef': '1', 'networks': [{'uuid': NET}]}})
check(st == 202, f'server create 202 ({st} {b})')
sid = b['server']['id']
wait_for('vm1 ACTIVE', status_is(sid, 'ACTIVE'))
disk = inst_file(sid, 'disk.qcow2')
rescue_disk = inst_file(sid, 'rescue.qcow2')
ino = os.stat(disk).st_ino

# ---- Refusals before anything happens.
st, _, b = act(sid, {'unrescue': None})
check(st == 409 and f"Cannot 'unrescue' instance {sid} while it is in vm_state active" in str(b),
      f'unrescue of an ACTIVE server: 409 in Nova\'s words ({st} {b})')
for args, what in (({'rescue_image_ref': PRIVATE}, "another project's private image"),
                   ({'rescue_image_ref': '33333333-3333-4333-8333-333333333333'}, 'an unknown image'),
                   ({'rescue_image_ref': KERNEL}, 'a kernel (aki) image')):
    st, _, b = act(sid, {'rescue': args})
    check(st == 400 and 'badRequest' in b and 'is not supported' in str(b),
          f'rescue with {what}: 400 ({st} {b})')
for args, what in (({'rescue_image_ref': 'nope'}, 'rescue_image_ref not a uuid'),
                   ({'adminPass': 5}, 'adminPass not a string'),
                   ({'adminPass': 'x' * 256}, 'adminPass over 255 characters'),
                   ({'bogus': 1}, 'an unknown argument')):
    st, _, b = act(sid, {'rescue': args})
    check(st == 400 and 'Invalid input for field/attribute' in str(b),
          f'rescue with {what}: 400 ({st} {b})')
check(act(sid, {'rescue': 'x'})[0] == 400, 'rescue with a string: 400')
for body in ({'rescue': None}, {'unrescue': None}):
    st, _, b = act(sid, body, other)
    check(st == 404 and 'itemNotFound' in b, f'{list(body)[0]} from another project: 404 ({st})')
check(act(sid, {'lock': None})[0] == 202, 'lock')
st, _, b = act(sid, {'rescue': None})
check(st == 409 and 'is locked' in str(b), f'rescue of a locked server: 409 ({st} {b})')
check(act(sid, {'unlock': None})[0] == 202, 'unlock')
# A container has no disk to boot a rescue image from.
sql(cloud, "INSERT INTO images (id, name, owner, status, visibility, disk_format, container_format, "
           "size) VALUES ('44444444-4444-4444-8444-444444444444', 'oci', 'seed', 'active', "
           "'public', 'raw', 'docker', 10)")
sql(cloud, f"UPDATE instances SET image_ref = '44444444-4444-4444-8444-444444444444' "
           f"WHERE uuid = '{sid}'")
st, _, b = act(sid, {'rescue': None})
check(st == 409 and 'container' in str(b), f'rescue of a container: 409 ({st} {b})')
sql(cloud, f"UPDATE instances SET image_ref = '{IMAGE}' WHERE uuid = '{sid}'")
task_none(sid, 'the refusals')
check(server(sid)['status'] == 'ACTIVE', 'still ACTIVE')

# ---- Rescue with the server's own image, a generated password.
st, _, b = act(sid, {'rescue': None})
check(st == 200 and isinstance(b.get('adminPass'), str) and len(b['adminPass']) >= 8,
      f'rescue: 200 with a generated adminPass ({st} {list(b)})')
s = server(sid)
check(s['OS-EXT-STS:task_state'] in ('rescuing', None), f'task rescuing ({s["OS-EXT-STS:task_state"]})')
wait_for('rescue -> RESCUE', status_is(sid, 'RESCUE'))
check(server(sid)['OS-EXT-STS:vm_state'] == 'rescued', 'vm_state rescued')
wait_for('the guest was defined in rescue mode: rescue overlay first, its own disk second',
         lambda: f'rescue mode: boots {rescue_disk}, second disk {disk}' in last_define(sid))
check(os.path.exists(rescue_disk) and IMAGE in (backing(rescue_disk) or ''),
      f'a rescue overlay of the server\'s own image ({backing(rescue_disk)})')
check(os.stat(disk).st_ino == ino and IMAGE in (backing(disk) or ''),
      'the server\'s own overlay is untouched')
st, _, b = act(sid, {'rescue': None})
check(st == 409 and f"Cannot 'rescue' instance {sid} while it is in vm_state rescued" in str(b),
      f'rescue in RESCUE: 409 ({st} {b})')
for body in ({'reboot': {'type': 'HARD'}}, {'resize': {'flavorRef': '2'}},
             {'createImage': {'name': 'x'}}, {'rebuild': {'imageRef': IMAGE}}):
    check(act(sid, body)[0] == 409, f'{list(body)[0]} in RESCUE: 409')
time.sleep(1.5)   # a few agent reports: the server stays RESCUE
check(status_is(sid, 'RESCUE')(), 'still RESCUE after the agent\'s next reports')

# ---- Unrescue: its own disk again, the rescue overlay deleted.
st, _, b = act(sid, {'unrescue': None})
check(st == 202, f'unrescue: 202 ({st} {b})')
wait_for('unrescue -> ACTIVE', status_is(sid, 'ACTIVE'))
check(' defined with ' in last_define(sid) and 'rescue mode' not in last_define(sid),
      f'defined on its own disk alone ({last_define(sid)!r})')
check(not os.path.exists(rescue_disk), 'the rescue overlay is deleted')
check(os.stat(disk).st_ino == ino, 'the server\'s own overlay is the same file')
st, _, b = api.req('GET', f'/servers/{sid}/os-instance-actions')
acts = [a['action'] for a in b.get('instanceActions', [])]
check(acts[:2] == ['unrescue', 'rescue'], f'rescue and unrescue instance actions ({acts[:3]})')
rid = b['instanceActions'][1]['request_id']
st, _, b = api.req('GET', f'/servers/{sid}/os-instance-actions/{rid}')
ev = {e['event']: e['result'] for e in b['instanceAction']['events']}
check(ev.get('compute_rescue_instance') == 'Success', f'compute_rescue_instance Success ({ev})')

# ---- Rescue with another image and a password of the user's, from SHUTOFF.
check(act(sid, {'os-stop': None})[0] == 202, 'os-stop')
wait_for('SHUTOFF', status_is(sid, 'SHUTOFF'))
st, _, b = act(sid, {'rescue': {'rescue_image_ref': RESCUE, 'adminPass': SECRET}})
check(st == 200 and b == {'adminPass': SECRET}, f'rescue of a SHUTOFF server: 200 with that password ({st})')
wait_for('RESCUE, running', lambda: status_is(sid, 'RESCUE')()
         and server(sid)['OS-EXT-STS:power_state'] == 1)
check(RESCUE in (backing(rescue_disk) or ''), 'the rescue overlay is of rescue_image_ref')
# A stop of a rescued server takes it out of rescue mode (SHUTOFF); its
# next start boots its own disk.
check(act(sid, {'os-stop': None})[0] == 202, 'os-stop of a rescued server')
wait_for('SHUTOFF', status_is(sid, 'SHUTOFF'))
check(not os.path.exists(rescue_disk), 'the rescue overlay is deleted')
check(act(sid, {'os-start': None})[0] == 202, 'os-start')
wait_for('ACTIVE on its own disk', lambda: status_is(sid, 'ACTIVE')()
         and 'rescue mode' not in last_define(sid))

# ---- The openstack client.
OSC = '/usr/bin/openstack'
if os.path.exists(OSC):
    osc = cloud.osc
    r = osc('server', 'rescue', '--image', 'rescue-img', '--password', SECRET, sid)
    check(r.returncode == 0, f'openstack server rescue --image --password ({r.returncode} {r.stderr[-300:]})')
    wait_for('RESCUE', status_is(sid, 'RESCUE'))
    check(RESCUE in (backing(rescue_disk) or ''), 'with the image named')
    r = osc('server', 'unrescue', sid)
    check(r.returncode == 0, f'openstack server unrescue ({r.returncode} {r.stderr[-300:]})')
    wait_for('ACTIVE', status_is(sid, 'ACTIVE'))
    r = osc('server', 'rescue', sid)
    check(r.returncode == 0, f'openstack server rescue ({r.returncode} {r.stderr[-300:]})')
    wait_for('RESCUE', status_is(sid, 'RESCUE'))
    check(IMAGE in (backing(rescue_disk) or ''), 'with the server\'s own image')
else:
    check(act(sid, {'rescue': None})[0] == 200, 'rescue')
    wait_for('RESCUE', status_is(sid, 'RESCUE'))

# ---- Delete while rescued removes both overlays.
check(os.path.exists(rescue_disk) and os.path.exists(disk), 'rescued: two overlays')
st, _, _ = api.req('DELETE', f'/servers/{sid}')
check(st == 204, 'delete while rescued: 204')
wait_for('gone', lambda: server(sid) == 404)
wait_for('its directory and both overlays are removed',
         lambda: not os.path.exists(os.path.dirname(disk)))

with open(agent_log, 'rb') as f:
    alog = f.read().decode(errors='replace')
check(SECRET not in alog and SECRET not in cloud.log_tail(100000),
      'the rescue password is in no log')
agent.terminate()
try:
    rc = agent.wait(30)
except subprocess.TimeoutExpired:
    agent.kill()
    rc = 'timeout'
check(rc == 0, f'the agent exits cleanly on SIGTERM ({rc})')
check('AddressSanitizer' not in alog and 'runtime error' not in alog,
      'no sanitizer report from the agent')
scheds.stop()
check(cloud.stop() == 0, 'nimbus-api exits cleanly')
if compute_lib.failures:
    print('---- agent log\n' + run.log_tail())
    print('---- api log\n' + cloud.log_tail(60))
done()
