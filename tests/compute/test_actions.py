"""Server actions carried out by the agent, end to end with the fake
hypervisor: nimbus-api + nimbus-scheduler + nimbus-compute (http source,
real image cache and qcow2 overlays, base image from nimbus-image).

- os-getConsoleOutput answers the instance's own console log, pushed by
  the agent in its observed reports (the fake hypervisor prints a line per
  boot with the flavor it booted with), whole and with `length`.
- resize (same host) -> RESIZE -> VERIFY_RESIZE with the guest redefined
  with the new flavor and its overlay grown; revertResize -> the old
  flavor; resize + confirmResize -> the new one; the node's usage holds
  the larger flavor while unconfirmed; quota and bad input refused.
- createImage -> 202 with Location; a queued image owned by the project
  becomes active with the overlay flattened to qcow2 (uploaded by the
  agent), task image_snapshot -> none.
- os-getVNCConsole / os-getSerialConsole / remote-consoles hand out a URL
  of the node's console proxy with a one-time token; the proxy refuses a
  bogus, used or expired token (the fake hypervisor has no console to
  relay to: the real relay is tested with QEMU in test_agent_libvirt.py).
- another project sees 404 for all of it; delete during VERIFY_RESIZE
  gives everything back."""
import atexit
import hashlib
import json
import os
import subprocess
import time

import compute_lib
import ws_lib
from compute_lib import NET, Compute, Schedulers, check, done, nt, sql


NODE = 'actions-node-1'

cloud, tok, admin_project, api = compute_lib.admin_cloud()
sql(cloud, "INSERT INTO flavors (id, name, vcpus, ram, disk) VALUES "
           "('r2', 'r2.small', 2, 1024, 2), ('r4', 'r4.big', 4, 1024, 2)")

token_file = os.path.join(cloud.dir, 'node.token')
cloud.manage('node', 'add', NODE, '--output', token_file)

IMAGE = compute_lib.blank_image(cloud, tok, min_ram=0)
state_dir = os.path.join(cloud.dir, 'agent-state')
agent_conf = compute_lib.write_agent_conf(cloud, NODE, token_file, state_dir=state_dir,
                                          console=True)
agent_log = os.path.join(cloud.dir, 'agent.log')
agent = compute_lib.start_agent(agent_conf, agent_log)
scheds = Schedulers(cloud, 1)


def cleanup():
    if agent.poll() is None:
        agent.kill()
    for p in scheds.procs:
        if p.poll() is None:
            p.kill()


atexit.register(cleanup)


def agent_log_tail():
    with open(agent_log, 'rb') as f:
        return f.read().decode(errors='replace')[-3000:]


def wait_for(what, fn, timeout=15):
    t0 = time.time()
    v = None
    while time.time() < t0 + timeout:
        if agent.poll() is not None:
            check(False, f'{what}: nimbus-compute exited with {agent.returncode}\n'
                  + agent_log_tail())
            return None
        v = fn()
        if v:
            check(True, f'{what} ({time.time() - t0:.1f}s)')
            return v
        time.sleep(0.1)
    check(False, f'{what} (last: {v!r})')
    return None


def server(sid, a=None):
    return compute_lib.get_server(a or api, sid)


def status_is(sid, want):
    return compute_lib.status_is(api, sid, want)


def act(sid, body, a=None):
    return compute_lib.server_action(a or api, sid, body)


def used():
    return sql(cloud, f"""SELECT vcpus_used || '/' || memory_mb_used || '/' || local_gb_used
                          FROM compute_nodes WHERE hypervisor_hostname = '{NODE}'""")


def console(sid, length=None):
    b = {'os-getConsoleOutput': {} if length is None else {'length': length}}
    st, _, r = act(sid, b)
    return r['output'] if st == 200 else st


wait_for('the agent registers', lambda: sql(cloud, f"""SELECT count(*) FROM compute_nodes
    WHERE hypervisor_hostname = '{NODE}'""") == '1')
st, _, b = api.req('POST', '/servers', {'server': {'name': 'vm1', 'imageRef': IMAGE,
                                                  'flavorRef': '1', 'networks': [{'uuid': NET}]}})
check(st == 202, f'server create 202 ({st} {b})')
sid = b['server']['id']
wait_for('vm1 ACTIVE', status_is(sid, 'ACTIVE'))

# ---- Console output: the agent's console log of the instance.
out = wait_for('os-getConsoleOutput shows the boot line the guest printed',
               lambda: isinstance(console(sid), str)
               and 'nimbus-fake: booted with 1 vcpus, 512 MiB RAM' in console(sid) and console(sid))
check(out and out.splitlines()[0].startswith('nimbus-fake: vm1 defined with 1 vcpus'),
      'the whole log, from its first line')
# Nova's tail: the log split at newlines, the last 'length' pieces joined
# (the log ends with a newline, so its last piece is empty).
check(console(sid, 2) == 'nimbus-fake: booted with 1 vcpus, 512 MiB RAM\n',
      f'length=2: the last line only ({console(sid, 2)!r})')
check(console(sid, '2') == console(sid, 2), 'length as a string, as novaclient sends it')
check(console(sid, 'x2') == 400 and console(sid, -5) == 400, 'a bad length answers 400')
check(act(sid, {'os-stop': None})[0] == 202, 'os-stop')
wait_for('SHUTOFF', status_is(sid, 'SHUTOFF'))
wait_for('the console log follows the guest (powered off)',
         lambda: str(console(sid)).rstrip('\n').endswith('nimbus-fake: powered off'))
check(act(sid, {'os-start': None})[0] == 202, 'os-start')
wait_for('ACTIVE again', status_is(sid, 'ACTIVE'))

# ---- Resize, revert.
check(used() == '1/512/1', f'node usage of flavor 1 ({used()})')
st, _, b = act(sid, {'resize': {'flavorRef': 'r2'}})
check(st == 202, f'resize accepted ({st} {b})')
s = server(sid)
check(s['status'] == 'RESIZE' or s['status'] == 'VERIFY_RESIZE',
      f'status RESIZE right after ({s["status"]}, {s["OS-EXT-STS:task_state"]})')
check(used() == '2/1024/2', f'the node claims the new flavor ({used()})')
wait_for('resize -> VERIFY_RESIZE', status_is(sid, 'VERIFY_RESIZE'))
s = server(sid)
check(s['flavor']['id'] == 'r2', 'the server shows the new flavor')
wait_for('the guest was redefined and booted with the new flavor (its console says so)',
         lambda: 'booted with 2 vcpus, 1024 MiB RAM' in str(console(sid)))
disk = os.path.join(state_dir, 'instances', sid, 'disk.qcow2')


def vsize():
    r = subprocess.run(['qemu-img', 'info', '-U', '--output=json', disk],
                       capture_output=True, text=True)
    import json
    return json.loads(r.stdout)['virtual-size'] if r.returncode == 0 else r.stderr


check(vsize() == 2 << 30, f'the overlay grew to the new flavor\'s 2 GiB ({vsize()})')
check(act(sid, {'os-stop': None})[0] == 409, 'VERIFY_RESIZE: os-stop refused (409)')
check(act(sid, {'resize': {'flavorRef': 'r4'}})[0] == 409, 'VERIFY_RESIZE: resize again 409')
st, _, b = act(sid, {'revertResize': None})
check(st == 202, f'revertResize accepted ({st} {b})')
wait_for('revert -> ACTIVE', status_is(sid, 'ACTIVE'))
check(server(sid)['flavor']['id'] == '1', 'the old flavor is back')
wait_for('the guest booted with the old flavor again',
         lambda: str(console(sid)).rstrip('\n').endswith('booted with 1 vcpus, 512 MiB RAM'))
check(used() == '1/512/1', f'the node is back to the old usage ({used()})')
check(act(sid, {'confirmResize': None})[0] == 409, 'confirmResize when not resized: 409')

# ---- Resize, confirm (stopped: stays stopped, as Nova does).
check(act(sid, {'os-stop': None})[0] == 202, 'os-stop')
wait_for('SHUTOFF', status_is(sid, 'SHUTOFF'))
check(act(sid, {'resize': {'flavorRef': 'r2'}})[0] == 202, 'resize of a stopped server')
wait_for('VERIFY_RESIZE', status_is(sid, 'VERIFY_RESIZE'))
check(server(sid)['OS-EXT-STS:power_state'] == 4, 'still powered off')
st, _, _ = act(sid, {'confirmResize': None})
check(st == 204, f'confirmResize 204 ({st})')
s = server(sid)
check((s['status'], s['flavor']['id']) == ('SHUTOFF', 'r2'), f'SHUTOFF with the new flavor ({s["status"]})')
check(used() == '2/1024/2', f'the node keeps the new usage only ({used()})')
check(act(sid, {'os-start': None})[0] == 202, 'os-start')
wait_for('ACTIVE with the new flavor, booted with 2 vcpus',
         lambda: status_is(sid, 'ACTIVE')() and
         str(console(sid)).rstrip('\n').endswith('booted with 2 vcpus, 1024 MiB RAM'))

# ---- Bad resizes.
for body, code, what in (({'resize': {'flavorRef': 'r2'}}, 400, 'same flavor'),
                         ({'resize': {'flavorRef': '1'}}, 400, 'a smaller disk'),
                         ({'resize': {'flavorRef': 'nope'}}, 400, 'unknown flavor'),
                         ({'resize': {}}, 400, 'no flavorRef'),
                         ({'resize': None}, 400, 'null body')):
    st, _, b = act(sid, body)
    check(st == code and 'badRequest' in (b or {}), f'resize to {what}: {code} ({st} {b})')
sql(cloud, f"UPDATE quotas SET hard_limit = 3 WHERE project_id = '{admin_project}' AND resource = 'cores'")
st, _, b = act(sid, {'resize': {'flavorRef': 'r4'}})
check(st == 403 and 'Quota exceeded for cores' in str(b), f'resize over the cores quota: 403 ({st} {b})')
sql(cloud, f"UPDATE quotas SET hard_limit = -1 WHERE project_id = '{admin_project}' AND resource = 'cores'")
check(server(sid)['status'] == 'ACTIVE', 'refused resizes change nothing')

# ---- Remote consoles.
st, _, b = act(sid, {'os-getVNCConsole': {'type': 'novnc'}})
url = (b or {}).get('console', {}).get('url', '')
check(st == 200 and b['console']['type'] == 'novnc' and url.startswith('http://127.0.0.1:')
      and '/?token=' in url, f'os-getVNCConsole: a novnc URL of the node\'s proxy ({st} {b})')
st, _, b = act(sid, {'os-getSerialConsole': {'type': 'serial'}})
check(st == 200 and b['console']['url'].startswith('ws://127.0.0.1:'),
      f'os-getSerialConsole: a ws:// URL ({st} {b})')
st, _, b = api.req('POST', f'/servers/{sid}/remote-consoles',
                   {'remote_console': {'protocol': 'vnc', 'type': 'novnc'}})
check(st == 200 and set(b['remote_console']) == {'protocol', 'type', 'url'},
      f'remote-consoles answers remote_console{{protocol, type, url}} ({st} {b})')
for body in ({'os-getVNCConsole': {'type': 'spice-html5'}}, {'os-getVNCConsole': {}},
             {'os-getSerialConsole': {'type': 'novnc'}}):
    st, _, _ = act(sid, body)
    check(st == 400, f'{body}: 400 ({st})')
st, _, _ = api.req('POST', f'/servers/{sid}/remote-consoles',
                   {'remote_console': {'protocol': 'rdp', 'type': 'rdp-html5'}})
check(st == 400, f'remote-consoles rdp: 400 ({st})')
tok1 = url.split('token=')[1]
check(sql(cloud, f"SELECT count(*) FROM console_tokens WHERE token_hash = '{tok1}'") == '0'
      and sql(cloud, "SELECT count(*) FROM console_tokens WHERE token_hash = encode(sha256('"
              + tok1 + "'::bytea), 'hex')") == '1', 'only the token\'s hash is stored')
st, _, text = ws_lib.connect(url.replace('token=', 'token=0') [:-1])
check(st == 403, f'the proxy refuses a bogus token: 403 ({st})')
st, _, text = ws_lib.connect(url.split('?')[0] + '?token=' + 'ab' * 32)
check(st == 403, f'the proxy refuses an unknown token: 403 ({st})')
st, _, _ = ws_lib.connect(url)
check(st == 503, f'a good token: the fake hypervisor has no console to relay to: 503 ({st})')
st, _, _ = ws_lib.connect(url)
check(st == 403, f'the token is used up: 403 ({st})')
st, _, b = act(sid, {'os-getVNCConsole': {'type': 'novnc'}})
sql(cloud, "UPDATE console_tokens SET expires_at = now() - interval '1 s' WHERE used_at IS NULL")
st, _, _ = ws_lib.connect(b['console']['url'])
check(st == 403, f'an expired token: 403 ({st})')
import socket  # noqa: E402
with socket.create_connection(('127.0.0.1', int(url.split(':')[2].split('/')[0]))) as c:
    c.sendall(b'GET /?token=x HTTP/1.1\r\nHost: x\r\n\r\n')
    check(b' 400 ' in c.recv(4096), 'a plain HTTP request (no WebSocket): 400')

# ---- Another project: 404.
_, ptok = compute_lib.make_project(cloud, tok, 'other')
other = Compute(cloud, ptok)
for body in ({'resize': {'flavorRef': 'r4'}}, {'createImage': {'name': 'x'}},
             {'os-getConsoleOutput': {}}, {'confirmResize': None},
             {'os-getVNCConsole': {'type': 'novnc'}}, {'rebuild': {'imageRef': IMAGE}}):
    st, _, _ = act(sid, body, other)
    check(st == 404, f'another project: {list(body)[0]} 404 ({st})')

# ---- Snapshot.
for body in ({'createImage': {}}, {'createImage': {'name': ''}},
             {'createImage': {'name': 'x', 'metadata': {'k': 5}}}):
    st, _, b = act(sid, body)
    check(st == 400, f'createImage {body["createImage"]}: 400 ({st})')
st, h, b = act(sid, {'createImage': {'name': 'snap1', 'metadata': {'purpose': 'test'}}})
check(st == 202 and '/v2/images/' in h.get('location', ''),
      f'createImage 202 with Location ({st} {h.get("location")})')
snap = h.get('location', '').rsplit('/', 1)[-1]
s = server(sid)
check(s['OS-EXT-STS:task_state'] in ('image_snapshot', None), 'task image_snapshot')
check(act(sid, {'createImage': {'name': 'again'}})[0] in (409, 202), 'a second snapshot')


def image():
    st, _, b = cloud.img('GET', f'/v2/images/{snap}', tok)
    return b if st == 200 else st


im = image()
check(isinstance(im, dict) and im['owner'] == admin_project and im['visibility'] == 'private'
      and im.get('image_type') == 'snapshot' and im.get('instance_uuid') == sid
      and im.get('base_image_ref') == IMAGE and im.get('purpose') == 'test'
      and im['disk_format'] == 'qcow2', f'a snapshot image of the project ({im})')
wait_for('the agent uploaded it: image active', lambda: (image() or {}).get('status') == 'active',
         timeout=30)
wait_for('task back to none', status_is(sid, 'ACTIVE'))
st, _, raw = cloud.img('GET', f'/v2/images/{snap}/file', tok, raw=True)
check(st == 200 and raw[:4] == b'QFI\xfb', f'its data is a qcow2 file ({st}, {raw[:4]!r})')
path = os.path.join(cloud.dir, 'snap.qcow2')
with open(path, 'wb') as f:
    f.write(raw)
r = subprocess.run(['qemu-img', 'info', '--output=json', path], capture_output=True, text=True)
info = json.loads(r.stdout) if r.returncode == 0 else {}
check(info.get('virtual-size') == 2 << 30 and 'backing-filename' not in info,
      f'flattened (no backing file), the 2 GiB disk ({info.get("virtual-size")})')
r = subprocess.run(['qemu-img', 'dd', '-f', 'qcow2', '-O', 'raw', 'bs=1M', 'count=1',
                    f'if={path}', f'of={path}.raw'], capture_output=True)
check(r.returncode == 0 and hashlib.sha512(open(f'{path}.raw', 'rb').read()).hexdigest()
      == hashlib.sha512(compute_lib.BLANK).hexdigest(), 'holding the base image\'s bytes')
check(not os.path.exists(os.path.join(state_dir, 'instances', sid, 'snapshot.qcow2')),
      'the agent removed its local copy')

# ---- Rebuild: the agent gives the guest a new disk from the new image,
# defines and starts it as it was; the API clears the task.
data2 = bytes(reversed(range(256))) * 4096
IMAGE2 = cloud.create_image(tok, name='blank2', min_ram=0)['id']
st, _ = cloud.upload(tok, IMAGE2, data2)
check(st == 204, f'second image uploaded ({st})')
disk = os.path.join(state_dir, 'instances', sid, 'disk.qcow2')


def backing():
    r = subprocess.run(['qemu-img', 'info', '--output=json', '-U', disk],
                       capture_output=True, text=True)
    return json.loads(r.stdout).get('backing-filename', '') if r.returncode == 0 else ''


check(IMAGE in backing(), f'the disk is an overlay of the first image ({backing()})')
for body, what in (({'rebuild': {'imageRef': '33333333-3333-4333-8333-333333333333'}}, 'unknown image'),
                   ({'rebuild': {'imageRef': 'nope'}}, 'bad imageRef'),
                   ({'rebuild': {}}, 'no imageRef')):
    st, _, b = act(sid, body)
    check(st == 400, f'rebuild with {what}: 400 ({st})')
check(server(sid)['OS-EXT-STS:task_state'] is None, 'refused rebuilds leave no task')
st, h, b = act(sid, {'rebuild': {'imageRef': IMAGE2, 'name': 'vm1-rebuilt'}})
check(st == 202 and b['server']['image']['id'] == IMAGE2 and b['server']['status'] == 'REBUILD',
      f'rebuild accepted: REBUILD with the new image ({st})')
req_id = h.get('x-openstack-request-id') or h.get('x-compute-request-id')
wait_for('rebuild -> ACTIVE', status_is(sid, 'ACTIVE'))
s = server(sid)
check(s['name'] == 'vm1-rebuilt' and s['image']['id'] == IMAGE2, 'new name and image')
check(IMAGE2 in backing(), f'the disk is a new overlay of the new image ({backing()})')
st, _, b = api.req('GET', f'/servers/{sid}/os-instance-actions')
acts = [a for a in b.get('instanceActions', []) if a['action'] == 'rebuild']
check(st == 200 and acts, 'a rebuild instance action')
st, _, b = api.req('GET', f"/servers/{sid}/os-instance-actions/{acts[0]['request_id']}")
ev = {e['event']: e['result'] for e in b['instanceAction']['events']}
check(ev.get('compute_rebuild_instance') == 'Success' and ev.get('api_rebuild') == 'Success'
      and b['instanceAction'].get('message') is None, f'its events succeeded ({ev})')
# A stopped server is rebuilt and stays stopped (Nova: SHUTOFF).
check(act(sid, {'os-stop': None})[0] == 202, 'stop')
wait_for('SHUTOFF', status_is(sid, 'SHUTOFF'))
check(act(sid, {'rebuild': {'imageRef': IMAGE, 'name': 'vm1'}})[0] == 202, 'rebuild of a stopped server')
wait_for('rebuild of a stopped server -> SHUTOFF', status_is(sid, 'SHUTOFF'))
check(IMAGE in backing(), 'back on the first image')
check(act(sid, {'os-start': None})[0] == 202, 'start')
wait_for('ACTIVE again', status_is(sid, 'ACTIVE'))
check(sql(cloud, "SELECT count(*) FROM instances WHERE NOT deleted AND task_state IS NOT NULL") == '0',
      'no server left with a task_state')

# ---- The same through the openstack client (2.1).
OSC = '/usr/bin/openstack'
if os.path.exists(OSC):
    osc = cloud.osc
    r = osc('console', 'log', 'show', '--lines', '3', 'vm1')
    check(r.returncode == 0 and 'booted with 2 vcpus' in r.stdout,
          f'openstack console log show --lines 3 ({r.returncode} {r.stderr[-200:]})')
    r = osc('console', 'url', 'show', '-f', 'json', 'vm1')
    check(r.returncode == 0 and '?token=' in r.stdout and '"novnc"' in r.stdout,
          f'openstack console url show ({r.returncode} {r.stdout[-200:]} {r.stderr[-300:]})')
    r = osc('console', 'url', 'show', '--serial', '-f', 'json', 'vm1')
    check(r.returncode == 0 and 'ws://' in r.stdout,
          f'openstack console url show --serial ({r.returncode} {r.stderr[-300:]})')
    r = osc('server', 'resize', '--flavor', 'r4.big', '--wait', 'vm1')
    check(r.returncode == 0 and status_is(sid, 'VERIFY_RESIZE')(),
          f'openstack server resize --flavor r4.big --wait ({r.returncode} {r.stderr[-300:]})')
    r = osc('server', 'resize', 'revert', 'vm1')
    check(r.returncode == 0, f'openstack server resize revert ({r.returncode} {r.stderr[-300:]})')
    wait_for('reverted: ACTIVE with r2', lambda: status_is(sid, 'ACTIVE')()
             and server(sid)['flavor']['id'] == 'r2')
    r = osc('server', 'image', 'create', '--name', 'snap-cli', '--wait', '-f', 'json', 'vm1')
    check(r.returncode == 0 and 'snap-cli' in r.stdout,
          f'openstack server image create --wait ({r.returncode} {r.stderr[-300:]})')
    wait_for('its task is done', status_is(sid, 'ACTIVE'))

# ---- Delete during VERIFY_RESIZE gives everything back.
check(act(sid, {'resize': {'flavorRef': 'r4'}})[0] == 202, 'resize to r4')
wait_for('VERIFY_RESIZE', status_is(sid, 'VERIFY_RESIZE'))
check(used() == '4/1024/2', f'usage of the larger flavor ({used()})')
st, _, _ = api.req('DELETE', f'/servers/{sid}')
check(st == 204, 'delete during VERIFY_RESIZE')
wait_for('gone', lambda: server(sid) == 404)
check(used() == '0/0/0', f'the node has all its resources back ({used()})')

agent.terminate()
try:
    rc = agent.wait(30)
except subprocess.TimeoutExpired:
    agent.kill()
    rc = 'timeout'
check(rc == 0, f'the agent (and its console proxy) exits cleanly on SIGTERM ({rc})')
check('AddressSanitizer' not in agent_log_tail() and 'runtime error' not in agent_log_tail(),
      'no sanitizer report from the agent')
scheds.stop()
check(cloud.stop() == 0, 'nimbus-api exits cleanly')
if compute_lib.failures:
    print('---- agent log\n' + agent_log_tail())
    print('---- api log\n' + cloud.log_tail(60))
done()
