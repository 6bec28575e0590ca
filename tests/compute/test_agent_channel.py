"""The agent channel end to end: nimbus-api + nimbus-scheduler +
nimbus-compute (fake hypervisor, http source, base images downloaded from
nimbus-image) against a throwaway database.

A node credential from `nimbus-manage node add`; the endpoints' answers to
wrong, foreign and missing credentials; a server created through the API
goes BUILD -> ACTIVE, os-stop -> SHUTOFF, os-start -> ACTIVE, reboot ->
ACTIVE, delete -> 404, each within seconds (long-poll wakeups, not the
poll deadline); kill -9 of the agent and a restart converge; the long poll
answers 304 at its deadline; events are idempotent by id."""
import atexit
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid

import compute_lib
from compute_lib import NET, Compute, Schedulers, check, done, nt, sql

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'image'))
from image_test import ImageCloud  # noqa: E402

NODE = 'agent-node-1'

cloud = ImageCloud()
compute_lib.seed(cloud)   # the shared network NET servers attach to
tok, body = cloud.token()
admin_project = body['token']['project']['id']
api = Compute(cloud, tok)
for r in ('instances', 'cores', 'ram'):
    sql(cloud, f"INSERT INTO quotas VALUES ('{admin_project}', '{r}', -1)")

# ---- Credentials.
token_file = os.path.join(cloud.dir, 'node.token')
r = cloud.manage('node', 'add', NODE, '--output', token_file)
check(r.returncode == 0, 'nimbus-manage node add writes the credential')
with open(token_file) as f:
    secret = f.read().strip()
check(len(secret) == 64 and oct(os.stat(token_file).st_mode & 0o777) == '0o600',
      'the credential is 256 bits in a 0600 file')
stored = sql(cloud, f"SELECT secret_hash FROM agent_nodes WHERE name = '{NODE}'")
check(stored == hashlib.sha256(secret.encode()).hexdigest() and secret not in stored,
      'only its SHA-256 is stored')
check(cloud.manage('node', 'add', NODE, check=False).returncode != 0,
      'adding the same node twice fails')
other_file = os.path.join(cloud.dir, 'other.token')
cloud.manage('node', 'add', 'agent-node-2', '--output', other_file)
with open(other_file) as f:
    other = f.read().strip()
check('agent-node-1 active' in cloud.manage('node', 'list').stdout, 'node list')


def chan(method, path, body=None, secret=secret, node=NODE):
    h = {'Authorization': 'Bearer ' + secret} if secret else {}
    return cloud.request('compute', method, f'/agent/v1/nodes/{node}{path}', body, h)


st, _, _ = chan('POST', '/register', {'vcpus': 1}, secret='0' * 64)
check(st == 401, f'a wrong credential answers 401 ({st})')
st, _, _ = chan('POST', '/register', {'vcpus': 1}, secret=None)
check(st == 401, f'no credential answers 401 ({st})')
st, _, _ = chan('GET', '/desired?since=0', secret=other)
check(st == 403, f"another node's credential answers 403 ({st})")
st, _, _ = chan('PUT', '/inventory', {'vcpus': 1})
check(st == 404, f'inventory before register answers 404 ({st})')
st, _, _ = chan('POST', '/register', b'{not json')
check(st == 400, f'a malformed document answers 400 ({st})')

# ---- Long poll without changes: 304 at the deadline.
st, _, b = chan('GET', '/desired?since=0')
check(st == 200 and b['instances'] == [], f'since=0 answers the document at once ({st})')
v0 = b['version']
t0 = time.time()
st, _, _ = chan('GET', f'/desired?since={v0}&wait=2')
el = time.time() - t0
check(st == 304 and 1.5 <= el < 4, f'an unchanged poll answers 304 after its wait ({el:.1f}s)')

# ---- Events: idempotent by id.
ev = {'events': [{'id': 'ev-1', 'uuid': str(uuid.uuid4()), 'event': 'created',
                  'detail': '', 'time': '2026-11-25T18:05:07.247000Z'}]}
st1, _, _ = chan('POST', '/events', ev)
st2, _, _ = chan('POST', '/events', ev)
n = sql(cloud, "SELECT count(*) FROM agent_events WHERE id = 'ev-1'")
check(st1 == 204 and st2 == 204 and n == '1', 'a retried event batch is stored once')

# ---- The agent.
# The image, uploaded to nimbus-image (which records its SHA-512).
data = bytes(range(256)) * 256
image_sha = hashlib.sha512(data).hexdigest()
IMAGE = cloud.create_image(tok, name='blank')['id']
st, _ = cloud.upload(tok, IMAGE, data)
check(st == 204, f'image uploaded ({st})')
agent_conf = compute_lib.write_agent_conf(cloud, NODE, token_file)
agent_log = os.path.join(cloud.dir, 'agent.log')


def start_agent():
    return compute_lib.start_agent(agent_conf, agent_log)


def agent_log_tail():
    with open(agent_log, 'rb') as f:
        return f.read().decode(errors='replace')[-3000:]


def wait_for(what, fn, timeout=15):
    deadline = time.time() + timeout
    t0 = time.time()
    v = None
    while time.time() < deadline:
        if agent.poll() is not None and agent.returncode not in (-9,):
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


agent = start_agent()
scheds = Schedulers(cloud, 1)


def cleanup():
    if agent.poll() is None:
        agent.kill()
    for p in scheds.procs:
        if p.poll() is None:
            p.kill()


atexit.register(cleanup)
wait_for('the agent registers: its compute node exists with a heartbeat',
         lambda: sql(cloud, f"""SELECT count(*) FROM compute_nodes WHERE
             hypervisor_hostname = '{NODE}' AND last_heartbeat > now() - interval '5 s'""") == '1')
hb1 = sql(cloud, f"SELECT last_heartbeat FROM compute_nodes WHERE hypervisor_hostname = '{NODE}'")
time.sleep(2.2)
hb2 = sql(cloud, f"SELECT last_heartbeat FROM compute_nodes WHERE hypervisor_hostname = '{NODE}'")
check(hb2 > hb1, 'inventory heartbeats move last_heartbeat')
check(sql(cloud, f"SELECT registered_at IS NOT NULL FROM agent_nodes WHERE name = '{NODE}'") == 't',
      'registration recorded')


def server(sid):
    return compute_lib.get_server(api, sid)


def status_is(sid, want):
    return compute_lib.status_is(api, sid, want)


st, _, b = api.req('POST', '/servers', {'server': {'name': 'vm1', 'imageRef': IMAGE,
                                                  'flavorRef': '1', 'networks': [{'uuid': NET}]}})
check(st == 202, f'server create 202 ({st} {b})')
sid = b['server']['id']
wait_for('BUILD -> ACTIVE through scheduler and agent', status_is(sid, 'ACTIVE'))
s = server(sid)
check(s['OS-EXT-SRV-ATTR:hypervisor_hostname'] == NODE and s['OS-EXT-STS:power_state'] == 1,
      'placed on the agent node, power state RUNNING')
st, _, b = chan('GET', '/desired?since=0')
inst = b['instances'][0] if st == 200 and b['instances'] else {}
check(inst.get('image', {}).get('sha512') == image_sha and inst.get('flavor', {}).get('ram_mb') == 512,
      'the desired document carries the image hash and the flavor')
base = os.path.join(cloud.dir, 'agent-state', 'images', 'base', IMAGE)
check(os.path.exists(base) and hashlib.sha512(open(base, 'rb').read()).hexdigest() == image_sha,
      'the agent downloaded the base image from nimbus-image')


def action(body):
    st, _, b = api.req('POST', f'/servers/{sid}/action', body)
    check(st == 202, f'{list(body)[0]} accepted ({st} {b})')


action({'os-stop': None})
wait_for('os-stop -> SHUTOFF', status_is(sid, 'SHUTOFF'), timeout=10)
check(server(sid)['OS-EXT-STS:power_state'] == 4, 'power state SHUTDOWN')
action({'os-start': None})
wait_for('os-start -> ACTIVE', status_is(sid, 'ACTIVE'), timeout=10)
action({'reboot': {'type': 'SOFT'}})
wait_for('reboot -> ACTIVE', status_is(sid, 'ACTIVE'), timeout=10)

# ---- kill -9 the agent with a stop pending; a new agent converges.
agent.kill()
agent.wait()
action({'os-stop': None})
time.sleep(1)
check(server(sid)['status'] == 'ACTIVE', 'no agent: the stop stays pending (task powering-off)')
agent = start_agent()
wait_for('restarted agent converges: SHUTOFF', status_is(sid, 'SHUTOFF'), timeout=20)
action({'os-start': None})
wait_for('and starts it again: ACTIVE', status_is(sid, 'ACTIVE'), timeout=10)

# A second server while the agent runs, then deletes.
st, _, b = api.req('POST', '/servers', {'server': {'name': 'vm2', 'imageRef': IMAGE,
                                                  'flavorRef': '1', 'networks': [{'uuid': NET}]}})
sid2 = b['server']['id']
wait_for('second server ACTIVE', status_is(sid2, 'ACTIVE'))
used = sql(cloud, f"SELECT vcpus_used FROM compute_nodes WHERE hypervisor_hostname = '{NODE}'")
check(used == '2', f'two vcpus used on the node ({used})')
for x in (sid, sid2):
    st, _, _ = api.req('DELETE', f'/servers/{x}')
    check(st == 204, f'delete {x[:8]} 204')
wait_for('deleted servers are gone (404)',
         lambda: server(sid) == 404 and server(sid2) == 404, timeout=10)
used = sql(cloud, f"SELECT vcpus_used FROM compute_nodes WHERE hypervisor_hostname = '{NODE}'")
check(used == '0', f'the node has its resources back ({used})')
events = sql(cloud, f"SELECT count(*) FROM agent_events WHERE instance_uuid = '{sid}'")
check(int(events) >= 2, f'the agent reported events for the instance ({events})')
acts = sql(cloud, f"""SELECT count(*) FROM instance_actions WHERE instance_uuid = '{sid}'
    AND finish_time IS NULL""")
check(acts == '0', 'every instance action of the server finished')

# ---- A revoked credential: 401.
cloud.manage('node', 'revoke', 'agent-node-2')
st, _, _ = chan('GET', '/desired?since=0', secret=other, node='agent-node-2')
check(st == 401, f'a revoked credential answers 401 ({st})')

agent.send_signal(signal.SIGTERM)
try:
    rc = agent.wait(30)
except subprocess.TimeoutExpired:
    agent.kill()
    rc = 'timeout'
check(rc == 0, f'the agent exits cleanly on SIGTERM ({rc})')
t0 = time.time()
codes = scheds.stop()
check(cloud.stop() == 0 and time.time() - t0 < 10,
      'nimbus-api stops promptly with long polls held')
if compute_lib.failures:
    print('---- agent log\n' + agent_log_tail())
    print('---- api log\n' + cloud.log_tail(60))
done()
