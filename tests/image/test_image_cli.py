"""nimbus-image through the real client (Debian's python3-openstackclient):
image create --file, list, show, save (byte-identical), set --property,
delete, and project isolation."""
import hashlib
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import image_test as it  # noqa: E402

OPENSTACK = '/usr/bin/openstack'


@unittest.skipUnless(os.path.exists(OPENSTACK), 'python3-openstackclient is not installed')
class ImageCLI(it.ImageCase):
    @classmethod
    def setUpClass(cls):
        cls.c = it.ImageCloud()

    def osc(self, *args, user='admin', password=None, project='admin', check=True, fmt=True):
        r = self.c.osc(*args, user=user, password=password, project=project, fmt=fmt,
                       timeout=180)
        if check and r.returncode != 0:
            raise AssertionError(f'{" ".join(args)} failed ({r.returncode}):\n{r.stderr}\n'
                                 + self.c.image_log_tail())
        return r

    def js(self, *args, **kw):
        return json.loads(self.osc(*args, **kw).stdout)

    def test_image_lifecycle(self):
        d = self.c.dir
        src = os.path.join(d, 'disk.qcow2')
        qemu_img = '/usr/bin/qemu-img'
        if os.path.exists(qemu_img):
            subprocess.run([qemu_img, 'create', '-q', '-f', 'qcow2', src, '32M'], check=True)
            with open(src, 'ab') as f:
                f.write(os.urandom(300000))   # Trailing bytes: still a valid header.
        else:
            # Without qemu-img: a minimal qcow2 version 3 header by hand.
            hdr = bytearray(512)
            hdr[0:4] = b'QFI\xfb'
            hdr[4:8] = (3).to_bytes(4, 'big')
            hdr[20:24] = (16).to_bytes(4, 'big')
            hdr[24:32] = (32 << 20).to_bytes(8, 'big')
            hdr[100:104] = (104).to_bytes(4, 'big')
            with open(src, 'wb') as f:
                f.write(bytes(hdr) + os.urandom(300000))
        with open(src, 'rb') as f:
            data = f.read()
        img = self.js('image', 'create', '--disk-format', 'qcow2', '--container-format', 'bare',
                      '--file', src, 'cli-img')
        self.assertEqual(img['name'], 'cli-img')
        iid = img['id']
        shown = self.js('image', 'show', 'cli-img')
        self.assertEqual(shown['id'], iid)
        self.assertEqual(shown['status'], 'active')
        self.assertEqual(shown['checksum'], hashlib.md5(data).hexdigest())
        self.assertEqual(shown['size'], len(data))
        self.assertEqual(shown['disk_format'], 'qcow2')
        names = [x['Name'] for x in self.js('image', 'list')]
        self.assertIn('cli-img', names)
        out = os.path.join(d, 'saved.qcow2')
        self.osc('image', 'save', '--file', out, 'cli-img', fmt=False)
        with open(out, 'rb') as f:
            self.assertEqual(f.read(), data)
        self.osc('image', 'set', '--property', 'os_distro=debian', '--property', 'k=v',
                 '--min-ram', '128', 'cli-img', fmt=False)
        shown = self.js('image', 'show', iid)
        props = shown.get('properties', {})
        self.assertEqual(props.get('k'), 'v', shown)
        self.assertEqual(props.get('os_distro'), 'debian', shown)
        self.assertEqual(shown['min_ram'], 128)
        self.osc('image', 'set', '--name', 'cli-renamed', '--tag', 'blue', iid, fmt=False)
        shown = self.js('image', 'show', iid)
        self.assertEqual(shown['name'], 'cli-renamed')
        self.assertIn('blue', shown['tags'])
        self.osc('image', 'unset', '--property', 'k', iid, fmt=False)
        shown = self.js('image', 'show', iid)
        self.assertNotIn('k', shown.get('properties', {}))

        # Isolation: a member of another project does not see the private
        # image; it may not create a public one; admin may.
        st, _, b = self.c.request('identity', 'POST', '/v3/projects',
                                  {'project': {'name': 'cli-other', 'domain_id': 'default'}},
                                  headers={'X-Auth-Token': self.c.admin_token()})
        self.assertEqual(st, 201)
        self.osc('user', 'create', '--password', 'other-pw', '--project', 'cli-other', 'cli-other',
                 fmt=False)
        self.osc('role', 'add', '--project', 'cli-other', '--user', 'cli-other', 'member', fmt=False)
        self.osc('image', 'set', '--private', iid, fmt=False)
        other = dict(user='cli-other', password='other-pw', project='cli-other')
        names = [x['Name'] for x in self.js('image', 'list', **other)]
        self.assertNotIn('cli-renamed', names)
        r = self.osc('image', 'show', iid, check=False, **other)
        self.assertNotEqual(r.returncode, 0)
        small = os.path.join(d, 'small.raw')
        with open(small, 'wb') as f:
            f.write(b'\0' * 4096)
        r = self.osc('image', 'create', '--public', '--file', small, 'not-allowed', check=False,
                     **other)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('403', r.stderr)
        pub = self.js('image', 'create', '--public', '--file', small, 'admin-public')
        self.assertEqual(pub['visibility'], 'public')
        names = [x['Name'] for x in self.js('image', 'list', **other)]
        self.assertIn('admin-public', names)

        self.osc('image', 'delete', iid, fmt=False)
        r = self.osc('image', 'show', iid, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertNotIn(iid, self.c.store_files())

    def test_import_glance_direct(self):
        """openstack image create --import: create, PUT .../stage, POST
        .../import {"method": {"name": "glance-direct"}}."""
        src = os.path.join(self.c.dir, 'import.raw')
        data = os.urandom(3 << 20)
        with open(src, 'wb') as f:
            f.write(data)
        img = self.js('image', 'create', '--import', '--disk-format', 'raw',
                      '--container-format', 'bare', '--file', src, 'cli-imported')
        shown = self.js('image', 'show', img['id'])
        self.assertEqual(shown['status'], 'active')
        self.assertEqual(shown['checksum'], hashlib.md5(data).hexdigest())
        self.assertEqual(shown['size'], len(data))
        out = os.path.join(self.c.dir, 'imported.out')
        self.osc('image', 'save', '--file', out, img['id'], fmt=False)
        with open(out, 'rb') as f:
            self.assertEqual(f.read(), data)


if __name__ == '__main__':
    unittest.main(verbosity=2)
