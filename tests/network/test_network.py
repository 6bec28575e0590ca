"""Network API (Neutron v2.0 compatible) against a real nimbus-api and a real
PostgreSQL: shapes, filters, paging, isolation, admin-only attributes,
IPAM and VNI allocation under concurrency, in-use conflicts, quotas and
the default security group."""
import concurrent.futures
import os
import re
import sys
import unittest
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'api'))
import nimbus_test as nt  # noqa: E402

UUID = re.compile(r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')
TS = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$')
NETWORK_KEYS = {'id', 'name', 'admin_state_up', 'status', 'subnets', 'shared', 'mtu',
                'port_security_enabled', 'router:external', 'project_id', 'tenant_id',
                'availability_zone_hints', 'availability_zones', 'ipv4_address_scope',
                'ipv6_address_scope', 'l2_adjacency', 'revision_number', 'created_at',
                'updated_at', 'tags', 'description', 'is_default'}
PROVIDER_KEYS = {'provider:network_type', 'provider:physical_network', 'provider:segmentation_id'}
SUBNET_KEYS = {'id', 'name', 'network_id', 'ip_version', 'cidr', 'gateway_ip', 'allocation_pools',
               'enable_dhcp', 'dns_nameservers', 'host_routes', 'ipv6_address_mode',
               'ipv6_ra_mode', 'subnetpool_id', 'segment_id', 'project_id', 'tenant_id',
               'revision_number', 'created_at', 'updated_at', 'tags', 'description',
               'service_types'}
PORT_KEYS = {'id', 'name', 'network_id', 'admin_state_up', 'mac_address', 'status', 'device_id',
             'device_owner', 'fixed_ips', 'security_groups', 'port_security_enabled',
             'allowed_address_pairs', 'project_id', 'tenant_id', 'revision_number',
             'created_at', 'updated_at', 'tags', 'description'}
MAC = re.compile(r'^fa:16:3e:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$')


class Network(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cloud = c = nt.Cloud()
        cls.admin, body = c.token()
        cls.admin_project = body['token']['project']['id']
        ah = {'X-Auth-Token': cls.admin}
        st, _, roles = c.request('identity', 'GET', '/v3/roles', headers=ah)
        member = {r['name']: r['id'] for r in roles['roles']}['member']
        cls.ids = {}
        for p in ('alpha', 'beta'):
            st, _, b = c.request('identity', 'POST', '/v3/projects',
                                 {'project': {'name': p, 'domain_id': 'default'}}, ah)
            assert st == 201, b
            cls.ids[p] = b['project']['id']
            st, _, b = c.request('identity', 'POST', '/v3/users',
                                 {'user': {'name': p + '-user', 'password': p + '-pw',
                                           'domain_id': 'default'}}, ah)
            assert st == 201, b
            st, _, _ = c.request('identity', 'PUT', f"/v3/projects/{cls.ids[p]}/users/"
                                 f"{b['user']['id']}/roles/{member}", headers=ah)
            assert st == 204
        cls.alpha = c.token('alpha-user', 'alpha-pw', 'alpha')[0]
        cls.beta = c.token('beta-user', 'beta-pw', 'beta')[0]

    @classmethod
    def tearDownClass(cls):
        cls.cloud.close()

    def req(self, method, path, body=None, tok=None):
        st, _, b = self.cloud.request('network', method, path, body,
                                      {'X-Auth-Token': tok or self.admin})
        return st, b

    def ok(self, method, path, body=None, tok=None, status=None):
        st, b = self.req(method, path, body, tok)
        want = status or {'POST': 201, 'DELETE': 204}.get(method, 200)
        self.assertEqual(st, want, f'{method} {path}: {b}\n' + self.cloud.log_tail(10))
        return b

    def err(self, method, path, body, tok, status, typ=None):
        st, b = self.req(method, path, body, tok)
        self.assertEqual(st, status, f'{method} {path}: {b}')
        self.assertIn('NeutronError', b)
        self.assertEqual(set(b['NeutronError']), {'type', 'message', 'detail'})
        if typ:
            self.assertEqual(b['NeutronError']['type'], typ, b)
        return b['NeutronError']

    def net(self, name, tok=None, **kw):
        return self.ok('POST', '/v2.0/networks', {'network': dict(name=name, **kw)}, tok)['network']

    def subnet(self, net_id, cidr, tok=None, **kw):
        return self.ok('POST', '/v2.0/subnets',
                       {'subnet': dict(network_id=net_id, cidr=cidr, ip_version=4, **kw)}, tok)['subnet']

    def port(self, net_id, tok=None, **kw):
        return self.ok('POST', '/v2.0/ports', {'port': dict(network_id=net_id, **kw)}, tok)['port']

    # ---- documents

    def test_version_and_extensions(self):
        # 401s come in the identity shape, as keystonemiddleware answers.
        st, _, b = self.cloud.request('network', 'GET', '/v2.0')
        self.assertEqual(st, 401)
        self.assertIn('error', b)
        b = self.ok('GET', '/v2.0')
        colls = {r['collection'] for r in b['resources']}
        self.assertTrue({'networks', 'subnets', 'ports', 'security-groups',
                         'security-group-rules', 'quotas'} <= colls)
        ext = {e['alias'] for e in self.ok('GET', '/v2.0/extensions')['extensions']}
        for a in ('external-net', 'security-group', 'net-mtu', 'standard-attr-description',
                  'quotas', 'binding', 'project-id', 'standard-attr-revisions',
                  'standard-attr-timestamp', 'port-security', 'provider'):
            self.assertIn(a, ext)
        # Not implemented, so not advertised.
        for a in ('router', 'floatingip', 'dns-integration', 'qos'):
            self.assertNotIn(a, ext)
        self.assertEqual(self.ok('GET', '/v2.0/extensions/quotas')['extension']['alias'], 'quotas')
        self.err('GET', '/v2.0/extensions/router', None, self.admin, 404)

    # ---- networks

    def test_network_shape_and_crud(self):
        n = self.net('shape-net', self.alpha)
        self.assertEqual(set(n), NETWORK_KEYS)  # members do not see provider:*
        self.assertTrue(UUID.match(n['id']))
        self.assertEqual(n['status'], 'ACTIVE')
        self.assertEqual(n['mtu'], 1450)
        self.assertEqual(n['subnets'], [])
        self.assertIs(n['shared'], False)
        self.assertIs(n['router:external'], False)
        self.assertEqual(n['project_id'], self.ids['alpha'])
        self.assertEqual(n['tenant_id'], self.ids['alpha'])
        self.assertEqual(n['revision_number'], 1)
        self.assertTrue(TS.match(n['created_at']) and TS.match(n['updated_at']))
        self.assertIsNone(n['ipv4_address_scope'])
        # The admin sees the provider attributes: a VXLAN network with a VNI.
        a = self.ok('GET', f"/v2.0/networks/{n['id']}")['network']
        self.assertEqual(set(a), NETWORK_KEYS | PROVIDER_KEYS)
        self.assertEqual(a['provider:network_type'], 'vxlan')
        self.assertIsInstance(a['provider:segmentation_id'], int)
        self.assertIsNone(a['provider:physical_network'])
        u = self.ok('PUT', f"/v2.0/networks/{n['id']}",
                    {'network': {'name': 'renamed', 'description': 'd', 'mtu': 1400}}, self.alpha)['network']
        self.assertEqual((u['name'], u['description'], u['mtu'], u['revision_number']),
                         ('renamed', 'd', 1400, 2))
        self.err('PUT', f"/v2.0/networks/{n['id']}", {'network': {'mtu': 1451}}, self.alpha, 400)
        self.err('PUT', f"/v2.0/networks/{n['id']}", {'network': {'id': 'x'}}, self.alpha, 400)
        self.ok('DELETE', f"/v2.0/networks/{n['id']}", tok=self.alpha)
        self.err('GET', f"/v2.0/networks/{n['id']}", None, self.alpha, 404, 'NetworkNotFound')
        self.err('DELETE', f"/v2.0/networks/{n['id']}", None, self.alpha, 404, 'NetworkNotFound')

    def test_name_lookup_fallback(self):
        # openstacksdk's find: GET by id (404), then ?name=.
        n = self.net('lookup-me', self.alpha)
        e = self.err('GET', '/v2.0/networks/lookup-me', None, self.alpha, 404, 'NetworkNotFound')
        self.assertIn('lookup-me', e['message'])
        got = self.ok('GET', '/v2.0/networks?name=lookup-me', tok=self.alpha)['networks']
        self.assertEqual([x['id'] for x in got], [n['id']])
        self.err('GET', '/v2.0/subnets/nope', None, self.alpha, 404, 'SubnetNotFound')
        self.err('GET', '/v2.0/ports/nope', None, self.alpha, 404, 'PortNotFound')
        self.err('GET', '/v2.0/security-groups/nope', None, self.alpha, 404, 'SecurityGroupNotFound')

    def test_provider_attributes_are_admin_only(self):
        self.err('POST', '/v2.0/networks', {'network': {'name': 'x', 'provider:network_type': 'vxlan'}},
                 self.alpha, 403)
        self.err('POST', '/v2.0/networks', {'network': {'name': 'x', 'provider:segmentation_id': 5}},
                 self.alpha, 403)
        self.err('POST', '/v2.0/networks', {'network': {'name': 'x', 'shared': True}}, self.alpha, 403)
        self.err('POST', '/v2.0/networks', {'network': {'name': 'x', 'router:external': True}},
                 self.alpha, 403)
        v = self.net('vlan-net', **{'provider:network_type': 'vlan',
                                    'provider:physical_network': 'physnet1',
                                    'provider:segmentation_id': 42})
        self.assertEqual((v['provider:network_type'], v['provider:segmentation_id'], v['mtu']),
                         ('vlan', 42, 1500))
        self.err('POST', '/v2.0/networks', {'network': {
            'name': 'dup', 'provider:network_type': 'vlan', 'provider:physical_network': 'physnet1',
            'provider:segmentation_id': 42}}, self.admin, 409, 'VlanIdInUse')
        f = self.net('flat-net', **{'provider:network_type': 'flat',
                                    'provider:physical_network': 'physflat'})
        self.assertIsNone(f['provider:segmentation_id'])
        x = self.net('vx', **{'provider:network_type': 'vxlan', 'provider:segmentation_id': 777777})
        self.err('POST', '/v2.0/networks', {'network': {
            'name': 'vx2', 'provider:network_type': 'vxlan', 'provider:segmentation_id': 777777}},
            self.admin, 409, 'TunnelIdInUse')
        self.err('POST', '/v2.0/networks', {'network': {'name': 'bad', 'provider:network_type': 'gre'}},
                 self.admin, 400)
        for i in (v, f, x):
            self.ok('DELETE', f"/v2.0/networks/{i['id']}")

    def test_vni_unique_under_concurrency(self):
        def create(i):
            return self.req('POST', '/v2.0/networks', {'network': {'name': f'vni-{i}'}})
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            res = list(ex.map(create, range(40)))
        self.assertTrue(all(st == 201 for st, _ in res), [b for st, b in res if st != 201][:3])
        vnis = [b['network']['provider:segmentation_id'] for _, b in res]
        self.assertEqual(len(set(vnis)), 40, vnis)
        self.assertTrue(all(v >= 1 for v in vnis))
        for _, b in res:
            self.ok('DELETE', f"/v2.0/networks/{b['network']['id']}")

    # ---- subnets

    def test_subnet_shape_defaults_and_validation(self):
        n = self.net('sub-net', self.alpha)
        s = self.subnet(n['id'], '192.168.199.0/24', self.alpha, name='s1')
        self.assertEqual(set(s), SUBNET_KEYS)
        self.assertEqual(s['gateway_ip'], '192.168.199.1')
        self.assertEqual(s['allocation_pools'], [{'start': '192.168.199.2', 'end': '192.168.199.254'}])
        self.assertIs(s['enable_dhcp'], True)
        self.assertEqual((s['cidr'], s['ip_version'], s['dns_nameservers'], s['host_routes']),
                         ('192.168.199.0/24', 4, [], []))
        got = self.ok('GET', f"/v2.0/networks/{n['id']}", tok=self.alpha)['network']
        self.assertEqual(got['subnets'], [s['id']])
        # No gateway: the pool is every host address.
        s2 = self.subnet(n['id'], '10.9.0.0/29', self.alpha, gateway_ip=None,
                         dns_nameservers=['8.8.8.8'],
                         host_routes=[{'destination': '10.20.0.0/16', 'nexthop': '10.9.0.3'}])
        self.assertIsNone(s2['gateway_ip'])
        self.assertEqual(s2['allocation_pools'], [{'start': '10.9.0.1', 'end': '10.9.0.6'}])
        self.assertEqual(s2['dns_nameservers'], ['8.8.8.8'])
        # A gateway in the middle splits the pool.
        n3 = self.net('gw-mid', self.alpha)
        s3 = self.subnet(n3['id'], '10.8.0.0/29', self.alpha, gateway_ip='10.8.0.3')
        self.assertEqual(s3['allocation_pools'], [{'start': '10.8.0.1', 'end': '10.8.0.2'},
                                                  {'start': '10.8.0.4', 'end': '10.8.0.6'}])
        # Bad input.
        for cidr in ('10.0.0.0/33', 'banana', '10.0.0.1/24', '300.1.1.0/24', '10.0.0.0/31'):
            self.err('POST', '/v2.0/subnets', {'subnet': {'network_id': n3['id'], 'cidr': cidr,
                                                          'ip_version': 4}}, self.alpha, 400)
        self.err('POST', '/v2.0/subnets', {'subnet': {'network_id': n3['id'], 'cidr': '10.8.0.0/28',
                                                      'ip_version': 4}}, self.alpha, 400)  # overlap
        self.err('POST', '/v2.0/subnets', {'subnet': {'network_id': n3['id'], 'cidr': '10.7.0.0/24',
                                                      'ip_version': 6}}, self.alpha, 400)
        bad_pools = {'subnet': {'network_id': n3['id'], 'cidr': '10.6.0.0/24', 'ip_version': 4,
                                'allocation_pools': [{'start': '10.6.0.10', 'end': '10.6.0.20'},
                                                     {'start': '10.6.0.15', 'end': '10.6.0.30'}]}}
        self.err('POST', '/v2.0/subnets', bad_pools, self.alpha, 409, 'OverlappingAllocationPools')
        gw_in_pool = {'subnet': {'network_id': n3['id'], 'cidr': '10.6.0.0/24', 'ip_version': 4,
                                 'gateway_ip': '10.6.0.15',
                                 'allocation_pools': [{'start': '10.6.0.10', 'end': '10.6.0.20'}]}}
        self.err('POST', '/v2.0/subnets', gw_in_pool, self.alpha, 409, 'GatewayConflictWithAllocationPools')
        out_pool = {'subnet': {'network_id': n3['id'], 'cidr': '10.6.0.0/24', 'ip_version': 4,
                               'allocation_pools': [{'start': '10.6.1.10', 'end': '10.6.1.20'}]}}
        self.err('POST', '/v2.0/subnets', out_pool, self.alpha, 400)
        self.err('POST', '/v2.0/subnets', {'subnet': {'network_id': 'nope', 'cidr': '10.5.0.0/24',
                                                      'ip_version': 4}}, self.alpha, 404, 'NetworkNotFound')
        u = self.ok('PUT', f"/v2.0/subnets/{s['id']}", {'subnet': {'name': 's1b', 'enable_dhcp': False}},
                    self.alpha)['subnet']
        self.assertEqual((u['name'], u['enable_dhcp'], u['revision_number']), ('s1b', False, 2))

    def test_ipv6_subnet(self):
        n = self.net('v6', self.alpha)
        s = self.ok('POST', '/v2.0/subnets', {'subnet': {'network_id': n['id'], 'cidr': 'fd00:1::/64',
                                                         'ip_version': 6}}, self.alpha)['subnet']
        self.assertEqual(s['gateway_ip'], 'fd00:1::1')
        self.assertEqual(s['allocation_pools'], [{'start': 'fd00:1::2', 'end': 'fd00:1::ffff:ffff:ffff:ffff'}])
        p = self.port(n['id'], self.alpha)
        self.assertEqual(p['fixed_ips'], [{'subnet_id': s['id'], 'ip_address': 'fd00:1::2'}])

    def test_subnet_and_network_in_use(self):
        n = self.net('inuse', self.alpha)
        s = self.subnet(n['id'], '10.1.0.0/24', self.alpha)
        p = self.port(n['id'], self.alpha)
        self.err('DELETE', f"/v2.0/subnets/{s['id']}", None, self.alpha, 409, 'SubnetInUse')
        self.err('DELETE', f"/v2.0/networks/{n['id']}", None, self.alpha, 409, 'NetworkInUse')
        self.ok('DELETE', f"/v2.0/ports/{p['id']}", tok=self.alpha)
        self.ok('DELETE', f"/v2.0/subnets/{s['id']}", tok=self.alpha)
        self.subnet(n['id'], '10.1.0.0/24', self.alpha)
        # A network without ports goes with its subnets.
        self.ok('DELETE', f"/v2.0/networks/{n['id']}", tok=self.alpha)
        self.assertEqual(self.ok('GET', f"/v2.0/subnets?network_id={n['id']}", tok=self.alpha)['subnets'], [])

    # ---- ports

    def test_port_shape_and_fixed_ips(self):
        n = self.net('port-net', self.alpha)
        s = self.subnet(n['id'], '10.2.0.0/24', self.alpha)
        p = self.port(n['id'], self.alpha, name='p1', device_id='dev-1', device_owner='compute:nova')
        self.assertTrue(PORT_KEYS <= set(p), PORT_KEYS - set(p))
        self.assertNotIn('binding:host_id', p)
        self.assertEqual(p['status'], 'DOWN')
        self.assertTrue(MAC.match(p['mac_address']), p['mac_address'])
        self.assertEqual(p['fixed_ips'], [{'subnet_id': s['id'], 'ip_address': '10.2.0.2'}])
        self.assertEqual(p['allowed_address_pairs'], [])
        self.assertIs(p['port_security_enabled'], True)
        sgs = self.ok('GET', '/v2.0/security-groups?name=default', tok=self.alpha)['security_groups']
        self.assertEqual(p['security_groups'], [sgs[0]['id']])
        # A requested address is honoured once.
        q = self.port(n['id'], self.alpha, fixed_ips=[{'ip_address': '10.2.0.50'}])
        self.assertEqual(q['fixed_ips'], [{'subnet_id': s['id'], 'ip_address': '10.2.0.50'}])
        self.err('POST', '/v2.0/ports', {'port': {'network_id': n['id'], 'fixed_ips': [
            {'subnet_id': s['id'], 'ip_address': '10.2.0.50'}]}}, self.alpha, 409, 'IpAddressAlreadyAllocated')
        self.err('POST', '/v2.0/ports', {'port': {'network_id': n['id'], 'fixed_ips': [
            {'subnet_id': s['id'], 'ip_address': '10.3.0.5'}]}}, self.alpha, 400, 'InvalidIpForSubnet')
        self.err('POST', '/v2.0/ports', {'port': {'network_id': n['id'], 'mac_address': p['mac_address']}},
                 self.alpha, 409, 'MacAddressInUse')
        # Binding attributes: admin only, to set and to see.
        self.err('POST', '/v2.0/ports', {'port': {'network_id': n['id'], 'binding:host_id': 'h1'}},
                 self.alpha, 403)
        self.err('PUT', f"/v2.0/ports/{p['id']}", {'port': {'status': 'ACTIVE'}}, self.alpha, 403)
        a = self.ok('PUT', f"/v2.0/ports/{p['id']}", {'port': {'binding:host_id': 'node-1',
                                                                'status': 'ACTIVE'}})['port']
        self.assertEqual((a['binding:host_id'], a['status'], a['binding:vif_type']),
                         ('node-1', 'ACTIVE', 'bridge'))
        on_host = self.ok('GET', '/v2.0/ports?binding:host_id=node-1')['ports']
        self.assertEqual([x['id'] for x in on_host], [p['id']])
        u = self.ok('PUT', f"/v2.0/ports/{p['id']}", {'port': {'name': 'p1b', 'device_id': 'dev-2'}},
                    self.alpha)['port']
        self.assertEqual((u['name'], u['device_id'], u['status']), ('p1b', 'dev-2', 'ACTIVE'))
        # fixed_ips filter in Neutron's key=value form, and device_id (port list --server).
        got = self.ok('GET', '/v2.0/ports?fixed_ips=ip_address%3D10.2.0.50', tok=self.alpha)['ports']
        self.assertEqual([x['id'] for x in got], [q['id']])
        got = self.ok('GET', '/v2.0/ports?device_id=dev-2', tok=self.alpha)['ports']
        self.assertEqual([x['id'] for x in got], [p['id']])
        # Port security off: no groups.
        ns = self.port(n['id'], self.alpha, port_security_enabled=False)
        self.assertEqual(ns['security_groups'], [])
        # fixed_ips replaced by PUT: the old address is free again.
        moved = self.ok('PUT', f"/v2.0/ports/{q['id']}", {'port': {'fixed_ips': [
            {'subnet_id': s['id'], 'ip_address': '10.2.0.60'}]}}, self.alpha)['port']
        self.assertEqual(moved['fixed_ips'], [{'subnet_id': s['id'], 'ip_address': '10.2.0.60'}])
        again = self.port(n['id'], self.alpha, fixed_ips=[{'ip_address': '10.2.0.50'}])
        self.assertEqual(again['fixed_ips'][0]['ip_address'], '10.2.0.50')
        self.err('PUT', f"/v2.0/ports/{q['id']}", {'port': {'fixed_ips': [
            {'subnet_id': s['id'], 'ip_address': '10.2.0.50'}]}}, self.alpha, 409, 'IpAddressAlreadyAllocated')
        # The failed update changed nothing.
        self.assertEqual(self.ok('GET', f"/v2.0/ports/{q['id']}", tok=self.alpha)['port']['fixed_ips'],
                         moved['fixed_ips'])

    def concurrent_ports(self, name, cidr, attempts, free, last):
        # Ports of ten projects on one shared network: creates in one
        # project are serialised by its quota lock, so only several
        # projects exercise the subnet lock of the IPAM.
        n = self.net(name, shared=True)
        s = self.subnet(n['id'], cidr)
        projects = [uuid.uuid4().hex for _ in range(10)]
        def create(i):
            return self.req('POST', '/v2.0/ports', {'port': {'network_id': n['id'], 'name': f'c{i}',
                                                             'project_id': projects[i % 10]}})
        with concurrent.futures.ThreadPoolExecutor(25) as ex:
            res = list(ex.map(create, range(attempts)))
        good = [b['port'] for st, b in res if st == 201]
        bad = [(st, b) for st, b in res if st != 201]
        self.assertEqual(len(good), free, bad[:2])
        ips = [p['fixed_ips'][0]['ip_address'] for p in good]
        self.assertEqual(len(set(ips)), free)
        prefix = cidr.rsplit('.', 1)[0]
        self.assertEqual(sorted(ips, key=lambda x: int(x.split('.')[-1])),
                         [f'{prefix}.{i}' for i in range(2, last + 1)])
        self.assertEqual(len(set(p['mac_address'] for p in good)), free)
        self.assertEqual(len(bad), attempts - free)
        return n, s, good, bad, ips

    def test_ipam_100_on_a_26(self):
        _, _, _, bad, _ = self.concurrent_ports('ipam26', '10.51.0.0/26', 100, 61, 62)
        self.assertTrue(all(st == 409 and b['NeutronError']['type'] == 'IpAddressGenerationFailure'
                            for st, b in bad))

    def test_ipam_concurrent_exhaustion(self):
        # 50 concurrent creates on a /28: 13 addresses, .2 to .14.
        n, s, good, bad, ips = self.concurrent_ports('ipam', '10.50.0.0/28', 50, 13, 14)
        for st, b in bad:
            self.assertEqual(st, 409, b)
            self.assertEqual(b['NeutronError']['type'], 'IpAddressGenerationFailure', b)
        # Freed addresses are handed out again.
        self.ok('DELETE', f"/v2.0/ports/{good[0]['id']}")
        again = self.port(n['id'], self.alpha)
        self.assertEqual(again['fixed_ips'][0]['ip_address'], ips[0])
        self.assertEqual(s['id'], again['fixed_ips'][0]['subnet_id'])

    # ---- isolation

    def test_isolation_matrix(self):
        a_net = self.net('a-private', self.alpha)
        a_sub = self.subnet(a_net['id'], '10.60.0.0/24', self.alpha)
        a_port = self.port(a_net['id'], self.alpha)
        shared = self.net('shared-net', shared=True)
        sh_sub = self.subnet(shared['id'], '10.61.0.0/24')
        # B cannot see A's network, subnet or port, by id or in lists.
        self.err('GET', f"/v2.0/networks/{a_net['id']}", None, self.beta, 404, 'NetworkNotFound')
        self.err('GET', f"/v2.0/subnets/{a_sub['id']}", None, self.beta, 404, 'SubnetNotFound')
        self.err('GET', f"/v2.0/ports/{a_port['id']}", None, self.beta, 404, 'PortNotFound')
        self.err('PUT', f"/v2.0/networks/{a_net['id']}", {'network': {'name': 'x'}}, self.beta, 404)
        self.err('DELETE', f"/v2.0/networks/{a_net['id']}", None, self.beta, 404)
        self.err('DELETE', f"/v2.0/ports/{a_port['id']}", None, self.beta, 404)
        self.err('POST', '/v2.0/ports', {'port': {'network_id': a_net['id']}}, self.beta, 404)
        self.err('POST', '/v2.0/subnets', {'subnet': {'network_id': a_net['id'], 'cidr': '10.62.0.0/24',
                                                      'ip_version': 4}}, self.beta, 404)
        b_nets = {x['id'] for x in self.ok('GET', '/v2.0/networks', tok=self.beta)['networks']}
        self.assertNotIn(a_net['id'], b_nets)
        self.assertIn(shared['id'], b_nets)
        b_subs = {x['id'] for x in self.ok('GET', '/v2.0/subnets', tok=self.beta)['subnets']}
        self.assertNotIn(a_sub['id'], b_subs)
        self.assertIn(sh_sub['id'], b_subs)
        self.assertNotIn(a_port['id'], {x['id'] for x in self.ok('GET', '/v2.0/ports', tok=self.beta)['ports']})
        # Shared: B may read it and plug into it, not change it; the port is B's alone.
        self.ok('GET', f"/v2.0/networks/{shared['id']}", tok=self.beta)
        self.err('PUT', f"/v2.0/networks/{shared['id']}", {'network': {'name': 'x'}}, self.beta, 403)
        self.err('DELETE', f"/v2.0/networks/{shared['id']}", None, self.beta, 403)
        b_port = self.port(shared['id'], self.beta)
        self.assertEqual(b_port['project_id'], self.ids['beta'])
        self.err('GET', f"/v2.0/ports/{b_port['id']}", None, self.alpha, 404)
        # Other projects' resources cannot be created in their name.
        self.err('POST', '/v2.0/networks', {'network': {'name': 'x', 'project_id': self.ids['alpha']}},
                 self.beta, 403)
        # The admin sees everything.
        all_nets = {x['id'] for x in self.ok('GET', '/v2.0/networks')['networks']}
        self.assertTrue({a_net['id'], shared['id']} <= all_nets)
        self.ok('GET', f"/v2.0/ports/{a_port['id']}")
        # Security groups are per project.
        a_sg = self.ok('POST', '/v2.0/security-groups', {'security_group': {'name': 'web'}},
                       self.alpha)['security_group']
        self.err('GET', f"/v2.0/security-groups/{a_sg['id']}", None, self.beta, 404)
        self.err('POST', '/v2.0/ports', {'port': {'network_id': shared['id'],
                                                  'security_groups': [a_sg['id']]}}, self.beta, 404)

    # ---- lists

    def test_filters_sorting_paging(self):
        tok = self.beta
        made = [self.net(f'pg-{i}', tok, admin_state_up=(i % 2 == 0)) for i in range(7)]
        ids = {n['id'] for n in made}
        mine = lambda lst: [x for x in lst if x['id'] in ids]  # noqa: E731
        got = mine(self.ok('GET', '/v2.0/networks?admin_state_up=False', tok=tok)['networks'])
        self.assertEqual(sorted(x['name'] for x in got), ['pg-1', 'pg-3', 'pg-5'])
        got = mine(self.ok('GET', '/v2.0/networks?name=pg-1&name=pg-4', tok=tok)['networks'])
        self.assertEqual(sorted(x['name'] for x in got), ['pg-1', 'pg-4'])
        got = self.ok('GET', '/v2.0/networks?name=pg-2&fields=id&fields=name', tok=tok)['networks']
        self.assertEqual(got, [{'id': made[2]['id'], 'name': 'pg-2'}])
        got = self.ok('GET', f"/v2.0/networks/{made[0]['id']}?fields=mtu", tok=tok)['network']
        self.assertEqual(got, {'mtu': 1450})
        got = mine(self.ok('GET', '/v2.0/networks?sort_key=name&sort_dir=desc', tok=tok)['networks'])
        self.assertEqual([x['name'] for x in got], [f'pg-{i}' for i in range(6, -1, -1)])
        # Walk the pages with limit/marker, following the links.
        seen, path = [], '/v2.0/networks?sort_key=name&sort_dir=asc&limit=3&name=' + '&name='.join(
            f'pg-{i}' for i in range(7))
        pages = 0
        while path:
            b = self.ok('GET', path, tok=tok)
            pages += 1
            self.assertLessEqual(len(b['networks']), 3)
            seen += [x['name'] for x in b['networks']]
            nxt = [l['href'] for l in b.get('networks_links', []) if l['rel'] == 'next']
            path = nxt[0].split(str(self.cloud.ports['network']), 1)[1] if nxt else None
            self.assertLess(pages, 10)
        self.assertEqual(seen, [f'pg-{i}' for i in range(7)])
        self.assertEqual(pages, 3)
        self.err('GET', '/v2.0/networks?limit=abc', None, tok, 400)
        self.err('GET', '/v2.0/networks?sort_dir=sideways', None, tok, 400)

    # ---- security groups

    def test_default_security_group_and_rules(self):
        sgs = self.ok('GET', '/v2.0/security-groups', tok=self.alpha)['security_groups']
        default = [g for g in sgs if g['name'] == 'default']
        self.assertEqual(len(default), 1)
        d = default[0]
        rules = {(r['direction'], r['ethertype'], r['remote_group_id'], r['protocol'])
                 for r in d['security_group_rules']}
        self.assertEqual(rules, {('egress', 'IPv4', None, None), ('egress', 'IPv6', None, None),
                                 ('ingress', 'IPv4', d['id'], None), ('ingress', 'IPv6', d['id'], None)})
        # Still one after more requests.
        sgs = self.ok('GET', '/v2.0/security-groups?name=default', tok=self.alpha)['security_groups']
        self.assertEqual([g['id'] for g in sgs], [d['id']])
        self.err('DELETE', f"/v2.0/security-groups/{d['id']}", None, self.alpha, 409,
                 'SecurityGroupCannotRemoveDefault')
        g = self.ok('POST', '/v2.0/security-groups', {'security_group': {'name': 'ssh', 'description': 'x'}},
                    self.alpha)['security_group']
        self.assertEqual(len(g['security_group_rules']), 2)  # the egress pair
        r = self.ok('POST', '/v2.0/security-group-rules', {'security_group_rule': {
            'security_group_id': g['id'], 'direction': 'ingress', 'protocol': 'tcp',
            'port_range_min': 22, 'port_range_max': 22, 'remote_ip_prefix': '10.0.0.0/8'}},
            self.alpha)['security_group_rule']
        self.assertEqual((r['protocol'], r['port_range_min'], r['remote_ip_prefix'], r['ethertype']),
                         ('tcp', 22, '10.0.0.0/8', 'IPv4'))
        self.err('POST', '/v2.0/security-group-rules', {'security_group_rule': {
            'security_group_id': g['id'], 'direction': 'ingress', 'protocol': 'tcp',
            'port_range_min': 22, 'port_range_max': 22, 'remote_ip_prefix': '10.0.0.0/8'}},
            self.alpha, 409, 'SecurityGroupRuleExists')
        self.err('POST', '/v2.0/security-group-rules', {'security_group_rule': {
            'security_group_id': g['id'], 'direction': 'sideways'}}, self.alpha, 400)
        self.err('POST', '/v2.0/security-group-rules', {'security_group_rule': {
            'security_group_id': g['id'], 'direction': 'ingress', 'protocol': 'tcp',
            'port_range_min': 30, 'port_range_max': 20}}, self.alpha, 400)
        got = self.ok('GET', f"/v2.0/security-groups/{g['id']}", tok=self.alpha)['security_group']
        self.assertEqual(len(got['security_group_rules']), 3)
        n = self.net('sgnet', self.alpha)
        self.subnet(n['id'], '10.70.0.0/24', self.alpha)
        p = self.port(n['id'], self.alpha, security_groups=[g['id']])
        self.assertEqual(p['security_groups'], [g['id']])
        self.err('DELETE', f"/v2.0/security-groups/{g['id']}", None, self.alpha, 409, 'SecurityGroupInUse')
        self.ok('DELETE', f"/v2.0/ports/{p['id']}", tok=self.alpha)
        self.ok('DELETE', f"/v2.0/security-group-rules/{r['id']}", tok=self.alpha)
        self.ok('DELETE', f"/v2.0/security-groups/{g['id']}", tok=self.alpha)
        self.err('GET', f"/v2.0/security-group-rules/{r['id']}", None, self.alpha, 404)

    # ---- quotas

    def test_quotas(self):
        b = self.ok('GET', f"/v2.0/quotas/{self.ids['beta']}", tok=self.beta)['quota']
        self.assertEqual((b['network'], b['subnet'], b['port'], b['security_group']), (100, 100, 500, 10))
        self.err('GET', f"/v2.0/quotas/{self.ids['alpha']}", None, self.beta, 403)
        self.err('PUT', f"/v2.0/quotas/{self.ids['beta']}", {'quota': {'network': 1}}, self.beta, 403)
        # A fresh project with a quota of 2 networks gets OverQuota on the third.
        c = self.cloud
        ah = {'X-Auth-Token': self.admin}
        st, _, pr = c.request('identity', 'POST', '/v3/projects',
                              {'project': {'name': 'gamma', 'domain_id': 'default'}}, ah)
        gid = pr['project']['id']
        q = self.ok('PUT', f'/v2.0/quotas/{gid}', {'quota': {'network': 2, 'port': 1}})['quota']
        self.assertEqual((q['network'], q['port']), (2, 1))
        n1 = self.net('g1', project_id=gid)
        self.net('g2', project_id=gid)
        self.err('POST', '/v2.0/networks', {'network': {'name': 'g3', 'project_id': gid}},
                 self.admin, 409, 'OverQuota')
        self.port(n1['id'], project_id=gid)
        self.err('POST', '/v2.0/ports', {'port': {'network_id': n1['id'], 'project_id': gid}},
                 self.admin, 409, 'OverQuota')
        self.assertIn(gid, [x['project_id'] for x in self.ok('GET', '/v2.0/quotas')['quotas']])
        self.ok('DELETE', f'/v2.0/quotas/{gid}')
        self.assertEqual(self.ok('GET', f'/v2.0/quotas/{gid}')['quota']['network'], 100)

    def test_errors_shape(self):
        st, _, b = self.cloud.request('network', 'GET', '/v2.0/networks')
        self.assertEqual(st, 401)
        self.assertEqual(b['error']['code'], 401)
        self.err('POST', '/v2.0/networks', {'network': {'name': 5}}, self.alpha, 400)
        self.err('POST', '/v2.0/networks', {'network': {'admin_state_up': 'maybe'}}, self.alpha, 400)
        self.err('POST', '/v2.0/networks', {'nothing': {}}, self.alpha, 400)
        st, _, b = self.cloud.request('network', 'POST', '/v2.0/networks', '{bad json',
                                      {'X-Auth-Token': self.alpha})
        self.assertEqual(st, 400)
        self.assertIn('NeutronError', b)


class VniRange(unittest.TestCase):
    """[network] vni_min/vni_max bound the VNIs handed out; exhaustion is a
    clean NeutronError, and deleting a network frees its VNI."""

    def test_exhaustion_and_reuse(self):
        cloud = nt.Cloud(extra_conf={'network': {'vni_min': 4000, 'vni_max': 4001,
                                                 'underlay_mtu': 9000}})
        try:
            tok, _ = cloud.token()
            h = {'X-Auth-Token': tok}

            def create(name):
                return cloud.request('network', 'POST', '/v2.0/networks',
                                     {'network': {'name': name}}, h)
            st1, _, a = create('v1')
            st2, _, b = create('v2')
            self.assertEqual((st1, st2), (201, 201))
            vnis = sorted(n['network']['provider:segmentation_id'] for n in (a, b))
            self.assertEqual(vnis, [4000, 4001])
            self.assertEqual(a['network']['mtu'], 8950)
            st, _, c = create('v3')
            self.assertEqual(st, 503, c)
            self.assertEqual(c['NeutronError']['type'], 'NoNetworkAvailable')
            st, _, _ = cloud.request('network', 'DELETE',
                                     f"/v2.0/networks/{a['network']['id']}", headers=h)
            self.assertEqual(st, 204)
            st, _, c = create('v4')
            self.assertEqual(st, 201)
            self.assertEqual(c['network']['provider:segmentation_id'],
                             a['network']['provider:segmentation_id'])
        finally:
            cloud.close()


if __name__ == '__main__':
    unittest.main(verbosity=2)
