"""Identity through the real openstack client (python3-openstackclient from
Debian): the commands an operator types on day one."""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nimbus_test as nt  # noqa: E402

OPENSTACK = '/usr/bin/openstack'


@unittest.skipUnless(os.path.exists(OPENSTACK), 'python3-openstackclient is not installed')
class OpenStackClient(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cloud = nt.Cloud()

    @classmethod
    def tearDownClass(cls):
        cls.cloud.close()

    def osc(self, *args, user='admin', password=None, project='admin', check=True, fmt=True):
        r = self.cloud.osc(*args, user=user, password=password, project=project, fmt=fmt)
        if check and r.returncode != 0:
            raise AssertionError(f'{" ".join(args)} failed ({r.returncode}):\n{r.stderr}\n'
                                 + self.cloud.log_tail())
        return r

    def js(self, *args, **kw):
        return json.loads(self.osc(*args, **kw).stdout)

    def test_day_one(self):
        tok = self.js('token', 'issue')
        self.assertTrue(tok['id'])
        self.assertTrue(tok['project_id'])
        self.assertTrue(tok['user_id'])
        self.assertIn('expires', tok)

        p = self.js('project', 'create', '--description', 'CLI test', 'cli-proj')
        self.assertEqual(p['name'], 'cli-proj')
        self.assertEqual(p['domain_id'], 'default')
        names = [x['Name'] for x in self.js('project', 'list')]
        self.assertIn('cli-proj', names)
        self.assertEqual(self.js('project', 'show', 'cli-proj')['id'], p['id'])

        u = self.js('user', 'create', '--password', 'cli-secret', '--project', 'cli-proj', 'cli-user')
        self.assertEqual(u['name'], 'cli-user')
        self.osc('role', 'add', '--project', 'cli-proj', '--user', 'cli-user', 'member', fmt=False)
        ra = self.js('role', 'assignment', 'list', '--user', 'cli-user', '--names')
        self.assertEqual([(a['Role'], a['Project']) for a in ra], [('member', 'cli-proj@Default')])

        # The new user logs in with the client too.
        t2 = self.js('token', 'issue', user='cli-user', password='cli-secret', project='cli-proj')
        self.assertEqual(t2['project_id'], p['id'])
        self.assertEqual(t2['user_id'], u['id'])

        cat = self.js('catalog', 'list')
        types = {c['Type'] for c in cat}
        self.assertTrue({'identity', 'compute', 'network'} <= types, types)

        # An application credential made with the client logs in with it.
        ac = self.js('application', 'credential', 'create', '--secret', 'cli-ac-secret', 'cli-ac',
                     user='cli-user', password='cli-secret', project='cli-proj')
        self.assertEqual(ac['name'], 'cli-ac')
        path = os.path.join(self.cloud.dir, 'clouds-ac.yaml')
        with open(path, 'w') as f:
            f.write(f"""clouds:
  test:
    auth_type: v3applicationcredential
    auth:
      auth_url: {self.cloud.url('identity', '/v3')}
      application_credential_id: {ac['id']}
      application_credential_secret: cli-ac-secret
    region_name: RegionOne
    identity_api_version: 3
""")
        env = {k: v for k, v in os.environ.items() if not k.startswith('OS_')}
        env.update(OS_CLIENT_CONFIG_FILE=path, OS_CLOUD='test')
        r = subprocess.run([OPENSTACK, 'token', 'issue', '-f', 'json'], env=env,
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)['project_id'], p['id'])

        # Members are refused admin calls.
        r = self.osc('project', 'create', 'nope', user='cli-user', password='cli-secret',
                     project='cli-proj', check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('403', r.stderr)

        # Revoke the member's token: it stops working.
        self.osc('token', 'revoke', t2['id'], fmt=False)
        st, _, _ = self.cloud.request('identity', 'GET', '/v3/auth/projects',
                                      headers={'X-Auth-Token': t2['id']})
        self.assertEqual(st, 401)

        self.osc('user', 'delete', 'cli-user', fmt=False)
        self.osc('project', 'delete', 'cli-proj', fmt=False)
        names = [x['Name'] for x in self.js('project', 'list')]
        self.assertNotIn('cli-proj', names)


if __name__ == '__main__':
    unittest.main(verbosity=2)
