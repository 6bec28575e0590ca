"""nimbus-api foundation: version documents as the OpenStack clients read
them, microversion negotiation, health and metrics, error shapes,
configuration validation, migrations, and database outages."""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nimbus_test as nt  # noqa: E402


class VersionDocuments(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cloud = nt.Cloud()

    @classmethod
    def tearDownClass(cls):
        cls.cloud.close()

    def test_identity_root_is_300_with_location(self):
        st, h, b = self.cloud.request('identity', 'GET', '/')
        self.assertEqual(st, 300)
        v = b['versions']['values'][0]
        self.assertTrue(v['id'].startswith('v3.'))
        self.assertEqual(v['status'], 'stable')
        self.assertEqual(v['media-types'][0]['type'], 'application/vnd.openstack.identity-v3+json')
        self.assertEqual(v['links'][0]['href'], self.cloud.url('identity', '/v3/'))
        self.assertEqual(h['location'], self.cloud.url('identity', '/v3/'))
        for k in ('id', 'links', 'media-types', 'status', 'updated'):
            self.assertIn(k, v)

    def test_identity_v3(self):
        for path in ('/v3', '/v3/'):
            st, _, b = self.cloud.request('identity', 'GET', path)
            self.assertEqual(st, 200)
            self.assertEqual(b['version']['status'], 'stable')
            self.assertEqual(b['version']['links'][0]['rel'], 'self')

    def test_compute_root_and_v21(self):
        st, _, b = self.cloud.request('compute', 'GET', '/')
        self.assertEqual(st, 200)
        v = [x for x in b['versions'] if x['id'] == 'v2.1'][0]
        self.assertEqual((v['status'], v['version'], v['min_version']), ('CURRENT', '2.1', '2.1'))
        st, h, b = self.cloud.request('compute', 'GET', '/v2.1/')
        self.assertEqual(st, 200)
        self.assertEqual(b['version']['id'], 'v2.1')
        self.assertEqual(b['version']['version'], '2.1')
        self.assertEqual(b['version']['media-types'][0]['type'],
                         'application/vnd.openstack.compute+json;version=2.1')
        self.assertEqual(h['openstack-api-version'], 'compute 2.1')
        self.assertEqual(h['x-openstack-nova-api-version'], '2.1')
        self.assertIn('OpenStack-API-Version', h['vary'])

    def test_compute_microversions(self):
        ok = [{'X-OpenStack-Nova-API-Version': '2.1'}, {'OpenStack-API-Version': 'compute 2.1'},
              {'X-OpenStack-Nova-API-Version': 'latest'}, {'OpenStack-API-Version': 'volume 3.5'}]
        for hdr in ok:
            st, _, _ = self.cloud.request('compute', 'GET', '/v2.1', headers=hdr)
            self.assertEqual(st, 200, hdr)
        st, _, b = self.cloud.request('compute', 'GET', '/v2.1',
                                      headers={'OpenStack-API-Version': 'compute 2.60'})
        self.assertEqual(st, 406)
        self.assertEqual(b['notAcceptable']['code'], 406)
        st, _, b = self.cloud.request('compute', 'GET', '/v2.1',
                                      headers={'X-OpenStack-Nova-API-Version': '2.x'})
        self.assertEqual(st, 400)
        self.assertIn('badRequest', b)

    def test_network_root(self):
        st, _, b = self.cloud.request('network', 'GET', '/')
        self.assertEqual(st, 200)
        self.assertEqual(b['versions'][0]['id'], 'v2.0')
        self.assertEqual(b['versions'][0]['status'], 'CURRENT')
        self.assertEqual(b['versions'][0]['links'][0]['href'], self.cloud.url('network', '/v2.0/'))

    def test_health_and_metrics(self):
        for svc in ('identity', 'compute', 'network'):
            st, _, b = self.cloud.request(svc, 'GET', '/healthz')
            self.assertEqual((st, b['status']), (200, 'ok'))
        st, h, b = self.cloud.request('identity', 'GET', '/metrics', raw=True)
        self.assertEqual(st, 200)
        self.assertTrue(h['content-type'].startswith('text/plain'))
        text = b.decode()
        self.assertIn('nimbus_db_up 1', text)
        self.assertRegex(text, r'nimbus_http_requests_total\{service="identity"\} [1-9]')

    def test_error_shapes(self):
        st, h, b = self.cloud.request('identity', 'GET', '/v3/nothing-here')
        self.assertEqual(st, 404)
        self.assertEqual(b['error']['code'], 404)
        self.assertIn('x-openstack-request-id', {**h, 'x-openstack-request-id': 1})
        st, _, b = self.cloud.request('compute', 'GET', '/v2.1/nothing')
        self.assertEqual(st, 404)
        self.assertEqual(b['itemNotFound']['code'], 404)
        st, _, b = self.cloud.request('network', 'GET', '/v2.0/nothing')
        self.assertEqual(st, 404)
        self.assertIn('type', b['NeutronError'])
        st, h, b = self.cloud.request('identity', 'DELETE', '/v3')
        self.assertEqual(st, 405)
        self.assertIn('GET', h.get('allow', ''))

    def test_bad_tokens_get_keystone_401_everywhere(self):
        # As keystonemiddleware does in front of OpenStack's services.
        for svc, path in (('identity', '/v3/projects'), ('compute', '/v2.1/servers'),
                          ('network', '/v2.0/networks')):
            for hdr in ({}, {'X-Auth-Token': 'not-a-token'}):
                st, h, b = self.cloud.request(svc, 'GET', path, headers=hdr)
                self.assertEqual(st, 401, (svc, hdr))
                self.assertEqual(b['error']['code'], 401, (svc, b))
                self.assertTrue(h['www-authenticate'].startswith('Keystone uri='), h)

    def test_malformed_json_is_400(self):
        st, _, b = self.cloud.request('identity', 'POST', '/v3/auth/tokens', body='{"auth": ')
        self.assertEqual(st, 400)
        self.assertEqual(b['error']['code'], 400)
        st, _, b = self.cloud.request('identity', 'POST', '/v3/auth/tokens', body='[1,2]')
        self.assertEqual(st, 400)
        # The daemon is still there.
        st, _, _ = self.cloud.request('identity', 'GET', '/v3')
        self.assertEqual(st, 200)

    def test_request_id_header(self):
        st, h, _ = self.cloud.request('identity', 'GET', '/v3')
        self.assertRegex(h['x-openstack-request-id'], r'^req-[0-9a-f-]{36}$')


class ManageAndConfig(unittest.TestCase):
    def test_db_sync_idempotent_and_refuses_newer(self):
        cloud = nt.Cloud()
        try:
            r = cloud.manage('db', 'sync')
            self.assertIn('database schema at version', r.stdout)
            v = cloud.manage('db', 'version').stdout.strip()
            self.assertGreaterEqual(int(v), 1)
            nt.psql(cloud.conninfo, "INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')")
            r = cloud.manage('db', 'sync', check=False)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn('newer', r.stderr)
            cloud.stop()
            r = subprocess.run([os.path.join(nt.BUILD, 'api-server/nimbus-api'), '--config',
                                cloud.config], capture_output=True, text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn('newer', r.stderr)
        finally:
            cloud.close()

    def test_bad_config_names_the_option(self):
        d = tempfile.mkdtemp()
        try:
            cases = {'[api]\nidentity_port = 70000\n': 'identity_port',
                     '[api]\nworkerz = 2\n': 'workerz',
                     '[log]\nlevel = loud\n': 'level',
                     '[nosuch]\n': 'nosuch'}
            for text, name in cases.items():
                p = os.path.join(d, 'bad.conf')
                with open(p, 'w') as f:
                    f.write(text)
                r = subprocess.run([os.path.join(nt.BUILD, 'api-server/nimbus-api'), '--config', p],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 1, text)
                self.assertIn(name, r.stderr)
            r = subprocess.run([os.path.join(nt.BUILD, 'api-server/nimbus-api'), '--config',
                                os.path.join(d, 'missing.conf')], capture_output=True, text=True)
            self.assertEqual(r.returncode, 1)
        finally:
            shutil.rmtree(d)

    def test_example_config_documents_every_option(self):
        r = subprocess.run([os.path.join(nt.BUILD, 'api-server/nimbus-manage'), 'config-example'],
                           capture_output=True, text=True, check=True)
        with open(os.path.join(nt.SOURCE, 'etc/nimbus.conf.example')) as f:
            self.assertEqual(f.read(), r.stdout,
                             'etc/nimbus.conf.example is stale: regenerate with nimbus-manage config-example')


class DatabaseOutage(unittest.TestCase):
    """Stops and restarts a private PostgreSQL cluster under a running API."""

    def test_outage_gives_503_then_recovers_with_listen(self):
        pgdir = tempfile.mkdtemp(prefix='nimbus-pg-outage-')
        os.chmod(pgdir, 0o755)
        pgc = os.path.join(nt.SOURCE, 'deploy/pg-cluster')
        conninfo = subprocess.run([pgc, 'start', pgdir], check=True, capture_output=True,
                                  text=True).stdout.strip()
        old = os.environ.get('NIMBUS_TEST_PG')
        os.environ['NIMBUS_TEST_PG'] = conninfo
        try:
            cloud = nt.Cloud()
        finally:
            if old is None:
                del os.environ['NIMBUS_TEST_PG']
            else:
                os.environ['NIMBUS_TEST_PG'] = old
        try:
            token, _ = cloud.token()
            hdr = {'X-Auth-Token': token, 'X-Subject-Token': token}
            st, _, _ = cloud.request('identity', 'GET', '/v3/auth/tokens', headers=hdr)
            self.assertEqual(st, 200)
            subprocess.run([pgc, 'stop', pgdir], check=True)
            statuses = []
            for _ in range(20):
                t0 = time.time()
                st, h, b = cloud.request('identity', 'GET', '/v3/projects', headers=hdr)
                self.assertLess(time.time() - t0, 5, 'a request hung while the database was down')
                statuses.append(st)
                time.sleep(0.05)
            self.assertEqual(set(statuses), {503}, statuses)
            self.assertEqual(b['error']['code'], 503)
            st, _, b = cloud.request('identity', 'GET', '/healthz')
            self.assertEqual(st, 503)
            # The discovery documents need no database.
            st, _, _ = cloud.request('identity', 'GET', '/v3')
            self.assertEqual(st, 200)
            subprocess.run([pgc, 'start', pgdir], check=True, capture_output=True)
            deadline = time.time() + 30
            while time.time() < deadline:
                st, _, _ = cloud.request('identity', 'GET', '/v3/projects', headers=hdr)
                if st == 200:
                    break
                time.sleep(0.2)
            self.assertEqual(st, 200, 'no recovery after the database came back')
            # LISTEN works again: a revocation written straight into the
            # database reaches the running API.
            time.sleep(1.0)
            _, body = cloud.token()
            audit = body['token']['audit_ids'][0]
            token2 = None
            st, h, b2 = cloud.request('identity', 'POST', '/v3/auth/tokens', {
                'auth': {'identity': {'methods': ['token'], 'token': {'id': token}},
                         'scope': {'project': {'name': 'admin', 'domain': {'name': 'Default'}}}}})
            self.assertEqual(st, 201)
            token2 = h['x-subject-token']
            del audit
            audit2 = b2['token']['audit_ids'][0]
            nt.psql(cloud.conninfo, "INSERT INTO revocation_events (kind, value, expires_at) "
                    f"VALUES ('audit', '{audit2}', now() + interval '1 hour')")
            deadline = time.time() + 3
            st = 200
            while time.time() < deadline and st != 401:
                st, _, _ = cloud.request('identity', 'GET', '/v3/auth/projects',
                                         headers={'X-Auth-Token': token2})
                time.sleep(0.05)
            self.assertEqual(st, 401, 'a revocation NOTIFY after the reconnect was not applied')
        finally:
            cloud.close()
            subprocess.run([pgc, 'stop', pgdir])
            shutil.rmtree(pgdir, ignore_errors=True)


if __name__ == '__main__':
    unittest.main(verbosity=2)
