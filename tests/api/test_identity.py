"""Identity (Keystone v3) through the real HTTP API: tokens, revocation,
failed-login limits, and the project isolation matrix that later APIs
extend."""
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nimbus_test as nt  # noqa: E402

MINT = os.environ.get('NIMBUS_MINT_TOKEN', os.path.join(nt.BUILD, 'tests/api/mint_token'))


def pw_body(user, password, project=None, domain='Default'):
    b = {'auth': {'identity': {'methods': ['password'], 'password': {
        'user': {'name': user, 'domain': {'name': domain}, 'password': password}}}}}
    if project:
        b['auth']['scope'] = {'project': {'name': project, 'domain': {'name': domain}}}
    return b


def eventually(fn, expected, timeout=1.5):
    """Revocations reach every API process within a second (NOTIFY)."""
    deadline = time.time() + timeout
    while True:
        got = fn()
        if got == expected or time.time() > deadline:
            return got
        time.sleep(0.05)


class Identity(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cloud = nt.Cloud(extra_conf={'identity': {'max_failed_logins_per_user': 3,
                                                      'max_failed_logins_per_address': 1000}})
        cls.admin, _ = cls.cloud.token()
        c = cls.cloud
        ah = {'X-Auth-Token': cls.admin}
        cls.ids = {}
        st, _, roles = c.request('identity', 'GET', '/v3/roles', headers=ah)
        cls.role = {r['name']: r['id'] for r in roles['roles']}
        for p in ('alpha', 'beta'):
            st, _, b = c.request('identity', 'POST', '/v3/projects',
                                 {'project': {'name': p, 'domain_id': 'default'}}, ah)
            assert st == 201, b
            cls.ids[p] = b['project']['id']
            st, _, b = c.request('identity', 'POST', '/v3/users',
                                 {'user': {'name': p + '-user', 'password': p + '-pw',
                                           'domain_id': 'default'}}, ah)
            assert st == 201, b
            cls.ids[p + '-user'] = b['user']['id']
            st, _, _ = c.request('identity', 'PUT', f"/v3/projects/{cls.ids[p]}/users/"
                                 f"{cls.ids[p + '-user']}/roles/{cls.role['member']}", headers=ah)
            assert st == 204

    @classmethod
    def tearDownClass(cls):
        cls.cloud.close()

    def req(self, *a, **k):
        return self.cloud.request('identity', *a, **k)

    def member(self, p):
        tok, _ = self.cloud.token(p + '-user', p + '-pw', p)
        return tok

    def test_token_body(self):
        st, h, b = self.req('POST', '/v3/auth/tokens', pw_body('admin', nt.ADMIN_PASSWORD, 'admin'))
        self.assertEqual(st, 201)
        self.assertIn('x-subject-token', h)
        t = b['token']
        self.assertEqual(t['methods'], ['password'])
        self.assertEqual(t['user']['name'], 'admin')
        self.assertEqual(t['user']['domain'], {'id': 'default', 'name': 'Default'})
        self.assertEqual(t['project']['name'], 'admin')
        self.assertIn('admin', [r['name'] for r in t['roles']])
        self.assertTrue(t['expires_at'].endswith('Z'))
        types = {s['type'] for s in t['catalog']}
        self.assertTrue({'identity', 'compute', 'network'} <= types, types)
        ident = [s for s in t['catalog'] if s['type'] == 'identity'][0]
        self.assertEqual({e['interface'] for e in ident['endpoints']}, {'public', 'internal', 'admin'})
        self.assertEqual(ident['endpoints'][0]['region'], 'RegionOne')
        st, h, b = self.req('POST', '/v3/auth/tokens?nocatalog', pw_body('admin', nt.ADMIN_PASSWORD, 'admin'))
        self.assertNotIn('catalog', b['token'])

    def test_validate_head_and_rescope(self):
        tok, body = self.cloud.token()
        h = {'X-Auth-Token': self.admin, 'X-Subject-Token': tok}
        st, rh, b = self.req('GET', '/v3/auth/tokens', headers=h)
        self.assertEqual(st, 200)
        self.assertEqual(rh['x-subject-token'], tok)
        self.assertEqual(b['token']['audit_ids'], body['token']['audit_ids'])
        st, _, _ = self.req('HEAD', '/v3/auth/tokens', headers=h)
        self.assertEqual(st, 200)
        # Unscoped token, then re-scope with the token method.
        st, rh, b = self.req('POST', '/v3/auth/tokens', pw_body('alpha-user', 'alpha-pw'))
        self.assertEqual(st, 201)
        self.assertNotIn('project', b['token'])
        unscoped = rh['x-subject-token']
        st, rh, b = self.req('POST', '/v3/auth/tokens', {'auth': {
            'identity': {'methods': ['token'], 'token': {'id': unscoped}},
            'scope': {'project': {'id': self.ids['alpha']}}}})
        self.assertEqual(st, 201, b)
        self.assertEqual(b['token']['project']['id'], self.ids['alpha'])
        self.assertEqual(len(b['token']['audit_ids']), 2)
        # Re-scoping into a project without a role fails.
        st, _, _ = self.req('POST', '/v3/auth/tokens', {'auth': {
            'identity': {'methods': ['token'], 'token': {'id': unscoped}},
            'scope': {'project': {'id': self.ids['beta']}}}})
        self.assertEqual(st, 401)
        # A member may validate their own token, not someone else's.
        mine = rh['x-subject-token']
        st, _, _ = self.req('GET', '/v3/auth/tokens', headers={'X-Auth-Token': mine, 'X-Subject-Token': mine})
        self.assertEqual(st, 200)
        st, _, _ = self.req('GET', '/v3/auth/tokens', headers={'X-Auth-Token': mine, 'X-Subject-Token': self.admin})
        self.assertEqual(st, 403)

    def test_wrong_password_leaks_nothing(self):
        st1, _, b1 = self.req('POST', '/v3/auth/tokens', pw_body('beta-user', 'wrong', 'beta'))
        st2, _, b2 = self.req('POST', '/v3/auth/tokens', pw_body('no-such-user', 'wrong', 'beta'))
        self.assertEqual((st1, st2), (401, 401))
        self.assertEqual(b1, b2)
        self.assertNotIn('beta-user', str(b1))
        with open(self.cloud.log_path, 'rb') as f:
            self.assertNotIn(b'wrong', f.read().replace(b'wrong password', b''))

    def test_bad_tokens_are_401(self):
        tok, _ = self.cloud.token()
        flipped = []
        for pos in (5, len(tok) // 2, len(tok) - 3):
            c = 'A' if tok[pos] != 'A' else 'B'
            flipped.append(tok[:pos] + c + tok[pos + 1:])
        now = int(time.time())
        expired = subprocess.run([MINT, self.cloud.dir + '/keys', self.ids['alpha-user'], 'default',
                                  self.ids['alpha'], 'default', self.role['member'] + ':member',
                                  str(now - 7200), str(now - 3600)],
                                 check=True, capture_output=True, text=True).stdout.strip()
        valid_minted = subprocess.run([MINT, self.cloud.dir + '/keys', self.ids['alpha-user'], 'default',
                                       self.ids['alpha'], 'default', self.role['member'] + ':member',
                                       str(now - 10), str(now + 3600)],
                                      check=True, capture_output=True, text=True).stdout.strip()
        other_keys = tempfile.mkdtemp()
        unknown = subprocess.run([MINT, other_keys + '/k', self.ids['alpha-user'], 'default',
                                  self.ids['alpha'], 'default', self.role['member'] + ':member',
                                  str(now - 10), str(now + 3600)],
                                 check=True, capture_output=True, text=True).stdout.strip()
        st, _, _ = self.req('GET', '/v3/auth/projects', headers={'X-Auth-Token': valid_minted})
        self.assertEqual(st, 200, 'the minting helper must produce tokens the server accepts')
        for bad in flipped + [expired, unknown, '', 'x' * 5000, 'garbage!!']:
            st, h, b = self.req('GET', '/v3/auth/projects', headers={'X-Auth-Token': bad})
            self.assertEqual(st, 401, bad[:40])
            self.assertEqual(b['error']['code'], 401)
        st, _, _ = self.req('GET', '/v3/auth/projects')
        self.assertEqual(st, 401)

    def test_revoke(self):
        tok = self.member('alpha')
        h = {'X-Auth-Token': tok}
        st, _, _ = self.req('GET', '/v3/auth/projects', headers=h)
        self.assertEqual(st, 200)
        # A re-scoped child dies with its parent.
        st, rh, _ = self.req('POST', '/v3/auth/tokens', {'auth': {
            'identity': {'methods': ['token'], 'token': {'id': tok}},
            'scope': {'project': {'id': self.ids['alpha']}}}})
        child = rh['x-subject-token']
        st, _, _ = self.req('DELETE', '/v3/auth/tokens', headers={'X-Auth-Token': self.admin,
                                                                  'X-Subject-Token': tok})
        self.assertEqual(st, 204)
        for t in (tok, child):
            st, _, _ = self.req('GET', '/v3/auth/projects', headers={'X-Auth-Token': t})
            self.assertEqual(st, 401)
        st, _, _ = self.req('GET', '/v3/auth/tokens', headers={'X-Auth-Token': self.admin,
                                                               'X-Subject-Token': tok})
        self.assertEqual(st, 404)

    def test_removing_role_or_disabling_user_ends_tokens(self):
        c = self.cloud
        ah = {'X-Auth-Token': self.admin}
        st, _, b = self.req('POST', '/v3/users', {'user': {'name': 'temp', 'password': 'temp-pw'}}, ah)
        uid = b['user']['id']
        path = f"/v3/projects/{self.ids['beta']}/users/{uid}/roles/{self.role['member']}"
        self.assertEqual(self.req('PUT', path, headers=ah)[0], 204)
        tok, _ = c.token('temp', 'temp-pw', 'beta')
        self.assertEqual(self.req('GET', '/v3/auth/projects', headers={'X-Auth-Token': tok})[0], 200)
        time.sleep(1.1)  # Revocation times have one-second resolution.
        self.assertEqual(self.req('DELETE', path, headers=ah)[0], 204)
        self.assertEqual(eventually(lambda: self.req('GET', '/v3/auth/projects',
                                                     headers={'X-Auth-Token': tok})[0], 401), 401)
        self.assertEqual(self.req('PUT', path, headers=ah)[0], 204)
        time.sleep(1.1)
        tok, _ = c.token('temp', 'temp-pw', 'beta')
        time.sleep(1.1)
        st, _, _ = self.req('PATCH', f'/v3/users/{uid}', {'user': {'enabled': False}}, ah)
        self.assertEqual(st, 200)
        self.assertEqual(eventually(lambda: self.req('GET', '/v3/auth/projects',
                                                     headers={'X-Auth-Token': tok})[0], 401), 401)
        st, _, _ = self.req('POST', '/v3/auth/tokens', pw_body('temp', 'temp-pw', 'beta'))
        self.assertEqual(st, 401)

    def test_rescope_sees_role_changes(self):
        ah = {'X-Auth-Token': self.admin}
        st, _, b = self.req('POST', '/v3/users', {'user': {'name': 'scoper', 'password': 'sc-pw'}}, ah)
        uid = b['user']['id']
        path = f"/v3/projects/{self.ids['beta']}/users/{uid}/roles/{self.role['member']}"
        self.assertEqual(self.req('PUT', path, headers=ah)[0], 204)

        def rescope():
            st, h, _ = self.req('POST', '/v3/auth/tokens', pw_body('scoper', 'sc-pw'))
            self.assertEqual(st, 201)
            return self.req('POST', '/v3/auth/tokens', {'auth': {
                'identity': {'methods': ['token'], 'token': {'id': h['x-subject-token']}},
                'scope': {'project': {'id': self.ids['beta']}}}})[0]
        self.assertEqual(rescope(), 201)
        self.assertEqual(rescope(), 201)   # now answered from the scope cache
        time.sleep(1.1)
        self.assertEqual(self.req('DELETE', path, headers=ah)[0], 204)
        time.sleep(1.1)
        self.assertEqual(eventually(rescope, 401), 401)

    def test_application_credentials(self):
        ah = {'X-Auth-Token': self.admin}
        st, _, b = self.req('POST', '/v3/users', {'user': {'name': 'ac-user', 'password': 'ac-pw'}}, ah)
        uid = b['user']['id']
        self.assertEqual(self.req('PUT', f"/v3/projects/{self.ids['alpha']}/users/{uid}/roles/"
                                  f"{self.role['member']}", headers=ah)[0], 204)
        tok, _ = self.cloud.token('ac-user', 'ac-pw', 'alpha')
        h = {'X-Auth-Token': tok}
        base = f'/v3/users/{uid}/application_credentials'
        st, _, b = self.req('POST', base, {'application_credential': {'name': 'ci', 'secret': 's3cret'}}, h)
        self.assertEqual(st, 201, b)
        ac = b['application_credential']
        self.assertEqual(ac['secret'], 's3cret')
        self.assertEqual(ac['project_id'], self.ids['alpha'])
        self.assertEqual([r['name'] for r in ac['roles']], ['member'])
        st, _, b = self.req('POST', base, {'application_credential': {'name': 'gen'}}, h)
        self.assertEqual(st, 201)
        self.assertGreaterEqual(len(b['application_credential']['secret']), 32)
        # Roles the creator does not hold are refused.
        st, _, _ = self.req('POST', base, {'application_credential': {
            'name': 'greedy', 'roles': [{'name': 'admin'}]}}, h)
        self.assertEqual(st, 403)
        st, _, b = self.req('GET', base, headers=h)
        self.assertEqual(sorted(c['name'] for c in b['application_credentials']), ['ci', 'gen'])
        self.assertNotIn('secret', str(b))
        # Another user cannot see them.
        st, _, _ = self.req('GET', f"/v3/users/{uid}/application_credentials",
                            headers={'X-Auth-Token': self.member('beta')})
        self.assertEqual(st, 403)
        login = {'auth': {'identity': {'methods': ['application_credential'],
                                       'application_credential': {'id': ac['id'], 'secret': 's3cret'}}}}
        st, rh, b = self.req('POST', '/v3/auth/tokens', login)
        self.assertEqual(st, 201, b)
        self.assertEqual(b['token']['methods'], ['application_credential'])
        self.assertEqual(b['token']['project']['id'], self.ids['alpha'])
        by_name = {'auth': {'identity': {'methods': ['application_credential'],
                                         'application_credential': {
                                             'name': 'ci', 'secret': 's3cret',
                                             'user': {'name': 'ac-user', 'domain': {'name': 'Default'}}}}}}
        self.assertEqual(self.req('POST', '/v3/auth/tokens', by_name)[0], 201)
        login['auth']['identity']['application_credential']['secret'] = 'wrong'
        self.assertEqual(self.req('POST', '/v3/auth/tokens', login)[0], 401)
        st, _, _ = self.req('DELETE', f"{base}/{ac['id']}", headers=h)
        self.assertEqual(st, 204)
        login['auth']['identity']['application_credential']['secret'] = 's3cret'
        self.assertEqual(self.req('POST', '/v3/auth/tokens', login)[0], 401)
        # A password change right before a login does not revoke the new token.
        st, _, _ = self.req('PATCH', f'/v3/users/{uid}', {'user': {'password': 'ac-pw2'}}, ah)
        self.assertEqual(st, 200)
        time.sleep(0.3)
        tok2, _ = self.cloud.token('ac-user', 'ac-pw2', 'alpha')
        self.assertEqual(self.req('GET', '/v3/auth/projects', headers={'X-Auth-Token': tok2})[0], 200)

    def test_failed_logins_are_limited(self):
        ah = {'X-Auth-Token': self.admin}
        self.req('POST', '/v3/users', {'user': {'name': 'victim', 'password': 'victim-pw'}}, ah)
        codes = [self.req('POST', '/v3/auth/tokens', pw_body('victim', 'nope'))[0] for _ in range(3)]
        self.assertEqual(codes, [401, 401, 401])
        st, h, b = self.req('POST', '/v3/auth/tokens', pw_body('victim', 'victim-pw'))
        self.assertEqual(st, 429, 'the right password must not get through while the user is locked')
        self.assertIn('retry-after', h)
        # Other users are not affected.
        self.assertEqual(self.req('POST', '/v3/auth/tokens', pw_body('alpha-user', 'alpha-pw'))[0], 201)

    def test_isolation_matrix(self):
        alpha = self.member('alpha')
        h = {'X-Auth-Token': alpha}
        beta_id = self.ids['beta']
        # Reading and changing another project, listing everything,
        # reading another user: refused.
        self.assertEqual(self.req('GET', f'/v3/projects/{beta_id}', headers=h)[0], 403)
        self.assertEqual(self.req('PATCH', f'/v3/projects/{beta_id}', {'project': {'name': 'x'}}, h)[0], 403)
        self.assertEqual(self.req('DELETE', f'/v3/projects/{beta_id}', headers=h)[0], 403)
        self.assertEqual(self.req('GET', '/v3/projects', headers=h)[0], 403)
        self.assertEqual(self.req('GET', f"/v3/users/{self.ids['beta-user']}", headers=h)[0], 403)
        # Their own project and themselves: allowed.
        self.assertEqual(self.req('GET', f"/v3/projects/{self.ids['alpha']}", headers=h)[0], 200)
        self.assertEqual(self.req('GET', f"/v3/users/{self.ids['alpha-user']}", headers=h)[0], 200)
        st, _, b = self.req('GET', '/v3/auth/projects', headers=h)
        self.assertEqual([p['name'] for p in b['projects']], ['alpha'])
        # Admin-only calls.
        for method, path, body in (
                ('POST', '/v3/projects', {'project': {'name': 'evil'}}),
                ('POST', '/v3/users', {'user': {'name': 'evil'}}),
                ('POST', '/v3/roles', {'role': {'name': 'evil'}}),
                ('PUT', f"/v3/projects/{beta_id}/users/{self.ids['alpha-user']}/roles/{self.role['admin']}", None),
                ('GET', '/v3/users', None),
                ('GET', '/v3/role_assignments', None),
                ('POST', '/v3/services', {'service': {'type': 'evil'}})):
            st, _, b = self.req(method, path, body, h)
            self.assertEqual(st, 403, f'{method} {path}')
            self.assertEqual(b['error']['code'], 403)

    def test_crud_and_errors(self):
        ah = {'X-Auth-Token': self.admin}
        st, _, b = self.req('POST', '/v3/projects', {'project': {'name': 'gamma', 'description': 'g'}}, ah)
        self.assertEqual(st, 201)
        pid = b['project']['id']
        self.assertEqual(b['project']['domain_id'], 'default')
        self.assertEqual(self.req('POST', '/v3/projects', {'project': {'name': 'gamma'}}, ah)[0], 409)
        st, _, b = self.req('GET', '/v3/projects?name=gamma', headers=ah)
        self.assertEqual([p['id'] for p in b['projects']], [pid])
        st, _, b = self.req('PATCH', f'/v3/projects/{pid}', {'project': {'description': 'new'}}, ah)
        self.assertEqual(b['project']['description'], 'new')
        self.assertEqual(self.req('GET', '/v3/projects/gamma', headers=ah)[0], 404)
        self.assertEqual(self.req('DELETE', f'/v3/projects/{pid}', headers=ah)[0], 204)
        self.assertEqual(self.req('DELETE', f'/v3/projects/{pid}', headers=ah)[0], 404)
        self.assertEqual(self.req('POST', '/v3/projects', {'project': {'name': 'x' * 300}}, ah)[0], 400)
        self.assertEqual(self.req('POST', '/v3/projects', {'project': {'name': 'd', 'domain_id': 'nope'}}, ah)[0], 400)
        self.assertEqual(self.req('POST', '/v3/projects', {'project': {'name': 7}}, ah)[0], 400)
        self.assertEqual(self.req('POST', '/v3/projects', {'nothing': {}}, ah)[0], 400)
        st, _, b = self.req('GET', '/v3/users?name=alpha-user', headers=ah)
        self.assertEqual(len(b['users']), 1)
        self.assertNotIn('password', b['users'][0])
        self.assertNotIn('password_hash', str(b))
        st, _, b = self.req('GET', '/v3/domains', headers=ah)
        self.assertIn('Default', [d['name'] for d in b['domains']])
        st, _, b = self.req('GET', '/v3/services', headers=ah)
        self.assertEqual(st, 200)
        st, _, b = self.req('GET', '/v3/endpoints', headers=ah)
        self.assertGreaterEqual(len(b['endpoints']), 9)
        st, _, b = self.req('GET', f"/v3/role_assignments?user.id={self.ids['alpha-user']}&include_names",
                            headers=ah)
        self.assertEqual(b['role_assignments'][0]['scope']['project']['name'], 'alpha')

    def test_password_change_by_user(self):
        ah = {'X-Auth-Token': self.admin}
        st, _, b = self.req('POST', '/v3/users', {'user': {'name': 'changer', 'password': 'one'}}, ah)
        uid = b['user']['id']
        st, _, tb = self.req('POST', '/v3/auth/tokens', pw_body('changer', 'one'))
        self.assertEqual(st, 201)
        tok = self.req('POST', '/v3/auth/tokens', pw_body('changer', 'one'))[1]['x-subject-token']
        st, _, _ = self.req('POST', f'/v3/users/{uid}/password',
                            {'user': {'password': 'two', 'original_password': 'wrong'}}, {'X-Auth-Token': tok})
        self.assertEqual(st, 401)
        st, _, _ = self.req('POST', f'/v3/users/{uid}/password',
                            {'user': {'password': 'two', 'original_password': 'one'}}, {'X-Auth-Token': tok})
        self.assertEqual(st, 204)
        self.assertEqual(self.req('POST', '/v3/auth/tokens', pw_body('changer', 'two'))[0], 201)


class KeyRotation(unittest.TestCase):
    def test_rotate_and_reload(self):
        cloud = nt.Cloud()
        try:
            def ok(tok):
                return cloud.request('identity', 'GET', '/v3/auth/projects',
                                     headers={'X-Auth-Token': tok})[0]
            t0, _ = cloud.token()
            r = cloud.manage('keys', 'rotate', '--max-keys', '2')
            self.assertIn('2 key(s)', r.stdout)
            cloud.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)
            t1, _ = cloud.token()
            self.assertNotEqual(t0[:12], t1[:12], 'the new primary key must sign new tokens')
            self.assertEqual((ok(t0), ok(t1)), (200, 200))
            cloud.manage('keys', 'rotate', '--max-keys', '2')
            cloud.proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)
            # The first key was pruned: its tokens are no longer accepted.
            self.assertEqual((ok(t0), ok(t1)), (401, 200))
        finally:
            cloud.close()


class FailedLoginsPerAddress(unittest.TestCase):
    def test_address_limit(self):
        cloud = nt.Cloud(extra_conf={'identity': {'max_failed_logins_per_address': 4}})
        try:
            codes = [cloud.request('identity', 'POST', '/v3/auth/tokens',
                                   pw_body(f'ghost{i}', 'nope'))[0] for i in range(4)]
            self.assertEqual(codes, [401] * 4)
            st, _, b = cloud.request('identity', 'POST', '/v3/auth/tokens',
                                     pw_body('admin', nt.ADMIN_PASSWORD, 'admin'))
            self.assertEqual(st, 429)
            self.assertEqual(b['error']['code'], 429)
        finally:
            cloud.close()


if __name__ == '__main__':
    unittest.main(verbosity=2)
