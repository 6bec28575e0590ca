"""Cold migration of a real QEMU guest between two nodes that share this
machine's libvirtd (two nimbus-compute, each seeing only the domains whose
Nimbus metadata names its node; tests/agent/test_libvirt_nodes.c):

- a guest booted on one node, stopped, with a marker written into its
  overlay, started again; migrate -> VERIFY_RESIZE: its domain now names
  the other node and runs there, the guest boots (its console there says
  so), and the destination's overlay holds the marker and sits on the
  destination's own cached base;
- revertResize: the domain names the source again and the guest boots
  there once more; the destination's copy is gone;
- migrate again, confirmResize: the source's copy is gone, the guest runs
  on the destination; delete removes the domain.
Exits 77 (skipped) without root, libvirtd or the test guest.  Run under
`flock /tmp/nimbus-libvirt.lock` like every test that uses the shared
libvirtd."""
import atexit
import os
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'image'))
import compute_lib  # noqa: E402
from compute_lib import NET, Compute, Schedulers, check, done, sql  # noqa: E402

VIRSH = compute_lib.VIRSH
GUEST = compute_lib.libvirt_guest_or_skip()

from image_test import ImageCloud  # noqa: E402

NODES = ('mig-lv-a', 'mig-lv-b')
cloud = ImageCloud()
compute_lib.seed(cloud)
tok, body = cloud.token()
api = Compute(cloud, tok)
kernel, ramdisk, image = compute_lib.upload_guest(cloud, tok, GUEST)
os.chmod(cloud.dir, 0o755)   # QEMU reads the overlays.
run = compute_lib.MoveRun(cloud, api, NODES, hypervisor='libvirt', hv_extra=dict.fromkeys(NODES, ''),
                          poll=0.5, reconcile_interval=2, stop_timeout=5,
                          source_extra='heartbeat = 2\n')
states, wait_for, status, console_file, act = (run.states, run.wait_for, run.status,
                                                run.console_file, run.act)
scheds = Schedulers(cloud, 1)
servers = []


def cleanup():
    run.kill()
    compute_lib.kill_procs(scheds.procs)
    compute_lib.remove_domains(servers)


atexit.register(cleanup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def domain_xml(sid):
    return subprocess.run(VIRSH + ['dumpxml', 'nimbus-' + sid], capture_output=True,
                          text=True).stdout


def domain_node(sid):
    """The node named in the domain's Nimbus metadata ('' without one)."""
    x = domain_xml(sid)
    for n in NODES:
        if f'>{n}<' in x:
            return n
    return ''


def domain_running(sid):
    return subprocess.run(VIRSH + ['domstate', 'nimbus-' + sid], capture_output=True,
                          text=True).stdout.strip() == 'running'


def disk(n, sid):
    return os.path.join(run.inst_dir(n, sid), 'disk.qcow2')


def marker_reads(path):
    r = subprocess.run(['qemu-io', '-r', '-U', '-f', 'qcow2', '-c', 'read -P 0xa5 32M 64k', path],
                       capture_output=True, text=True)
    return r.returncode == 0 and 'Pattern verification failed' not in r.stdout + r.stderr


def backing(path):
    r = subprocess.run(['qemu-img', 'info', '-U', path], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if line.startswith('backing file:'):
            return line.split(':', 1)[1].strip()
    return ''


wait_for('both agents register', lambda: sql(cloud, """SELECT count(*) FROM agent_nodes
         WHERE console_url IS NOT NULL""") == '2', 30)
st, _, b = api.req('POST', '/servers', {'server': {'name': 'mover', 'imageRef': image,
                                                  'flavorRef': '1', 'networks': [{'uuid': NET}]}})
check(st == 202, f'server create ({st})')
sid = b['server']['id'] if st == 202 else None
if sid:
    servers.append(sid)
    wait_for('ACTIVE with a real QEMU guest', lambda: status(sid) == 'ACTIVE', 180)
    src = run.host_of(sid)
    dst = NODES[1] if src == NODES[0] else NODES[0]
    check(domain_node(sid) == src, f'the domain names its node {src}')
    wait_for('the guest booted on the source',
             lambda: 'nimbus-guest: ready' in console_file(src, sid), 600)

    # A marker in the overlay, written while the guest is off.
    check(act(sid, {'os-stop': None})[0] == 202, 'os-stop')
    wait_for('SHUTOFF', lambda: status(sid) == 'SHUTOFF', 120)
    r = subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0xa5 32M 64k', disk(src, sid)],
                       capture_output=True, text=True)
    check(r.returncode == 0, f'marker written into the overlay ({r.stderr[-200:]})')
    check(act(sid, {'os-start': None})[0] == 202, 'os-start')
    wait_for('ACTIVE', lambda: status(sid) == 'ACTIVE', 120)
    boots = console_file(src, sid).count('nimbus-guest: ready')
    wait_for('booted again', lambda: console_file(src, sid).count('nimbus-guest: ready') > boots, 600)

    # ---- Migrate, revert.
    st, _, b = act(sid, {'migrate': None})
    check(st == 202, f'migrate ({st} {b})')
    wait_for('VERIFY_RESIZE', lambda: status(sid) == 'VERIFY_RESIZE', 300)
    check(run.host_of(sid) == dst, 'the server is on the other node')
    check(domain_node(sid) == dst and domain_running(sid),
          f'the domain now names {dst} and runs ({domain_node(sid)})')
    wait_for('the guest boots on the destination (its console there)',
             lambda: 'nimbus-guest: ready' in console_file(dst, sid), 600)
    check(marker_reads(disk(dst, sid)), "the marker arrived in the destination's overlay")
    check(backing(disk(dst, sid)).startswith(states[dst]),
          f"on the destination's own cached base ({backing(disk(dst, sid))})")
    boots = console_file(src, sid).count('nimbus-guest: ready')
    st, _, _ = act(sid, {'revertResize': None})
    check(st == 202, 'revertResize')
    wait_for('revert -> ACTIVE', lambda: status(sid) == 'ACTIVE', 300)
    wait_for('the domain names the source again and runs',
             lambda: domain_node(sid) == src and domain_running(sid), 120)
    wait_for('the guest boots on the source again',
             lambda: console_file(src, sid).count('nimbus-guest: ready') > boots, 600)
    wait_for("the destination's copy is gone",
             lambda: not os.path.exists(os.path.dirname(disk(dst, sid))), 60)
    check(marker_reads(disk(src, sid)), 'the marker is still in the source overlay')

    # ---- Migrate, confirm.
    check(act(sid, {'migrate': None})[0] == 202, 'migrate again')
    wait_for('VERIFY_RESIZE', lambda: status(sid) == 'VERIFY_RESIZE', 300)
    check(act(sid, {'confirmResize': None})[0] == 204, 'confirmResize')
    wait_for("the source's copy is gone",
             lambda: not os.path.exists(os.path.dirname(disk(src, sid))), 60)
    check(status(sid) == 'ACTIVE' and domain_node(sid) == dst and domain_running(sid),
          'the guest runs on the destination')
    wait_for('and has booted there',
             lambda: 'nimbus-guest: ready' in console_file(dst, sid), 600)

    st, _, _ = api.req('DELETE', f'/servers/{sid}')
    check(st == 204, 'delete 204')
    wait_for('deleted: 404', lambda: status(sid) == 404, 120)
    names = subprocess.run(VIRSH + ['list', '--all', '--name'], capture_output=True,
                           text=True).stdout
    check('nimbus-' + sid not in names, 'the domain is gone')

if compute_lib.failures:
    for n in NODES:
        print(f'---- {n} log\n' + run.node_log_tail(n))
done()
