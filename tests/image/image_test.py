"""Test harness for nimbus-image: a nimbus_test.Cloud (throwaway database,
keys, bootstrap, nimbus-api) plus nimbus-image on a free port, with the
image service in the catalog, and helpers for projects, users and raw
uploads.

nimbus-image reads a configuration file that is nimbus-api's plus an
[image] section (until nimbus-api's option table has the [image] rows, the
harness gives nimbus-api the file without that section)."""
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'api'))
import nimbus_test as nt  # noqa: E402

IMAGE_BIN = os.path.join(nt.BUILD, 'image-service', 'nimbus-image')


class ImageCloud(nt.Cloud):
    def __init__(self, image_conf=None, **kw):
        self.image_port = nt.free_port()
        self.image_proc = None
        self.image_extra = dict(image_conf or {})
        super().__init__(**kw)
        self.ports['image'] = self.image_port
        self.store = os.path.join(self.dir, 'images')
        self.image_config = os.path.join(self.dir, 'nimbus-image.conf')
        self.image_log_path = os.path.join(self.dir, 'nimbus-image.log')
        self.write_image_config()
        self.start_image()

    def manage(self, *args, check=True):
        if args and args[0] == 'bootstrap':
            args = tuple(args) + ('--image-url', f'http://127.0.0.1:{self.image_port}')
        return super().manage(*args, check=check)

    def write_image_config(self, **overrides):
        with open(self.config) as f:
            base = f.read()
        conf = {'host': '127.0.0.1', 'port': self.image_port, 'store_dir': self.store,
                'body_timeout': 5}
        conf.update(self.image_extra)
        conf.update(overrides)
        with open(self.image_config, 'w') as f:
            f.write(base)
            if '[image]' not in base:
                f.write('[image]\n')
            for k, v in conf.items():
                f.write(f'{k} = {v}\n')

    def start_image(self):
        self.image_logf = open(self.image_log_path, 'ab')
        wrapper = os.environ.get('NIMBUS_IMAGE_WRAPPER', '').split()
        env = dict(os.environ)
        # AddressSanitizer's quarantine (256 MiB by default) would otherwise
        # show up as RSS growth in the streaming tests.
        env['ASAN_OPTIONS'] = 'quarantine_size_mb=16:' + env.get('ASAN_OPTIONS', '')
        self.image_proc = subprocess.Popen(wrapper + [IMAGE_BIN, '--config', self.image_config],
                                           stdout=self.image_logf, stderr=self.image_logf,
                                           env=env)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.image_proc.poll() is not None:
                raise RuntimeError(f'nimbus-image exited with {self.image_proc.returncode}: '
                                   + self.image_log_tail())
            try:
                st, _, _ = self.request('image', 'GET', '/healthz')
                if st == 200 and self.image_proc.poll() is None:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError('nimbus-image did not become healthy: ' + self.image_log_tail())

    def stop_image(self, sig=signal.SIGTERM, timeout=60):
        rc = None
        if self.image_proc:
            if self.image_proc.poll() is None:
                self.image_proc.send_signal(sig)
                self.image_proc.wait(timeout)
            rc = self.image_proc.returncode
            self.image_proc = None
            self.image_logf.close()
        return rc

    def restart_image(self, **overrides):
        rc = self.stop_image()
        self.write_image_config(**overrides)
        self.start_image()
        return rc

    def image_log_tail(self, n=40):
        try:
            with open(self.image_log_path, 'rb') as f:
                return b''.join(f.readlines()[-n:]).decode(errors='replace')
        except OSError:
            return ''

    def image_pid(self):
        return self.image_proc.pid

    def close(self):
        if self.image_proc:
            rc = self.stop_image()
            if rc != 0:
                print(f'nimbus-image exited with {rc}:\n' + self.image_log_tail(60), file=sys.stderr)
        super().close()

    # ---- Identity helpers.

    def admin_token(self):
        if not getattr(self, '_admin_tok', None):
            self._admin_tok = self.token()[0]
        return self._admin_tok

    def make_project_user(self, prefix, role='member'):
        """Creates a project and a user holding 'role' on it; returns
        (project_id, token)."""
        h = {'X-Auth-Token': self.admin_token()}
        name = f'{prefix}-{uuid.uuid4().hex[:6]}'
        st, _, b = self.request('identity', 'POST', '/v3/projects',
                                {'project': {'name': name, 'domain_id': 'default'}}, headers=h)
        assert st == 201, (st, b)
        pid = b['project']['id']
        pw = 'pw-' + uuid.uuid4().hex[:10]
        st, _, b = self.request('identity', 'POST', '/v3/users',
                                {'user': {'name': name, 'domain_id': 'default', 'password': pw,
                                          'default_project_id': pid}}, headers=h)
        assert st == 201, (st, b)
        uid = b['user']['id']
        st, _, b = self.request('identity', 'GET', f'/v3/roles?name={role}', headers=h)
        assert st == 200 and b['roles'], (st, b)
        rid = b['roles'][0]['id']
        st, _, b = self.request('identity', 'PUT', f'/v3/projects/{pid}/users/{uid}/roles/{rid}',
                                headers=h)
        assert st in (200, 204), (st, b)
        tok, _ = self.token(user=name, password=pw, project=name)
        return pid, tok

    # ---- Image helpers.

    def img(self, method, path, token, body=None, headers=None, raw=False):
        # Accept as keystoneauth sends it (errors then come as JSON).
        h = {'X-Auth-Token': token, 'Accept': 'application/json'}
        h.update(headers or {})
        return self.request('image', method, path, body, headers=h, raw=raw)

    def create_image(self, token, **attrs):
        body = {'disk_format': 'raw', 'container_format': 'bare'}
        body.update(attrs)
        st, h, b = self.img('POST', '/v2/images', token, body)
        assert st == 201, (st, b)
        return b

    def upload(self, token, image_id, data, chunked=False, chunk=1 << 20):
        """PUT the bytes (or an iterable of byte strings) to the image;
        returns (status, parsed body)."""
        conn = http.client.HTTPConnection('127.0.0.1', self.image_port, timeout=120)
        h = {'X-Auth-Token': token, 'Content-Type': 'application/octet-stream',
             'Accept': 'application/json'}
        try:
            if chunked:
                conn.putrequest('PUT', f'/v2/images/{image_id}/file')
                for k, v in h.items():
                    conn.putheader(k, v)
                conn.putheader('Transfer-Encoding', 'chunked')
                conn.endheaders()
                pieces = data if not isinstance(data, (bytes, bytearray)) else \
                    (data[i:i + chunk] for i in range(0, len(data), chunk))
                for piece in pieces:
                    if piece:
                        conn.send(b'%x\r\n' % len(piece))
                        conn.send(piece)
                        conn.send(b'\r\n')
                conn.send(b'0\r\n\r\n')
            else:
                conn.request('PUT', f'/v2/images/{image_id}/file', body=data, headers=h)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            r = conn.getresponse()
            payload = r.read()
        except (ConnectionResetError, http.client.RemoteDisconnected):
            conn.close()
            return None, None
        conn.close()
        try:
            return r.status, json.loads(payload) if payload else None
        except ValueError:
            return r.status, payload

    def store_files(self):
        try:
            return sorted(os.listdir(self.store))
        except FileNotFoundError:
            return []


class ImageCase(unittest.TestCase):
    """A test class with its own ImageCloud in cls.c (set up by the
    subclass's setUpClass), stopped after the class; a nimbus-image that
    did not exit 0 (a sanitizer report?) fails the class."""

    @classmethod
    def tearDownClass(cls):
        rc = cls.c.stop_image()
        log = cls.c.image_log_tail(80)
        cls.c.close()
        if rc != 0:
            raise AssertionError(f'nimbus-image exited with {rc} (sanitizer report?):\n{log}')


def md5(b):
    return hashlib.md5(b).hexdigest()


def sha512(b):
    return hashlib.sha512(b).hexdigest()


def vm_rss_kib(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0
