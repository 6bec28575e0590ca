"""Two hosts end to end, instances created through the API: nimbus-api,
nimbus-scheduler and nimbus-image in the root network namespace; two
"hosts" in network namespaces joined by an underlay (a bridge in the root
namespace with a veth to each host), each running nimbus-network (VXLAN)
and nimbus-compute (oci: real containers through runc, a busybox image
uploaded to nimbus-image with container_format docker).

Checks: the agents register as runc hosts; two servers of project A on
network A land one per host (different_host hint), reach ACTIVE with the
API's addresses on their eth0, and ping each other across VXLAN; their
console shows the container's own output; a server of project B on
network B (the same CIDR) cannot reach them; with a security group that
allows only ICMP, ping goes through and TCP does not (until a rule for the
port is added); stop and start of a container through the API (its port
is plugged again); deleting the servers leaves no device, nftables table,
dnsmasq, container or instance directory on either host.  Needs root,
runc, dnsmasq, nft and busybox; skips (77) otherwise."""
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'compute'))
sys.path.insert(0, os.path.join(HERE, '..', 'image'))
import compute_lib  # noqa: E402
from compute_lib import Compute, Schedulers, check, done, make_project, nt, sql  # noqa: E402
from netns_hosts import COMPUTE, NETAGENT, Hosts  # noqa: E402
from test_netagent_netns import can_netns, sh  # noqa: E402

if not (os.path.exists(NETAGENT) and os.path.exists(COMPUTE)):
    print('nimbus-network or nimbus-compute is not built: skipped')
    sys.exit(77)
if not can_netns() or not all(shutil.which(t) for t in ('runc', 'dnsmasq', 'nft', 'busybox',
                                                        'nsenter')):
    print('needs root, network namespaces, runc, dnsmasq, nft, busybox and nsenter: skipped')
    sys.exit(77)
GUEST = os.path.join(nt.BUILD, 'agent-test-guest')
SOURCE = os.environ.get('NIMBUS_SOURCE', os.path.join(HERE, '..', '..'))
if subprocess.run([os.path.join(SOURCE, 'deploy', 'build-guest'), GUEST],
                  capture_output=True).returncode != 0:
    print('cannot build the test guest (busybox rootfs): skipped')
    sys.exit(77)

HOSTS = ('ha', 'hb')
cloud = None


def leftover_containers():
    """Containers and dnsmasq the agents may have left (on failure): runc
    state is per host."""
    if cloud and cloud.dir:
        for h in HOSTS:
            root = os.path.join(cloud.dir, f'state-{h}', 'compute', 'runc')
            if os.path.isdir(root):
                out = subprocess.run(['runc', '--root', root, 'list', '-q'], capture_output=True,
                                     text=True).stdout.split()
                for c in out:
                    subprocess.run(['runc', '--root', root, 'delete', '--force', c],
                                   capture_output=True)
            inst = os.path.join(cloud.dir, f'state-{h}', 'compute', 'instances')
            for u in os.listdir(inst) if os.path.isdir(inst) else ():
                subprocess.run(['umount', '-l', os.path.join(inst, u, 'rootfs')],
                               capture_output=True)
        for p in os.listdir('/proc'):
            try:
                with open(f'/proc/{p}/cmdline', 'rb') as f:
                    cmd = f.read()
            except OSError:
                continue
            if p.isdigit() and cmd.startswith(b'dnsmasq') and cloud.dir.encode() in cmd:
                os.kill(int(p), 9)


# ---- The underlay, the two hosts and the control plane in the root
# namespace, reachable over the underlay.
H = Hosts('ce', HOSTS, on_cleanup=leftover_containers)
cloud, NS, NSP, procs, agents = H.cloud, H.ns, H.nsp, H.procs, H.agents
url, logs, wait_for = H.url, H.logs, H.wait_for
tok, body = cloud.token()
admin = Compute(cloud, tok)


# A container image: the busybox rootfs tarball, with the command the
# container runs (console output, a web server on 8080 for the TCP check).
CMD = ("echo \"nimbus-e2e: up on $(hostname)\"; busybox httpd -p 8080 -h /etc; "
       "trap 'exit 0' TERM; while :; do sleep 1; done")
img = cloud.create_image(tok, name='busybox', disk_format='raw', container_format='docker',
                         visibility='public', os_command_line=CMD)
with open(os.path.join(GUEST, 'rootfs.tar'), 'rb') as f:
    st, _ = cloud.upload(tok, img['id'], f.read())
check(st == 204, 'container image uploaded to nimbus-image (container_format docker)')
IMAGE = img['id']

for h in HOSTS:
    H.start_agents(h)
scheds = Schedulers(cloud, 1)
procs.extend(scheds.procs)
wait_for('both nodes register as runc hosts', lambda: sql(
    cloud, "SELECT count(*) FROM compute_nodes WHERE upper(hypervisor_type) = 'RUNC' AND "
           "last_heartbeat > now() - interval '5 s'") == '2')

# ---- Projects, networks (the same CIDR), a security group allowing ICMP only.
pa, ta = make_project(cloud, tok, 'proj-a')
pb, tb = make_project(cloud, tok, 'proj-b')
A, B = Compute(cloud, ta), Compute(cloud, tb)


def net(token, method, path, body=None, want=None):
    st, _, b = cloud.request('network', method, '/v2.0' + path, body, {'X-Auth-Token': token})
    if want is not None:
        assert st == want, (method, path, st, b)
    return b


def mknet(token, name):
    nid = net(token, 'POST', '/networks', {'network': {'name': name}}, 201)['network']['id']
    net(token, 'POST', '/subnets', {'subnet': {'network_id': nid, 'ip_version': 4,
                                               'cidr': '10.0.0.0/24'}}, 201)
    return nid


NET_A, NET_B = mknet(ta, 'net-a'), mknet(tb, 'net-b')
sg = net(ta, 'POST', '/security-groups', {'security_group': {'name': 'icmp-only'}},
         201)['security_group']
for r in sg['security_group_rules']:
    if r['direction'] == 'ingress':
        net(ta, 'DELETE', f"/security-group-rules/{r['id']}", want=204)
net(ta, 'POST', '/security-group-rules', {'security_group_rule': {
    'security_group_id': sg['id'], 'direction': 'ingress', 'ethertype': 'IPv4',
    'protocol': 'icmp', 'remote_ip_prefix': '0.0.0.0/0'}}, 201)


def server(api, sid):
    st, _, b = api.req('GET', f'/servers/{sid}')
    return b['server'] if st == 200 else st


def create(api, name, net_id, ip, **extra):
    srv = {'name': name, 'imageRef': IMAGE, 'flavorRef': '1',
           'networks': [{'uuid': net_id, 'fixed_ip': ip}]}
    hints = extra.pop('hints', None)
    srv.update(extra)
    body = {'server': srv}
    if hints:
        body['os:scheduler_hints'] = hints
    st, _, b = api.req('POST', '/servers', body)
    check(st == 202, f'create {name} ({st} {b if st != 202 else ""})')
    return b['server']['id'] if st == 202 else None


def active(api, sid):
    def f():
        s = server(api, sid)
        return not isinstance(s, int) and s['status'] == 'ACTIVE' and s['OS-EXT-STS:task_state'] is None
    return f


t0 = time.time()
a1 = create(A, 'a1', NET_A, '10.0.0.50', security_groups=[{'name': 'icmp-only'}])
wait_for('a1 ACTIVE', active(A, a1), timeout=90)
t_one = time.time() - t0
a2 = create(A, 'a2', NET_A, '10.0.0.51', security_groups=[{'name': 'icmp-only'}],
            hints={'different_host': [a1]})
b1 = create(B, 'b1', NET_B, '10.0.0.60')
wait_for('a2 and b1 ACTIVE', lambda: active(A, a2)() and active(B, b1)(), timeout=90)
print(f'server create -> ACTIVE (container, first on its host): {t_one:.1f} s')
s1, s2, s3 = server(A, a1), server(A, a2), server(B, b1)
host_of = {sid: sql(cloud, f"SELECT node FROM instances WHERE uuid = '{sid}'")
           for sid in (a1, a2, b1)}
check(host_of[a1] in HOSTS and host_of[a2] in HOSTS and host_of[a1] != host_of[a2],
      f'a1 and a2 on different hosts ({host_of})')
check(s1['addresses'].get('net-a', [{}])[0].get('addr') == '10.0.0.50' and
      s2['addresses'].get('net-a', [{}])[0].get('addr') == '10.0.0.51',
      'the API shows the requested addresses')


def runc(sid, *cmd, timeout=20):
    root = os.path.join(cloud.dir, f'state-{host_of[sid]}', 'compute', 'runc')
    return subprocess.run(['runc', '--root', root, 'exec', f'nimbus-{sid}'] + list(cmd),
                          capture_output=True, text=True, timeout=timeout)


def ping(sid, ip, count=2):
    r = runc(sid, 'busybox', 'ping', '-c', str(count), '-W', '1', ip)
    return r.returncode == 0


def tcp(sid, ip):
    # nc, not wget: the static busybox's wget needs NSS for the port name.
    r = runc(sid, 'sh', '-c', "printf 'GET /passwd HTTP/1.0\\r\\n\\r\\n' | "
             f"busybox nc -w 2 {ip} 8080")
    return 'root:' in r.stdout


for sid, want in ((a1, '10.0.0.50'), (a2, '10.0.0.51'), (b1, '10.0.0.60')):
    r = runc(sid, 'cat', '/proc/net/fib_trie')
    check(want in r.stdout, f'{server(A if sid != b1 else B, sid)["name"]} has {want} on eth0')
    r = runc(sid, 'cat', '/sys/class/net/eth0/mtu')
    check(r.stdout.strip() == '1450', f'... with the network MTU ({r.stdout.strip()})')

# Console: the container's own output, on the node (and through the API
# when the console path carries it).
for sid in (a1, a2):
    log = os.path.join(cloud.dir, f'state-{host_of[sid]}', 'compute', 'instances', sid,
                       'console.log')
    with open(log) as f:
        check('nimbus-e2e: up on a' in f.read(), f'console log of {sid[:8]} shows its output')
    # The agent's console endpoint (what nimbus-api's console path reads),
    # on the node's loopback.
    with open(os.path.join(cloud.dir, f'{host_of[sid]}.token')) as f:
        secret = f.read().strip()
    r = subprocess.run(['nsenter', f'--net=/run/netns/{NS[host_of[sid]]}', 'curl', '-sf',
                        '-H', f'Authorization: Bearer {secret}',
                        f'http://127.0.0.1:8790/v1/instances/{sid}/console?length=20'],
                       capture_output=True, text=True)
    check('nimbus-e2e: up on a' in r.stdout,
          f"the node's console endpoint serves {sid[:8]}'s output ({r.stdout.strip()[:60]!r})")
st, _, b = A.req('POST', f'/servers/{a1}/action', {'os-getConsoleOutput': {'length': 50}})
print(f"os-getConsoleOutput through the API: {st} {json.dumps(b)[:200]}")

# Across VXLAN, within project A; isolation from project B.
wait_for('a1 pings a2 across VXLAN', lambda: ping(a1, '10.0.0.51'), timeout=20)
check(ping(a2, '10.0.0.50'), 'a2 pings a1')
check(not ping(b1, '10.0.0.50') and not ping(b1, '10.0.0.51'),
      'b1 (network B, same CIDR) cannot reach a1 or a2')
# Security group: ICMP only.
check(not tcp(a1, '10.0.0.51'), 'TCP to a2:8080 blocked by the ICMP-only group')
rule = net(ta, 'POST', '/security-group-rules', {'security_group_rule': {
    'security_group_id': sg['id'], 'direction': 'ingress', 'ethertype': 'IPv4',
    'protocol': 'tcp', 'port_range_min': 8080, 'port_range_max': 8080,
    'remote_ip_prefix': '0.0.0.0/0'}}, 201)['security_group_rule']
wait_for('a rule for tcp/8080 lets it through (the server was there all along)',
         lambda: tcp(a1, '10.0.0.51'), timeout=20)
net(ta, 'DELETE', f"/security-group-rules/{rule['id']}", want=204)
wait_for('and removing the rule blocks it again', lambda: not tcp(a1, '10.0.0.51'), timeout=20)

# Stop and start a container through the API: its port comes back.
st, _, _ = A.req('POST', f'/servers/{a2}/action', {'os-stop': None})
wait_for('os-stop a2 -> SHUTOFF', lambda: (server(A, a2) or {}).get('status') == 'SHUTOFF',
         timeout=30)
check(not ping(a1, '10.0.0.51', count=1), 'a stopped container does not answer')
st, _, _ = A.req('POST', f'/servers/{a2}/action', {'os-start': None})
wait_for('os-start a2 -> ACTIVE', active(A, a2), timeout=30)
wait_for('a2 answers again after start', lambda: ping(a1, '10.0.0.51'), timeout=20)

# An interface attached to the running a1 (os-interface) on another network
# of project A: eth1 with its address; detached: gone.
NET_C = net(ta, 'POST', '/networks', {'network': {'name': 'net-c'}}, 201)['network']['id']
net(ta, 'POST', '/subnets', {'subnet': {'network_id': NET_C, 'ip_version': 4,
                                        'cidr': '10.9.9.0/24'}}, 201)
st, _, b = A.req('POST', f'/servers/{a1}/os-interface', {'interfaceAttachment': {
    'net_id': NET_C, 'fixed_ips': [{'ip_address': '10.9.9.9'}]}})
check(st == 200, f'os-interface attach ({st} {b})')
pid_c = b.get('interfaceAttachment', {}).get('port_id') if isinstance(b, dict) else None
wait_for('the attached port is eth1 of a1 with its address',
         lambda: '10.9.9.9' in runc(a1, 'cat', '/proc/net/fib_trie').stdout and
         runc(a1, 'cat', '/sys/class/net/eth1/mtu').stdout.strip() == '1450', timeout=30)
check(ping(a1, '10.0.0.51'), 'a1 still reaches a2 on eth0')
if pid_c:
    st, _, _ = A.req('DELETE', f'/servers/{a1}/os-interface/{pid_c}')
    check(st == 202, f'os-interface detach ({st})')
    wait_for('detached: a1 has no eth1 any more',
             lambda: runc(a1, 'cat', '/sys/class/net/eth1/mtu').returncode != 0, timeout=30)

# ---- Delete: nothing left on either host.
for api, sid in ((A, a1), (A, a2), (B, b1)):
    st, _, _ = api.req('DELETE', f'/servers/{sid}')
    check(st == 204, f'delete {sid[:8]}')
wait_for('servers gone (404)', lambda: all(server(api, sid) == 404 for api, sid in
                                           ((A, a1), (A, a2), (B, b1))), timeout=30)


def leftovers(h):
    left = [d['ifname'] for d in json.loads(sh('ip', '-j', 'link', 'show', ns=NS[h]).stdout)
            if d['ifname'].startswith(('nbr-', 'vx-', 'tap', 'tpp'))]
    if 'nimbus' in sh('nft', 'list', 'tables', ns=NS[h]).stdout:
        left.append('nft table')
    if any(n.startswith(NSP[h]) for n in sh('ip', 'netns', 'list').stdout.split()):
        left.append('dhcp namespace')
    root = os.path.join(cloud.dir, f'state-{h}', 'compute', 'runc')
    left += subprocess.run(['runc', '--root', root, 'list', '-q'], capture_output=True,
                           text=True).stdout.split()
    inst = os.path.join(cloud.dir, f'state-{h}', 'compute', 'instances')
    left += os.listdir(inst) if os.path.isdir(inst) else []
    return left


for h in HOSTS:
    wait_for(f'nothing left on {h}: devices, nftables, dnsmasq, containers, instance dirs',
             lambda: leftovers(h) == [], timeout=30)
    print(h, 'left:', leftovers(h))
def cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read()
    except OSError:
        return b''


dns = [p for p in os.listdir('/proc') if p.isdigit() and cmdline(p).startswith(b'dnsmasq')
       and cloud.dir.encode() in cmdline(p)]
check(dns == [], f'no dnsmasq of the test left ({dns})')

H.stop_agents()
scheds.stop()
if compute_lib.failures:
    for h in HOSTS:
        print(logs(h))
    print('---- api log\n' + cloud.log_tail(80))
done()
