"""The Network API through the real openstack client (python3-openstackclient
from Debian): network, subnet, port and security group commands as a user
types them."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'api'))
import nimbus_test as nt  # noqa: E402

OPENSTACK = '/usr/bin/openstack'


@unittest.skipUnless(os.path.exists(OPENSTACK), 'python3-openstackclient is not installed')
class NetworkClient(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cloud = nt.Cloud()

    @classmethod
    def tearDownClass(cls):
        cls.cloud.close()

    def osc(self, *args, check=True, fmt=True):
        r = self.cloud.osc(*args, fmt=fmt)
        if check and r.returncode != 0:
            raise AssertionError(f'{" ".join(args)} failed ({r.returncode}):\n{r.stderr}\n'
                                 + self.cloud.log_tail())
        return r

    def js(self, *args):
        return json.loads(self.osc(*args).stdout)

    def test_day_one(self):
        n = self.js('network', 'create', 'net1')
        self.assertEqual((n['name'], n['status'], n['mtu']), ('net1', 'ACTIVE', 1450))
        self.assertEqual(n['provider:network_type'], 'vxlan')  # the admin sees it
        s = self.js('subnet', 'create', '--network', 'net1', '--subnet-range', '10.0.0.0/24', 'sub1')
        self.assertEqual((s['cidr'], s['gateway_ip'], s['network_id']), ('10.0.0.0/24', '10.0.0.1', n['id']))
        self.assertEqual(s['allocation_pools'], [{'start': '10.0.0.2', 'end': '10.0.0.254'}])
        p = self.js('port', 'create', '--network', 'net1', 'p1')
        self.assertEqual(p['status'], 'DOWN')
        self.assertIn('10.0.0.2', json.dumps(p['fixed_ips']))
        p2 = self.js('port', 'create', '--network', 'net1', '--fixed-ip', 'subnet=sub1,ip-address=10.0.0.77',
                     '--device', 'vm-1', 'p2')
        self.assertIn('10.0.0.77', json.dumps(p2['fixed_ips']))

        g = self.js('security', 'group', 'create', 'web')
        self.assertEqual(g['name'], 'web')
        r = self.js('security', 'group', 'rule', 'create', '--protocol', 'tcp', '--dst-port', '80',
                    '--ingress', 'web')
        self.assertEqual((r['protocol'], r['port_range_min'], r['port_range_max'], r['direction']),
                         ('tcp', 80, 80, 'ingress'))
        r2 = self.js('security', 'group', 'rule', 'create', '--protocol', 'icmp', 'web')
        self.assertEqual(r2['protocol'], 'icmp')
        rules = self.js('security', 'group', 'rule', 'list', 'web')
        self.assertEqual(len(rules), 4)  # two egress, tcp/80, icmp
        groups = {x['Name'] for x in self.js('security', 'group', 'list')}
        self.assertTrue({'default', 'web'} <= groups, groups)

        nets = self.js('network', 'list')
        self.assertEqual([x['Name'] for x in nets], ['net1'])
        self.assertEqual(nets[0]['Subnets'], [s['id']])
        shown = self.js('network', 'show', 'net1')
        self.assertEqual(shown['id'], n['id'])
        ports = self.js('port', 'list')
        self.assertEqual(sorted(x['Name'] for x in ports), ['p1', 'p2'])
        self.assertEqual([x['Name'] for x in self.js('port', 'list', '--device-id', 'vm-1')], ['p2'])
        self.assertEqual([x['Name'] for x in self.js('port', 'list', '--network', 'net1',
                                                      '--fixed-ip', 'ip-address=10.0.0.77')], ['p2'])
        self.assertEqual([x['Name'] for x in self.js('subnet', 'list', '--network', 'net1')], ['sub1'])

        # In use: the client reports the conflict and the network stays.
        r = self.osc('network', 'delete', 'net1', check=False, fmt=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(len(self.js('network', 'list')), 1)
        self.osc('port', 'delete', 'p1', 'p2', fmt=False)
        self.osc('security', 'group', 'delete', 'web', fmt=False)
        self.osc('network', 'delete', 'net1', fmt=False)
        self.assertEqual(self.js('network', 'list'), [])
        self.assertEqual(self.js('subnet', 'list'), [])
        r = self.osc('network', 'show', 'net1', check=False, fmt=False)
        self.assertNotEqual(r.returncode, 0)


if __name__ == '__main__':
    unittest.main(verbosity=2)
