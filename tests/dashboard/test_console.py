"""The dashboard's console page in a real browser (Debian's Chromium,
headless, through chromedriver and Selenium) against a real guest: a
nimbus-compute with libvirt + QEMU boots the test guest (deploy/build-guest)
and serves its VNC server and serial pty through its console proxy
(compute-agent/console_proxy.c); nimbus-api serves the dashboard with the
vendored noVNC.

- A member logs in, presses "Console" in the server list: the page asks
  the compute API for a console (vnc/novnc) and noVNC reaches the
  "connected" state through the proxy's WebSocket (Origin of the page,
  subprotocol "binary"); the canvas has the guest's framebuffer size.
- The serial tab: a line typed into the guest's shell comes back with the
  shell's answer.
- A console link whose token was already used, and a made-up token, show
  the refusal on the page (no connection).
- The page loaded the noVNC modules from the dashboard itself with no
  Content-Security-Policy violation.

Run under `flock /tmp/nimbus-libvirt.lock` like every test that uses the
shared libvirtd.  Exits 77 (skipped) without root, libvirtd, the test
guest, Selenium or a Chromium that starts."""
import atexit
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'compute'))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'image'))
import compute_lib  # noqa: E402
import ws_lib  # noqa: E402
from compute_lib import NET, Schedulers, check, done, nt, sql  # noqa: E402

from dashboard_lib import By, Page, dashboard_cloud, start_browser  # noqa: E402  (exits 77 without Selenium)

GUEST = compute_lib.libvirt_guest_or_skip()
VIRSH = compute_lib.VIRSH

NODE = 'dash-console-node'
cloud, ORIGIN = dashboard_cloud(os.path.join(nt.SOURCE, 'dashboard'))

compute_lib.seed(cloud)
admin_tok, _ = cloud.token()
PW = 'pass-c-' + os.urandom(4).hex()
pid, tok = compute_lib.make_project(cloud, admin_tok, 'dash-c', password=PW)
kernel, ramdisk, image = compute_lib.upload_guest(cloud, admin_tok, GUEST)
token_file = os.path.join(cloud.dir, 'node.token')
cloud.manage('node', 'add', NODE, '--output', token_file)
agent_conf = compute_lib.write_agent_conf(cloud, NODE, token_file,
                                          state_dir=os.path.join(cloud.dir, 'agent-state'),
                                          hypervisor='libvirt', console=True,
                                          reconcile_interval=2, stop_timeout=5)
os.chmod(cloud.dir, 0o755)   # QEMU (user libvirt-qemu) reads the overlays.
agent_log = os.path.join(cloud.dir, 'agent.log')
agent = compute_lib.start_agent(agent_conf, agent_log)
scheds = Schedulers(cloud, 1)
servers = []
browser = None


def cleanup():
    global browser
    if browser:
        try:
            browser.quit()
        except Exception:   # noqa: BLE001 - the browser may be gone already
            pass
        browser = None
    if agent.poll() is None:
        agent.kill()
        agent.wait()
    for p in scheds.procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    for u in servers:
        subprocess.run(VIRSH + ['destroy', 'nimbus-' + u], capture_output=True)
        subprocess.run(VIRSH + ['undefine', '--managed-save', 'nimbus-' + u], capture_output=True)


atexit.register(cleanup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def log_tail():
    with open(agent_log, 'rb') as f:
        return f.read().decode(errors='replace')[-3000:]


def api(method, path, body=None):
    return cloud.request('compute', method, '/v2.1' + path, body, {'X-Auth-Token': tok})


def status(sid):
    st, _, b = api('GET', f'/servers/{sid}')
    return b['server']['status'] if st == 200 else st


def poll(what, fn, timeout):
    t0 = time.time()
    while time.time() < t0 + timeout and agent.poll() is None:
        v = fn()
        if v:
            check(True, f'{what} ({time.time() - t0:.1f}s)')
            return v
        time.sleep(0.5)
    check(False, what)
    return None


t_start = time.time()
poll('the agent registers', lambda: sql(
    cloud, f"SELECT count(*) FROM compute_nodes WHERE hypervisor_hostname = '{NODE}'") == '1', 30)
st, _, b = api('POST', '/servers', {'server': {'name': 'vm1', 'imageRef': image, 'flavorRef': '1',
                                               'networks': [{'uuid': NET}]}})
check(st == 202, f'server create ({st})')
sid = b['server']['id'] if st == 202 else None
if sid:
    servers.append(sid)
    poll('vm1 ACTIVE with a real QEMU guest', lambda: status(sid) == 'ACTIVE', 180)
    # The shell of the guest is up once it printed that it is ready.
    poll('the guest is ready (console log)', lambda: 'nimbus-guest: ready' in (api(
        'POST', f'/servers/{sid}/action', {'os-getConsoleOutput': {'length': 50}})[2] or {}).get(
        'output', ''), 120)

browser = start_browser(os.path.join(cloud.dir, 'chromium'))
page = Page(browser, ORIGIN)
if sid:
    page.login('u-dash-c', PW, 'dash-c')
    page.wait('the server list shows vm1 ACTIVE', lambda: page.row_status('vm1') == 'ACTIVE')
    page.click_in_row('vm1', 'act-remote')
    page.wait('the console page of vm1 is shown',
              lambda: page.visible('page-console') and page.by_id('rc-name').text == 'vm1')
    check(browser.current_url.endswith(f'#console/{sid}'), f'its URL names the server ({browser.current_url})')

    def state():
        return page.by_id('rc-status').get_attribute('data-state')
    st_ = page.wait('noVNC connects to the guest\'s VNC server through the proxy',
                    lambda: state() in ('connected', 'failed') and state(), timeout=30)
    check(st_ == 'connected', f'the status says connected ({page.by_id("rc-status").text!r})')
    size = page.wait('the canvas has the guest\'s framebuffer size', lambda: browser.execute_script(
        "const c = document.querySelector('#vnc-screen canvas');"
        "return c && c.width > 0 && c.height > 0 ? [c.width, c.height] : null;"), timeout=15)
    print(f'framebuffer {size}')
    check(page.by_id('vnc-screen').find_elements(By.TAG_NAME, 'canvas')[0].is_displayed(),
          'the screen is displayed')

    # The serial console: the guest's shell answers a typed line.
    page.by_id('tab-serial').click()
    page.wait('the serial console connects', lambda: state() == 'connected', timeout=20)
    page.by_id('serial-input').send_keys('echo serial-$((6*7))-ok')
    page.by_id('serial-send').click()
    page.wait('the guest\'s shell answers on the serial console',
              lambda: 'serial-42-ok' in page.by_id('serial-output').text, timeout=30)
    # Typing straight into the terminal works too.
    page.by_id('serial-output').click()
    page.by_id('serial-output').send_keys('echo typed-$((2+3))\n')
    page.wait('keys typed into the terminal reach the guest',
              lambda: 'typed-5' in page.by_id('serial-output').text, timeout=30)

    # A used token and a made-up one: the page says the link was refused.
    st, _, b = api('POST', f'/servers/{sid}/remote-consoles',
                   {'remote_console': {'protocol': 'vnc', 'type': 'novnc'}})
    used = b['remote_console']['url'] if st == 200 else ''
    check(st == 200 and '?token=' in used, f'a console URL from the API ({st})')
    wst, ws, _ = ws_lib.connect(used)
    check(wst == 101, f'its token used once ({wst})')
    if ws:
        ws.close()
    for what, url in (('an already used token', used),
                      ('a made-up token', used.split('?')[0] + '?token=' + os.urandom(32).hex())):
        browser.execute_script("connectConsole(arguments[0], 'vnc', arguments[1]);", sid, url)
        st_ = page.wait(f'{what}: the page shows the refusal',
                        lambda: state() in ('connected', 'failed') and state(), timeout=20)
        msg = page.by_id('rc-status').text
        check(st_ == 'failed' and 'invalid, already used or expired' in msg, f'{what}: {msg!r}')
    # Reconnect asks for a new link: connected again.
    page.by_id('rc-reconnect').click()
    page.wait('Reconnect: connected again with a new link',
              lambda: state() == 'connected', timeout=30)
    # Back to the list closes the console.
    page.by_id('rc-back').click()
    page.wait('back to the server list', lambda: page.visible('page-servers'))

    csp = [e['message'] for e in browser.get_log('browser') if 'Content Security Policy' in e['message']]
    check(not csp, f'no Content-Security-Policy violations ({csp[:2]})')

    st, _, _ = api('DELETE', f'/servers/{sid}')
    check(st == 204, f'delete ({st})')
    poll('vm1 deleted', lambda: status(sid) == 404, 120)
    names = subprocess.run(VIRSH + ['list', '--all', '--name'], capture_output=True, text=True).stdout
    check('nimbus-' + sid not in names, 'its domain is gone')
print(f'took {time.time() - t_start:.1f}s')
if compute_lib.failures:
    print('---- agent log\n' + log_tail())
cleanup()
done()
