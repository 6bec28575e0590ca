"""Helpers shared by the compute tests: a Cloud with compute calls, fake
compute hosts inserted into PostgreSQL, and nimbus-scheduler processes."""
import atexit
import json
import os
import signal
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'api'))
import nimbus_test as nt  # noqa: E402

IMAGE = '11111111-1111-1111-1111-111111111111'
NET = '22222222-2222-2222-2222-222222222222'

failures = []


def check(cond, what):
    if cond:
        print('ok   ', what)
    else:
        print('FAIL ', what)
        failures.append(what)


def done():
    if failures:
        print(f'{len(failures)} check(s) failed:', *failures, sep='\n  ')
        sys.exit(1)
    print('all checks passed')


class Compute:
    def __init__(self, cloud, token):
        self.c = cloud
        self.token = token

    def req(self, method, path, body=None, headers=None):
        h = {'X-Auth-Token': self.token}
        h.update(headers or {})
        return self.c.request('compute', method, '/v2.1' + path, body, h)

    def create(self, name='vm', flavor='1', **extra):
        srv = {'name': name, 'imageRef': IMAGE, 'flavorRef': flavor,
               'networks': [{'uuid': NET}]}
        hints = extra.pop('hints', None)
        srv.update(extra)
        body = {'server': srv}
        if hints:
            body['os:scheduler_hints'] = hints
        return self.req('POST', '/servers', body)


def sql(cloud, q):
    return nt.psql(cloud.conninfo, q)


def add_hosts(cloud, n, vcpus=8, ram=16384, disk=100, az='nova', prefix='host', cpu_ratio=2.0):
    sql(cloud, f"""INSERT INTO compute_nodes (host, hypervisor_hostname, vcpus, memory_mb,
        local_gb, cpu_allocation_ratio, ram_allocation_ratio, disk_allocation_ratio,
        availability_zone, last_heartbeat)
        SELECT '{prefix}' || g, '{prefix}' || g || '.nimbus', {vcpus}, {ram}, {disk},
               {cpu_ratio}, 1.0, 1.0, '{az}', now() + interval '1 hour'
          FROM generate_series(1, {n}) g""")


def make_project(cloud, admin_token, name, password=None):
    """A project with a member user u-<name> (with 'password', or a random
    one); returns (project_id, member token)."""
    h = {'X-Auth-Token': admin_token}
    st, _, b = cloud.request('identity', 'POST', '/v3/projects',
                             {'project': {'name': name, 'domain_id': 'default'}}, h)
    assert st == 201, (st, b)
    pid = b['project']['id']
    pw = password or 'pw-' + uuid.uuid4().hex[:8]
    st, _, b = cloud.request('identity', 'POST', '/v3/users',
                             {'user': {'name': 'u-' + name, 'domain_id': 'default',
                                       'password': pw, 'default_project_id': pid}}, h)
    assert st == 201, (st, b)
    uid = b['user']['id']
    st, _, b = cloud.request('identity', 'GET', '/v3/roles?name=member', None, h)
    rid = b['roles'][0]['id']
    st, _, _ = cloud.request('identity', 'PUT', f'/v3/projects/{pid}/users/{uid}/roles/{rid}',
                             None, h)
    assert st in (200, 204), st
    tok, _ = cloud.token(user='u-' + name, password=pw, project=name)
    return pid, tok


def write_agent_conf(cloud, node, token_file, state_dir=None, hypervisor='fake',
                     console=False, agent_extra='', source_extra='poll_wait = 20\nheartbeat = 1\n',
                     reconcile_interval=1, stop_timeout=None, hv_extra=''):
    """The configuration of a nimbus-compute of node 'node' talking to the
    cloud's agent channel with the credential in 'token_file' and fetching
    images from its nimbus-image (cloud.image_port); returns its path.
    With a real hypervisor (hypervisor='libvirt') a test gives the guest
    more time: a longer reconcile_interval, a stop_timeout (seconds) and
    a slower heartbeat in source_extra."""
    path = os.path.join(cloud.dir, f'agent-{node}.conf')
    console_section = '[console]\nlisten = 127.0.0.1\nport = 0\n' if console else ''
    if stop_timeout is not None:
        agent_extra = f'stop_timeout = {stop_timeout}\n' + agent_extra
    with open(path, 'w') as f:
        f.write(f"""[agent]
node = {node}
state_dir = {state_dir or os.path.join(cloud.dir, 'agent-state')}
image_source_dir = {cloud.dir}/no-such-dir
image_fetch = http
image_url = http://127.0.0.1:{cloud.image_port}
reconcile_interval = {reconcile_interval}
delete_grace = 5
listen = 127.0.0.1
port = 0
{agent_extra}{console_section}[hypervisor]
type = {hypervisor}
{hv_extra}[source]
type = http
api_url = {cloud.url('compute', '/agent/v1')}
node_token_file = {token_file}
{source_extra}""")
    return path


def start_agent(conf, log_path):
    """nimbus-compute with 'conf', output appended to 'log_path' (under
    NIMBUS_API_WRAPPER when the suite runs one, e.g. valgrind)."""
    log = open(log_path, 'ab')
    wrapper = os.environ.get('NIMBUS_API_WRAPPER', '').split()
    return subprocess.Popen(wrapper + [os.path.join(nt.BUILD, 'compute-agent/nimbus-compute'),
                                       '--config', conf], stdout=log, stderr=log)


def remove_domains(sids, uris=('qemu:///system',)):
    """Destroys and undefines the domains of servers 'sids' on the
    libvirtds at 'uris' (a test's clean-up; missing ones are fine)."""
    for u in sids:
        for uri in uris:
            for cmd in (['destroy'], ['undefine', '--managed-save']):
                subprocess.run(['virsh', '-q', '-c', uri, *cmd, 'nimbus-' + u],
                               capture_output=True)


def kill_procs(procs):
    """Kills those of 'procs' still running."""
    for p in procs:
        if p.poll() is None:
            p.kill()


def kill_at_exit(*procs):
    """Kills, when the test exits, those of 'procs' still running."""
    atexit.register(kill_procs, procs)


def get_server(api, sid):
    """GET /servers/{sid}: the server, or the status code of the answer."""
    st, _, b = api.req('GET', f'/servers/{sid}')
    return b['server'] if st == 200 else st


def status_is(api, sid, want):
    """A condition: the server's status is 'want' with no task."""
    def f():
        s = get_server(api, sid)
        got = s if isinstance(s, int) else (s['status'], s['OS-EXT-STS:task_state'])
        return got == want or got == (want, None)
    return f


def server_action(api, sid, body):
    return api.req('POST', f'/servers/{sid}/action', body)


class AgentRun:
    """A nimbus-compute started by a test (start_agent), with what tests of
    server actions ask again and again: wait for a condition while the
    agent lives, a server's view, its status, an action."""

    def __init__(self, proc, log_path, api):
        self.proc = proc
        self.log_path = log_path
        self.api = api

    def log_tail(self, n=3000):
        with open(self.log_path, 'rb') as f:
            return f.read().decode(errors='replace')[-n:]

    def wait_for(self, what, fn, timeout=20):
        t0 = time.time()
        v = None
        while time.time() < t0 + timeout:
            if self.proc.poll() is not None:
                check(False, f'{what}: nimbus-compute exited with {self.proc.returncode}\n'
                      + self.log_tail())
                return None
            v = fn()
            if v:
                check(True, f'{what} ({time.time() - t0:.1f}s)')
                return v
            time.sleep(0.1)
        check(False, f'{what} (last: {v!r})')
        return None

    def server(self, sid, a=None):
        return get_server(a or self.api, sid)

    def status_is(self, sid, want):
        return status_is(self.api, sid, want)

    def status(self, sid):
        """The server's status, or the HTTP status of the GET (404)."""
        s = get_server(self.api, sid)
        return s if isinstance(s, int) else s['status']

    def act(self, sid, body, a=None):
        return server_action(a or self.api, sid, body)


class MoveRun(AgentRun):
    """nimbus-compute agents of 'nodes', for tests of moves between hosts
    (test_migrate, test_live_migrate with the fake hypervisor;
    test_migrate_libvirt, test_live_migrate_libvirt with real guests):
    each with its own state directory and a console listener (which serves
    disks to the other nodes); AgentRun's helpers, waiting while every
    agent lives (checking every 'poll' seconds), the hosts' usage.  The
    fake's agents register the libvirt URI qemu+tcp://<node>.example/system;
    'hv_extra' (node -> [hypervisor] lines) replaces it, and 'conf' gives
    write_agent_conf() more arguments.  'agents', 'logs', 'states' and
    'confs' are per node (a test may put a restarted agent in 'agents')."""

    def __init__(self, cloud, api, nodes, hypervisor='fake', hv_extra=None, poll=0.05,
                 **conf):
        self.cloud, self.api, self.nodes, self.poll = cloud, api, nodes, poll
        self.agents, self.logs, self.states, self.confs = {}, {}, {}, {}
        for n in nodes:
            tf = os.path.join(cloud.dir, f'{n}.token')
            cloud.manage('node', 'add', n, '--output', tf)
            self.states[n] = os.path.join(cloud.dir, f'state-{n}')
            extra = (hv_extra or {}).get(n, f'migration_uri = qemu+tcp://{n}.example/system\n')
            self.confs[n] = write_agent_conf(cloud, n, tf, state_dir=self.states[n],
                                             hypervisor=hypervisor, console=True,
                                             hv_extra=extra, **conf)
            self.logs[n] = os.path.join(cloud.dir, f'agent-{n}.log')
            self.agents[n] = start_agent(self.confs[n], self.logs[n])

    def inst_dir(self, n, sid):
        """Where node 'n' keeps the storage of server 'sid'."""
        return os.path.join(self.states[n], 'instances', sid)

    def console_file(self, n, sid):
        """The console log of 'sid' on node 'n' ('' when there is none)."""
        try:
            with open(os.path.join(self.inst_dir(n, sid), 'console.log'), 'rb') as f:
                return f.read().decode(errors='replace')
        except OSError:
            return ''

    def kill(self):
        kill_procs(self.agents.values())

    def node_log_tail(self, n, size=3000):
        with open(self.logs[n], 'rb') as f:
            return f.read().decode(errors='replace')[-size:]

    def wait_for(self, what, fn, timeout=30):
        t0 = time.time()
        v = None
        while time.time() < t0 + timeout:
            for n, p in self.agents.items():
                if p.poll() is not None:
                    check(False, f'{what}: nimbus-compute {n} exited with {p.returncode}\n'
                          + self.node_log_tail(n))
                    return None
            v = fn()
            if v:
                check(True, f'{what} ({time.time() - t0:.1f}s)')
                return v
            time.sleep(self.poll)
        check(False, f'{what} (last: {v!r})\n'
              + ''.join(self.node_log_tail(n, 1500) for n in self.nodes))
        return None

    def used(self, n):
        """vcpus/ram/disk in use on node 'n'."""
        return sql(self.cloud, f"""SELECT vcpus_used || '/' || memory_mb_used || '/' ||
                                   local_gb_used FROM compute_nodes
                                   WHERE hypervisor_hostname = '{n}'""")

    def host_of(self, sid):
        return self.server(sid)['OS-EXT-SRV-ATTR:hypervisor_hostname']

    def other(self, n):
        return next(x for x in self.nodes if x != n)


class Schedulers:
    """n nimbus-scheduler processes on the cloud's configuration."""

    def __init__(self, cloud, n, extra=''):
        self.procs = []
        self.cloud = cloud
        conf = os.path.join(cloud.dir, 'sched.conf')
        with open(cloud.config) as f:
            text = f.read()
        with open(conf, 'w') as f:
            f.write(text + '\n[scheduler]\nsweep_interval = 1\n' + extra + '\n')
        wrapper = os.environ.get('NIMBUS_API_WRAPPER', '').split()
        for i in range(n):
            log = open(os.path.join(cloud.dir, f'sched{i}.log'), 'ab')
            self.procs.append(subprocess.Popen(
                wrapper + [os.path.join(nt.BUILD, 'scheduler/nimbus-scheduler'),
                           '--config', conf], stdout=log, stderr=log))

    def wait_idle(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if sql(self.cloud, 'SELECT count(*) FROM build_requests') == '0':
                return True
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f'scheduler exited with {p.returncode}')
            time.sleep(0.1)
        return False

    def stop(self):
        codes = []
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                codes.append(p.wait(30))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append('timeout')
        return codes

    def logs(self):
        out = ''
        for i in range(len(self.procs)):
            with open(os.path.join(self.cloud.dir, f'sched{i}.log'), 'rb') as f:
                out += f.read().decode(errors='replace')[-3000:]
        return out


def seed(cloud):
    """What the tests create servers from, in the cloud's own tables: a
    public active image IMAGE (nimbus-image's table) and a shared network
    NET (the network module's), so that server creation validates them as
    it does for users.  Tests that need the image service itself run it
    (tests/image/image_test.py ImageCloud) and upload through its API."""
    sql(cloud, "INSERT INTO images (id, name, owner, status, visibility, disk_format, "
               f"container_format, size) VALUES ('{IMAGE}', 'cirros', 'seed', 'active', "
               "'public', 'qcow2', 'bare', 1024) ON CONFLICT DO NOTHING")
    sql(cloud, "INSERT INTO net.networks (id, project_id, name, shared, mtu, network_type) "
               f"VALUES ('{NET}', 'seed', 'seed-net', true, 1450, 'vxlan') ON CONFLICT DO NOTHING")


VIRSH = ['virsh', '-q', '-c', 'qemu:///system']


def libvirt_guest_or_skip():
    """Exits 77 (skipped) unless this runs as root with libvirtd reachable,
    nimbus-compute built and the test guest buildable (deploy/build-guest);
    returns the guest's directory."""
    def skip(why):
        print('skipped:', why)
        sys.exit(77)
    if os.geteuid() != 0:
        skip('not root')
    if not os.path.exists(os.path.join(nt.BUILD, 'compute-agent', 'nimbus-compute')):
        skip('nimbus-compute not built')
    if subprocess.run(VIRSH + ['version'], capture_output=True).returncode != 0:
        skip('libvirtd not reachable (run deploy/libvirt-setup)')
    guest = os.path.join(nt.BUILD, 'agent-test-guest')
    if subprocess.run([os.path.join(nt.SOURCE, 'deploy', 'build-guest'), guest],
                      capture_output=True).returncode != 0:
        skip('cannot build the test guest')
    return guest


def admin_cloud():
    """An ImageCloud (nimbus-api and nimbus-image) with the shared network
    NET, the admin's token and Compute client, and no instance, core or RAM
    quota on the admin's project: (cloud, token, admin project id, api)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'image'))
    from image_test import ImageCloud
    cloud = ImageCloud()
    seed(cloud)
    tok, body = cloud.token()
    project = body['token']['project']['id']
    for r in ('instances', 'cores', 'ram'):
        sql(cloud, f"INSERT INTO quotas VALUES ('{project}', '{r}', -1)")
    return cloud, tok, project, Compute(cloud, tok)


BLANK = bytes(range(256)) * 4096       # 1 MiB: blank_image()'s bytes


def blank_image(cloud, tok, **fields):
    """A 1 MiB raw image named 'blank' (more create fields in 'fields'),
    uploaded and checked; its id."""
    img = cloud.create_image(tok, name='blank', **fields)['id']
    st, _ = cloud.upload(tok, img, BLANK)
    check(st == 204, f'base image uploaded ({st})')
    return img


def upload_image(cloud, tok, name, path, disk_format, **props):
    """The file at 'path' uploaded to the cloud's nimbus-image as a public
    image (container_format = disk_format); returns its id."""
    img = cloud.create_image(tok, name=name, disk_format=disk_format,
                             container_format=disk_format, visibility='public', **props)
    with open(path, 'rb') as f:
        st, b = cloud.upload(tok, img['id'], f.read())
    check(st == 204, f'{name} uploaded ({st} {b})')
    return img['id']


def upload_guest(cloud, tok, guest, cmdline='console=ttyS0 quiet'):
    """The test guest uploaded to the cloud's nimbus-image as an aki/ari/ami
    triple (public; the ami names the others and the kernel command line
    'cmdline', a serial console by default); returns (kernel, ramdisk,
    image) ids."""
    kernel = upload_image(cloud, tok, 'guest-kernel', os.path.join(guest, 'vmlinuz'), 'aki')
    ramdisk = upload_image(cloud, tok, 'guest-initrd', os.path.join(guest, 'initrd.img'), 'ari')
    image = upload_image(cloud, tok, 'guest', os.path.join(guest, 'disk.qcow2'), 'ami',
                         kernel_id=kernel, ramdisk_id=ramdisk,
                         os_command_line=cmdline)
    return kernel, ramdisk, image
