#!/usr/bin/python3
"""bench/boot_bench.py: time from POST /servers to ACTIVE with real daemons
and a real QEMU guest, split into its parts, and the control plane's own
overhead: the total minus libvirt defining and starting the same domain
XML alone, measured in the same run.  Then 20 parallel creates against one,
and the same 20 domain XMLs defined and started at once by libvirt alone.
Prints figures and the aims of the issue, never asserts.

Starts nimbus-api, nimbus-image, nimbus-scheduler and nimbus-compute
(libvirt; QEMU emulation here) against a throwaway PostgreSQL database,
uploads the test guest of deploy/build-guest (kernel, initrd, disk: an ami
with kernel_id/ramdisk_id) and creates servers of a small flavor through
the Compute API.  Where the time goes comes from what the system records:

  instances.created_at                the API's transaction (POST /servers)
  instance_action_events              'schedule_instance': the scheduler's claim
    schedule_instance.finish_time
  agent_events 'image-ready'          prepare_ms (fetch_ms, overlay_ms, cached)
               'defined', 'started'   define_ms, start_ms: the libvirt calls
  instances.launched_at               the API sets ACTIVE from the agent's report

  scheduler  = claim - created_at
  dispatch   = agent began the create - claim  (long poll, pass queue)
  image      = prepare_ms (cold: images fetched from nimbus-image; warm: cached)
  define     = define_ms,  start = start_ms
  report     = launched_at - 'started'  (generation mark, observed report,
                                          the API's update)
  total      = launched_at - created_at
  overhead   = total - (define + start of the same XML alone, same run),
               per create, paired with the alone run that follows it
  total-define-start = total less the define and start the agent timed in
               the same create: the same overhead without the run-to-run
               spread of QEMU's start on a busy machine

The agent's times are those of its own clock, on the same machine as the
database here.  Each cold sample boots a fresh copy of the three images
(never in the node's cache); warm samples boot the first copy again.
Sequential creates are deleted (and gone) before the next starts.  The
guest's boot (from 'started' to its "nimbus-guest: ready" console line)
is measured once.  Every server is deleted at the end.  Holds
/tmp/nimbus-libvirt.lock while guests run.

Environment: NIMBUS_BUILD (default <repo>/build), NIMBUS_TEST_PG (a running
cluster; otherwise one is started), BENCH_COLD (3), BENCH_SEQ (10),
BENCH_PARALLEL (20), BENCH_RAM_MB (128), BENCH_TIMEOUT (seconds per wait,
300), BENCH_WORKERS (the agent's [agent] workers; unset: its default).
After the parallel creates, one line per create (by the time the agent
began it, seconds from the first POST): when it was claimed, began,
started and was ACTIVE, which shows how many creates ran at once and
where each one waited.  The alone measurement uses python3-libvirt when installed, else
virsh (whose connection adds some milliseconds)."""
import atexit
import datetime
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('NIMBUS_SOURCE', REPO)
os.environ.setdefault('NIMBUS_BUILD', os.path.join(REPO, 'build'))
sys.path.insert(0, os.path.join(REPO, 'tests', 'api'))
sys.path.insert(0, os.path.join(REPO, 'tests', 'image'))
sys.path.insert(0, os.path.join(REPO, 'tests', 'compute'))
import compute_lib  # noqa: E402
from compute_lib import NET, Compute, Schedulers, nt, sql  # noqa: E402

N_COLD = int(os.environ.get('BENCH_COLD', '3'))
N_SEQ = int(os.environ.get('BENCH_SEQ', '10'))
N_PAR = int(os.environ.get('BENCH_PARALLEL', '20'))
RAM_MB = int(os.environ.get('BENCH_RAM_MB', '128'))
WORKERS = os.environ.get('BENCH_WORKERS', '')
TIMEOUT = float(os.environ.get('BENCH_TIMEOUT', '300'))
AGENT = os.path.join(nt.BUILD, 'compute-agent', 'nimbus-compute')
URI = 'qemu:///system'
VIRSH = ['virsh', '-q', '-c', URI]
NODE = 'bench-node'

try:
    import libvirt
    # Lookups of domains already gone are expected: no messages on stderr.
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
except ImportError:
    libvirt = None


def say(*a):
    print(*a, flush=True)


def pct(v, p):
    """The p-th percentile of 'v' (nearest rank), or None."""
    v = sorted(x for x in v if x is not None)
    if not v:
        return None
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def overlay(d, info):
    """d/disk.qcow2: a new overlay of the base in 'info' (qemu-img info of
    an instance's disk), as large."""
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', info['backing-filename'],
                    '-F', info.get('backing-filename-format', 'raw'),
                    os.path.join(d, 'disk.qcow2'), str(info['virtual-size'])], check=True)


def at_once(fn, n):
    """Runs fn(0) .. fn(n - 1) on n threads at once; returns when all are
    done, with time.monotonic() at their start.  The first exception of
    any is raised."""
    errs = []

    def run(k):
        try:
            fn(k)
        except Exception as e:   # noqa: BLE001 -- raised below
            errs.append(e)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errs:
        raise errs[0]
    return t0


def ms(x):
    return '-' if x is None else f'{x:.0f}'


class Bench:
    def __init__(self):
        from image_test import ImageCloud
        self.cloud = ImageCloud(extra_conf={'log': {'level': 'warn'}})
        os.chmod(self.cloud.dir, 0o755)   # QEMU reads the overlays.
        compute_lib.seed(self.cloud)
        self.tok, _ = self.cloud.token()
        self.api = Compute(self.cloud, self.tok)
        self.servers = set()
        self.alone = []          # domain names made by the alone measurement
        self.agent = None
        self.scheds = None
        self.lock = None
        self.work = os.path.join(self.cloud.dir, 'alone')
        os.makedirs(self.work)
        self.state = os.path.join(self.cloud.dir, 'agent-state')
        self.conn = libvirt.open(URI) if libvirt else None

    # ---- set-up

    def upload(self, name, path, disk_format, **props):
        img = self.cloud.create_image(self.tok, name=name, disk_format=disk_format,
                                      container_format=disk_format, visibility='public',
                                      **props)
        with open(path, 'rb') as f:
            st, b = self.cloud.upload(self.tok, img['id'], f.read())
        if st != 204:
            raise RuntimeError(f'upload of {name}: {st} {b}')
        return img['id']

    def guest_image(self, guest, tag):
        """A fresh copy of the test guest in nimbus-image: its ami's id."""
        k = self.upload(f'kernel-{tag}', os.path.join(guest, 'vmlinuz'), 'aki')
        r = self.upload(f'initrd-{tag}', os.path.join(guest, 'initrd.img'), 'ari')
        return self.upload(f'guest-{tag}', os.path.join(guest, 'disk.qcow2'), 'ami',
                           kernel_id=k, ramdisk_id=r, os_command_line='console=ttyS0 quiet')

    def start_daemons(self):
        c = self.cloud
        token_file = os.path.join(c.dir, 'node.token')
        c.manage('node', 'add', NODE, '--output', token_file)
        conf = compute_lib.write_agent_conf(
            c, NODE, token_file, state_dir=self.state, hypervisor='libvirt',
            agent_extra='stop_timeout = 5\n' + (f'workers = {int(WORKERS)}\n' if WORKERS else ''),
            source_extra='heartbeat = 2\n')
        self.agent_log = os.path.join(c.dir, 'agent.log')
        self.agent = compute_lib.start_agent(conf, self.agent_log)
        self.scheds = Schedulers(c, 1)
        deadline = time.time() + 60
        while sql(c, f"""SELECT count(*) FROM compute_nodes
                  WHERE hypervisor_hostname = '{NODE}'""") != '1':
            if time.time() > deadline or self.agent.poll() is not None:
                raise RuntimeError('the agent did not register: ' + self.agent_tail())
            time.sleep(0.2)
        sql(c, f"INSERT INTO flavors (id, name, vcpus, ram, disk) VALUES "
               f"('bench', 'bench', 1, {RAM_MB}, 1)")
        pid = sql(c, "SELECT id FROM projects WHERE name = 'admin'")
        n = max(N_PAR, 1) + 2
        st, _, b = self.api.req('PUT', f'/os-quota-sets/{pid}',
                                {'quota_set': {'instances': n, 'cores': n,
                                               'ram': n * RAM_MB + 1024}})
        if st != 200:
            raise RuntimeError(f'quota update: {st} {b}')

    def agent_tail(self):
        try:
            with open(self.agent_log, 'rb') as f:
                return f.read().decode(errors='replace')[-3000:]
        except OSError:
            return ''

    def take_lock(self):
        self.lock = open('/tmp/nimbus-libvirt.lock', 'a')
        t0 = time.time()
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        if time.time() - t0 > 1:
            say(f'(waited {time.time() - t0:.0f} s for /tmp/nimbus-libvirt.lock)')

    # ---- servers

    def wait(self, what, cond, timeout=TIMEOUT, step=0.05):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = cond()
            if v:
                return v
            if self.agent.poll() is not None:
                raise RuntimeError('nimbus-compute exited: ' + self.agent_tail())
            time.sleep(step)
        raise RuntimeError(f'timed out: {what}\n' + self.agent_tail())

    def post(self, image, name):
        t = time.time()
        st, _, b = self.api.req('POST', '/servers', {'server': {
            'name': name, 'imageRef': image, 'flavorRef': 'bench',
            'networks': [{'uuid': NET}]}})
        if st != 202:
            raise RuntimeError(f'create: {st} {b}')
        sid = b['server']['id']
        self.servers.add(sid)
        return sid, t

    def status(self, sid):
        st, _, b = self.api.req('GET', f'/servers/{sid}')
        return b['server']['status'] if st == 200 else st

    def active_all(self, sids):
        q = "','".join(sids)
        bad = sql(self.cloud, f"SELECT count(*) FROM instances WHERE uuid IN ('{q}') "
                              "AND vm_state = 'error'")
        if bad != '0':
            raise RuntimeError('a server went to ERROR: ' + self.agent_tail())
        n = sql(self.cloud, f"SELECT count(*) FROM instances WHERE uuid IN ('{q}') "
                            "AND vm_state = 'active' AND launched_at IS NOT NULL")
        return int(n) == len(sids)

    def delete(self, sids, wait=True):
        for s in sids:
            st, _, _ = self.api.req('DELETE', f'/servers/{s}')
            if st not in (204, 404):
                say(f'delete {s}: {st}')
        if wait:
            self.wait('servers deleted', lambda: all(self.status(s) == 404 for s in sids),
                      step=0.2)
            # The agent's pass has removed the domains (the API's 404 may come
            # first): wait until libvirt has none of them.
            self.wait('domains gone', lambda: not any(self.has_domain(s) for s in sids),
                      step=0.1)
            self.servers.difference_update(sids)

    def has_domain(self, sid):
        if self.conn:
            try:
                self.conn.lookupByName('nimbus-' + sid)
                return True
            except libvirt.libvirtError:
                return False
        return subprocess.run(VIRSH + ['domstate', 'nimbus-' + sid],
                              capture_output=True).returncode == 0

    # ---- what the system recorded

    def phases(self, sid, t_post):
        """The split of one create from the recorded times; None parts when
        an event is missing."""
        row = sql(self.cloud, f"""SELECT extract(epoch FROM i.created_at),
                  extract(epoch FROM i.launched_at),
                  (SELECT extract(epoch FROM max(e.finish_time)) FROM instance_action_events e
                     JOIN instance_actions a ON a.id = e.action_id
                    WHERE a.instance_uuid = i.uuid AND e.event = 'schedule_instance')
                  FROM instances i WHERE i.uuid = '{sid}'""").split('|')
        created, launched, claimed = (float(x) if x else None for x in row)
        ev = {}
        for line in sql(self.cloud, f"""SELECT event, detail, event_time FROM agent_events
                        WHERE instance_uuid = '{sid}' AND event IN
                        ('image-ready', 'defined', 'started') ORDER BY received_at""").splitlines():
            name, detail, when = line.split('|', 2)
            kv = dict(x.split('=', 1) for x in detail.split() if '=' in x)
            kv['t'] = datetime.datetime.strptime(when, '%Y-%m-%dT%H:%M:%S.%fZ').replace(
                tzinfo=datetime.timezone.utc).timestamp()
            ev.setdefault(name, kv)   # the create's (first) ones
        p = {'post': t_post, 'created': created, 'launched': launched}
        p['total'] = (launched - created) * 1000 if launched and created else None
        p['client'] = (launched - t_post) * 1000 if launched else None
        p['scheduler'] = (claimed - created) * 1000 if claimed and created else None
        img, de, stt = ev.get('image-ready'), ev.get('defined'), ev.get('started')
        if img and de and stt:
            p['image'] = float(img['prepare_ms'])
            p['fetch'] = float(img['fetch_ms'])
            p['overlay'] = float(img['overlay_ms'])
            p['cached'] = img['cached']
            p['define'] = float(de['define_ms'])
            p['start'] = float(stt['start_ms'])
            began = stt['t'] - (p['image'] + p['define'] + p['start']) / 1000
            p['dispatch'] = (began - claimed) * 1000 if claimed else None
            p['report'] = (launched - stt['t']) * 1000 if launched else None
            p['started_at'] = stt['t']
            if p['total'] is not None:
                p['own'] = p['total'] - p['define'] - p['start']
        return p

    def events_in(self, sids):
        q = "','".join(sids)
        n = sql(self.cloud, f"SELECT count(DISTINCT instance_uuid) FROM agent_events "
                            f"WHERE instance_uuid IN ('{q}') AND event = 'started'")
        return int(n) == len(sids)

    def create_one(self, image, name):
        sid, t = self.post(image, name)
        # The API's answer, polled, and the recorded time.
        self.wait('ACTIVE', lambda: self.status(sid) == 'ACTIVE', step=0.02)
        t_seen = time.time()
        self.wait('events', lambda: self.events_in([sid]), timeout=30, step=0.1)
        p = self.phases(sid, t)
        p['seen'] = (t_seen - t) * 1000
        return sid, p

    # ---- libvirt alone

    def alone_xml(self, sid):
        """The domain XML the agent defined for 'sid', as a copy of its own:
        another name and uuid, no Nimbus metadata (so no agent owns it), its
        own overlay of the same base and its own console log."""
        if self.conn:
            xml = self.conn.lookupByName('nimbus-' + sid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        else:
            xml = subprocess.run(VIRSH + ['dumpxml', '--inactive', 'nimbus-' + sid],
                                 capture_output=True, text=True, check=True).stdout
        xml = re.sub(r'<metadata>.*?</metadata>', '', xml, flags=re.S)
        xml = re.sub(r"<mac address='[^']*'/>", '', xml)
        return xml.replace(os.path.join(self.state, 'instances', sid), '@DIR@') \
                  .replace('nimbus-' + sid, 'nbench-@UUID@').replace(sid, '@UUID@')

    def disk_info(self, sid):
        disk = os.path.join(self.state, 'instances', sid, 'disk.qcow2')
        return json.loads(subprocess.run(['qemu-img', 'info', '-U', '--output=json', disk],
                                         capture_output=True, text=True, check=True).stdout)

    def alone_once(self, tmpl, info, n):
        """Defines and starts the copy 'tmpl' of a domain's XML on its own
        overlay of the base in 'info' (qemu-img info of the original disk),
        then destroys and undefines it; the two calls' times in ms."""
        u = str(uuid.uuid4())
        d = os.path.join(self.work, str(n))
        os.makedirs(d)
        overlay(d, info)
        xml = tmpl.replace('@DIR@', d).replace('@UUID@', u)
        name = 'nbench-' + u
        self.alone.append(name)
        if self.conn:
            t0 = time.monotonic()
            dom = self.conn.defineXML(xml)
            t1 = time.monotonic()
            dom.create()
            t2 = time.monotonic()
            dom.destroy()
            dom.undefine()
        else:
            path = os.path.join(d, 'domain.xml')
            with open(path, 'w') as f:
                f.write(xml)
            t0 = time.monotonic()
            subprocess.run(VIRSH + ['define', path], check=True, capture_output=True)
            t1 = time.monotonic()
            subprocess.run(VIRSH + ['start', name], check=True, capture_output=True)
            t2 = time.monotonic()
            subprocess.run(VIRSH + ['destroy', name], capture_output=True)
            subprocess.run(VIRSH + ['undefine', name], capture_output=True)
        self.alone.remove(name)
        shutil.rmtree(d, ignore_errors=True)
        return {'define': (t1 - t0) * 1000, 'start': (t2 - t1) * 1000,
                'total': (t2 - t0) * 1000}

    def alone_parallel(self, tmpl, info, n):
        """'n' copies of 'tmpl' (alone_once()) defined and started at once,
        one thread each (each with its own libvirt connection when
        python3-libvirt is there): ms from the first define to the last
        start's return, then all destroyed and undefined.  The same
        parallel boot without Nimbus: what the machine gives 'n' guests
        started together."""
        dirs, xmls = [], []
        for k in range(n):
            u = str(uuid.uuid4())
            d = os.path.join(self.work, f'par-{k}')
            os.makedirs(d)
            overlay(d, info)
            dirs.append(d)
            # Each copy its own tap (libvirt makes it: the node has no
            # network agent here); one name is what the copies share.
            xml = re.sub(r"<target dev='tap[^']*'", f"<target dev='nbtap{k}'",
                         tmpl.replace('@DIR@', d).replace('@UUID@', u))
            xmls.append((u, xml))
            self.alone.append('nbench-' + u)
        done = [None] * n

        def one(k):
            u, xml = xmls[k]
            if libvirt:
                c = libvirt.open(URI)
                c.defineXML(xml).create()
                c.close()
            else:
                path = os.path.join(dirs[k], 'domain.xml')
                with open(path, 'w') as f:
                    f.write(xml)
                for cmd in (['define', path], ['start', 'nbench-' + u]):
                    r = subprocess.run(VIRSH + cmd, capture_output=True, text=True)
                    if r.returncode:
                        raise RuntimeError(f'virsh {cmd[0]}: {r.stderr.strip()}')
            done[k] = time.monotonic()
        try:
            t0 = at_once(one, n)
        finally:
            for u, _ in xmls:
                subprocess.run(VIRSH + ['destroy', 'nbench-' + u], capture_output=True)
                subprocess.run(VIRSH + ['undefine', 'nbench-' + u], capture_output=True)
                self.alone.remove('nbench-' + u)
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)
        return (max(done) - t0) * 1000

    def boot_time(self, sid, started_at):
        log = os.path.join(self.state, 'instances', sid, 'console.log')

        def ready():
            try:
                with open(log, 'rb') as f:
                    return b'nimbus-guest: ready' in f.read()
            except OSError:
                return False
        self.wait("the guest's 'ready' console line", ready, step=0.1)
        return (time.time() - started_at) * 1000

    # ---- clean-up

    def cleanup(self):
        try:
            if self.servers and self.agent and self.agent.poll() is None:
                self.delete(list(self.servers))
        except Exception as e:   # noqa: BLE001 -- the domains must go regardless
            say('cleanup:', e)
        for p in [self.agent] + (self.scheds.procs if self.scheds else []):
            if p and p.poll() is None:
                p.kill()
                p.wait()
        for name in ['nimbus-' + s for s in self.servers] + self.alone:
            subprocess.run(VIRSH + ['destroy', name], capture_output=True)
            subprocess.run(VIRSH + ['undefine', '--managed-save', name], capture_output=True)
        if self.lock:
            self.lock.close()
            self.lock = None


ROWS = [('scheduler', 'scheduler'), ('dispatch', 'dispatch'), ('image', 'image'),
        ('  fetch', 'fetch'), ('  overlay', 'overlay'), ('define', 'define'),
        ('start', 'start'), ('report', 'report'), ('total', 'total'),
        ('API seen ACTIVE', 'seen')]


def table(cols):
    """cols: [(title, [phase dicts])]: p50/p90 of each phase, in ms."""
    head = f'{"ms":<18}' + ''.join(f'{t + " p50":>12}{"p90":>8}' for t, _ in cols)
    say(head)
    for label, key in ROWS + [('overhead', 'overhead'), ('total-define-start', 'own')]:
        line = f'{label:<18}'
        for _, ps in cols:
            v = [p.get(key) for p in ps]
            line += f'{ms(pct(v, 50)):>12}{ms(pct(v, 90)):>8}'
        say(line)


def main():
    if os.geteuid() != 0:
        say('boot_bench: needs root (libvirt, QEMU)')
        return 1
    if not os.path.exists(AGENT):
        say(f'boot_bench: {AGENT} not built')
        return 1
    if subprocess.run(VIRSH + ['version'], capture_output=True).returncode != 0:
        say('boot_bench: libvirtd not reachable (run deploy/libvirt-setup)')
        return 1
    guest = os.path.join(nt.BUILD, 'agent-test-guest')
    subprocess.run([os.path.join(REPO, 'deploy', 'build-guest'), guest], check=True,
                   capture_output=True)
    b = Bench()
    atexit.register(b.cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    say(f'boot_bench: {N_COLD} cold, {N_SEQ} warm sequential, {N_PAR} parallel; '
        f'flavor 1 vCPU {RAM_MB} MiB; alone measured with '
        f'{"python3-libvirt" if libvirt else "virsh"}')
    images = [b.guest_image(guest, f'c{i}') for i in range(max(N_COLD, 1))]
    b.start_daemons()
    b.take_lock()

    cold, warm, alone = [], [], []
    boot_ms = None
    tmpl = info = None
    # Cold: each image's first boot on the node.
    for i, img in enumerate(images[:N_COLD]):
        sid, p = b.create_one(img, f'cold-{i}')
        cold.append(p)
        say(f'cold {i}: total {ms(p["total"])} ms (image {ms(p.get("image"))}, '
            f'cached={p.get("cached")})')
        if boot_ms is None and p.get('started_at'):
            boot_ms = b.boot_time(sid, p['started_at'])
            say(f"guest boot (started -> console 'ready'): {boot_ms:.0f} ms")
        b.delete([sid])
    # Warm: the first image again, then libvirt alone on the same XML.
    for i in range(N_SEQ):
        sid, p = b.create_one(images[0], f'warm-{i}')
        if tmpl is None:
            tmpl, info = b.alone_xml(sid), b.disk_info(sid)
        b.delete([sid])
        a = b.alone_once(tmpl, info, i)
        alone.append(a)
        p['overhead'] = p['total'] - a['total'] if p['total'] is not None else None
        warm.append(p)
        say(f'warm {i}: total {ms(p["total"])} ms, libvirt alone {a["total"]:.0f} ms '
            f'(define {a["define"]:.0f}, start {a["start"]:.0f}), '
            f'overhead {ms(p["overhead"])} ms, cached={p.get("cached")}')

    # Parallel: N_PAR creates at once, against one (the warm p50).
    par = []
    if N_PAR:
        res = [None] * N_PAR

        def one(i):
            res[i] = b.post(images[0], f'par-{i}')
        t0 = time.time()
        at_once(one, N_PAR)
        sids = [r[0] for r in res]
        b.wait(f'{N_PAR} servers ACTIVE', lambda: b.active_all(sids), step=0.1)
        b.wait('events', lambda: b.events_in(sids), timeout=30, step=0.2)
        par = [b.phases(s, t) for s, t in res]
        wall_par = (max(p['launched'] for p in par) - t0) * 1000
        b.delete(sids)
        # The same number of guests started at once by libvirt alone.
        wall_alone_par = b.alone_parallel(tmpl, info, N_PAR) if tmpl else None
        say(f'parallel creates, s from the first POST (agent workers: {WORKERS or "default"}):')
        say(f'{"":>4}{"claimed":>9}{"began":>8}{"start":>8}{"started":>9}{"active":>8}')
        for i, p in enumerate(sorted(par, key=lambda p: p.get('started_at', 0)
                                     - (p.get('start') or 0) / 1000)):
            if p.get('started_at') is None:
                continue
            began = p['started_at'] - (p['image'] + p['define'] + p['start']) / 1000
            claimed = began - p['dispatch'] / 1000 if p.get('dispatch') is not None else None
            say(f'{i:>4}{(claimed - t0) if claimed else 0:>9.1f}{began - t0:>8.1f}'
                f'{p["start"] / 1000:>8.1f}{p["started_at"] - t0:>9.1f}{p["launched"] - t0:>8.1f}')

    say('')
    say('POST /servers -> ACTIVE, ms (warm: image in the node\'s cache; '
        'overhead = total - libvirt define+start of the same XML alone)')
    cols = [('cold', cold), ('warm', warm)]
    if par:
        cols.append((f'par{N_PAR}', par))
    table(cols)
    if alone:
        say(f'{"libvirt alone":<18}{"":>12}{"":>8}{ms(pct([a["total"] for a in alone], 50)):>12}'
            f'{ms(pct([a["total"] for a in alone], 90)):>8}   '
            f'(define p50 {ms(pct([a["define"] for a in alone], 50))}, '
            f'start p50 {ms(pct([a["start"] for a in alone], 50))})')
    say('')
    if warm:
        ov = pct([p.get('overhead') for p in warm], 50)
        own = pct([p.get('own') for p in warm], 50)
        say(f'aim: overhead <= 100 ms p50 with a warm cache: {ms(ov)} ms: '
            f'{"met" if ov is not None and ov <= 100 else "NOT met"} '
            f'(total less the agent\'s own define+start of each create: {ms(own)} ms: '
            f'{"met" if own is not None and own <= 100 else "NOT met"})')
    if par and warm:
        one = pct([p['client'] for p in warm], 50)
        limit = 2 * one + (boot_ms or 0)
        say(f'aim: {N_PAR} parallel creates within 2x one create + the guest boot: '
            f'{wall_par:.0f} ms for all {N_PAR} (POST of the first to ACTIVE of the last) vs '
            f'2 x {one:.0f} + {ms(boot_ms)} = {limit:.0f} ms: '
            f'{"met" if wall_par <= limit else "NOT met"}')
        if wall_alone_par is not None:
            say(f'  libvirt alone, {N_PAR} of the same XML defined and started at once (no '
                f'Nimbus): {wall_alone_par:.0f} ms for all {N_PAR}: '
                f'{"within" if wall_alone_par <= limit else "above"} that limit by itself; '
                f'Nimbus / libvirt alone = {wall_par / wall_alone_par:.2f}')
    b.cleanup()
    left = [n for n in subprocess.run(VIRSH + ['list', '--all', '--name'], capture_output=True,
                                      text=True).stdout.split()
            if n.startswith('nbench-') or any(n == 'nimbus-' + s for s in b.servers)]
    say('every server deleted' + (f'; left: {left}' if left else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
