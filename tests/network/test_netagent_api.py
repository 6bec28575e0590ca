"""nimbus-network against a real nimbus-api (fake overlay provider): the
agent finds the ports bound to its host, builds the desired state (VNI, MTU,
remote VTEPs of the other hosts with ports on the same network), and reports
the ports it wired: status DOWN → ACTIVE and its VTEP in binding:profile.
A port moving live to a host (binding:profile.migrating_to, set by the
compute API) is wired there too but not reported from there: its binding,
status and VTEP stay the source's."""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'api'))
import nimbus_test as nt  # noqa: E402

AGENT = os.path.join(nt.BUILD, 'network-agent', 'nimbus-network')


@unittest.skipUnless(os.path.exists(AGENT), 'nimbus-network is not built')
class AgentApi(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cloud = nt.Cloud()
        cls.admin, _ = cls.cloud.token()

    @classmethod
    def tearDownClass(cls):
        cls.cloud.close()

    def ok(self, method, path, body=None, status=None):
        st, _, b = self.cloud.request('network', method, path, body, {'X-Auth-Token': self.admin})
        self.assertEqual(st, status or {'POST': 201, 'DELETE': 204}.get(method, 200), b)
        return b

    def agent(self, host, ip):
        conf = os.path.join(self.cloud.dir, f'agent-{host}.conf')
        with open(conf, 'w') as f:
            f.write(f"[agent]\nhost = {host}\nprovider = fake\nlocal_ip = {ip}\n"
                    f"[api]\nnetwork_url = {self.cloud.url('network')}\n"
                    f"auth_url = {self.cloud.url('identity', '/v3')}\n"
                    f"username = admin\npassword = {nt.ADMIN_PASSWORD}\nproject = admin\n")
        r = subprocess.run([AGENT, '--config', conf, '--once', '--print-desired'],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout.splitlines()[-1])

    def test_agent_wires_and_reports(self):
        n = self.ok('POST', '/v2.0/networks', {'network': {'name': 'agent-net'}})['network']
        self.ok('POST', '/v2.0/subnets', {'subnet': {'network_id': n['id'], 'cidr': '10.40.0.0/24',
                                                     'ip_version': 4}})
        other = self.ok('POST', '/v2.0/networks', {'network': {'name': 'elsewhere'}})['network']
        ports = {}
        for name, host, net in (('a1', 'node-1', n), ('a2', 'node-1', n), ('b1', 'node-2', n),
                                ('c1', 'node-3', other), ('u', '', n)):
            body = {'network_id': net['id'], 'name': name}
            if host:
                body['binding:host_id'] = host
            ports[name] = self.ok('POST', '/v2.0/ports', {'port': body})['port']
            self.assertEqual(ports[name]['status'], 'DOWN')

        # node-2 first: no other VTEP is known yet.
        d2 = self.agent('node-2', '192.0.2.2')
        self.assertEqual([p['id'] for p in d2['ports']], [ports['b1']['id']])
        self.assertEqual(d2['networks'][0]['remote_vteps'], [])
        b1 = self.ok('GET', f"/v2.0/ports/{ports['b1']['id']}")['port']
        self.assertEqual(b1['status'], 'ACTIVE')
        self.assertEqual(b1['binding:profile'], {'vtep_ip': '192.0.2.2'})

        # node-1: its two ports, the network's VNI and MTU, node-2 as peer.
        d1 = self.agent('node-1', '192.0.2.1')
        self.assertEqual(sorted(p['id'] for p in d1['ports']),
                         sorted([ports['a1']['id'], ports['a2']['id']]))
        self.assertEqual(len(d1['networks']), 1)
        self.assertEqual(d1['networks'][0]['vni'], n['provider:segmentation_id'])
        self.assertEqual(d1['networks'][0]['mtu'], 1450)
        self.assertEqual(d1['networks'][0]['remote_vteps'], ['192.0.2.2'])
        for k in ('a1', 'a2'):
            self.assertEqual(self.ok('GET', f"/v2.0/ports/{ports[k]['id']}")['port']['status'], 'ACTIVE')
        # Unbound and other hosts' ports are untouched.
        self.assertEqual(self.ok('GET', f"/v2.0/ports/{ports['u']['id']}")['port']['status'], 'DOWN')
        self.assertEqual(self.ok('GET', f"/v2.0/ports/{ports['c1']['id']}")['port']['status'], 'DOWN')

        # DHCP: each node has its own DHCP port on the network (its own
        # address), serving static entries for every other port.
        dhcp = d1['networks'][0]['dhcp']
        dports = self.ok('GET', f"/v2.0/ports?network_id={n['id']}&device_owner=network:dhcp")['ports']
        self.assertEqual(sorted(p['binding:host_id'] for p in dports), ['node-1', 'node-2'])
        mine = [p for p in dports if p['binding:host_id'] == 'node-1'][0]
        self.assertEqual((dhcp['port_id'], dhcp['mac'], dhcp['ip']),
                         (mine['id'], mine['mac_address'], mine['fixed_ips'][0]['ip_address']))
        self.assertEqual((dhcp['subnet'], dhcp['prefixlen'], dhcp['gateway']), ('10.40.0.0', 24, '10.40.0.1'))
        want_hosts = sorted((ports[k]['mac_address'], ports[k]['fixed_ips'][0]['ip_address'])
                            for k in ('a1', 'a2', 'b1', 'u'))
        self.assertEqual(sorted((h['mac'], h['ip']) for h in dhcp['hosts']), want_hosts)
        self.assertEqual(self.ok('GET', f"/v2.0/ports/{mine['id']}")['port']['status'], 'ACTIVE')
        # Security: a1's addresses, and the default group's rules with the
        # remote group resolved to its members' addresses (not DHCP ports,
        # which are unfiltered).
        sec = [p for p in d1['ports'] if p['id'] == ports['a1']['id']][0]['security']
        self.assertEqual((sec['enabled'], sec['mac'], sec['ips']),
                         (True, ports['a1']['mac_address'], [ports['a1']['fixed_ips'][0]['ip_address']]))
        members = sorted(ports[k]['fixed_ips'][0]['ip_address'] + '/32' for k in ('a1', 'a2', 'b1', 'u'))
        got = sorted((r['direction'], r['ethertype'], sorted(r['remotes']) if r['remotes'] is not None else None)
                     for r in sec['rules'])
        self.assertEqual(got, [('egress', 'IPv4', None), ('egress', 'IPv6', None),
                               ('ingress', 'IPv4', members), ('ingress', 'IPv6', members)])
        self.assertIs(mine['port_security_enabled'], False)
        self.assertEqual(mine['security_groups'], [])
        # The DHCP port is not wired as an instance port.
        self.assertNotIn(mine['id'], [p['id'] for p in d1['ports']])

        # node-2 again: now it learns node-1, and keeps its DHCP port.
        d2 = self.agent('node-2', '192.0.2.2')
        self.assertEqual(d2['networks'][0]['remote_vteps'], ['192.0.2.1'])
        again = self.ok('GET', f"/v2.0/ports?network_id={n['id']}&device_owner=network:dhcp")['ports']
        self.assertEqual(len(again), 2)
        # DHCP ports alone do not keep a network in use.
        for k in ('a1', 'a2', 'b1', 'u'):
            self.ok('DELETE', f"/v2.0/ports/{ports[k]['id']}")
        self.ok('DELETE', f"/v2.0/networks/{n['id']}")

        # A host with nothing bound gets an empty state.
        self.assertEqual(self.agent('node-9', '192.0.2.9'), {'networks': [], 'ports': [], 'dhcp_ports': []})

    def test_port_moving_live_is_wired_at_its_destination(self):
        n = self.ok('POST', '/v2.0/networks', {'network': {'name': 'moving-net'}})['network']
        self.ok('POST', '/v2.0/subnets', {'subnet': {'network_id': n['id'], 'cidr': '10.41.0.0/24',
                                                     'ip_version': 4}})
        port = self.ok('POST', '/v2.0/ports', {'port': {'network_id': n['id'], 'name': 'mv',
                                                        'binding:host_id': 'src-1'}})['port']
        src = self.agent('src-1', '192.0.2.31')
        self.assertEqual([p['id'] for p in src['ports']], [port['id']])
        # The compute API marks the port while its server moves live.
        nt.psql(self.cloud.conninfo,
                f"UPDATE net.ports SET migrating_to = 'dst-1' WHERE id = '{port['id']}'")
        dst = self.agent('dst-1', '192.0.2.32')
        self.assertEqual([(p['id'], p.get('arriving')) for p in dst['ports']], [(port['id'], True)])
        self.assertEqual([x['id'] for x in dst['networks']], [n['id']])
        self.assertEqual(dst['networks'][0]['remote_vteps'], ['192.0.2.31'])
        got = self.ok('GET', f"/v2.0/ports/{port['id']}")['port']
        self.assertEqual((got['binding:host_id'], got['status'], got['binding:profile']),
                         ('src-1', 'ACTIVE', {'vtep_ip': '192.0.2.31', 'migrating_to': 'dst-1'}))
        # The source keeps it (it is still bound there), and its report
        # (the profile it read, migrating_to included) changes nothing.
        src = self.agent('src-1', '192.0.2.31')
        self.assertEqual([(p['id'], p.get('arriving')) for p in src['ports']], [(port['id'], None)])
        # The move done: bound to the destination, migrating_to gone.
        nt.psql(self.cloud.conninfo, "UPDATE net.ports SET migrating_to = NULL, host_id = 'dst-1' "
                                     f"WHERE id = '{port['id']}'")
        dst = self.agent('dst-1', '192.0.2.32')
        self.assertEqual([(p['id'], p.get('arriving')) for p in dst['ports']], [(port['id'], None)])
        got = self.ok('GET', f"/v2.0/ports/{port['id']}")['port']
        self.assertEqual(got['binding:profile'], {'vtep_ip': '192.0.2.32'})
        self.assertEqual(self.agent('src-1', '192.0.2.31')['ports'], [])
        self.ok('DELETE', f"/v2.0/ports/{port['id']}")


if __name__ == '__main__':
    unittest.main(verbosity=2)
