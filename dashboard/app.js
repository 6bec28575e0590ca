/* The Nimbus dashboard: a page over the public OpenStack APIs, the way the
 * openstack client uses them.  It logs in with POST /v3/auth/tokens
 * (password, project scope), keeps the token in sessionStorage only (gone
 * with the tab; never in localStorage, cookies or URLs), finds the compute,
 * network and image endpoints in the token's service catalog, and sends the
 * token as X-Auth-Token.  Errors of the APIs are shown with their own
 * message.  Everything the APIs return is put into the page as text
 * (textContent), never as markup. */
'use strict';

const SESSION_KEY = 'nimbus.session';
/* Statuses a server leaves by itself: the list is refreshed while one is
 * shown. */
const TRANSITIONAL = new Set(['BUILD', 'REBOOT', 'HARD_REBOOT', 'RESIZE', 'REBUILD',
    'MIGRATING', 'VERIFY_RESIZE', 'REVERT_RESIZE', 'PASSWORD']);
const REFRESH_MS = 2000;

let session = null;
let refreshTimer = null;
let consoleServer = null;

const $ = (id) => document.getElementById(id);

/* ---- Session ------------------------------------------------------------ */

function loadSession() {
    try {
        const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
        if (s && s.token && Date.parse(s.expires) > Date.now())
            return s;
    } catch (e) {
        /* A damaged entry is dropped below. */
    }
    sessionStorage.removeItem(SESSION_KEY);
    return null;
}

function saveSession(s) {
    session = s;
    if (s)
        sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
    else
        sessionStorage.removeItem(SESSION_KEY);
}

/* The public endpoint of each service type in the catalog. */
function endpointsOf(catalog) {
    const out = {};
    for (const svc of catalog || []) {
        for (const ep of svc.endpoints || []) {
            if (ep.interface === 'public' && !out[svc.type])
                out[svc.type] = ep.url.replace(/\/+$/, '');
        }
    }
    return out;
}

/* ---- Errors ------------------------------------------------------------- */

class ApiError extends Error {
    constructor(status, message) {
        super(message);
        this.status = status;
    }
}

/* The message of an OpenStack error body: identity {"error": {...}},
 * compute {"itemNotFound": {...}}, network {"NeutronError": {...}}, or the
 * image service's text (plain, or HTML as Glance's). */
function errorMessage(status, text) {
    let body = null;
    try {
        body = JSON.parse(text);
    } catch (e) {
        body = null;
    }
    if (body && typeof body === 'object') {
        for (const v of Object.values(body)) {
            if (v && typeof v === 'object' && typeof v.message === 'string')
                return v.message;
        }
        if (typeof body.message === 'string')
            return body.message;
    }
    let plain = text || '';
    if (/^\s*<(!doctype|html)/i.test(plain)) {
        /* The image service words errors as Glance does: a small HTML page
         * whose heading repeats the status.  Its text is read from an inert
         * document (nothing in it runs or loads) without the heading. */
        const doc = new DOMParser().parseFromString(plain, 'text/html');
        for (const h of doc.querySelectorAll('title, h1'))
            h.remove();
        plain = doc.body ? doc.body.textContent : '';
    }
    plain = plain.replace(/\s+/g, ' ').trim();
    return plain || `HTTP ${status}`;
}

function showError(message) {
    $('error-text').textContent = message;
    $('error').hidden = false;
}

function clearError() {
    $('error').hidden = true;
    $('error-text').textContent = '';
}

/* Runs an action; an API error is shown to the user, an expired token
 * sends them to the login page. */
async function guarded(fn) {
    try {
        return await fn();
    } catch (e) {
        if (e instanceof ApiError && e.status === 401 && session) {
            saveSession(null);
            route();
            $('login-error').textContent = 'Your session has ended; please log in again.';
            $('login-error').hidden = false;
            return undefined;
        }
        showError(e instanceof ApiError ? `${e.message} (HTTP ${e.status})` : String(e.message || e));
        return undefined;
    }
}

/* ---- HTTP --------------------------------------------------------------- */

async function call(service, method, path, body) {
    const base = session.endpoints[service];
    if (!base)
        throw new Error(`The service catalog has no ${service} endpoint.`);
    const headers = { 'X-Auth-Token': session.token, 'Accept': 'application/json' };
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
        headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
    }
    let resp;
    try {
        resp = await fetch(base + path, init);
    } catch (e) {
        throw new Error(`The ${service} service cannot be reached (${base}).`);
    }
    const text = await resp.text();
    if (!resp.ok)
        throw new ApiError(resp.status, errorMessage(resp.status, text));
    return text ? JSON.parse(text) : null;
}

/* ---- Log in / log out --------------------------------------------------- */

async function login(ev) {
    ev.preventDefault();
    const err = $('login-error');
    err.hidden = true;
    const domain = $('login-domain').value.trim() || 'Default';
    const body = { auth: {
        identity: { methods: ['password'], password: { user: {
            name: $('login-user').value.trim(), domain: { name: domain },
            password: $('login-password').value } } },
        scope: { project: { name: $('login-project').value.trim(), domain: { name: domain } } },
    } };
    $('login-submit').disabled = true;
    try {
        const resp = await fetch(location.origin + '/v3/auth/tokens', {
            method: 'POST', cache: 'no-store', credentials: 'omit',
            headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
        });
        const text = await resp.text();
        if (resp.status !== 201)
            throw new ApiError(resp.status, errorMessage(resp.status, text));
        const token = resp.headers.get('X-Subject-Token');
        const t = JSON.parse(text).token;
        if (!token || !t)
            throw new Error('The identity service answered without a token.');
        $('login-password').value = '';
        saveSession({
            token, expires: t.expires_at, endpoints: endpointsOf(t.catalog),
            user: t.user.name, project: t.project.name, projectId: t.project.id,
            admin: (t.roles || []).some((r) => r.name === 'admin'),
        });
        clearError();
        /* A new hash draws the page through 'hashchange'; otherwise draw
         * it here. */
        if (location.hash !== '#servers' && !PAGES[location.hash.slice(1)])
            location.hash = '#servers';
        else
            route();
    } catch (e) {
        err.textContent = e instanceof ApiError ? `${e.message} (HTTP ${e.status})` : e.message;
        err.hidden = false;
    } finally {
        $('login-submit').disabled = false;
    }
}

async function logout() {
    const s = session;
    saveSession(null);
    stopRefresh();
    if (s) {
        /* Revokes the token; the session is gone locally whatever the
         * answer. */
        try {
            await fetch(location.origin + '/v3/auth/tokens', {
                method: 'DELETE', cache: 'no-store', credentials: 'omit',
                headers: { 'X-Auth-Token': s.token, 'X-Subject-Token': s.token },
            });
        } catch (e) {
            /* Nothing more to do: the token expires by itself. */
        }
    }
    clearError();
    location.hash = '#login';
    route();
}

/* ---- Helpers for building the page ------------------------------------- */

function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
        if (k === 'class')
            e.className = v;
        else if (k.startsWith('data-'))
            e.setAttribute(k, v);
        else if (k === 'onclick')
            e.addEventListener('click', v);
        else
            e[k] = v;
    }
    for (const c of children)
        e.append(c instanceof Node ? c : document.createTextNode(c == null ? '' : String(c)));
    return e;
}

function fillTable(id, rows, emptyId) {
    const tbody = $(id).querySelector('tbody');
    tbody.replaceChildren(...rows);
    if (emptyId)
        $(emptyId).hidden = rows.length > 0;
}

function fillSelect(id, items, label, optional) {
    const sel = $(id);
    const keep = sel.value;
    const opts = items.map((it) => el('option', { value: it.id }, label(it)));
    if (optional)
        opts.unshift(el('option', { value: '' }, optional));
    sel.replaceChildren(...opts);
    if (keep && items.some((it) => it.id === keep))
        sel.value = keep;
}

/* ---- Servers ------------------------------------------------------------ */

let flavorNames = {};
let imageNames = {};

function addressesText(addresses) {
    const parts = [];
    for (const [net, list] of Object.entries(addresses || {}))
        parts.push(`${net}: ${(list || []).map((a) => a.addr).join(', ')}`);
    return parts.join('; ');
}

function flavorText(f) {
    if (!f)
        return '';
    return f.original_name || flavorNames[f.id] || f.id || '';
}

function imageText(img) {
    if (!img || !img.id)
        return '';
    return imageNames[img.id] || img.id;
}

async function serverAction(s, body) {
    await guarded(async () => {
        await call('compute', 'POST', `/servers/${encodeURIComponent(s.id)}/action`, body);
        clearError();
    });
    await loadServers();
}

async function deleteServer(s) {
    if (!window.confirm(`Delete server ${s.name}?`))
        return;
    await guarded(async () => {
        await call('compute', 'DELETE', `/servers/${encodeURIComponent(s.id)}`);
        clearError();
    });
    await loadServers();
}

function serverRow(s) {
    const task = s['OS-EXT-STS:task_state'];
    const status = el('span', { class: `status status-${s.status}` }, s.status);
    const statusCell = el('td', { class: 'server-status' }, status);
    if (task)
        statusCell.append(el('span', { class: 'task' }, ` (${task})`));
    const btn = (label, cls, fn) => el('button', { type: 'button', class: cls, onclick: fn }, label);
    const actions = el('td', {},
        btn('Start', 'act-start', () => serverAction(s, { 'os-start': null })),
        btn('Stop', 'act-stop', () => serverAction(s, { 'os-stop': null })),
        btn('Reboot', 'act-reboot', () => serverAction(s, { reboot: { type: 'SOFT' } })),
        btn('Console log', 'act-console', () => openConsole(s)),
        btn('Console', 'act-remote', () => { location.hash = `#console/${s.id}`; }),
        btn('Delete', 'act-delete', () => deleteServer(s)));
    return el('tr', { 'data-id': s.id, 'data-name': s.name },
        el('td', { class: 'server-name' }, el('a', { href: `#server/${s.id}`, class: 'server-link' }, s.name)),
        statusCell,
        el('td', { class: 'server-addresses' }, addressesText(s.addresses)),
        el('td', { class: 'server-flavor' }, flavorText(s.flavor)),
        el('td', { class: 'server-image' }, imageText(s.image)), actions);
}

function stopRefresh() {
    if (refreshTimer) {
        clearTimeout(refreshTimer);
        refreshTimer = null;
    }
}

async function loadServers() {
    stopRefresh();
    const servers = await guarded(async () =>
        (await call('compute', 'GET', '/servers/detail')).servers);
    if (!servers || currentPage() !== 'servers')
        return;
    fillTable('servers-table', servers.map(serverRow), 'servers-empty');
    if (servers.some((s) => TRANSITIONAL.has(s.status) || s['OS-EXT-STS:task_state']))
        refreshTimer = setTimeout(loadServers, REFRESH_MS);
}

async function loadServerChoices() {
    await guarded(async () => {
        const [flavors, images, networks, keypairs] = await Promise.all([
            call('compute', 'GET', '/flavors/detail'),
            call('image', 'GET', '/v2/images'),
            call('network', 'GET', '/v2.0/networks'),
            call('compute', 'GET', '/os-keypairs'),
        ]);
        flavorNames = Object.fromEntries(flavors.flavors.map((f) => [f.id, f.name]));
        imageNames = Object.fromEntries(images.images.map((i) => [i.id, i.name || i.id]));
        fillSelect('server-flavor', flavors.flavors,
            (f) => `${f.name} (${f.vcpus} VCPU, ${f.ram} MiB, ${f.disk} GiB)`);
        fillSelect('server-image', images.images.filter((i) => i.status === 'active'),
            (i) => i.name || i.id);
        fillSelect('server-network', networks.networks, (n) => n.name || n.id, '(automatic)');
        fillSelect('server-keypair', keypairs.keypairs.map((k) => ({ id: k.keypair.name })),
            (k) => k.id, '(none)');
    });
}

async function createServer(ev) {
    ev.preventDefault();
    const server = {
        name: $('server-name').value.trim(),
        flavorRef: $('server-flavor').value,
        imageRef: $('server-image').value,
    };
    const net = $('server-network').value;
    /* Without a choice the compute API picks the project's only usable
     * network (Nova's rule before microversion 2.37). */
    if (net)
        server.networks = [{ uuid: net }];
    if ($('server-keypair').value)
        server.key_name = $('server-keypair').value;
    $('server-create').disabled = true;
    const ok = await guarded(async () => {
        await call('compute', 'POST', '/servers', { server });
        clearError();
        return true;
    });
    $('server-create').disabled = false;
    if (ok)
        $('server-name').value = '';
    await loadServers();
}

async function openConsole(s) {
    consoleServer = s;
    $('console-name').textContent = s.name;
    $('console').hidden = false;
    await refreshConsole();
}

async function refreshConsole() {
    if (!consoleServer)
        return;
    const out = await guarded(async () => (await call('compute', 'POST',
        `/servers/${encodeURIComponent(consoleServer.id)}/action`,
        { 'os-getConsoleOutput': { length: 200 } })).output);
    $('console-output').textContent = out === undefined ? '' : out;
}

function closeConsole() {
    consoleServer = null;
    $('console').hidden = true;
    $('console-output').textContent = '';
}

async function showServers() {
    await loadServerChoices();
    await loadServers();
}

/* ---- Server detail ------------------------------------------------------ */

/* The page #server/<id>: the server's fields, its ports and the actions
 * its state allows.  Which actions fit which state follows the compute
 * API's rules (a task in progress allows only delete, and a hard reboot
 * while rebooting); the API still decides, and its refusal is shown. */
let detailTimer = null;
let sgNames = {};

function detailServerId() {
    const m = /^#server\/([0-9a-fA-F-]{36})$/.exec(location.hash);
    return m ? m[1] : null;
}

function stopDetailRefresh() {
    if (detailTimer) {
        clearTimeout(detailTimer);
        detailTimer = null;
    }
}

function allowedActions(s) {
    const task = s['OS-EXT-STS:task_state'];
    if (task)
        return new Set(['delete'].concat(/^reboot/.test(task) ? ['reboot-hard'] : []));
    const by = {
        ACTIVE: ['stop', 'reboot', 'reboot-hard', 'pause', 'suspend', 'resize', 'snapshot', 'rebuild'],
        SHUTOFF: ['start', 'reboot-hard', 'resize', 'snapshot', 'rebuild'],
        PAUSED: ['unpause', 'reboot-hard', 'snapshot'],
        SUSPENDED: ['resume', 'reboot-hard', 'snapshot'],
        VERIFY_RESIZE: ['confirm', 'revert'],
        ERROR: ['stop', 'reboot-hard', 'rebuild'],
        RESCUE: ['stop'],
    };
    return new Set((by[s.status] || []).concat(['delete']));
}

function detailRow(label, value, key) {
    return [el('dt', {}, label), el('dd', { 'data-field': key }, value == null ? '' : value)];
}

async function detailAction(id, body) {
    const ok = await guarded(async () => {
        await call('compute', 'POST', `/servers/${encodeURIComponent(id)}/action`, body);
        clearError();
        return true;
    });
    await loadServerDetail();
    return ok;
}

async function showServerDetail() {
    const id = detailServerId();
    $('sd-name').textContent = '';
    $('sd-fields').replaceChildren();
    $('sd-ports').querySelector('tbody').replaceChildren();
    $('sd-actions').replaceChildren();
    $('sd-message').textContent = '';
    await guarded(async () => {
        const [flavors, images, groups] = await Promise.all([call('compute', 'GET', '/flavors/detail'),
            call('image', 'GET', '/v2/images'), call('network', 'GET', '/v2.0/security-groups')]);
        sgNames = Object.fromEntries(groups.security_groups.map((g) => [g.id, g.name || g.id]));
        flavorNames = Object.fromEntries(flavors.flavors.map((f) => [f.id, f.name]));
        imageNames = Object.fromEntries(images.images.map((i) => [i.id, i.name || i.id]));
        fillSelect('sd-resize-flavor', flavors.flavors,
            (f) => `${f.name} (${f.vcpus} VCPU, ${f.ram} MiB, ${f.disk} GiB)`);
        fillSelect('sd-rebuild-image', images.images.filter((i) => i.status === 'active'),
            (i) => i.name || i.id);
    });
    if (detailServerId() === id)
        await loadServerDetail();
}

async function loadServerDetail() {
    stopDetailRefresh();
    const id = detailServerId();
    if (!id)
        return;
    const res = await guarded(async () => {
        const [sv, ports] = await Promise.all([
            call('compute', 'GET', `/servers/${encodeURIComponent(id)}`),
            call('network', 'GET', `/v2.0/ports?device_id=${encodeURIComponent(id)}`)]);
        return [sv.server, ports.ports];
    });
    if (!res || detailServerId() !== id)
        return;
    const [s, ports] = res;
    const task = s['OS-EXT-STS:task_state'];
    $('sd-name').textContent = s.name;
    const rows = [
        detailRow('Name', s.name, 'name'), detailRow('ID', s.id, 'id'),
        detailRow('Status', task ? `${s.status} (${task})` : s.status, 'status'),
        detailRow('Flavor', flavorText(s.flavor), 'flavor'),
        detailRow('Image', imageText(s.image), 'image'),
        detailRow('Addresses', addressesText(s.addresses), 'addresses'),
        detailRow('Key pair', s.key_name || '', 'key_name'),
        detailRow('Security groups', (s.security_groups || []).map((g) => g.name).join(', '),
            'security_groups'),
        detailRow('Created', s.created, 'created'),
        detailRow('Launched', s['OS-SRV-USG:launched_at'] || '', 'launched_at'),
    ];
    /* Only administrators get these from the API. */
    for (const k of Object.keys(s).sort()) {
        if (k.startsWith('OS-EXT-SRV-ATTR:'))
            rows.push(detailRow(k.slice('OS-EXT-SRV-ATTR:'.length), s[k], k));
    }
    $('sd-fields').replaceChildren(...rows.flat());
    fillTable('sd-ports', ports.map((p) => el('tr', { 'data-id': p.id },
        el('td', {}, p.id), el('td', {}, p.mac_address),
        el('td', { class: 'port-ips' }, (p.fixed_ips || []).map((f) => f.ip_address).join(', ')),
        el('td', {}, p.status),
        el('td', { class: 'port-groups' }, (p.security_groups || []).map((g) => sgNames[g] || g).join(', ')))),
    'sd-ports-empty');

    const allowed = allowedActions(s);
    const btn = (key, label, fn) => el('button', { type: 'button', class: `sd-${key}`, onclick: fn }, label);
    const act = (key, label, body) => btn(key, label, () => detailAction(s.id, body));
    const buttons = [
        act('start', 'Start', { 'os-start': null }), act('stop', 'Stop', { 'os-stop': null }),
        act('reboot', 'Reboot', { reboot: { type: 'SOFT' } }),
        act('reboot-hard', 'Hard reboot', { reboot: { type: 'HARD' } }),
        act('pause', 'Pause', { pause: null }), act('unpause', 'Unpause', { unpause: null }),
        act('suspend', 'Suspend', { suspend: null }), act('resume', 'Resume', { resume: null }),
        act('confirm', 'Confirm resize', { confirmResize: null }),
        act('revert', 'Revert resize', { revertResize: null }),
        btn('delete', 'Delete', async () => {
            if (!window.confirm(`Delete server ${s.name}?`))
                return;
            const ok = await guarded(async () => {
                await call('compute', 'DELETE', `/servers/${encodeURIComponent(s.id)}`);
                clearError();
                return true;
            });
            if (ok)
                location.hash = '#servers';
        }),
    ].filter((b) => allowed.has(b.className.slice(3)));
    $('sd-actions').replaceChildren(...buttons);
    $('sd-resize-form').hidden = !allowed.has('resize');
    $('sd-snapshot-form').hidden = !allowed.has('snapshot');
    $('sd-rebuild-form').hidden = !allowed.has('rebuild');
    /* Another read may have finished meanwhile (an action's): one timer. */
    stopDetailRefresh();
    if (TRANSITIONAL.has(s.status) || task)
        detailTimer = setTimeout(loadServerDetail, REFRESH_MS);
}

async function resizeServer(ev) {
    ev.preventDefault();
    await detailAction(detailServerId(), { resize: { flavorRef: $('sd-resize-flavor').value } });
}

async function snapshotServer(ev) {
    ev.preventDefault();
    const name = $('sd-snapshot-name').value.trim();
    if (await detailAction(detailServerId(), { createImage: { name } })) {
        $('sd-snapshot-name').value = '';
        $('sd-message').textContent = `Snapshot ${name} requested: it is listed under Images.`;
    }
}

async function rebuildServer(ev) {
    ev.preventDefault();
    if (!window.confirm('Rebuild the server? Its disk is replaced by the image.'))
        return;
    await detailAction(detailServerId(), { rebuild: { imageRef: $('sd-rebuild-image').value } });
}

/* ---- Images ------------------------------------------------------------- */

async function showImages() {
    $('image-detail').hidden = true;
    const images = await guarded(async () => (await call('image', 'GET', '/v2/images')).images);
    if (!images)
        return;
    /* Public is offered to administrators only: the image service
     * refuses it to others. */
    const vis = $('image-visibility');
    const pub = vis.querySelector('option[value="public"]');
    if (session.admin && !pub)
        vis.append(el('option', { value: 'public' }, 'public'));
    else if (!session.admin && pub)
        pub.remove();
    fillTable('images-table', images.map((i) => el('tr', { 'data-id': i.id, 'data-name': i.name || '' },
        el('td', {}, el('button', { type: 'button', class: 'link image-show',
            onclick: () => showImage(i.id) }, i.name || i.id)),
        el('td', { class: 'image-status' }, i.status), el('td', {}, i.visibility),
        el('td', {}, i.disk_format || ''),
        el('td', { class: 'image-size' }, i.size == null ? '' : i.size),
        el('td', {}, !i.protected && (i.owner === session.projectId || session.admin)
            ? el('button', { type: 'button', class: 'image-delete', onclick: () => deleteImage(i) },
                'Delete') : ''))), 'images-empty');
}

async function deleteImage(i) {
    if (!window.confirm(`Delete image ${i.name || i.id}?`))
        return;
    await guarded(async () => {
        await call('image', 'DELETE', `/v2/images/${encodeURIComponent(i.id)}`);
        clearError();
    });
    await showImages();
}

/* PUT of 'file' (a File, streamed by the browser) as the data of image
 * 'id', reporting progress; XMLHttpRequest because fetch() reports no
 * upload progress. */
function uploadImageData(id, file) {
    return new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        xhr.open('PUT', `${session.endpoints.image}/v2/images/${encodeURIComponent(id)}/file`);
        xhr.setRequestHeader('X-Auth-Token', session.token);
        xhr.setRequestHeader('Content-Type', 'application/octet-stream');
        xhr.upload.addEventListener('progress', (e) => {
            if (e.lengthComputable) {
                $('image-progress').value = e.loaded / e.total;
                $('image-progress-text').textContent = `${e.loaded} of ${e.total} bytes sent`;
            }
        });
        xhr.addEventListener('load', () => {
            if (xhr.status >= 200 && xhr.status < 300)
                resolve();
            else
                reject(new ApiError(xhr.status, errorMessage(xhr.status, xhr.responseText)));
        });
        xhr.addEventListener('error', () => reject(new Error(
            `The image service cannot be reached (${session.endpoints.image}).`)));
        xhr.send(file);
    });
}

async function uploadImage(ev) {
    ev.preventDefault();
    const file = $('image-file').files[0];
    if (!file || !session.endpoints.image)
        return;
    const image = { name: $('image-name').value.trim(), disk_format: $('image-disk-format').value,
        container_format: $('image-container-format').value, visibility: $('image-visibility').value };
    $('image-upload').disabled = true;
    $('image-progress').value = 0;
    $('image-progress-text').textContent = 'Creating the image…';
    $('image-progress-line').hidden = false;
    const ok = await guarded(async () => {
        const img = await call('image', 'POST', '/v2/images', image);
        try {
            await uploadImageData(img.id, file);
        } catch (e) {
            /* No image left without data: the one just created goes
             * again, and the upload's error is what the user sees. */
            await call('image', 'DELETE', `/v2/images/${encodeURIComponent(img.id)}`)
                .catch(() => undefined);
            throw e;
        }
        clearError();
        return true;
    });
    $('image-upload').disabled = false;
    $('image-progress-text').textContent = ok ? `Uploaded ${file.size} bytes.` : 'The upload failed.';
    if (ok) {
        $('image-name').value = '';
        $('image-file').value = '';
    }
    await showImages();
}

async function showImage(id) {
    const img = await guarded(() => call('image', 'GET', `/v2/images/${encodeURIComponent(id)}`));
    if (!img)
        return;
    $('image-detail-name').textContent = img.name || img.id;
    const items = [];
    for (const k of Object.keys(img).sort()) {
        const v = img[k];
        items.push(el('dt', {}, k), el('dd', {}, typeof v === 'object' ? JSON.stringify(v) : v));
    }
    $('image-detail-list').replaceChildren(...items);
    $('image-detail').hidden = false;
}

/* ---- Networks ----------------------------------------------------------- */

async function showNetworks() {
    const res = await guarded(async () => {
        const [n, s] = await Promise.all([call('network', 'GET', '/v2.0/networks'),
            call('network', 'GET', '/v2.0/subnets')]);
        return [n.networks, s.subnets];
    });
    if (!res)
        return;
    const [networks, subnets] = res;
    const cidrs = {};
    for (const s of subnets)
        cidrs[s.id] = s.cidr;
    fillTable('networks-table', networks.map((n) => el('tr', { 'data-id': n.id },
        el('td', { class: 'network-name' }, n.name || n.id), el('td', {}, n.status),
        el('td', { class: 'network-subnets' }, (n.subnets || []).map((id) => cidrs[id] || id).join(', ')),
        el('td', {}, n.shared ? 'yes' : 'no'))), 'networks-empty');
}

async function createNetwork(ev) {
    ev.preventDefault();
    const name = $('network-name').value.trim();
    const cidr = $('network-cidr').value.trim();
    $('network-create').disabled = true;
    const ok = await guarded(async () => {
        const n = await call('network', 'POST', '/v2.0/networks', { network: { name } });
        if (cidr) {
            try {
                await call('network', 'POST', '/v2.0/subnets', { subnet: {
                    network_id: n.network.id, name: `${name}-subnet`, cidr, ip_version: 4 } });
            } catch (e) {
                /* No half-made network: the one just created goes again,
                 * and the subnet's error is what the user sees. */
                await call('network', 'DELETE', `/v2.0/networks/${encodeURIComponent(n.network.id)}`)
                    .catch(() => undefined);
                throw e;
            }
        }
        clearError();
        return true;
    });
    $('network-create').disabled = false;
    if (ok) {
        $('network-name').value = '';
        $('network-cidr').value = '';
    }
    await showNetworks();
}

/* ---- Security groups ---------------------------------------------------- */

/* The project's groups (GET /v2.0/security-groups?project_id=, each with
 * its rules, as Neutron lists them), created and deleted, and rules added
 * and deleted; refusals show Neutron's message. */
function ruleRange(r) {
    if (r.port_range_min == null && r.port_range_max == null)
        return 'any';
    if (r.port_range_min === r.port_range_max || r.port_range_max == null)
        return String(r.port_range_min);
    return `${r.port_range_min == null ? '' : r.port_range_min}-${r.port_range_max}`;
}

function ruleRow(r, groupNames) {
    const remote = r.remote_ip_prefix || (r.remote_group_id
        ? `group ${groupNames[r.remote_group_id] || r.remote_group_id}` : 'any');
    return el('tr', { 'data-id': r.id },
        el('td', { class: 'sgr-direction' }, r.direction), el('td', {}, r.ethertype),
        el('td', { class: 'sgr-protocol' }, r.protocol || 'any'),
        el('td', { class: 'sgr-ports' }, ruleRange(r)), el('td', { class: 'sgr-remote' }, remote),
        el('td', {}, el('button', { type: 'button', class: 'sgr-delete', onclick: () => deleteRule(r) },
            'Delete')));
}

async function showSecurityGroups() {
    const groups = await guarded(async () => (await call('network', 'GET',
        `/v2.0/security-groups?project_id=${encodeURIComponent(session.projectId)}`)).security_groups);
    if (!groups)
        return;
    const names = Object.fromEntries(groups.map((g) => [g.id, g.name]));
    $('sg-list').replaceChildren(...groups.map((g) => el('div', { class: 'sg', 'data-id': g.id,
        'data-name': g.name },
    el('h3', {}, g.name, ' ', el('button', { type: 'button', class: 'sg-delete',
        onclick: () => deleteGroup(g) }, 'Delete group')),
    el('p', { class: 'sg-description' }, g.description || ''),
    el('table', { class: 'sg-rules' },
        el('thead', {}, el('tr', {}, ...['Direction', 'Ether type', 'Protocol', 'Ports', 'Remote', 'Actions']
            .map((h) => el('th', {}, h)))),
        el('tbody', {}, ...(g.security_group_rules || []).map((r) => ruleRow(r, names)))))));
    $('sg-empty').hidden = groups.length > 0;
    fillSelect('sgr-group', groups, (g) => g.name || g.id);
}

async function createGroup(ev) {
    ev.preventDefault();
    const security_group = { name: $('sg-name').value.trim(), description: $('sg-description').value.trim() };
    const ok = await guarded(async () => {
        await call('network', 'POST', '/v2.0/security-groups', { security_group });
        clearError();
        return true;
    });
    if (ok) {
        $('sg-name').value = '';
        $('sg-description').value = '';
    }
    await showSecurityGroups();
}

async function deleteGroup(g) {
    if (!window.confirm(`Delete security group ${g.name}?`))
        return;
    await guarded(async () => {
        await call('network', 'DELETE', `/v2.0/security-groups/${encodeURIComponent(g.id)}`);
        clearError();
    });
    await showSecurityGroups();
}

async function addRule(ev) {
    ev.preventDefault();
    const remote = $('sgr-remote').value.trim();
    const rule = { security_group_id: $('sgr-group').value, direction: $('sgr-direction').value,
        ethertype: remote.includes(':') ? 'IPv6' : 'IPv4' };
    if ($('sgr-protocol').value !== 'any')
        rule.protocol = $('sgr-protocol').value;
    for (const [id, key] of [['sgr-port-min', 'port_range_min'], ['sgr-port-max', 'port_range_max']]) {
        if ($(id).value !== '')
            rule[key] = Number($(id).value);
    }
    if (remote)
        rule.remote_ip_prefix = remote;
    const ok = await guarded(async () => {
        await call('network', 'POST', '/v2.0/security-group-rules', { security_group_rule: rule });
        clearError();
        return true;
    });
    if (ok) {
        for (const id of ['sgr-port-min', 'sgr-port-max', 'sgr-remote'])
            $(id).value = '';
    }
    await showSecurityGroups();
}

async function deleteRule(r) {
    await guarded(async () => {
        await call('network', 'DELETE', `/v2.0/security-group-rules/${encodeURIComponent(r.id)}`);
        clearError();
    });
    await showSecurityGroups();
}

/* ---- Flavors and key pairs ---------------------------------------------- */

async function showFlavors() {
    const flavors = await guarded(async () => (await call('compute', 'GET', '/flavors/detail')).flavors);
    if (!flavors)
        return;
    fillTable('flavors-table', flavors.map((f) => el('tr', { 'data-id': f.id },
        el('td', {}, f.name), el('td', {}, f.vcpus), el('td', {}, f.ram), el('td', {}, f.disk))));
}

async function showKeypairs() {
    const kps = await guarded(async () => (await call('compute', 'GET', '/os-keypairs')).keypairs);
    if (!kps)
        return;
    fillTable('keypairs-table', kps.map(({ keypair: k }) => el('tr', { 'data-name': k.name },
        el('td', {}, k.name), el('td', {}, k.type || 'ssh'), el('td', {}, k.fingerprint))),
    'keypairs-empty');
}

async function importKeypair(ev) {
    ev.preventDefault();
    const keypair = { name: $('keypair-name').value.trim(), public_key: $('keypair-key').value.trim() };
    const ok = await guarded(async () => {
        await call('compute', 'POST', '/os-keypairs', { keypair });
        clearError();
        return true;
    });
    if (ok) {
        $('keypair-name').value = '';
        $('keypair-key').value = '';
    }
    await showKeypairs();
}

/* ---- Remote console (noVNC and serial) ---------------------------------- */

/* The page #console/<server id>: POST /servers/{id}/remote-consoles gives
 * a one-time URL of the console proxy of the server's node
 * (http://<proxy>/?token=..., ws://... for serial); the browser opens it as
 * a WebSocket.  The screen is drawn by the vendored noVNC (RFB), the serial
 * console is a plain text terminal. */
const NOVNC = './vendor/novnc/core/rfb.js';
const SERIAL_MAX_CHARS = 200000;
let remote = null;   /* { id, tab, rfb, ws, connected } */

function consoleServerId() {
    const m = /^#console\/([0-9a-fA-F-]{36})$/.exec(location.hash);
    return m ? m[1] : null;
}

/* The proxy URL as a WebSocket URL: same host, path and token. */
function websocketUrl(url) {
    const u = new URL(url);
    if (u.protocol === 'http:')
        u.protocol = 'ws:';
    else if (u.protocol === 'https:')
        u.protocol = 'wss:';
    if (u.protocol !== 'ws:' && u.protocol !== 'wss:')
        throw new Error(`The console URL is not one the browser can open (${u.protocol}).`);
    return u.href;
}

function setConsoleStatus(state, text) {
    $('rc-status').dataset.state = state;
    $('rc-status').textContent = text;
}

const REFUSED = 'The console proxy refused the connection or could not reach the console: ' +
    'the console link is invalid, already used or expired, or the server has no console ' +
    'now.  Press Reconnect for a new link.';

function closeRemoteConsole() {
    if (!remote)
        return;
    const r = remote;
    remote = null;
    if (r.rfb)
        r.rfb.disconnect();
    if (r.ws)
        r.ws.close();
    $('vnc-screen').replaceChildren();
}

async function consoleUrl(id, protocol, type) {
    const body = await call('compute', 'POST', `/servers/${encodeURIComponent(id)}/remote-consoles`,
        { remote_console: { protocol, type } });
    return body.remote_console.url;
}

/* Connects noVNC to 'url' (a console proxy URL). */
async function openVnc(url) {
    const r = remote;
    const { default: RFB } = await import(NOVNC);
    if (remote !== r)
        return;
    setConsoleStatus('connecting', 'Connecting to the console…');
    const rfb = new RFB($('vnc-screen'), websocketUrl(url), { wsProtocols: ['binary'] });
    r.rfb = rfb;
    rfb.viewOnly = false;
    rfb.addEventListener('connect', () => {
        r.connected = true;
        setConsoleStatus('connected', 'Connected.');
    });
    rfb.addEventListener('desktopname', (e) => {
        if (r.connected)
            setConsoleStatus('connected', `Connected to ${e.detail.name}.`);
    });
    rfb.addEventListener('securityfailure', (e) => {
        setConsoleStatus('failed', `The console refused the connection: ${e.detail.reason || e.detail.status}.`);
    });
    rfb.addEventListener('disconnect', (e) => {
        if (remote !== r)
            return;
        if (r.connected)
            setConsoleStatus('disconnected', e.detail.clean ? 'Disconnected.'
                : 'The console connection was lost.  Press Reconnect to open it again.');
        else if ($('rc-status').dataset.state !== 'failed')
            setConsoleStatus('failed', REFUSED);
    });
}

/* A plain text terminal on the serial console's WebSocket at 'url'. */
function openSerial(url) {
    const r = remote;
    const out = $('serial-output');
    out.textContent = '';
    setConsoleStatus('connecting', 'Connecting to the serial console…');
    const ws = new WebSocket(websocketUrl(url), ['binary']);
    ws.binaryType = 'arraybuffer';
    r.ws = ws;
    const decoder = new TextDecoder();
    ws.addEventListener('open', () => {
        r.connected = true;
        setConsoleStatus('connected', 'Connected.  Click the console and type, or send a line.');
    });
    ws.addEventListener('message', (e) => {
        const text = typeof e.data === 'string' ? e.data : decoder.decode(e.data, { stream: true });
        /* Terminal control sequences are dropped: this is text, not a
         * terminal emulator. */
        let all = out.textContent + text.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r/g, '');
        if (all.length > SERIAL_MAX_CHARS)
            all = all.slice(all.length - SERIAL_MAX_CHARS);
        out.textContent = all;
        out.scrollTop = out.scrollHeight;
    });
    ws.addEventListener('close', () => {
        if (remote !== r)
            return;
        setConsoleStatus(r.connected ? 'disconnected' : 'failed', r.connected
            ? 'The serial console was closed.  Press Reconnect to open it again.' : REFUSED);
    });
}

function serialSend(text) {
    if (remote && remote.ws && remote.ws.readyState === WebSocket.OPEN)
        remote.ws.send(new TextEncoder().encode(text));
}

const SERIAL_KEYS = { Enter: '\r', Backspace: '\x7f', Tab: '\t', Escape: '\x1b',
    ArrowUp: '\x1b[A', ArrowDown: '\x1b[B', ArrowRight: '\x1b[C', ArrowLeft: '\x1b[D' };

function serialKey(ev) {
    let seq = SERIAL_KEYS[ev.key];
    if (!seq && ev.ctrlKey && /^[a-z]$/i.test(ev.key))
        seq = String.fromCharCode(ev.key.toUpperCase().charCodeAt(0) - 64);
    else if (!seq && ev.key.length === 1 && !ev.ctrlKey && !ev.metaKey)
        seq = ev.key;
    if (seq) {
        ev.preventDefault();
        serialSend(seq);
    }
}

function serialLine(ev) {
    ev.preventDefault();
    serialSend(`${$('serial-input').value}\r`);
    $('serial-input').value = '';
}

/* Opens tab 'tab' ('vnc' or 'serial') of the console of server 'id' with
 * 'url', or without it a new console URL from the compute API. */
async function connectConsole(id, tab, url) {
    closeRemoteConsole();
    const r = { id, tab, rfb: null, ws: null, connected: false };
    remote = r;
    $('tab-vnc').classList.toggle('current', tab === 'vnc');
    $('tab-serial').classList.toggle('current', tab === 'serial');
    $('vnc-screen').hidden = tab !== 'vnc';
    $('serial').hidden = tab !== 'serial';
    setConsoleStatus('connecting', 'Asking the compute service for a console…');
    await guarded(async () => {
        const u = url || (tab === 'vnc' ? await consoleUrl(id, 'vnc', 'novnc')
            : await consoleUrl(id, 'serial', 'serial'));
        if (remote !== r)
            return;
        if (tab === 'vnc')
            await openVnc(u);
        else
            openSerial(u);
    });
    if (remote === r && $('rc-status').dataset.state === 'connecting' && !r.rfb && !r.ws)
        setConsoleStatus('failed', 'No console: see the error above.');
}

async function showConsolePage() {
    const id = consoleServerId();
    $('rc-name').textContent = '';
    const server = await guarded(async () =>
        (await call('compute', 'GET', `/servers/${encodeURIComponent(id)}`)).server);
    if (!server || consoleServerId() !== id)
        return;
    $('rc-name').textContent = server.name;
    await connectConsole(id, remote && remote.id === id ? remote.tab : 'vnc');
}

/* ---- Pages -------------------------------------------------------------- */

const PAGES = {
    servers: showServers, images: showImages, networks: showNetworks,
    flavors: showFlavors, keypairs: showKeypairs, console: showConsolePage,
    server: showServerDetail, 'security-groups': showSecurityGroups,
};

function currentPage() {
    if (consoleServerId())
        return 'console';
    if (detailServerId())
        return 'server';
    const p = location.hash.replace(/^#/, '');
    return PAGES[p] && p !== 'console' && p !== 'server' ? p : 'servers';
}

function route() {
    stopRefresh();
    stopDetailRefresh();
    session = loadSession();
    const page = session ? currentPage() : 'login';
    for (const sec of document.querySelectorAll('.page'))
        sec.hidden = sec.id !== `page-${page}`;
    $('nav').hidden = !session;
    $('whoami').hidden = !session;
    for (const a of document.querySelectorAll('#nav a'))
        a.classList.toggle('current', a.dataset.page === page);
    if (!session)
        return;
    $('whoami-text').textContent = `${session.user} in project ${session.project}`;
    if (page !== 'servers')
        closeConsole();
    if (page !== 'console')
        closeRemoteConsole();
    PAGES[page]();
}

document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', logout);
    $('error-close').addEventListener('click', clearError);
    $('server-form').addEventListener('submit', createServer);
    $('network-form').addEventListener('submit', createNetwork);
    $('keypair-form').addEventListener('submit', importKeypair);
    $('image-form').addEventListener('submit', uploadImage);
    $('sg-form').addEventListener('submit', createGroup);
    $('sgr-form').addEventListener('submit', addRule);
    $('console-refresh').addEventListener('click', refreshConsole);
    $('console-close').addEventListener('click', closeConsole);
    $('tab-vnc').addEventListener('click', () => connectConsole(consoleServerId(), 'vnc'));
    $('tab-serial').addEventListener('click', () => connectConsole(consoleServerId(), 'serial'));
    $('rc-reconnect').addEventListener('click',
        () => connectConsole(consoleServerId(), remote ? remote.tab : 'vnc'));
    $('serial-output').addEventListener('keydown', serialKey);
    $('serial-form').addEventListener('submit', serialLine);
    $('sd-resize-form').addEventListener('submit', resizeServer);
    $('sd-snapshot-form').addEventListener('submit', snapshotServer);
    $('sd-rebuild-form').addEventListener('submit', rebuildServer);
    window.addEventListener('hashchange', () => {
        clearError();
        route();
    });
    route();
});
