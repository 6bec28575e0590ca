#!/usr/bin/python3
"""bench/netagent_bench.py: port create -> ACTIVE latency on a node, and
ports wired per second by one nimbus-network.

Starts nimbus-api against a throwaway database (tests/api/nimbus_test.py
harness) and one nimbus-network (vxlan provider, real devices) in a network
namespace joined to the root namespace by a veth, as the tests do.

1. Latency: the agent runs as a daemon ([agent] interval = INTERVAL s);
   SAMPLES times, a port bound to the node is created through the API and
   polled (every 10 ms) until its status is ACTIVE.  Prints p50/p90/max.
   The agent polls the API (the agent channel's long poll is not used by
   nimbus-network yet), so the figure is about half the interval plus one
   pass.
2. Throughput: the daemon stopped, PORTS ports (veth, as for containers;
   one network) are created through the API, then one pass
   (`nimbus-network --once`) wires them all: prints ports/s of that pass,
   and of a second, converged pass (nothing to do).

    sudo bench/netagent_bench.py [PORTS [SAMPLES]]      default: 200 20

Environment: NIMBUS_BUILD (build directory), NIMBUS_TEST_PG (cluster
conninfo; without it a cluster is started), BENCH_INTERVAL (1).
Prints figures and never judges them."""
import os
import statistics
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'api'))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'network'))
import nimbus_test as nt  # noqa: E402
from test_netagent_netns import sh  # noqa: E402

AGENT = os.path.join(nt.BUILD, 'network-agent', 'nimbus-network')


def main():
    ports = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    samples = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    interval = int(os.environ.get('BENCH_INTERVAL', '1'))
    tag = uuid.uuid4().hex[:5]
    ns, link = f'nb{tag}-h', f'nbu{tag}'
    cloud = nt.Cloud(extra_conf={'api': {'host': '0.0.0.0'}})
    os.chmod(cloud.dir, 0o755)
    daemon = None
    try:
        sh('ip', 'netns', 'add', ns)
        sh('ip', 'link', 'add', link, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns)
        sh('ip', 'addr', 'add', '192.168.251.1/24', 'dev', link)
        sh('ip', 'link', 'set', link, 'up')
        sh('ip', 'addr', 'add', '192.168.251.2/24', 'dev', 'eth0', ns=ns)
        sh('ip', 'link', 'set', 'eth0', 'up', ns=ns)
        sh('ip', 'link', 'set', 'lo', 'up', ns=ns)
        admin, _ = cloud.token()
        conf = os.path.join(cloud.dir, 'net.conf')
        with open(conf, 'w') as f:
            f.write(f"[agent]\nhost = bench\nprovider = vxlan\nlocal_ip = 192.168.251.2\n"
                    f"state_dir = {cloud.dir}/state\nnetns_prefix = nq{tag}-\n"
                    f"interval = {interval}\n[log]\nlevel = warning\n"
                    f"[api]\nnetwork_url = http://192.168.251.1:{cloud.ports['network']}\n"
                    f"auth_url = http://192.168.251.1:{cloud.ports['identity']}/v3\n"
                    f"username = admin\npassword = {nt.ADMIN_PASSWORD}\nproject = admin\n")

        def api(method, path, body=None):
            st, _, b = cloud.request('network', method, path, body, {'X-Auth-Token': admin})
            assert st < 300, (method, path, st, b)
            return b

        net = api('POST', '/v2.0/networks', {'network': {'name': 'bench'}})['network']
        api('POST', '/v2.0/subnets', {'subnet': {'network_id': net['id'], 'cidr': '10.64.0.0/16',
                                                 'ip_version': 4, 'enable_dhcp': False}})

        def port(owner='compute:container'):
            return api('POST', '/v2.0/ports', {'port': {
                'network_id': net['id'], 'device_owner': owner,
                'binding:host_id': 'bench'}})['port']

        # 1. Latency, with the agent as a daemon.
        log = open(os.path.join(cloud.dir, 'net.log'), 'ab')
        daemon = subprocess.Popen(['nsenter', f'--net=/run/netns/{ns}', AGENT, '--config', conf],
                                  stdout=log, stderr=log)
        port()   # the network's bridge and VXLAN exist before the samples
        time.sleep(interval * 2 + 1)
        lat = []
        for _ in range(samples):
            t0 = time.time()
            p = port()
            while api('GET', f"/v2.0/ports/{p['id']}")['port']['status'] != 'ACTIVE':
                if time.time() - t0 > 60:
                    raise RuntimeError('port never became ACTIVE')
                time.sleep(0.01)
            lat.append(time.time() - t0)
        lat.sort()
        print(f'port create -> ACTIVE ({samples} samples, agent interval {interval} s): '
              f'p50 {statistics.median(lat) * 1000:.0f} ms, '
              f'p90 {lat[int(len(lat) * 0.9) - 1] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms')
        daemon.terminate()
        daemon.wait(30)
        daemon = None

        # 2. Ports wired per second by one pass.
        t0 = time.time()
        for _ in range(ports):
            port()
        print(f'{ports} ports created through the API in {time.time() - t0:.1f} s')
        for what in ('wiring', 'converged'):
            t0 = time.time()
            r = subprocess.run(['nsenter', f'--net=/run/netns/{ns}', AGENT, '--config', conf,
                                '--once'], capture_output=True, text=True)
            el = time.time() - t0
            assert r.returncode == 0, r.stderr
            n = len([d for d in sh('ip', '-o', 'link', 'show', ns=ns).stdout.split('\n')
                     if ': tap' in d])
            print(f'one pass, {what}: {el:.2f} s for {n} ports on the node '
                  f'({n / el:.0f} ports/s)')
    finally:
        if daemon:
            daemon.kill()
        sh('ip', 'netns', 'del', ns, check=False)
        sh('ip', 'link', 'del', link, check=False)
        cloud.close()


if __name__ == '__main__':
    main()
