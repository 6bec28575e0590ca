"""The dashboard in a real browser: Debian's Chromium, headless, driven by
Selenium through chromedriver, against real daemons: nimbus-api (serving
dashboard/ and the APIs, throwaway PostgreSQL), nimbus-image,
nimbus-scheduler and a nimbus-compute with the fake hypervisor (real boots
are covered by the end-to-end dev-cloud test; this test is about the UI).

- nimbus-api serves the files with the security headers and the right
  Content-Type, and nothing outside the directory: "..", "%2e%2e",
  "%2f", hidden files and symbolic links (to a file and to a directory)
  out of it all get 404; the APIs answer the dashboard's CORS preflight
  and no other origin's.
- A wrong password shows the identity service's message.
- A member of project A logs in, sees no servers, creates one through the
  form (flavor, image, network), sees it become ACTIVE without reloading
  (auto refresh), reads its console log, stops it (SHUTOFF shown),
  starts it (ACTIVE) and stops it again.
- The token is in sessionStorage only: not in localStorage, cookies or the
  URL.
- The server's detail page: its fields and port as the APIs give them,
  the actions of its state (pause -> PAUSED offers Unpause), Nova's
  refusal shown, resize -> VERIFY_RESIZE -> Confirm -> the new flavor,
  a snapshot that becomes an active image.
- Images list and detail; an image uploaded from a file in the browser
  becomes active with the file's size and MD5; networks (create network
  + subnet; a bad CIDR shows the network service's error); security
  groups (a group with a TCP 22 rule created, refusals in Neutron's words,
  rule and group deleted); flavors, key pair import.
- A member of project B does not see A's server, image, snapshot or
  security group; A deletes the server and the image and they go away;
  logging out revokes the token.

Skips (77) only when Chromium or Selenium is not installed or cannot
start."""
import base64
import hashlib
import http.client
import os
import shutil
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'compute'))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'image'))
import compute_lib  # noqa: E402
from compute_lib import NET, Schedulers, check, done, nt, sql  # noqa: E402

from dashboard_lib import (By, NoSuchElementException, Page, StaleElementReferenceException,  # noqa: E402
                           dashboard_cloud, start_browser)  # (exits 77 without Selenium)
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

NODE = 'dash-node-1'


# ---- The cloud: a private copy of dashboard/ with traps beside it.
tmp = tempfile.mkdtemp(prefix='nimbus-dash-')
os.chmod(tmp, 0o755)
served = os.path.join(tmp, 'dashboard')
shutil.copytree(os.path.join(nt.SOURCE, 'dashboard'), served)
with open(os.path.join(tmp, 'secret.txt'), 'w') as f:
    f.write('outside the dashboard\n')
os.symlink(os.path.join(tmp, 'secret.txt'), os.path.join(served, 'leak.txt'))
os.symlink(tmp, os.path.join(served, 'up'))
os.mkdir(os.path.join(served, 'sub'))
with open(os.path.join(served, 'sub', 'ok.txt'), 'w') as f:
    f.write('below the dashboard\n')
os.symlink(tmp, os.path.join(served, 'vendor', 'novnc', 'core', 'up'))
os.makedirs(os.path.join(served, 'd1', 'd2', 'd3', 'd4', 'd5', 'd6', 'd7'))
with open(os.path.join(served, 'd1', 'd2', 'd3', 'd4', 'd5', 'd6', 'd7', 'deep.txt'), 'w') as f:
    f.write('too deep\n')
with open(os.path.join(served, '.hidden'), 'w') as f:
    f.write('hidden\n')

cloud, ORIGIN = dashboard_cloud(served)

compute_lib.seed(cloud)
sql(cloud, "INSERT INTO flavors (id, name, vcpus, ram, disk) VALUES ('dash2', 'dash.medium', 1, 1024, 1)")
admin_tok, _ = cloud.token()
PW_A, PW_B = 'pass-a-' + os.urandom(4).hex(), 'pass-b-' + os.urandom(4).hex()
pid_a, tok_a = compute_lib.make_project(cloud, admin_tok, 'dash-a', password=PW_A)
pid_b, _ = compute_lib.make_project(cloud, admin_tok, 'dash-b', password=PW_B)
token_file = os.path.join(cloud.dir, 'node.token')
cloud.manage('node', 'add', NODE, '--output', token_file)
IMAGE = cloud.create_image(admin_tok, name='dash-image', visibility='public')['id']
st, _ = cloud.upload(admin_tok, IMAGE, bytes(range(256)) * 256)
check(st == 204, f'image uploaded ({st})')
agent_conf = compute_lib.write_agent_conf(cloud, NODE, token_file,
                                          state_dir=os.path.join(cloud.dir, 'agent-state'))
agent = compute_lib.start_agent(agent_conf, os.path.join(cloud.dir, 'agent.log'))
scheds = Schedulers(cloud, 1)
browser = None


def cleanup():
    if browser:
        try:
            browser.quit()
        except Exception:   # noqa: BLE001 - the browser may be gone already
            pass
    for p in [agent] + scheds.procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    # Both daemons that served the browser stop cleanly (under the
    # sanitizers: no leak, no error).
    if cloud.proc:
        rc = cloud.stop()
        check(rc == 0, f'nimbus-api exits 0 on SIGTERM ({rc})\n' + ('' if rc == 0 else cloud.log_tail()))
    if cloud.image_proc:
        rc = cloud.stop_image()
        check(rc == 0, f'nimbus-image exits 0 on SIGTERM ({rc})\n'
              + ('' if rc == 0 else cloud.image_log_tail()))
    cloud.close()
    shutil.rmtree(tmp, ignore_errors=True)


def get(path, headers=None, method='GET'):
    c = http.client.HTTPConnection('127.0.0.1', cloud.ports['identity'], timeout=10)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def http_checks():
    st, h, body = get('/dashboard/')
    check(st == 200 and b'<title>Nimbus dashboard</title>' in body
          and h.get('content-type', '').startswith('text/html'), f'/dashboard/ is the page ({st})')
    csp = h.get('content-security-policy', '')
    check("script-src 'self'" in csp and 'unsafe-inline' not in csp and "frame-ancestors 'none'" in csp,
          f'Content-Security-Policy: scripts from the origin only ({csp})')
    check(h.get('x-content-type-options') == 'nosniff' and h.get('x-frame-options') == 'DENY',
          'X-Content-Type-Options nosniff, X-Frame-Options DENY')
    st, h, _ = get('/dashboard')
    check(st == 301 and h.get('location') == '/dashboard/', f'/dashboard redirects to /dashboard/ ({st})')
    with open(os.path.join(nt.SOURCE, 'dashboard', 'app.js'), 'rb') as f:
        app_js = f.read()
    st, h, body = get('/dashboard/app.js')
    check(st == 200 and body == app_js and h['content-type'].startswith('text/javascript'),
          'app.js whole, as text/javascript')
    st, h, _ = get('/dashboard/style.css')
    check(st == 200 and h['content-type'].startswith('text/css'), 'style.css as text/css')
    st, _, body = get('/dashboard/sub/ok.txt')
    check(st == 200 and body == b'below the dashboard\n', f'a file one directory down ({st})')
    # The vendored noVNC keeps its package's layout: six directories down.
    deep = 'vendor/novnc/vendor/pako/lib/zlib/inflate.js'
    with open(os.path.join(nt.SOURCE, 'dashboard', deep), 'rb') as f:
        want = f.read()
    st, h, body = get('/dashboard/' + deep)
    check(st == 200 and body == want and h['content-type'].startswith('text/javascript'),
          f'a vendored module six directories down ({st})')
    check("connect-src 'self' http: https: ws: wss:" in csp,
          'connect-src allows the console proxy\'s WebSocket')
    st, _, body = get('/dashboard/app.js', method='HEAD')
    check(st == 200 and body == b'', 'HEAD: head only')
    for path in ('/dashboard/../README.md', '/dashboard/%2e%2e/README.md',
                 '/dashboard/%2e%2e%2fREADME.md', '/dashboard/sub/..%2f..%2fsecret.txt',
                 '/dashboard/%2E%2E/%2E%2E/etc/passwd', '/dashboard/leak.txt',
                 '/dashboard/up/secret.txt', '/dashboard/.hidden', '/dashboard/sub',
                 '/dashboard/%00', '/dashboard/app.js%00.html', '/dashboard/nonexistent.js',
                 '/dashboard/a/b/c', '/dashboard/vendor/novnc/core/up/secret.txt',
                 '/dashboard/vendor/novnc/core/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt',
                 '/dashboard/d1/d2/d3/d4/d5/d6/d7/deep.txt'):
        st, _, body = get(path)
        check(st in (400, 404) and b'outside' not in body and b'root:' not in body,
              f'{path} refused ({st})')
    pre = {'Origin': ORIGIN, 'Access-Control-Request-Method': 'POST',
           'Access-Control-Request-Headers': 'content-type,x-auth-token'}
    for svc, path in (('compute', '/v2.1/servers'), ('network', '/v2.0/networks'),
                      ('image', '/v2/images')):
        st, h, _ = cloud.request(svc, 'OPTIONS', path, headers=pre)
        check(st == 204 and h.get('access-control-allow-origin') == ORIGIN
              and 'X-Auth-Token' in h.get('access-control-allow-headers', ''),
              f'{svc}: the dashboard origin\'s preflight is answered ({st})')
        st, h, _ = cloud.request(svc, 'OPTIONS', path,
                                 headers=dict(pre, Origin='http://evil.example'))
        check('access-control-allow-origin' not in h,
              f'{svc}: another origin gets no CORS headers ({st})')
    # The upload of an image's data from the page: PUT with a binary body.
    st, h, _ = cloud.request('image', 'OPTIONS', f'/v2/images/{IMAGE}/file', headers={
        'Origin': ORIGIN, 'Access-Control-Request-Method': 'PUT',
        'Access-Control-Request-Headers': 'content-type,x-auth-token'})
    check(st == 204 and h.get('access-control-allow-origin') == ORIGIN
          and 'PUT' in h.get('access-control-allow-methods', '')
          and 'Content-Type' in h.get('access-control-allow-headers', ''),
          f'image: the preflight of a data upload (PUT, Content-Type) is answered ({st})')
    st, h, _ = cloud.request('identity', 'POST', '/v3/auth/tokens', {}, {'Origin': ORIGIN})
    check(h.get('access-control-allow-origin') == ORIGIN
          and 'X-Subject-Token' in h.get('access-control-expose-headers', ''),
          'identity answers expose X-Subject-Token to the dashboard')


def config_checks():
    """A dashboard directory that cannot be opened, or an origin list that
    is not one, stops nimbus-api at start-up with the option named."""
    import subprocess
    with open(cloud.config) as f:
        text = f.read()
    for what, old, new, want in (
            ('a missing [dashboard] dir', f'dir = {served}', f'dir = {tmp}/nope', '[dashboard] dir'),
            ('a bad [dashboard] allowed_origins', f'allowed_origins = {ORIGIN}',
             'allowed_origins = ftp://x.example', '[dashboard] allowed_origins')):
        path = os.path.join(tmp, 'bad.conf')
        with open(path, 'w') as f:
            f.write(text.replace(old, new))
        p = subprocess.run([os.path.join(nt.BUILD, 'api-server/nimbus-api'), '--config', path],
                           capture_output=True, text=True, timeout=30)
        check(p.returncode != 0 and want in p.stderr,
              f'{what} stops nimbus-api ({p.returncode}: {p.stderr.strip()[-120:]!r})')


def ssh_ed25519_key():
    def s(b):
        return struct.pack('>I', len(b)) + b
    return 'ssh-ed25519 ' + base64.b64encode(s(b'ssh-ed25519') + s(os.urandom(32))).decode() + ' dash'


def field(key):
    """The text of the field 'key' on the server detail page, or None."""
    return browser.execute_script(
        "const e = document.querySelector('#sd-fields dd[data-field=\"' + arguments[0] + '\"]');"
        "return e ? e.textContent : null;", key)


def action_buttons():
    return sorted(b.text for b in browser.find_elements(By.CSS_SELECTOR, '#sd-actions button'))


def click_action(cls):
    for _ in range(5):
        try:
            browser.find_element(By.CSS_SELECTOR, f'#sd-actions button.sd-{cls}').click()
            return
        except (StaleElementReferenceException, NoSuchElementException):
            time.sleep(0.2)
    check(False, f'clicking {cls} on the detail page')


def rebuilt(server_id):
    """Whether the server's last instance action is a finished rebuild."""
    st, _, b = cloud.request('compute', 'GET', f'/v2.1/servers/{server_id}/os-instance-actions',
                             headers={'X-Auth-Token': tok_a})
    acts = b.get('instanceActions', []) if st == 200 else []
    return bool(acts) and acts[0]['action'] == 'rebuild'


def server_detail_checks():
    """The detail page of web1 (ACTIVE): its fields and ports as the APIs
    give them, the actions of its state; resize to dash.medium ->
    VERIFY_RESIZE -> Confirm, another resize -> Revert; a snapshot; a
    rebuild."""
    sid = [s for s in cloud.request('compute', 'GET', '/v2.1/servers/detail',
                                    headers={'X-Auth-Token': tok_a})[2]['servers']
           if s['name'] == 'web1'][0]
    browser.find_element(By.CSS_SELECTOR, '#servers-table tr[data-name="web1"] a.server-link').click()
    wait('the detail page of web1 is shown', lambda: visible('page-server') and field('id') == sid['id'])
    check(browser.current_url.endswith('#server/' + sid['id']), 'its address is #server/<id>')
    check(field('name') == 'web1' and field('status') == 'ACTIVE' and field('flavor') == 'm1.tiny'
          and field('image') == 'dash-image', f'name, status, flavor, image ({field("status")!r})')
    want = '; '.join(f'{n}: ' + ', '.join(a['addr'] for a in lst) for n, lst in sid['addresses'].items())
    check(field('addresses') == want, f'the addresses ({field("addresses")!r} = {want!r})')
    check(field('security_groups') == 'default' and field('created') == sid['created']
          and field('launched_at') == sid['OS-SRV-USG:launched_at'],
          'security groups, created and launched times')
    check(not browser.find_elements(By.CSS_SELECTOR, '#sd-fields dd[data-field^="OS-EXT-SRV-ATTR:"]'),
          'a member sees no host fields')
    st, _, b = cloud.request('network', 'GET', f'/v2.0/ports?device_id={sid["id"]}',
                             headers={'X-Auth-Token': tok_a})
    port_ids = sorted(p['id'] for p in b['ports'])
    wait('its port is listed with its MAC address', lambda: sorted(
        r.get_attribute('data-id') for r in browser.find_elements(By.CSS_SELECTOR, '#sd-ports tbody tr'))
        == port_ids and port_ids and b['ports'][0]['mac_address'] in by_id('sd-ports').text)
    check([e.text for e in browser.find_elements(By.CSS_SELECTOR, '#sd-ports .port-groups')] == ['default'],
          'the port\'s security group by name')
    check(action_buttons() == sorted(['Stop', 'Reboot', 'Hard reboot', 'Pause', 'Suspend', 'Delete']),
          f'ACTIVE offers stop, reboots, pause, suspend, delete ({action_buttons()})')
    check(visible('sd-resize-form') and visible('sd-snapshot-form') and visible('sd-rebuild-form'),
          'resize, snapshot and rebuild forms offered')
    # Pause -> PAUSED offers Unpause, not Stop; Unpause -> ACTIVE.
    click_action('pause')
    wait('Pause: PAUSED with Unpause offered', lambda: field('status') == 'PAUSED'
         and 'Unpause' in action_buttons() and 'Stop' not in action_buttons(), timeout=30)
    check(not visible('sd-resize-form') and not visible('sd-rebuild-form'),
          'no resize or rebuild while PAUSED')
    click_action('unpause')
    wait('Unpause: ACTIVE again', lambda: field('status') == 'ACTIVE', timeout=30)
    # A refused action shows the compute API's words.
    Select(by_id('sd-resize-flavor')).select_by_value('1')
    by_id('sd-resize').click()
    err = wait('resizing to its own flavor shows the API error',
               lambda: visible('error') and by_id('error-text').text)
    check(err and 'must change flavor' in err and '400' in err, f'the compute message: {err!r}')
    by_id('error-close').click()
    Select(by_id('sd-resize-flavor')).select_by_value('dash2')
    by_id('sd-resize').click()
    wait('resize: VERIFY_RESIZE with Confirm and Revert', lambda: field('status') == 'VERIFY_RESIZE'
         and action_buttons() == sorted(['Confirm resize', 'Revert resize', 'Delete']), timeout=30)
    click_action('confirm')
    wait('Confirm: ACTIVE with the new flavor shown',
         lambda: field('status') == 'ACTIVE' and field('flavor') == 'dash.medium', timeout=30)
    st, _, b = cloud.request('compute', 'GET', f'/v2.1/servers/{sid["id"]}',
                             headers={'X-Auth-Token': tok_a})
    check(b['server']['flavor']['id'] == 'dash2', f'the API agrees: flavor dash2 ({b["server"]["flavor"]})')
    Select(by_id('sd-resize-flavor')).select_by_value('1')
    by_id('sd-resize').click()
    wait('resize back to m1.tiny: VERIFY_RESIZE', lambda: field('status') == 'VERIFY_RESIZE'
         and 'Revert resize' in action_buttons(), timeout=30)
    click_action('revert')
    wait('Revert: ACTIVE with dash.medium still shown',
         lambda: field('status') == 'ACTIVE' and field('flavor') == 'dash.medium'
         and 'Stop' in action_buttons(), timeout=30)
    by_id('sd-snapshot-name').send_keys('web1-snap')
    by_id('sd-snapshot').click()
    wait('the snapshot is acknowledged', lambda: 'web1-snap' in by_id('sd-message').text)
    wait('the snapshot ends: ACTIVE without a task', lambda: field('status') == 'ACTIVE'
         and 'Stop' in action_buttons(), timeout=30)
    Select(by_id('sd-rebuild-image')).select_by_value(IMAGE)
    by_id('sd-rebuild').click()
    WebDriverWait(browser, 5).until(lambda d: d.switch_to.alert).accept()
    wait('rebuild: REBUILD, then ACTIVE again', lambda: field('status') == 'ACTIVE'
         and 'Stop' in action_buttons() and rebuilt(sid['id']), timeout=30)


UPLOAD_DATA = os.urandom(3 * 1024 * 1024 + 17)


def image_cell(name, cls):
    return browser.execute_script(
        "const e = document.querySelector("
        "'#images-table tbody tr[data-name=\"' + arguments[0] + '\"] .' + arguments[1]);"
        "return e ? e.textContent : null;", name, cls)


def image_upload_checks():
    """A file chosen in the browser becomes an active image with the file's
    size and checksum; a member is offered private only and no Delete of
    the admin's public image."""
    path = os.path.join(tmp, 'upload.img')
    with open(path, 'wb') as f:
        f.write(UPLOAD_DATA)
    # Data that is not what its disk format says: the image service's
    # refusal is shown and the image made for it is taken back.
    by_id('image-name').send_keys('dash-bad')
    Select(by_id('image-disk-format')).select_by_value('qcow2')
    by_id('image-file').send_keys(path)
    by_id('image-upload').click()
    err = wait('a refused upload shows the image service\'s message',
               lambda: visible('error') and by_id('error-text').text)
    check(err == 'The image data is not in the declared disk format qcow2. (HTTP 400)',
          f'the image service\'s message: {err!r}')
    by_id('error-close').click()
    check(by_id('image-progress-text').text == 'The upload failed.', 'the progress line says it failed')
    wait('no dash-bad image is left in the list', lambda: image_cell('dash-image', 'image-status') == 'active'
         and image_cell('dash-bad', 'image-status') is None)
    st, _, b = cloud.request('image', 'GET', '/v2/images?name=dash-bad', headers={'X-Auth-Token': tok_a})
    check(st == 200 and b['images'] == [], f'the API agrees: no dash-bad image ({st})')
    by_id('image-name').clear()
    vis = [o.get_attribute('value') for o in Select(by_id('image-visibility')).options]
    check(vis == ['private'], f'a member is offered private visibility only ({vis})')
    check(not browser.find_elements(By.CSS_SELECTOR, f'#images-table tr[data-id="{IMAGE}"] .image-delete'),
          'no Delete for the admin\'s public image')
    by_id('image-name').send_keys('dash-upload')
    Select(by_id('image-disk-format')).select_by_value('raw')
    Select(by_id('image-container-format')).select_by_value('bare')
    by_id('image-file').send_keys(path)
    by_id('image-upload').click()
    wait('the uploaded image is listed active with the file\'s size',
         lambda: image_cell('dash-upload', 'image-status') == 'active'
         and image_cell('dash-upload', 'image-size') == str(len(UPLOAD_DATA)), timeout=30)
    check(by_id('image-progress-text').text == f'Uploaded {len(UPLOAD_DATA)} bytes.'
          and by_id('image-progress').get_attribute('value') == '1',
          f'the progress shows the whole file sent ({by_id("image-progress-text").text!r})')
    st, _, b = cloud.request('image', 'GET', '/v2/images?name=dash-upload', headers={'X-Auth-Token': tok_a})
    imgs = b.get('images', [])
    check(st == 200 and len(imgs) == 1, f'one dash-upload image in A ({st}, {len(imgs)})')
    if imgs:
        st, _, im = cloud.request('image', 'GET', f'/v2/images/{imgs[0]["id"]}',
                                  headers={'X-Auth-Token': tok_a})
        check(im['status'] == 'active' and im['size'] == len(UPLOAD_DATA)
              and im['checksum'] == hashlib.md5(UPLOAD_DATA).hexdigest()
              and im['visibility'] == 'private' and im['owner'] == pid_a
              and im['disk_format'] == 'raw' and im['container_format'] == 'bare',
              f'the API: active, size, md5 of the file, private, A\'s ({im.get("checksum")})')


def groups_shown():
    return [e.get_attribute('data-name') for e in browser.find_elements(By.CSS_SELECTOR, '#sg-list .sg')]


def group_rules(name):
    """(direction, protocol, ports, remote) of each rule shown in group
    'name'."""
    return browser.execute_script(
        "const g = document.querySelector('#sg-list .sg[data-name=\"' + arguments[0] + '\"]');"
        "if (!g) return null;"
        "return [...g.querySelectorAll('tbody tr')].map((r) => ['sgr-direction', 'sgr-protocol',"
        " 'sgr-ports', 'sgr-remote'].map((c) => r.querySelector('.' + c).textContent));", name)


def security_group_checks():
    """A's groups: the default one with its rules; a new group (with the
    egress rules Neutron gives it) and a TCP 22 rule from 192.0.2.0/24,
    created and shown; a duplicate rule and
    deleting the default group show Neutron's messages; the rule, then the
    group, deleted."""
    browser.get(ORIGIN + '/dashboard/#security-groups')
    wait('the default group is listed', lambda: groups_shown() == ['default'])
    st, _, b = cloud.request('network', 'GET', f'/v2.0/security-groups?project_id={pid_a}',
                             headers={'X-Auth-Token': tok_a})
    n_default = len(b['security_groups'][0]['security_group_rules'])
    check(len(group_rules('default')) == n_default and n_default > 0,
          f'its {n_default} rules are shown as the API lists them')
    by_id('sg-name').send_keys('dash-ssh')
    by_id('sg-description').send_keys('<b>ssh</b> in')
    by_id('sg-create').click()
    # Neutron gives a new group its egress rules (IPv4 and IPv6, any).
    wait('the new group is listed with its egress rules', lambda: 'dash-ssh' in groups_shown()
         and group_rules('dash-ssh') == [['egress', 'any', 'any', 'any']] * 2)
    desc = browser.find_element(By.CSS_SELECTOR, '.sg[data-name="dash-ssh"] .sg-description')
    check(desc.text == '<b>ssh</b> in' and not desc.find_elements(By.TAG_NAME, 'b'),
          'the description is shown as text, not markup')
    gid = browser.find_element(By.CSS_SELECTOR, '.sg[data-name="dash-ssh"]').get_attribute('data-id')

    def add_rule():
        Select(by_id('sgr-group')).select_by_value(gid)
        Select(by_id('sgr-direction')).select_by_value('ingress')
        Select(by_id('sgr-protocol')).select_by_value('tcp')
        for i, v in (('sgr-port-min', '22'), ('sgr-port-max', '22'), ('sgr-remote', '192.0.2.0/24')):
            by_id(i).clear()
            by_id(i).send_keys(v)
        by_id('sgr-add').click()
    add_rule()
    wait('the TCP 22 rule is shown', lambda: ['ingress', 'tcp', '22', '192.0.2.0/24'] in group_rules('dash-ssh')
         and len(group_rules('dash-ssh')) == 3)
    st, _, b = cloud.request('network', 'GET', f'/v2.0/security-group-rules?security_group_id={gid}',
                             headers={'X-Auth-Token': tok_a})
    rules = [r for r in b['security_group_rules'] if r['direction'] == 'ingress']
    check(len(rules) == 1 and rules[0]['protocol'] == 'tcp' and rules[0]['port_range_min'] == 22
          and rules[0]['port_range_max'] == 22 and rules[0]['remote_ip_prefix'] == '192.0.2.0/24'
          and rules[0]['direction'] == 'ingress', f'the API has the rule ({rules})')
    add_rule()
    err = wait('the same rule again shows the network service\'s refusal',
               lambda: visible('error') and by_id('error-text').text)
    check(err and 'already exists' in err and '409' in err, f'Neutron\'s message: {err!r}')
    by_id('error-close').click()
    browser.find_element(By.CSS_SELECTOR, '.sg[data-name="default"] .sg-delete').click()
    WebDriverWait(browser, 5).until(lambda d: d.switch_to.alert).accept()
    err = wait('deleting the default group shows the refusal', lambda: visible('error') and by_id('error-text').text)
    check(err and 'default security group not allowed' in err and '409' in err, f'Neutron\'s message: {err!r}')
    by_id('error-close').click()
    browser.find_element(By.CSS_SELECTOR, f'.sg[data-name="dash-ssh"] tr[data-id="{rules[0]["id"]}"] '
                         '.sgr-delete').click()
    wait('the rule is deleted', lambda: group_rules('dash-ssh') == [['egress', 'any', 'any', 'any']] * 2)
    browser.find_element(By.CSS_SELECTOR, '.sg[data-name="dash-ssh"] .sg-delete').click()
    WebDriverWait(browser, 5).until(lambda d: d.switch_to.alert).accept()
    wait('the group is deleted', lambda: groups_shown() == ['default'])
    st, _, _ = cloud.request('network', 'GET', f'/v2.0/security-groups/{gid}', headers={'X-Auth-Token': tok_a})
    check(st == 404, f'the API agrees: the group is gone ({st})')
    # One kept for project B to not see.
    by_id('sg-name').send_keys('dash-kept')
    by_id('sg-create').click()
    wait('dash-kept is listed', lambda: 'dash-kept' in groups_shown())


def browser_checks():
    t0 = time.time()
    # A wrong password: the identity service's message, no session.
    login('u-dash-a', 'wrong-password', 'dash-a')
    msg = wait('a wrong password shows the error', lambda: visible('login-error') and by_id('login-error').text)
    check(msg and 'requires authentication' in msg and '401' in msg, f'the identity message: {msg!r}')
    check(browser.execute_script('return sessionStorage.length') == 0, 'no session after a failed login')

    # Project A logs in: no servers yet.
    login('u-dash-a', PW_A, 'dash-a')
    wait('A logged in: the server list is shown, empty', lambda: visible('servers-empty'))
    check('u-dash-a in project dash-a' in by_id('whoami-text').text, 'who is logged in is shown')
    token = browser.execute_script("return JSON.parse(sessionStorage.getItem('nimbus.session')).token")
    check(token and len(token) > 20, 'the token is in sessionStorage')
    check(browser.execute_script('return localStorage.length') == 0, 'nothing in localStorage')
    check(token not in browser.current_url and not browser.get_cookies(),
          'the token is not in the URL, no cookies')

    # Create a server through the form.
    wait('the create form offers the image and the network',
         lambda: len(Select(by_id('server-image')).options) >= 1
         and any(o.get_attribute('value') == NET for o in Select(by_id('server-network')).options))
    by_id('server-name').send_keys('web1')
    Select(by_id('server-flavor')).select_by_value('1')
    Select(by_id('server-image')).select_by_value(IMAGE)
    Select(by_id('server-network')).select_by_value(NET)
    by_id('server-create').click()
    wait('web1 appears in the list', lambda: row_status('web1') is not None)
    wait('web1 becomes ACTIVE without a reload (auto refresh)',
         lambda: row_status('web1') == 'ACTIVE', timeout=30)
    check(row_text('web1', 'server-flavor') == 'm1.tiny'
          and row_text('web1', 'server-image') == 'dash-image',
          'flavor and image shown by name')
    addr = row_text('web1', 'server-addresses')
    check(addr and addr.startswith('seed-net: '), f'the address is shown ({addr!r})')
    check(token not in browser.current_url, 'the token is still not in the URL')

    click_in_row('web1', 'act-console')
    wait('the console log shows what the guest printed',
         lambda: 'nimbus-fake' in by_id('console-output').text)

    click_in_row('web1', 'act-stop')
    wait('Stop: SHUTOFF shown', lambda: row_status('web1') == 'SHUTOFF', timeout=30)
    click_in_row('web1', 'act-start')
    wait('Start: ACTIVE again', lambda: row_status('web1') == 'ACTIVE', timeout=30)
    server_detail_checks()
    browser.get(ORIGIN + '/dashboard/#servers')
    wait('back in the list: web1 ACTIVE', lambda: row_status('web1') == 'ACTIVE', timeout=30)
    click_in_row('web1', 'act-stop')
    wait('Stop again: SHUTOFF', lambda: row_status('web1') == 'SHUTOFF', timeout=30)

    # Images.
    browser.get(ORIGIN + '/dashboard/#images')
    wait('images list shows dash-image',
         lambda: any(e.text == 'dash-image' for e in browser.find_elements(By.CSS_SELECTOR, '.image-show')))
    [e for e in browser.find_elements(By.CSS_SELECTOR, '.image-show') if e.text == 'dash-image'][0].click()
    wait('image detail shows its id', lambda: visible('image-detail') and IMAGE in by_id('image-detail-list').text)
    wait('the snapshot of web1 is listed, active', lambda: any(
        r.find_element(By.CSS_SELECTOR, '.image-show').text == 'web1-snap' and 'active' in r.text
        for r in browser.find_elements(By.CSS_SELECTOR, '#images-table tbody tr')), timeout=30)
    image_upload_checks()

    # Networks: a bad CIDR shows the network service's error; a good one
    # creates network + subnet.
    browser.get(ORIGIN + '/dashboard/#networks')
    wait('networks list shows the shared network',
         lambda: any(e.text == 'seed-net' for e in browser.find_elements(By.CSS_SELECTOR, '.network-name')))
    by_id('network-name').send_keys('bad-net')
    by_id('network-cidr').send_keys('10.77.0.0/33')
    by_id('network-create').click()
    err = wait('a bad CIDR shows the API error', lambda: visible('error') and by_id('error-text').text)
    check(err and '400' in err and 'cidr' in err.lower(), f'the network service message: {err!r}')
    by_id('error-close').click()
    wait('the list is drawn again without bad-net (its network is taken back)', lambda: any(
        e.text == 'seed-net' for e in browser.find_elements(By.CSS_SELECTOR, '.network-name'))
        and not any(e.text == 'bad-net' for e in browser.find_elements(By.CSS_SELECTOR, '.network-name')))
    st, _, b = cloud.request('network', 'GET', '/v2.0/networks?name=bad-net',
                             headers={'X-Auth-Token': tok_a})
    check(st == 200 and b['networks'] == [], f'no half-made bad-net left ({st} {b})')
    for i in ('network-name', 'network-cidr'):
        by_id(i).clear()
    by_id('network-name').send_keys('dash-net')
    by_id('network-cidr').send_keys('10.77.0.0/24')
    by_id('network-create').click()
    wait('dash-net with its subnet is listed', lambda: any(
        r.find_element(By.CSS_SELECTOR, '.network-name').text == 'dash-net'
        and '10.77.0.0/24' in r.text
        for r in browser.find_elements(By.CSS_SELECTOR, '#networks-table tbody tr')))

    security_group_checks()

    # Flavors and key pairs.
    browser.get(ORIGIN + '/dashboard/#flavors')
    wait('flavors listed', lambda: 'm1.tiny' in by_id('flavors-table').text)
    browser.get(ORIGIN + '/dashboard/#keypairs')
    wait('no key pairs yet', lambda: visible('keypairs-empty'))
    by_id('keypair-name').send_keys('dash-key')
    by_id('keypair-key').send_keys(ssh_ed25519_key())
    by_id('keypair-import').click()
    wait('the imported key pair is listed',
         lambda: browser.find_elements(By.CSS_SELECTOR, '#keypairs-table tr[data-name="dash-key"]'))
    by_id('keypair-name').send_keys('bad-key')
    by_id('keypair-key').send_keys('not a key')
    by_id('keypair-import').click()
    err = wait('a bad public key shows the API error', lambda: visible('error') and by_id('error-text').text)
    check(err and '400' in err, f'the compute message: {err!r}')

    logout()
    st, _, _ = cloud.request('compute', 'GET', '/v2.1/servers', headers={'X-Auth-Token': token})
    check(st == 401, f'logging out revoked the token ({st})')
    check(browser.execute_script('return sessionStorage.length') == 0, 'the session is gone')

    # Project B does not see A's server.
    login('u-dash-b', PW_B, 'dash-b')
    wait('B logged in: the list is empty (A\'s server not shown)', lambda: visible('servers-empty'))
    check(row_status('web1') is None, 'web1 is not in B\'s list')
    browser.get(ORIGIN + '/dashboard/#images')
    wait('B\'s image list shows the public image', lambda: image_cell('dash-image', 'image-status') == 'active')
    check(image_cell('dash-upload', 'image-status') is None and image_cell('web1-snap', 'image-status') is None,
          'B does not see A\'s uploaded image nor its snapshot')
    browser.get(ORIGIN + '/dashboard/#security-groups')
    wait('B sees only its own default group (not A\'s dash-kept)', lambda: groups_shown() == ['default'])
    b_default = browser.find_element(By.CSS_SELECTOR, '.sg[data-name="default"]').get_attribute('data-id')
    st, _, b = cloud.request('network', 'GET', f'/v2.0/security-groups?project_id={pid_a}',
                             headers={'X-Auth-Token': tok_a})
    check(b_default not in [g['id'] for g in b['security_groups']], 'B\'s default group is not A\'s')
    logout()

    # The administrator sees the host of A's server and may make images
    # public.
    web1 = [x for x in cloud.request('compute', 'GET', '/v2.1/servers/detail',
                                     headers={'X-Auth-Token': tok_a})[2]['servers'] if x['name'] == 'web1'][0]
    st, _, b = cloud.request('compute', 'GET', f'/v2.1/servers/{web1["id"]}', headers={'X-Auth-Token': admin_tok})
    host = b['server'].get('OS-EXT-SRV-ATTR:host')
    login('admin', nt.ADMIN_PASSWORD, 'admin')
    wait('the administrator is logged in', lambda: visible('page-servers'))
    browser.get(ORIGIN + f'/dashboard/#server/{web1["id"]}')
    wait('the administrator sees the host of web1 on its detail page',
         lambda: field('id') == web1['id'] and host and field('OS-EXT-SRV-ATTR:host') == host)
    browser.get(ORIGIN + '/dashboard/#images')
    wait('the administrator is offered public visibility', lambda: [
        o.get_attribute('value') for o in Select(by_id('image-visibility')).options] == ['private', 'public'])
    logout()

    # A deletes the server.
    login('u-dash-a', PW_A, 'dash-a')
    wait('A sees web1 again', lambda: row_status('web1') == 'SHUTOFF')
    click_in_row('web1', 'act-delete')
    WebDriverWait(browser, 5).until(lambda d: d.switch_to.alert).accept()
    wait('web1 deleted: gone from the list', lambda: visible('servers-empty'), timeout=30)
    st, _, b = cloud.request('compute', 'GET', '/v2.1/servers', headers={'X-Auth-Token': tok_a})
    check(st == 200 and b['servers'] == [], 'the API agrees: no servers in A')

    # A deletes the uploaded image.
    browser.get(ORIGIN + '/dashboard/#images')
    wait('A\'s uploaded image is listed', lambda: image_cell('dash-upload', 'image-status') == 'active')
    browser.find_element(By.CSS_SELECTOR, '#images-table tr[data-name="dash-upload"] .image-delete').click()
    WebDriverWait(browser, 5).until(lambda d: d.switch_to.alert).accept()
    wait('the deleted image is gone from the list', lambda: image_cell('dash-upload', 'image-status') is None
         and image_cell('dash-image', 'image-status') == 'active')
    st, _, b = cloud.request('image', 'GET', '/v2/images?name=dash-upload', headers={'X-Auth-Token': tok_a})
    check(st == 200 and b['images'] == [], f'the API agrees: dash-upload is gone ({st})')

    csp_errors = [e['message'] for e in browser.get_log('browser')
                  if 'Content Security Policy' in e['message']]
    check(not csp_errors, f'no Content-Security-Policy violations ({csp_errors[:2]})')
    print(f'browser part took {time.time() - t0:.1f}s')


try:
    compute_lib_wait = time.time()
    while sql(cloud, f"SELECT count(*) FROM compute_nodes WHERE hypervisor_hostname = '{NODE}'") != '1':
        if time.time() - compute_lib_wait > 20 or agent.poll() is not None:
            check(False, 'the agent registers')
            break
        time.sleep(0.1)
    http_checks()
    config_checks()
    profile = os.path.join(tmp, 'chromium')
    browser = start_browser(profile)
    page = Page(browser, ORIGIN)
    wait, by_id, visible, login, logout = page.wait, page.by_id, page.visible, page.login, page.logout
    row_status, row_text, click_in_row = page.row_status, page.row_text, page.click_in_row
    browser_checks()
finally:
    cleanup()
done()
