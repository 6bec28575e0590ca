"""The server view of GET /servers, /servers/detail and /servers/{id},
written by nimbus-api from the rows of one query, against nimbus-api and
nimbus-scheduler on a throwaway database.

Every document is compared with compute_server_json, the document of the
compute migration that PUT /servers/{id} and rebuild answer with, for a
member and for an admin: a server with ports on three networks (IPv4, an
IPv6 subnet, a network without a subnet), metadata and a name that need
escaping, a server in ERROR with a fault of code 500 (details for admins
only) and one with a fault of code 404, a server without ports, a deleted
server (changes-since).  Also: the detail list and its pages hold the same
documents as GET /servers/{id}; GET /servers has id, name and the same
links; the exact 2.1 key sets; project isolation."""
import json
import socket

from compute_lib import Compute, Schedulers, add_hosts, check, done, make_project, nt, seed, sql

cloud = nt.Cloud()
seed(cloud)
tok, body = cloud.token()
adm = Compute(cloud, tok)
pa, ta = make_project(cloud, tok, 'view-a')
pb, tb = make_project(cloud, tok, 'view-b')
A, B = Compute(cloud, ta), Compute(cloud, tb)
add_hosts(cloud, 2, prefix='view-host')
sched = Schedulers(cloud, 1)

SHOW_KEYS = {'id', 'name', 'status', 'tenant_id', 'user_id', 'metadata', 'hostId', 'image', 'flavor',
             'created', 'updated', 'addresses', 'accessIPv4', 'accessIPv6', 'links', 'OS-DCF:diskConfig',
             'OS-EXT-AZ:availability_zone', 'config_drive', 'key_name', 'OS-SRV-USG:launched_at',
             'OS-SRV-USG:terminated_at', 'OS-EXT-STS:task_state', 'OS-EXT-STS:vm_state',
             'OS-EXT-STS:power_state', 'os-extended-volumes:volumes_attached', 'security_groups'}
ADMIN_KEYS = {'OS-EXT-SRV-ATTR:host', 'OS-EXT-SRV-ATTR:instance_name',
              'OS-EXT-SRV-ATTR:hypervisor_hostname'}


def net(method, path, body=None):
    return cloud.request('network', method, '/v2.0' + path, body, {'X-Auth-Token': ta})


def mknet(name, *subnets):
    st, _, b = net('POST', '/networks', {'network': {'name': name}})
    assert st == 201, (st, b)
    nid = b['network']['id']
    for version, cidr in subnets:
        st, _, b = net('POST', '/subnets', {'subnet': {'network_id': nid, 'ip_version': version,
                                                        'cidr': cidr}})
        assert st == 201, (st, b)
    return nid


net_a = mknet('net-a', (4, '10.40.0.0/24'), (6, 'fd00:40::/64'))
net_b = mknet('net-b', (4, '10.41.0.0/24'))
net_c = mknet('net-c')

NAME = 'view "one" \\ caf\u00e9 \u2603'
MD = {'role': 'web', 'quote"key': 'v\u00e4lue\\', 'empty': '', 'tab': 'a\tb',
      'ctl': ''.join(map(chr, range(1, 32))) + '\x7f /\U0001f600'}
st, _, b = A.create(NAME, networks=[{'uuid': net_a}, {'uuid': net_b}, {'uuid': net_c}], metadata=MD)
check(st == 202, f'server on three networks with metadata: 202 ({st} {b})')
s1 = b['server']['id']
ids = {'ports': s1}
for name, nets in [('err500', [{'uuid': net_a}]), ('err404', [{'uuid': net_b}]),
                   ('noports', [{'uuid': net_a}]), ('gone', [{'uuid': net_b}]),
                   ('plain', [{'uuid': net_b}])]:
    st, _, b = A.create(name, networks=nets)
    assert st == 202, (st, b)
    ids[name] = b['server']['id']
st, _, b = B.create('other', networks=[])
check(st == 202, f'a server of project B ({st} {b})')
other = b['server']['id']
check(sched.wait_idle(60), 'the scheduler placed every server')
sched.stop()

sql(cloud, f"""UPDATE instances SET vm_state = 'error', task_state = NULL,
    fault = '{{"code": 500, "message": "No valid host", "details": "trace\\nback",
               "created": "2026-01-01T00:00:00Z"}}' WHERE uuid = '{ids["err500"]}'""")
sql(cloud, f"""UPDATE instances SET vm_state = 'error', task_state = NULL,
    fault = '{{"code": 404, "message": "Image gone", "details": "d",
               "created": "2026-01-01T00:00:00Z"}}' WHERE uuid = '{ids["err404"]}'""")
sql(cloud, f"DELETE FROM instance_ports WHERE instance_uuid = '{ids['noports']}'")
sql(cloud, f"""UPDATE instances SET vm_state = 'active', task_state = NULL, power_state = 1,
    launched_at = '2026-01-02 03:04:05.000007+00', progress = 100
    WHERE uuid = '{ids['plain']}'""")
sql(cloud, f"SELECT compute_instance_destroyed('{ids['gone']}')")
live = [ids[k] for k in ('ports', 'err500', 'err404', 'noports', 'plain')]


def reference(sid, base, admin):
    """compute_server_json's document of the server."""
    return json.loads(sql(cloud, f"SELECT compute_server_json(i, '{base}', {str(admin).lower()}, true)"
                                 f" FROM instances i WHERE uuid = '{sid}'"))


def base_of(doc):
    return doc['links'][0]['href'].rsplit('/v2.1/servers/', 1)[0]


for who, api, admin, lst in [('member', A, False, '/servers/detail'),
                             ('admin', adm, True, f'/servers/detail?all_tenants=1&project_id={pa}')]:
    st, _, b = api.req('GET', lst)
    detail = {x['id']: x for x in b.get('servers', [])}
    check(st == 200 and set(detail) == set(live),
          f'{who}: the detail list holds the live servers of project A ({st}, {len(detail)})')
    for sid in live:
        st, _, b = api.req('GET', f'/servers/{sid}')
        doc = b.get('server', {})
        ref = reference(sid, base_of(doc), admin) if st == 200 else None
        check(st == 200 and doc == ref,
              f'{who}: GET /servers/{{id}} is compute_server_json ({sid})'
              + ('' if doc == ref else f'\n  got {doc}\n  sql {ref}'))
        check(detail.get(sid) == doc, f'{who}: the detail entry is GET /servers/{{id}} ({sid})')
        keys = SHOW_KEYS | (ADMIN_KEYS if admin else set())
        keys |= {'fault'} if sid in (ids['err500'], ids['err404']) else set()
        keys |= {'progress'} if doc.get('status') in ('ACTIVE', 'BUILD') else set()
        check(set(doc) == keys, f'{who}: exactly the 2.1 keys ({sid}: extra {set(doc) - keys},'
                                f' missing {keys - set(doc)})')
    seen, path, pages = {}, lst + ('&' if '?' in lst else '?') + 'limit=2', 0
    while path and pages < 10:
        st, _, b = api.req('GET', path)
        seen.update({x['id']: x for x in b['servers']})
        links = b.get('servers_links', [])
        path = links[0]['href'].split('/v2.1', 1)[1] if links else None
        pages += 1
    check(seen == detail and pages == 3, f'{who}: pages of 2 hold the same documents ({pages} pages)')
    st, _, b = api.req('GET', lst.replace('/detail', ''))
    check(st == 200 and all(set(x) == {'id', 'name', 'links'} and x['name'] == detail[x['id']]['name']
                            and x['links'] == detail[x['id']]['links'] for x in b['servers'])
          and len(b['servers']) == len(live), f'{who}: GET /servers has id, name and the same links')
    st, _, b = api.req('GET', lst + ('&' if '?' in lst else '?') + 'changes-since=2000-01-01T00:00:00Z')
    gone = [x for x in b.get('servers', []) if x['id'] == ids['gone']]
    check(gone and gone[0] == reference(ids['gone'], base_of(gone[0]), admin)
          and gone[0]['status'] == 'DELETED',
          f'{who}: changes-since shows the deleted server as compute_server_json does')

# Values a user checks.
st, _, b = A.req('GET', f'/servers/{s1}')
s = b['server']
check(s['name'] == NAME and s['metadata'] == MD, 'name and metadata that need escaping come back as sent')


def raw_get(path, host):
    """GET with the bytes given (http.client sends only ASCII)."""
    with socket.create_connection(('127.0.0.1', cloud.ports['compute']), timeout=30) as c:
        c.sendall(b'GET /v2.1' + path + b' HTTP/1.1\r\nHost: ' + host + b'\r\nX-Auth-Token: '
                  + ta.encode() + b'\r\nConnection: close\r\n\r\n')
        data = b''
        while chunk := c.recv(65536):
            data += chunk
    head, _, body = data.partition(b'\r\n\r\n')
    return int(head.split()[1]), body


# Text that is not UTF-8 cannot be written into a JSON document: 400, as
# for any bad input, and the daemon keeps answering.
host = f"127.0.0.1:{cloud.ports['compute']}".encode()
st, body = raw_get(b'/servers/detail?name=caf\xe9', host)
check(st == 400 and b'badRequest' in body, f'a query string that is not UTF-8 -> 400 ({st} {body[:80]})')
st, body = raw_get(b'/servers/detail', b'h\xff' + host)
check(st == 400 and b'badRequest' in body, f'a Host header that is not UTF-8 -> 400 ({st} {body[:80]})')
st, body = raw_get(b'/servers/detail?name=caf%C3%A9', b'h\xc3\xa9' + host)
srv = json.loads(body).get('servers', []) if st == 200 else []
check([x['name'] for x in srv] == [NAME] and srv[0]['links'][0]['href'].startswith('http://h\u00e9'),
      f'the same in UTF-8 -> 200, the Host in the links ({st} {body[:80]})')
addr = s['addresses']
check(set(addr) == {'net-a', 'net-b', 'net-c'} and addr['net-c'] == []
      and [a['version'] for a in addr['net-a']] == [4, 6] and len(addr['net-b']) == 1
      and all(set(a) == {'version', 'addr', 'OS-EXT-IPS:type', 'OS-EXT-IPS-MAC:mac_addr'}
              for a in addr['net-a'] + addr['net-b']),
      f'addresses: two families on net-a, one on net-b, none on net-c ({addr})')
check(s['hostId'] != '' and s['status'] == 'BUILD', 'a placed server has a hostId')
st, _, b = A.req('GET', f"/servers/{ids['noports']}")
check(b['server']['addresses'] == {}, 'a server without ports: empty addresses')
st, _, b = A.req('GET', f"/servers/{ids['err500']}")
f = b['server'].get('fault', {})
check(f.get('code') == 500 and 'details' not in f, 'member: a fault of code 500 without details')
st, _, b = adm.req('GET', f"/servers/{ids['err500']}")
check(b['server'].get('fault', {}).get('details') == 'trace\nback', 'admin: the fault with details')
st, _, b = A.req('GET', f"/servers/{ids['err404']}")
check(b['server'].get('fault', {}).get('details') == 'd', 'member: a fault of code 404 keeps details')
st, _, b = A.req('GET', f"/servers/{ids['plain']}")
check(b['server']['OS-SRV-USG:launched_at'] == '2026-01-02T03:04:05.000007'
      and b['server']['created'].endswith('Z') and len(b['server']['created']) == 20,
      f"times as Nova writes them ({b['server']['OS-SRV-USG:launched_at']}, {b['server']['created']})")
st, _, b = A.req('PUT', f'/servers/{s1}', {'server': {'name': 'renamed'}})
st2, _, b2 = A.req('GET', f'/servers/{s1}')
check(st == 200 and b == b2, 'PUT /servers/{id} answers the document GET /servers/{id} shows')

# Isolation.
st, _, b = B.req('GET', '/servers/detail')
check(st == 200 and [x['id'] for x in b['servers']] == [other], 'project B lists only its server')
st, _, b = B.req('GET', f'/servers/{s1}')
check(st == 404 and 'itemNotFound' in b, "project B: A's server is 404")
st, _, b = B.req('GET', f'/servers/detail?marker={s1}')
check(st == 400 and 'badRequest' in b, "project B: A's server as a marker is 400 (not found)")
st, _, b = A.req('GET', '/servers/detail?name=%5B')
check(st == 400 and 'badRequest' in b, 'an invalid name expression -> 400')
done()
