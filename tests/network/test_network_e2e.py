"""End to end: the Network API (real nimbus-api, real PostgreSQL) drives two
nimbus-network agents, each in its own "host" network namespace joined by an
underlay; guests in namespaces on the ports get their addresses by DHCP from
the API's IPAM, with the network MTU, reach each other across VXLAN, cannot
reach another network with the same range, and everything is gone after the
ports are deleted.  Needs root, dnsmasq, busybox (udhcpc) and ping."""
import json
import os
import shutil
import subprocess
import sys
import unittest
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'api'))
import nimbus_test as nt  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_netagent_netns import can_netns, sh, short  # noqa: E402

AGENT = os.path.join(nt.BUILD, 'network-agent', 'nimbus-network')


@unittest.skipUnless(os.path.exists(AGENT), 'nimbus-network is not built')
@unittest.skipUnless(can_netns(), 'needs root and network namespaces')
@unittest.skipUnless(all(shutil.which(t) for t in ('dnsmasq', 'busybox', 'ping', 'nft')),
                     'needs dnsmasq, busybox, ping and nft')
class EndToEnd(unittest.TestCase):
    def setUp(self):
        self.cloud = nt.Cloud(extra_conf={'api': {'host': '0.0.0.0'}})
        self.addCleanup(self.cloud.close)
        self.admin, _ = self.cloud.token()
        tag = uuid.uuid4().hex[:5]
        self.ns = {k: f'ne{tag}-{k}' for k in ('ha', 'hb', 'ga', 'gb', 'gx')}
        self.ul = f'neu{tag}'
        # Both agents serve DHCP for the same network on one machine: each
        # gets its own namespace prefix.
        self.nsp = {h: f'nq{tag}{h[1]}-' for h in ('ha', 'hb')}
        self.addCleanup(self.cleanup)
        for n in self.ns.values():
            sh('ip', 'netns', 'add', n)
        # Underlay: a bridge in the root namespace (which also reaches the
        # API) with one veth to each host.
        sh('ip', 'link', 'add', self.ul, 'type', 'bridge')
        sh('ip', 'addr', 'add', '192.168.99.1/24', 'dev', self.ul)
        sh('ip', 'link', 'set', self.ul, 'up')
        self.hosts = {'ha': '192.168.99.11', 'hb': '192.168.99.12'}
        for h, ip in self.hosts.items():
            root_end = f'{self.ul}{h[1]}'
            sh('ip', 'link', 'add', root_end, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', self.ns[h])
            sh('ip', 'link', 'set', root_end, 'master', self.ul, 'up')
            sh('ip', 'addr', 'add', ip + '/24', 'dev', 'eth0', ns=self.ns[h])
            sh('ip', 'link', 'set', 'eth0', 'up', ns=self.ns[h])
            sh('ip', 'link', 'set', 'lo', 'up', ns=self.ns[h])
        self.dir = os.path.join(self.cloud.dir, 'agents')
        os.makedirs(self.dir)
        os.chmod(self.cloud.dir, 0o755)
        os.chmod(self.dir, 0o755)

    def cleanup(self):
        for p in os.listdir('/proc'):
            try:
                with open(f'/proc/{p}/cmdline', 'rb') as f:
                    cmd = f.read()
            except OSError:
                continue
            if p.isdigit() and cmd.startswith(b'dnsmasq') and getattr(self, 'dir', '~').encode() in cmd:
                os.kill(int(p), 9)
        for n in sh('ip', 'netns', 'list').stdout.split('\n'):
            n = n.split(' ')[0]
            if n.startswith(tuple(getattr(self, 'nsp', {}).values())):
                sh('ip', 'netns', 'del', n, check=False)
        for n in self.ns.values():
            sh('ip', 'netns', 'del', n, check=False)
        sh('ip', 'link', 'del', self.ul, check=False)

    def api(self, method, path, body=None, status=None):
        st, _, b = self.cloud.request('network', method, path, body, {'X-Auth-Token': self.admin})
        self.assertEqual(st, status or {'POST': 201, 'DELETE': 204}.get(method, 200), b)
        return b

    def agent(self, host):
        conf = os.path.join(self.dir, f'{host}.conf')
        with open(conf, 'w') as f:
            f.write(f"[agent]\nhost = {host}\nprovider = vxlan\nlocal_ip = {self.hosts[host]}\n"
                    f"state_dir = {self.dir}/state-{host}\nnetns_prefix = {self.nsp[host]}\n"
                    f"[api]\nnetwork_url = http://192.168.99.1:{self.cloud.ports['network']}\n"
                    f"auth_url = http://192.168.99.1:{self.cloud.ports['identity']}/v3\n"
                    f"username = admin\npassword = {nt.ADMIN_PASSWORD}\nproject = admin\n")
        r = sh('nsenter', f'--net=/run/netns/{self.ns[host]}', AGENT, '--config', conf, '--once',
               check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def plug(self, host, port, guest):
        peer = 'tpp' + short(port['id'], 11)
        sh('ip', 'link', 'set', peer, 'netns', self.ns[guest], ns=self.ns[host])
        sh('ip', 'link', 'set', peer, 'name', 'eth0', ns=self.ns[guest])
        sh('ip', 'link', 'set', 'eth0', 'address', port['mac_address'], 'up', ns=self.ns[guest])

    def dhcp(self, guest):
        out = os.path.join(self.dir, f'lease-{guest}')
        script = os.path.join(self.dir, 'udhcpc.sh')
        with open(script, 'w') as f:
            f.write(f'#!/bin/sh\n[ "$1" = bound ] || exit 0\n'
                    f'ip addr add $ip/$mask dev $interface\necho "$ip $mtu $router" > {out}\n')
        os.chmod(script, 0o755)
        sh('busybox', 'udhcpc', '-i', 'eth0', '-n', '-q', '-f', '-t', '5', '-T', '1', '-O', 'mtu',
           '-s', script, ns=self.ns[guest], check=False)
        with open(out) as f:
            return f.read().split()

    def ping(self, guest, ip):
        return sh('ping', '-c', '2', '-W', '1', '-i', '0.2', ip, ns=self.ns[guest],
                  check=False).returncode == 0

    def test_api_to_guests(self):
        net = self.api('POST', '/v2.0/networks', {'network': {'name': 'e2e'}})['network']
        other = self.api('POST', '/v2.0/networks', {'network': {'name': 'other'}})['network']
        self.nets = [net['id'], other['id']]
        for n in (net, other):
            self.api('POST', '/v2.0/subnets', {'subnet': {'network_id': n['id'], 'cidr': '10.0.0.0/24',
                                                          'ip_version': 4}})
        def port(n, host, **kw):
            return self.api('POST', '/v2.0/ports', {'port': dict(
                network_id=n['id'], device_owner='compute:container',
                **{'binding:host_id': host}, **kw)})['port']
        # pb's address exists on one network only.
        pa, px = port(net, 'ha'), port(other, 'hb')
        pb = port(net, 'hb', fixed_ips=[{'ip_address': '10.0.0.50'}])
        # Each agent reports its VTEP with its ports; a second pass on the
        # first host learns the second.
        for h in ('ha', 'hb', 'ha'):
            self.agent(h)
        for p in (pa, pb, px):
            got = self.api('GET', f"/v2.0/ports/{p['id']}")['port']
            self.assertEqual(got['status'], 'ACTIVE')
        self.plug('ha', pa, 'ga')
        self.plug('hb', pb, 'gb')
        self.plug('hb', px, 'gx')
        # Each host runs its own DHCP server for the network.
        namespaces = sh('ip', 'netns', 'list').stdout
        for p in self.nsp.values():
            self.assertIn(p + short(net['id'], 10), namespaces)
        # DHCP hands out exactly the API's addresses, with the MTU.
        for g, p in (('ga', pa), ('gb', pb), ('gx', px)):
            ip, mtu, router = self.dhcp(g)
            self.assertEqual((ip, mtu, router), (p['fixed_ips'][0]['ip_address'], '1450', '10.0.0.1'))
        a_ip, b_ip, x_ip = (p['fixed_ips'][0]['ip_address'] for p in (pa, pb, px))
        # Same address range on the other network (px has pa's address).
        self.assertTrue(self.ping('ga', b_ip), 'across VXLAN, default group allows its members')
        self.assertTrue(self.ping('gb', a_ip))
        self.assertEqual(x_ip, a_ip)
        self.assertFalse(self.ping('gx', b_ip), 'another network must not be reachable')
        # Unplug: delete the ports, reconcile, nothing left.
        for p in (pa, pb, px):
            self.api('DELETE', f"/v2.0/ports/{p['id']}")
        for h in ('ha', 'hb'):
            self.agent(h)
            left = [d['ifname'] for d in json.loads(sh('ip', '-j', 'link', 'show', ns=self.ns[h]).stdout)
                    if d['ifname'].startswith(('nbr-', 'vx-', 'tap', 'tpp'))]
            self.assertEqual(left, [], h)
            self.assertNotIn('nimbus', sh('nft', 'list', 'tables', ns=self.ns[h]).stdout)
            self.assertEqual(os.listdir(f'{self.dir}/state-{h}'), [])
        namespaces = sh('ip', 'netns', 'list').stdout
        for p in self.nsp.values():
            self.assertNotIn(p, namespaces)

if __name__ == '__main__':
    unittest.main(verbosity=2)
