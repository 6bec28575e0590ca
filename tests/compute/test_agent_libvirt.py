"""A real guest through the whole stack: kernel, initrd and disk uploaded to
nimbus-image (aki/ari/ami with kernel_id/ramdisk_id/os_command_line), a
server created through the Compute API, placed by nimbus-scheduler, booted
by nimbus-compute with libvirt + QEMU from images it downloads over HTTP;
the guest's console shows it booted, through the agent's console endpoint,
os-getConsoleOutput and `openstack console log show` (the agent pushes
console tails in its observed reports); a cold resize redefines the domain
with the new vCPUs and RAM and grows its disk, the guest boots again, and
revertResize brings the old flavor back; createImage uploads the guest's
disk to nimbus-image as a qcow2 snapshot, and rebuild from it gives the
guest a new overlay of that image and boots it; rescue boots a rescue image
with the guest's own disk as its second disk (the guest prints the disks it
sees), unrescue boots its own disk alone again; a VNC console URL from the API
opens, through nimbus-compute's WebSocket proxy, the guest's VNC server
(RFB handshake), and its token works once; delete of a rescued guest
removes the domain and both overlays.  Exits 77 (skipped) without root, libvirtd or the test guest."""
import atexit
import os
import signal
import subprocess
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'image'))
import compute_lib  # noqa: E402
import ws_lib  # noqa: E402
from compute_lib import NET, Compute, Schedulers, check, done, sql  # noqa: E402,F401

VIRSH = compute_lib.VIRSH
GUEST = compute_lib.libvirt_guest_or_skip()

from image_test import ImageCloud  # noqa: E402

NODE = 'libvirt-node'
cloud = ImageCloud()
compute_lib.seed(cloud)   # the shared network NET servers attach to
tok, body = cloud.token()
api = Compute(cloud, tok)
kernel, ramdisk, image = compute_lib.upload_guest(cloud, tok, GUEST)

token_file = os.path.join(cloud.dir, 'node.token')
cloud.manage('node', 'add', NODE, '--output', token_file)
with open(token_file) as f:
    node_secret = f.read().strip()
state = os.path.join(cloud.dir, 'agent-state')
agent_conf = compute_lib.write_agent_conf(cloud, NODE, token_file, state_dir=state,
                                          hypervisor='libvirt', console=True,
                                          reconcile_interval=2, stop_timeout=5,
                                          source_extra='heartbeat = 2\n')
os.chmod(cloud.dir, 0o755)   # QEMU (user libvirt-qemu) reads the overlays.
agent_log = os.path.join(cloud.dir, 'agent.log')
agent = compute_lib.start_agent(agent_conf, agent_log)
scheds = Schedulers(cloud, 1)
servers = []


run = compute_lib.AgentRun(agent, agent_log, api)
wait_for, status = run.wait_for, run.status


def cleanup():
    compute_lib.kill_procs([agent] + scheds.procs)
    compute_lib.remove_domains(servers)


atexit.register(cleanup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


wait_for('the agent registers', lambda: sql(cloud, f"""SELECT count(*) FROM compute_nodes
         WHERE hypervisor_hostname = '{NODE}'""") == '1', 30)
st, _, b = api.req('POST', '/servers', {'server': {'name': 'guest', 'imageRef': image,
                                                  'flavorRef': '1',
                                                  'networks': [{'uuid': NET}]}})
check(st == 202, f'server create ({st})')
sid = b['server']['id'] if st == 202 else None
if sid:
    servers.append(sid)
    wait_for('BUILD -> ACTIVE with a real QEMU guest', lambda: status(sid) == 'ACTIVE', 180)
    port = None
    for line in run.log_tail(4000).splitlines():
        if '/healthz and /metrics on 127.0.0.1:' in line:
            port = line.rsplit(':', 1)[1].strip()

    def console():
        try:
            rq = urllib.request.Request(
                f'http://127.0.0.1:{port}/v1/instances/{sid}/console?length=50',
                headers={'Authorization': 'Bearer ' + node_secret})
            with urllib.request.urlopen(rq, timeout=5) as r:
                return 'nimbus-guest: ready' in r.read().decode(errors='replace')
        except OSError:
            return False

    wait_for("the guest's console shows it booted", console, 600)

    def api_console(length=None):
        b = {} if length is None else {'length': length}
        st, _, r = api.req('POST', f'/servers/{sid}/action', {'os-getConsoleOutput': b})
        return r['output'] if st == 200 else ''

    wait_for('os-getConsoleOutput shows the guest\'s boot messages',
             lambda: 'nimbus-guest: ready' in api_console(), 30)
    r = cloud.osc('console', 'log', 'show', '--lines', '40', sid)
    check(r.returncode == 0 and 'nimbus-guest: ready' in r.stdout,
          f'openstack console log show --lines 40 prints it ({r.returncode} {r.stderr[-300:]})')

    def domain_xml():
        return subprocess.run(VIRSH + ['dumpxml', '--inactive', 'nimbus-' + sid],
                              capture_output=True, text=True).stdout

    def booted_again():
        # The log is appended to: a new boot adds a second "ready" line.
        return api_console().count('nimbus-guest: ready') >= boots + 1

    # ---- Cold resize on this host, then revert.
    sql(cloud, "INSERT INTO flavors (id, name, vcpus, ram, disk) VALUES ('q2', 'q2', 2, 640, 2)")
    boots = api_console().count('nimbus-guest: ready')
    st, _, b = api.req('POST', f'/servers/{sid}/action', {'resize': {'flavorRef': 'q2'}})
    check(st == 202, f'resize to 2 vCPUs, 640 MiB, 2 GiB ({st} {b})')
    wait_for('VERIFY_RESIZE', lambda: status(sid) == 'VERIFY_RESIZE', 120)
    x = domain_xml()
    check("<vcpu placement='static'>2</vcpu>" in x and '655360' in x,
          'the domain is redefined with 2 vCPUs and 640 MiB')
    disk = os.path.join(state, 'instances', sid, 'disk.qcow2')
    info = subprocess.run(['qemu-img', 'info', '-U', '--output=json', disk],
                          capture_output=True, text=True).stdout
    check('"virtual-size": 2147483648' in info, 'its disk grew to 2 GiB')
    wait_for('the resized guest booted again', booted_again, 300)
    boots = api_console().count('nimbus-guest: ready')
    st, _, _ = api.req('POST', f'/servers/{sid}/action', {'revertResize': None})
    check(st == 202, 'revertResize 202')
    wait_for('revert -> ACTIVE', lambda: status(sid) == 'ACTIVE', 120)
    x = domain_xml()
    check("<vcpu placement='static'>1</vcpu>" in x and '524288' in x,
          'the domain has 1 vCPU and 512 MiB again')
    wait_for('and booted again', booted_again, 300)

    # ---- Snapshot of the running guest into nimbus-image.
    st, h, _ = api.req('POST', f'/servers/{sid}/action', {'createImage': {'name': 'guest-snap'}})
    snap = h.get('location', '').rsplit('/', 1)[-1]
    check(st == 202 and snap, f'createImage 202 ({st})')

    def snap_status():
        st, _, b = cloud.img('GET', f'/v2/images/{snap}', tok)
        return b.get('status') if st == 200 else st

    wait_for('the snapshot image becomes active', lambda: snap_status() == 'active', 120)
    st, _, b = cloud.img('GET', f'/v2/images/{snap}', tok)
    check(b.get('disk_format') == 'ami' and b.get('kernel_id') == kernel
          and b.get('image_type') == 'snapshot',
          'an ami like its base, with the same kernel, marked as a snapshot')
    check(status(sid) == 'ACTIVE', 'the guest runs on (paused only while its disk was copied)')
    # ---- Rebuild from the snapshot (an ami with the guest's kernel and
    # ramdisk): a new overlay of that image, the guest boots again.
    ino = os.stat(disk).st_ino
    boots = api_console().count('nimbus-guest: ready')
    st, _, b = api.req('POST', f'/servers/{sid}/action', {'rebuild': {'imageRef': snap}})
    check(st == 202 and b['server']['status'] == 'REBUILD', f'rebuild from the snapshot ({st})')
    wait_for('rebuild -> ACTIVE', lambda: status(sid) == 'ACTIVE', 120)
    info = subprocess.run(['qemu-img', 'info', '-U', '--output=json', disk],
                          capture_output=True, text=True).stdout
    check(os.stat(disk).st_ino != ino and snap in info,
          'a new overlay whose base is the snapshot image')
    x = domain_xml()
    check(kernel in x and ramdisk in x, 'booted with the image\'s kernel and ramdisk')
    wait_for('the rebuilt guest booted again', booted_again, 300)
    # ---- Rescue: the guest boots a rescue image (an ami with the guest's
    # kernel and ramdisk and a 96 MiB disk) with its own disk as the
    # second disk; the guest prints the sizes of the disks it sees.
    rescue_qcow = os.path.join(cloud.dir, 'rescue.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', rescue_qcow, '96M'], check=True)
    rescue_img = compute_lib.upload_image(cloud, tok, 'guest-rescue', rescue_qcow, 'ami',
                                          kernel_id=kernel, ramdisk_id=ramdisk,
                                          os_command_line='console=ttyS0 quiet')
    rescue_disk = os.path.join(state, 'instances', sid, 'rescue.qcow2')
    own_sectors = (2 << 30) // 512 if '"virtual-size": 2147483648' in info else (1 << 30) // 512

    def last_boot():
        out = api_console()
        return out[out.rfind('nimbus-guest: init started'):]

    ino = os.stat(disk).st_ino
    boots = api_console().count('nimbus-guest: ready')
    st, _, b = api.req('POST', f'/servers/{sid}/action',
                       {'rescue': {'rescue_image_ref': rescue_img}})
    check(st == 200 and b.get('adminPass'), f'rescue: 200 with an adminPass ({st})')
    wait_for('rescue -> RESCUE', lambda: status(sid) == 'RESCUE', 120)
    x = domain_xml()
    r, o = x.find(rescue_disk), x.find(disk + "'")
    check(0 <= r < o and "dev='vdb'" in x[o:], 'the domain boots the rescue overlay, its own disk second')
    wait_for('the rescued guest booted', booted_again, 300)
    lb = last_boot()
    check('nimbus-guest: vda 196608 sectors' in lb and f'nimbus-guest: vdb {own_sectors} sectors' in lb,
          f'it sees the 96 MiB rescue disk first and its own disk second ({lb[:400]!r})')
    info = subprocess.run(['qemu-img', 'info', '-U', '--output=json', rescue_disk],
                          capture_output=True, text=True).stdout
    check(rescue_img in info, 'the rescue overlay is of the rescue image')
    check(os.stat(disk).st_ino == ino, 'its own overlay is the same file')
    boots = api_console().count('nimbus-guest: ready')
    st, _, _ = api.req('POST', f'/servers/{sid}/action', {'unrescue': None})
    check(st == 202, f'unrescue 202 ({st})')
    wait_for('unrescue -> ACTIVE', lambda: status(sid) == 'ACTIVE', 120)
    wait_for('the guest booted its own disk again', booted_again, 300)
    lb = last_boot()
    check(f'nimbus-guest: vda {own_sectors} sectors' in lb and 'vdb' not in lb,
          f'it sees its own disk alone ({lb[:300]!r})')
    check(not os.path.exists(rescue_disk) and rescue_disk not in domain_xml(),
          'the rescue overlay is deleted and out of the domain')
    # ---- The VNC console through the proxy.
    st, _, b = api.req('POST', f'/servers/{sid}/action', {'os-getVNCConsole': {'type': 'novnc'}})
    url = b['console']['url'] if st == 200 else ''
    check(st == 200 and '?token=' in url, f'os-getVNCConsole ({st})')
    st, ws, head = ws_lib.connect(url)
    check(st == 101 and 'Sec-WebSocket-Protocol: binary' in head,
          f'the proxy accepts the token and upgrades to WebSocket ({st})')
    if ws:
        hello = ws_lib.recv_bytes(ws, 12)
        check(hello == b'RFB 003.008\n', f'the guest\'s VNC server greets: {hello!r}')
        ws_lib.send(ws, b'RFB 003.008\n')
        types = ws_lib.recv_bytes(ws, 2)
        check(len(types) >= 2 and types[0] >= 1 and 1 in types[1:1 + types[0]],
              f'and offers its security types after our version ({types!r})')
        ws.close()
    st, _, _ = ws_lib.connect(url)
    check(st == 403, f'the same token again: 403 ({st})')
    st, _, b = api.req('POST', f'/servers/{sid}/remote-consoles',
                       {'remote_console': {'protocol': 'serial', 'type': 'serial'}})
    st, ws, _ = ws_lib.connect(b['remote_console']['url'] if st == 200 else url)
    check(st == 101, f'the serial console opens too ({st})')
    if ws:
        ws_lib.send(ws, b'\n')
        ws.close()

    # ---- Delete while rescued (with its own image): both overlays go.
    st, _, _ = api.req('POST', f'/servers/{sid}/action', {'rescue': None})
    check(st == 200, f'rescue with its own image ({st})')
    wait_for('RESCUE', lambda: status(sid) == 'RESCUE', 120)
    check(os.path.exists(rescue_disk) and os.path.exists(disk), 'two overlays')
    st, _, _ = api.req('DELETE', f'/servers/{sid}')
    check(st == 204, 'delete 204')
    wait_for('deleted: 404', lambda: status(sid) == 404, 120)
    names = subprocess.run(VIRSH + ['list', '--all', '--name'], capture_output=True,
                           text=True).stdout
    check('nimbus-' + sid not in names, 'the domain is gone')
    wait_for('no overlay left', lambda: not os.path.exists(os.path.dirname(disk)), 30)

if compute_lib.failures:
    print('---- agent log\n' + run.log_tail(4000))
done()
