"""nimbus-network with real devices: two "hosts" in two network namespaces
joined by an underlay veth pair, each running the agent (vxlan provider)
from a desired-state file; guests in their own namespaces on veth ports.

Checks: guests of one tenant network on different hosts reach each other
across VXLAN; a guest of another network with the same IP range does not;
the devices carry the VNI, MTU and unicast flood entries wanted; a second
pass changes nothing; devices Nimbus did not create are left alone; a
changed flood list is applied; and emptying the desired state leaves no
device behind.  Needs root (network namespaces)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import uuid

BUILD = os.environ.get('NIMBUS_BUILD', os.path.join(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))), 'build'))
AGENT = os.path.join(BUILD, 'network-agent', 'nimbus-network')


def sh(*args, check=True, ns=None):
    cmd = (['ip', 'netns', 'exec', ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)}: {r.returncode}\n{r.stdout}\n{r.stderr}')
    return r


def can_netns():
    if os.geteuid() != 0:
        return False
    name = 'nimbus-probe-' + uuid.uuid4().hex[:6]
    ok = sh('ip', 'netns', 'add', name, check=False).returncode == 0
    sh('ip', 'netns', 'del', name, check=False)
    return ok


def short(i, n):
    return i.replace('-', '')[:n]


@unittest.skipUnless(os.path.exists(AGENT), 'nimbus-network is not built')
@unittest.skipUnless(can_netns(), 'needs root and network namespaces')
@unittest.skipUnless(shutil.which('ping'), 'needs ping (iputils-ping)')
class AgentNetns(unittest.TestCase):
    def setUp(self):
        tag = uuid.uuid4().hex[:5]
        self.ns = {k: f'nn{tag}-{k}' for k in ('ha', 'hb', 'ga', 'gb', 'gx')}
        self.nsp = f'nq{tag}'            # DHCP namespaces: nq<tag><host>-<net>
        for n in self.ns.values():
            sh('ip', 'netns', 'add', n)
        self.addCleanup(self.cleanup)
        # The underlay: one veth pair between the two hosts.
        sh('ip', 'link', 'add', 'ula', 'netns', self.ns['ha'], 'type', 'veth', 'peer', 'name', 'ulb',
           'netns', self.ns['hb'])
        for h, dev, ip in (('ha', 'ula', '192.168.77.1/24'), ('hb', 'ulb', '192.168.77.2/24')):
            sh('ip', 'addr', 'add', ip, 'dev', dev, ns=self.ns[h])
            sh('ip', 'link', 'set', dev, 'up', ns=self.ns[h])
            sh('ip', 'link', 'set', 'lo', 'up', ns=self.ns[h])
        self.dir = tempfile.mkdtemp(prefix='nimbus-netns-')
        os.chmod(self.dir, 0o755)  # dnsmasq drops to nobody and reads its hosts file
        self.net_a, self.net_b = str(uuid.uuid4()), str(uuid.uuid4())
        self.p_a1, self.p_b1, self.p_x = (str(uuid.uuid4()) for _ in range(3))

    def cleanup(self):
        for pid in self.dnsmasq_pids():
            os.kill(pid, 9)
        for n in sh('ip', 'netns', 'list').stdout.split('\n'):
            if n.startswith(self.nsp):
                sh('ip', 'netns', 'del', n.split(' ')[0], check=False)
        for n in self.ns.values():
            sh('ip', 'netns', 'del', n, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def conf(self, host, ip):
        path = os.path.join(self.dir, f'{host}.conf')
        with open(path, 'w') as f:
            f.write(f'[agent]\nhost = {host}\nprovider = vxlan\nlocal_ip = {ip}\n'
                    f'state_dir = {self.dir}/state-{host}\nnetns_prefix = {self.nsp}{host[1]}-\n'
                    f'[log]\nlevel = info\n')
        return path

    def agent(self, host, ip, desired):
        path = os.path.join(self.dir, f'{host}.json')
        with open(path, 'w') as f:
            json.dump(desired, f)
        # nsenter switches the network namespace only: unlike "ip netns
        # exec" it keeps the mount namespace, so namespaces the agent makes
        # (DHCP) stay visible afterwards, as when it runs on a real host.
        return sh('nsenter', f'--net=/run/netns/{self.ns[host]}', AGENT, '--config',
                  self.conf(host, ip), '--once', '--desired', path, check=False)

    def devices(self, host):
        out = sh('ip', '-j', '-d', 'link', 'show', ns=self.ns[host]).stdout
        return {d['ifname']: d for d in json.loads(out)}

    def plug_guest(self, host, port, guest, ip):
        peer = 'tpp' + short(port, 11)
        sh('ip', 'link', 'set', peer, 'netns', self.ns[guest], ns=self.ns[host])
        sh('ip', 'link', 'set', peer, 'name', 'eth0', ns=self.ns[guest])
        sh('ip', 'addr', 'add', ip, 'dev', 'eth0', ns=self.ns[guest])
        sh('ip', 'link', 'set', 'eth0', 'up', ns=self.ns[guest])

    def ping(self, guest, ip):
        return sh('ping', '-c', '2', '-W', '1', '-i', '0.2', ip, ns=self.ns[guest],
                  check=False).returncode == 0

    def test_two_hosts(self):
        want_a = {'networks': [{'id': self.net_a, 'vni': 1001, 'mtu': 1450,
                                'remote_vteps': ['192.168.77.2']}],
                  'ports': [{'id': self.p_a1, 'network_id': self.net_a, 'kind': 'veth'}]}
        want_b = {'networks': [{'id': self.net_a, 'vni': 1001, 'mtu': 1450,
                                'remote_vteps': ['192.168.77.1']},
                               {'id': self.net_b, 'vni': 1002, 'mtu': 1450, 'remote_vteps': []}],
                  'ports': [{'id': self.p_b1, 'network_id': self.net_a, 'kind': 'veth'},
                            {'id': self.p_x, 'network_id': self.net_b, 'kind': 'veth'}]}
        # A device Nimbus did not create.
        sh('ip', 'link', 'add', 'tapforeign', 'type', 'bridge', ns=self.ns['hb'])
        r = self.agent('ha', '192.168.77.1', want_a)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.agent('hb', '192.168.77.2', want_b)
        self.assertEqual(r.returncode, 0, r.stderr)

        da = self.devices('ha')
        br, vx, tap = 'nbr-' + short(self.net_a, 10), 'vx-' + short(self.net_a, 10), 'tap' + short(self.p_a1, 11)
        self.assertEqual(da[vx]['linkinfo']['info_kind'], 'vxlan')
        self.assertEqual(da[vx]['linkinfo']['info_data']['id'], 1001)
        self.assertEqual(da[vx]['master'], br)
        self.assertEqual(da[br]['linkinfo']['info_kind'], 'bridge')
        self.assertEqual(da[tap]['master'], br)
        self.assertEqual(da[tap]['mtu'], 1450)
        fdb = json.loads(sh('bridge', '-j', 'fdb', 'show', 'dev', vx, ns=self.ns['ha']).stdout)
        self.assertEqual([e['dst'] for e in fdb if e['mac'] == '00:00:00:00:00:00'], ['192.168.77.2'])

        # Guests: A1 on host A, B1 on host B (same network), X on host B
        # (another network, same addresses).
        self.plug_guest('ha', self.p_a1, 'ga', '10.0.0.2/24')
        self.plug_guest('hb', self.p_b1, 'gb', '10.0.0.3/24')
        self.plug_guest('hb', self.p_x, 'gx', '10.0.0.4/24')
        mtu = json.loads(sh('ip', '-j', 'link', 'show', 'eth0', ns=self.ns['ga']).stdout)[0]['mtu']
        self.assertEqual(mtu, 1450)
        self.assertTrue(self.ping('ga', '10.0.0.3'), 'same network across VXLAN')
        self.assertTrue(self.ping('gb', '10.0.0.2'))
        self.assertFalse(self.ping('ga', '10.0.0.4'), 'another network must not be reachable')
        self.assertFalse(self.ping('gx', '10.0.0.2'))

        # Converged: a second pass does nothing ("reconciled" is logged only
        # when actions ran).
        r = self.agent('hb', '192.168.77.2', want_b)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn('reconciled', r.stderr)
        self.assertIn('tapforeign', self.devices('hb'))

        # A third host joins network A: host A's flood list follows.
        want_a['networks'][0]['remote_vteps'] = ['192.168.77.2', '192.168.77.3']
        r = self.agent('ha', '192.168.77.1', want_a)
        self.assertEqual(r.returncode, 0, r.stderr)
        fdb = json.loads(sh('bridge', '-j', 'fdb', 'show', 'dev', vx, ns=self.ns['ha']).stdout)
        self.assertEqual(sorted(e['dst'] for e in fdb if e['mac'] == '00:00:00:00:00:00'),
                         ['192.168.77.2', '192.168.77.3'])
        self.assertTrue(self.ping('ga', '10.0.0.3'))

        # A foreign bridge with a Nimbus-like name is refused, not taken over.
        sh('ip', 'link', 'add', 'nbr-' + short(self.net_b, 10), 'type', 'bridge', ns=self.ns['ha'])
        r = self.agent('ha', '192.168.77.1', {'networks': want_a['networks'] + [
            {'id': self.net_b, 'vni': 1002, 'mtu': 1450}], 'ports': want_a['ports']})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('is not Nimbus', r.stderr)
        self.assertNotIn('vx-' + short(self.net_b, 10), self.devices('ha'))
        sh('ip', 'link', 'del', 'nbr-' + short(self.net_b, 10), ns=self.ns['ha'])

        # Unplug everything: no device of Nimbus left, foreign ones kept.
        for h, ip in (('ha', '192.168.77.1'), ('hb', '192.168.77.2')):
            r = self.agent(h, ip, {'networks': [], 'ports': []})
            self.assertEqual(r.returncode, 0, r.stderr)
            left = [n for n in self.devices(h) if n.startswith(('nbr-', 'vx-', 'tap', 'tpp'))
                    and n != 'tapforeign']
            self.assertEqual(left, [], h)
        self.assertIn('tapforeign', self.devices('hb'))


    def dhcp_client(self, guest):
        """Runs busybox udhcpc once in 'guest'; returns what it was offered."""
        out = os.path.join(self.dir, f'lease-{guest}')
        script = os.path.join(self.dir, 'udhcpc.sh')
        with open(script, 'w') as f:
            f.write(f'#!/bin/sh\n[ "$1" = bound ] && echo "$ip|$mask|$router|$mtu|$dns" > {out}\nexit 0\n')
        os.chmod(script, 0o755)
        if os.path.exists(out):
            os.unlink(out)
        sh('busybox', 'udhcpc', '-i', 'eth0', '-n', '-q', '-f', '-t', '3', '-T', '1', '-O', 'mtu',
           '-s', script, ns=self.ns[guest], check=False)
        if not os.path.exists(out):
            return None
        with open(out) as f:
            ip, mask, router, mtu, dns = f.read().strip().split('|')
        return {'ip': ip, 'prefixlen': mask, 'router': router, 'mtu': mtu, 'dns': dns.split()}

    def dnsmasq_pids(self):
        pids = []
        for p in os.listdir('/proc'):
            try:
                with open(f'/proc/{p}/cmdline', 'rb') as f:
                    cmd = f.read()
            except OSError:
                continue
            if p.isdigit() and cmd.startswith(b'dnsmasq') and self.dir.encode() in cmd:
                pids.append(int(p))
        return sorted(pids)

    @unittest.skipUnless(shutil.which('dnsmasq') and shutil.which('busybox'),
                         'needs dnsmasq and busybox (udhcpc)')
    def test_dhcp(self):
        dhcp_port = str(uuid.uuid4())
        macs = {'ga': 'fa:16:3e:00:00:0a', 'gb': 'fa:16:3e:00:00:0b', 'gx': 'fa:16:3e:00:00:0c'}
        net = {'id': self.net_a, 'vni': 1001, 'mtu': 1450, 'remote_vteps': [],
               'dhcp': {'port_id': dhcp_port, 'mac': 'fa:16:3e:00:00:01', 'ip': '10.0.0.250',
                        'prefixlen': 24, 'subnet': '10.0.0.0', 'gateway': '10.0.0.1',
                        'dns': ['192.0.2.53'],
                        'hosts': [{'mac': macs['ga'], 'ip': '10.0.0.2'}]}}
        ports = [{'id': self.p_a1, 'network_id': self.net_a, 'kind': 'veth'},
                 {'id': self.p_b1, 'network_id': self.net_a, 'kind': 'veth'},
                 {'id': self.p_x, 'network_id': self.net_a, 'kind': 'veth'}]
        r = self.agent('ha', '192.168.77.1', {'networks': [net], 'ports': ports})
        self.assertEqual(r.returncode, 0, r.stderr)
        for g, p in (('ga', self.p_a1), ('gb', self.p_b1), ('gx', self.p_x)):
            peer = 'tpp' + short(p, 11)
            sh('ip', 'link', 'set', peer, 'netns', self.ns[g], ns=self.ns['ha'])
            sh('ip', 'link', 'set', peer, 'name', 'eth0', ns=self.ns[g])
            sh('ip', 'link', 'set', 'eth0', 'address', macs[g], 'up', ns=self.ns[g])
        pids = self.dnsmasq_pids()
        self.assertEqual(len(pids), 1)
        lease = self.dhcp_client('ga')
        self.assertEqual(lease, {'ip': '10.0.0.2', 'prefixlen': '24', 'router': '10.0.0.1',
                                 'mtu': '1450', 'dns': ['192.0.2.53']})
        # Unknown MACs get nothing.
        self.assertIsNone(self.dhcp_client('gb'))
        # A new host entry is a reload (same dnsmasq), and then it is served.
        net['dhcp']['hosts'].append({'mac': macs['gb'], 'ip': '10.0.0.3'})
        r = self.agent('ha', '192.168.77.1', {'networks': [net], 'ports': ports})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.dnsmasq_pids(), pids)
        self.assertEqual(self.dhcp_client('gb')['ip'], '10.0.0.3')
        # Converged: nothing done.
        r = self.agent('ha', '192.168.77.1', {'networks': [net], 'ports': ports})
        self.assertNotIn('reconciled', r.stderr)
        # A killed dnsmasq is restarted on the next pass.
        os.kill(pids[0], 9)
        r = self.agent('ha', '192.168.77.1', {'networks': [net], 'ports': ports})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.dnsmasq_pids()), 1)
        self.assertNotEqual(self.dnsmasq_pids(), pids)
        self.assertEqual(self.dhcp_client('ga')['ip'], '10.0.0.2')
        # Gone: no dnsmasq, namespace, device or file left.
        r = self.agent('ha', '192.168.77.1', {'networks': [], 'ports': []})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.dnsmasq_pids(), [])
        self.assertNotIn(self.nsp, sh('ip', 'netns', 'list').stdout)
        self.assertEqual(os.listdir(os.path.join(self.dir, 'state-ha')), [])
        left = [n for n in self.devices('ha') if n.startswith(('nbr-', 'vx-', 'tap', 'tpp'))]
        self.assertEqual(left, [])


    def tcp_ok(self, client, server, ip, port=8080):
        """True when 'client' can open a TCP connection to ip:port served in 'server'."""
        srv = subprocess.Popen(['ip', 'netns', 'exec', self.ns[server], '/usr/bin/python3', '-c',
                                'import socket,sys\ns=socket.socket()\n'
                                's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n'
                                f's.bind(("0.0.0.0",{port}))\ns.listen(1)\ns.settimeout(4)\n'
                                'c,_=s.accept()\nc.sendall(b"hi")\n'],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            r = sh('/usr/bin/python3', '-c',
                   'import socket,time\nfor i in range(20):\n'
                   '    try:\n'
                   f'        s=socket.create_connection(("{ip}",{port}),timeout=1); print(s.recv(2).decode()); break\n'
                   '    except ConnectionRefusedError: time.sleep(0.1)\n'
                   '    except OSError: break\n',
                   ns=self.ns[client], check=False)
            return r.stdout.strip() == 'hi'
        finally:
            srv.kill()
            srv.wait()

    @unittest.skipUnless(shutil.which('nft'), 'needs nft (nftables)')
    def test_security_groups(self):
        macs = {'ga': 'fa:16:3e:00:01:0a', 'gb': 'fa:16:3e:00:01:0b'}
        egress_any = [{'direction': 'egress', 'ethertype': 'IPv4'}]

        def port(pid, g, ip, rules):
            return {'id': pid, 'network_id': self.net_a, 'kind': 'veth',
                    'security': {'enabled': True, 'mac': macs[g], 'ips': [ip], 'rules': rules}}

        net_a = {'id': self.net_a, 'vni': 1001, 'mtu': 1450, 'remote_vteps': ['192.168.77.2']}
        want_a = {'networks': [net_a], 'ports': [port(self.p_a1, 'ga', '10.0.0.2', egress_any)]}
        gb_rules = egress_any + [{'direction': 'ingress', 'ethertype': 'IPv4', 'protocol': 'icmp',
                                  'remotes': None}]
        net_b = dict(net_a, remote_vteps=['192.168.77.1'])
        want_b = {'networks': [net_b], 'ports': [port(self.p_b1, 'gb', '10.0.0.3', gb_rules)]}
        for h, ip, want in (('ha', '192.168.77.1', want_a), ('hb', '192.168.77.2', want_b)):
            r = self.agent(h, ip, want)
            self.assertEqual(r.returncode, 0, r.stderr)
        for h, p, g, ip in (('ha', self.p_a1, 'ga', '10.0.0.2/24'), ('hb', self.p_b1, 'gb', '10.0.0.3/24')):
            self.plug_guest(h, p, g, ip)
            sh('ip', 'link', 'set', 'eth0', 'address', macs[g], ns=self.ns[g])
        # ICMP allowed in, TCP not; replies to what ga starts come back
        # (stateful), but gb cannot start anything towards ga.
        self.assertTrue(self.ping('ga', '10.0.0.3'))
        self.assertFalse(self.tcp_ok('ga', 'gb', '10.0.0.3'))
        self.assertFalse(self.ping('gb', '10.0.0.2'))
        # Open TCP 8080 from ga's address only: the ruleset is replaced.
        gb_rules.append({'direction': 'ingress', 'ethertype': 'IPv4', 'protocol': 'tcp',
                         'port_range_min': 8080, 'port_range_max': 8080, 'remotes': ['10.0.0.2/32']})
        r = self.agent('hb', '192.168.77.2', want_b)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(self.tcp_ok('ga', 'gb', '10.0.0.3'))
        self.assertFalse(self.tcp_ok('ga', 'gb', '10.0.0.3', port=8081))
        # Converged: the ruleset is not reapplied.
        r = self.agent('hb', '192.168.77.2', want_b)
        self.assertNotIn('reconciled', r.stderr)
        # Anti-spoofing: ga taking another address is cut off; its own works again.
        sh('ip', 'addr', 'flush', 'dev', 'eth0', ns=self.ns['ga'])
        sh('ip', 'addr', 'add', '10.0.0.9/24', 'dev', 'eth0', ns=self.ns['ga'])
        self.assertFalse(self.ping('ga', '10.0.0.3'))
        sh('ip', 'addr', 'flush', 'dev', 'eth0', ns=self.ns['ga'])
        sh('ip', 'addr', 'add', '10.0.0.2/24', 'dev', 'eth0', ns=self.ns['ga'])
        self.assertTrue(self.ping('ga', '10.0.0.3'))
        # Unplugged: Nimbus's tables are gone.
        for h, ip in (('ha', '192.168.77.1'), ('hb', '192.168.77.2')):
            r = self.agent(h, ip, {'networks': [], 'ports': []})
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertNotIn('nimbus', sh('nft', 'list', 'tables', ns=self.ns[h]).stdout)


if __name__ == '__main__':
    unittest.main(verbosity=2)
