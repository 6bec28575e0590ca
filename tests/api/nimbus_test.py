"""Test harness: a throwaway database on the test PostgreSQL cluster and a
real nimbus-api started on free ports, plus a small HTTP client.

The cluster comes from NIMBUS_TEST_PG (set by tests/run); without it the
harness starts its own with deploy/pg-cluster."""
import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import sys
import subprocess
import tempfile
import time
import uuid

SOURCE = os.environ.get('NIMBUS_SOURCE', os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD = os.environ.get('NIMBUS_BUILD', os.path.join(SOURCE, 'build'))
ADMIN_PASSWORD = 'admin-' + uuid.uuid4().hex[:12]
OPENSTACK = '/usr/bin/openstack'   # python3-openstackclient

_own_cluster = None


def cluster_conninfo():
    global _own_cluster
    ci = os.environ.get('NIMBUS_TEST_PG')
    if ci:
        return ci
    if _own_cluster is None:
        d = tempfile.mkdtemp(prefix='nimbus-pg-')
        os.chmod(d, 0o755)
        out = subprocess.run([os.path.join(SOURCE, 'deploy/pg-cluster'), 'start', d],
                             check=True, capture_output=True, text=True).stdout.strip()
        _own_cluster = (d, out)
        atexit.register(lambda: (subprocess.run([os.path.join(SOURCE, 'deploy/pg-cluster'), 'stop', d]),
                                 shutil.rmtree(d, ignore_errors=True)))
    return _own_cluster[1]


PORT_DIR = '/tmp/nimbus-test-ports'
_my_ports = []


def _release_ports():
    for p in _my_ports:
        try:
            os.unlink(os.path.join(PORT_DIR, str(p)))
        except OSError:
            pass


atexit.register(_release_ports)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def free_port():
    """A loopback port free now and reserved for this test process: tests
    run in parallel, and a port one of them was given (free when it asked,
    bound only later by its daemon) is never handed to another while the
    first lives (a file per port in PORT_DIR holding the owner's pid)."""
    os.makedirs(PORT_DIR, mode=0o1777, exist_ok=True)
    for _ in range(100):
        s = socket.socket()
        s.bind(('127.0.0.1', 0))
        p = s.getsockname()[1]
        s.close()
        path = os.path.join(PORT_DIR, str(p))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    owner = int(f.read().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and _pid_alive(owner):
                continue
            try:
                os.unlink(path)     # left by a test that died
            except OSError:
                pass
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        _my_ports.append(p)
        return p
    raise RuntimeError('no free port found')


def psql(conninfo, sql):
    return subprocess.run(['psql', conninfo, '-qtAX', '-c', sql], check=True,
                          capture_output=True, text=True).stdout.strip()


class Cloud:
    """A database, a key directory and a running nimbus-api."""

    def __init__(self, extra_conf=None, workers=1):
        base = cluster_conninfo()
        self.dbname = 'nimbus_t_' + uuid.uuid4().hex[:10]
        psql(base, f'CREATE DATABASE {self.dbname}')
        self.conninfo = base.replace('dbname=nimbus', f'dbname={self.dbname}')
        self.base_conninfo = base
        self.dir = tempfile.mkdtemp(prefix='nimbus-test-')
        self.ports = {'identity': free_port(), 'compute': free_port(), 'network': free_port()}
        conf = {
            'api': {'host': '127.0.0.1', 'identity_port': self.ports['identity'],
                    'compute_port': self.ports['compute'], 'network_port': self.ports['network'],
                    'workers': workers, 'header_timeout': 5},
            'database': {'connection': self.conninfo},
            'identity': {'key_dir': os.path.join(self.dir, 'keys'),
                         # Cheaper Argon2id keeps the suite quick; the
                         # benchmark uses the defaults.
                         'password_opslimit': 1, 'password_memlimit_kib': 8192},
            'log': {'level': 'info'},
        }
        for sec, kv in (extra_conf or {}).items():
            conf.setdefault(sec, {}).update(kv)
        self.config = os.path.join(self.dir, 'nimbus.conf')
        with open(self.config, 'w') as f:
            for sec, kv in conf.items():
                f.write(f'[{sec}]\n')
                for k, v in kv.items():
                    f.write(f'{k} = {v}\n')
        self.manage('db', 'sync')
        self.manage('keys', 'setup')
        self.manage('bootstrap', '--password', ADMIN_PASSWORD)
        self.proc = None
        self.log_path = os.path.join(self.dir, 'nimbus-api.log')
        self.start()
        atexit.register(self.close)

    def manage(self, *args, check=True):
        return subprocess.run([os.path.join(BUILD, 'api-server/nimbus-manage'), '--config',
                               self.config, *args], check=check, capture_output=True, text=True)

    def start(self):
        self.log = open(self.log_path, 'ab')
        wrapper = os.environ.get('NIMBUS_API_WRAPPER', '').split()
        self.proc = subprocess.Popen(wrapper + [os.path.join(BUILD, 'api-server/nimbus-api'), '--config',
                                                self.config], stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f'nimbus-api exited with {self.proc.returncode}: ' + self.log_tail())
            try:
                st, _, _ = self.request('identity', 'GET', '/healthz')
                if st == 200 and self.proc.poll() is None:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError('nimbus-api did not become healthy: ' + self.log_tail())

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout)
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        if getattr(self, 'log', None):
            self.log.close()
            self.log = None
        return rc

    def log_tail(self, n=40):
        try:
            with open(self.log_path, 'rb') as f:
                return b''.join(f.readlines()[-n:]).decode(errors='replace')
        except OSError:
            return ''

    def close(self):
        if self.proc:
            if self.proc.poll() is not None or os.environ.get('NIMBUS_TEST_SHOWLOG'):
                print(f'nimbus-api died with status {self.proc.returncode}:\n' + self.log_tail(60),
                      file=sys.stderr)
            self.stop()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            try:
                psql(self.base_conninfo, f'DROP DATABASE IF EXISTS {self.dbname}')
            except subprocess.CalledProcessError:
                pass
            self.dir = None

    def url(self, service, path=''):
        return f'http://127.0.0.1:{self.ports[service]}{path}'

    def request(self, service, method, path, body=None, headers=None, raw=False):
        """Returns (status, headers dict with lower-case names, parsed JSON or bytes)."""
        conn = http.client.HTTPConnection('127.0.0.1', self.ports[service], timeout=30)
        h = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            h.setdefault('Content-Type', 'application/json')
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        payload = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        conn.close()
        if raw or not payload:
            return r.status, hdrs, payload
        try:
            return r.status, hdrs, json.loads(payload)
        except ValueError:
            return r.status, hdrs, payload

    def token(self, user='admin', password=None, project='admin', domain='Default'):
        body = {'auth': {'identity': {'methods': ['password'], 'password': {'user': {
            'name': user, 'domain': {'name': domain},
            'password': password if password is not None else ADMIN_PASSWORD}}}}}
        if project:
            body['auth']['scope'] = {'project': {'name': project, 'domain': {'name': domain}}}
        st, h, b = self.request('identity', 'POST', '/v3/auth/tokens', body)
        if st != 201:
            raise AssertionError(f'token issue for {user} gave {st}: {b}')
        return h['x-subject-token'], b

    def clouds_yaml(self, user='admin', password=None, project='admin'):
        path = os.path.join(self.dir, f'clouds-{user}.yaml')
        with open(path, 'w') as f:
            f.write(f"""clouds:
  test:
    auth:
      auth_url: {self.url('identity', '/v3')}
      username: {user}
      password: {password or ADMIN_PASSWORD}
      project_name: {project}
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    identity_api_version: 3
    interface: public
""")
        return path

    def osc(self, *args, user='admin', password=None, project='admin', fmt=False,
            timeout=120):
        """Runs the real client (OPENSTACK) as 'user' of 'project' against
        this cloud, with no OS_* variable of the caller's environment but
        the clouds.yaml of clouds_yaml(); with fmt, '-f json' is added.
        Returns the CompletedProcess (text)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith('OS_')}
        env.update(OS_CLIENT_CONFIG_FILE=self.clouds_yaml(user, password, project),
                   OS_CLOUD='test')
        cmd = [OPENSTACK, *args] + (['-f', 'json'] if fmt else [])
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
