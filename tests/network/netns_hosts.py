"""Two "hosts" in network namespaces for end-to-end tests of the agents
(test_compute_e2e, test_live_migrate_e2e): an underlay (a bridge in the
root namespace with a veth to each host's eth0), the control plane in the
root namespace (nimbus-api and nimbus-image of an ImageCloud, reachable
over the underlay), and on each host nimbus-network (VXLAN) and
nimbus-compute started inside its namespace.  Everything made here is
removed at exit, also after a failure.  Needs root and network
namespaces (can_netns())."""
import atexit
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'compute'))
sys.path.insert(0, os.path.join(HERE, '..', 'image'))
from compute_lib import check, nt  # noqa: E402
from image_test import ImageCloud  # noqa: E402
from test_netagent_netns import sh  # noqa: E402

NETAGENT = os.path.join(nt.BUILD, 'network-agent', 'nimbus-network')
COMPUTE = os.path.join(nt.BUILD, 'compute-agent', 'nimbus-compute')


class Hosts:
    """The underlay, the control plane and the agents of 'hosts'.  'prefix'
    (two letters) starts the names of every namespace and device made, so
    that tests running at once do not collide.  'on_cleanup' is called at
    exit before the namespaces go (for what a test's agents may have left:
    containers, processes)."""

    def __init__(self, prefix, hosts=('ha', 'hb'), on_cleanup=None):
        tag = uuid.uuid4().hex[:5]
        self.hosts = hosts
        self.ns = {h: f'{prefix}{tag}-{h}' for h in hosts}
        self.nsp = {h: f'{prefix[0]}q{tag}{h[1]}-' for h in hosts}   # DHCP namespaces
        self.ul = f'{prefix}u{tag}'
        sub = random.randint(100, 199)                   # the underlay: 192.168.sub.0/24
        self.gw = f'192.168.{sub}.1'
        self.host_ip = {h: f'192.168.{sub}.{11 + k}' for k, h in enumerate(hosts)}
        self.procs, self.agents = [], {}
        self.cloud = None
        self.on_cleanup = on_cleanup
        atexit.register(self.cleanup)

        for n in self.ns.values():
            sh('ip', 'netns', 'add', n)
        sh('ip', 'link', 'add', self.ul, 'type', 'bridge')
        sh('ip', 'addr', 'add', self.gw + '/24', 'dev', self.ul)
        sh('ip', 'link', 'set', self.ul, 'up')
        for h in hosts:
            root_end = f'{self.ul}{h[1]}'
            sh('ip', 'link', 'add', root_end, 'type', 'veth', 'peer', 'name', 'eth0',
               'netns', self.ns[h])
            sh('ip', 'link', 'set', root_end, 'master', self.ul, 'up')
            sh('ip', 'addr', 'add', self.host_ip[h] + '/24', 'dev', 'eth0', ns=self.ns[h])
            sh('ip', 'link', 'set', 'eth0', 'up', ns=self.ns[h])
            sh('ip', 'link', 'set', 'lo', 'up', ns=self.ns[h])

        self.cloud = ImageCloud(image_conf={'host': '0.0.0.0'},
                                extra_conf={'api': {'host': '0.0.0.0'}})
        os.chmod(self.cloud.dir, 0o755)   # dnsmasq drops privileges and reads its files here

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if self.on_cleanup:
            try:
                self.on_cleanup()
            except Exception as e:   # noqa: BLE001 -- the namespaces must go regardless
                print('cleanup:', e)
        for n in sh('ip', 'netns', 'list').stdout.split('\n'):
            n = n.split(' ')[0]
            if n.startswith(tuple(self.nsp.values())):
                sh('ip', 'netns', 'del', n, check=False)
        for n in self.ns.values():
            sh('ip', 'netns', 'del', n, check=False)
        sh('ip', 'link', 'del', self.ul, check=False)
        if self.cloud:
            self.cloud.close()
            self.cloud = None

    def url(self, service, path=''):
        """The URL of a control-plane service as the hosts reach it."""
        return f'http://{self.gw}:{self.cloud.ports[service]}{path}'

    def state(self, h):
        return os.path.join(self.cloud.dir, f'state-{h}')

    def start_agents(self, h, hypervisor='oci', compute_extra='', hv_extra=''):
        """nimbus-network and nimbus-compute of host 'h' (a node of that
        name, network_agent = true), in its namespace.  'compute_extra'
        goes into the compute agent's [agent] section, 'hv_extra' into its
        [hypervisor] section."""
        cloud, state = self.cloud, self.state(h)
        os.makedirs(state, exist_ok=True)
        os.chmod(state, 0o755)
        token_file = os.path.join(cloud.dir, f'{h}.token')
        if not os.path.exists(token_file):
            cloud.manage('node', 'add', h, '--output', token_file)
        nconf = os.path.join(cloud.dir, f'net-{h}.conf')
        with open(nconf, 'w') as f:
            f.write(f"[agent]\nhost = {h}\nprovider = vxlan\nlocal_ip = {self.host_ip[h]}\n"
                    f"state_dir = {state}/net\nnetns_prefix = {self.nsp[h]}\ninterval = 1\n"
                    f"[api]\nnetwork_url = {self.url('network')}\n"
                    f"auth_url = {self.url('identity', '/v3')}\n"
                    f"username = admin\npassword = {nt.ADMIN_PASSWORD}\nproject = admin\n")
        cconf = os.path.join(cloud.dir, f'compute-{h}.conf')
        with open(cconf, 'w') as f:
            f.write(f"[agent]\nnode = {h}\nstate_dir = {state}/compute\nimage_fetch = http\n"
                    f"image_url = {self.url('image')}\n"
                    f"reconcile_interval = 1\ndelete_grace = 5\n"
                    f"listen = 127.0.0.1\nport = 8790\n"
                    f"port_wait = 60\nstop_timeout = 3\nnetwork_agent = true\n{compute_extra}"
                    f"[hypervisor]\ntype = {hypervisor}\n{hv_extra}"
                    f"[source]\ntype = http\napi_url = {self.url('compute', '/agent/v1')}\n"
                    f"node_token_file = {token_file}\npoll_wait = 20\nheartbeat = 1\n")
        for name, argv in (('net', [NETAGENT, '--config', nconf]),
                           ('compute', [COMPUTE, '--config', cconf])):
            log = open(os.path.join(cloud.dir, f'{name}-{h}.log'), 'ab')
            p = subprocess.Popen(['nsenter', f'--net=/run/netns/{self.ns[h]}'] + argv,
                                 stdout=log, stderr=log)
            self.procs.append(p)
            self.agents[(name, h)] = p

    def logs(self, h):
        out = ''
        for name in ('net', 'compute'):
            with open(os.path.join(self.cloud.dir, f'{name}-{h}.log'), 'rb') as f:
                out += f'---- {name}-{h}\n' + f.read().decode(errors='replace')[-4000:]
        return out

    def wait_for(self, what, fn, timeout=30):
        """Polls fn() until it is true (a passed check) or 'timeout' seconds
        (a failed one); fails at once when an agent exits."""
        t0 = time.time()
        v = None
        while time.time() - t0 < timeout:
            for (name, h), p in self.agents.items():
                if p.poll() is not None:
                    check(False, f'{what}: nimbus-{name} on {h} exited with {p.returncode}')
                    return None
            v = fn()
            if v:
                check(True, f'{what} ({time.time() - t0:.1f}s)')
                return v
            time.sleep(0.2)
        check(False, f'{what} (last: {v!r})')
        return None

    def stop_agents(self):
        """SIGTERM to every agent; each must exit with 0 (checks)."""
        for (name, h), p in self.agents.items():
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = 'timeout'
            check(rc == 0, f'nimbus-{name} on {h} exits cleanly ({rc})')

    def links(self, h):
        """Names of the network devices in host 'h'."""
        return [d['ifname'] for d in json.loads(sh('ip', '-j', 'link', 'show',
                                                     ns=self.ns[h]).stdout)]
