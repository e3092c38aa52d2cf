// The witmq web console (docs/CONSOLE.md). Plain JavaScript, no dependencies: it reads and
// changes the broker through the admin API (docs/HTTP.md) with the bearer token the user gives,
// kept in sessionStorage. Everything the server returns is shown as text nodes: nothing here
// writes markup from data (no innerHTML), and the Content-Security-Policy of these files forbids
// inline scripts besides.
'use strict';

const TOKEN_KEY = 'witmq-token';
const POLL_MS = 2000;
const PAGE = 50;         // messages per browse page
const HEX_BYTES = 4096;  // binary data shown as hex up to this many bytes

// ---- DOM helpers: elements from tag, attributes and children (strings become text nodes).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'onclick') node.addEventListener('click', v);
    else if (k === 'text') node.textContent = String(v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}
const $ = (id) => document.getElementById(id);
function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
function channelHref(name) { return '#/channel/' + encodeURIComponent(name); }
function channelPath(name) { return '/v1/channels/' + encodeURIComponent(name); }

// ---- The API, with the token in the Authorization header (never in a URL, never a cookie).
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = {'Accept': 'application/json'};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers['Authorization'] = 'Bearer ' + token;
  const init = {method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error'};
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    data = null;
  }
  if (!res.ok) {
    const err = data && data.error ? data.error : {};
    throw new ApiError(res.status, err.code || 'unknown', err.message || ('HTTP ' + res.status));
  }
  return data;
}

// ---- Formatting.
function fmtCount(n) { return typeof n === 'number' ? n.toLocaleString('en-US') : '–'; }
function fmtRate(r) { return r === null || r === undefined ? '–' : r.toFixed(r < 10 ? 1 : 0) + '/s'; }
function fmtAge(ms) {
  if (typeof ms !== 'number' || ms <= 0) return '–';
  if (ms < 1000) return ms + ' ms';
  const s = ms / 1000;
  if (s < 120) return s.toFixed(1) + ' s';
  if (s < 7200) return (s / 60).toFixed(1) + ' min';
  if (s < 172800) return (s / 3600).toFixed(1) + ' h';
  return (s / 86400).toFixed(1) + ' d';
}
function fmtTime(msText) {
  const ms = Number(msText);
  return Number.isFinite(ms) && ms > 0 ? new Date(ms).toISOString() : String(msText || '–');
}

// Message data shown safely: JSON pretty-printed, other text as it is, bytes as a hex dump.
function bytesOfBase64(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
function hexDump(bytes) {
  const lines = [];
  const n = Math.min(bytes.length, HEX_BYTES);
  for (let at = 0; at < n; at += 16) {
    const row = bytes.subarray(at, Math.min(at + 16, n));
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = Array.from(row, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : '.')).join('');
    lines.push(at.toString(16).padStart(8, '0') + '  ' + hex.padEnd(47) + '  ' + ascii);
  }
  if (bytes.length > n) lines.push('… ' + (bytes.length - n) + ' more bytes');
  return lines.join('\n');
}
function dataView(m) {
  if (typeof m.data_base64 === 'string') {
    const bytes = bytesOfBase64(m.data_base64);
    return el('div', {}, el('span', {class: 'tag'}, 'binary, ' + bytes.length + ' bytes'),
              el('pre', {class: 'data', 'data-kind': 'hex'}, hexDump(bytes)));
  }
  const text = typeof m.data === 'string' ? m.data : '';
  const trimmed = text.trim();
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    try {
      const pretty = JSON.stringify(JSON.parse(text), null, 2);
      return el('div', {}, el('span', {class: 'tag'}, 'JSON'),
                el('pre', {class: 'data', 'data-kind': 'json'}, pretty));
    } catch (e) {
      // not JSON: shown as text below
    }
  }
  return el('div', {}, el('span', {class: 'tag'}, 'text, ' + text.length + ' characters'),
            el('pre', {class: 'data', 'data-kind': 'text'}, text));
}
function metadataView(metadata, skip) {
  const out = el('div', {class: 'meta'});
  for (const [k, v] of Object.entries(metadata || {})) {
    if (skip && skip(k)) continue;
    out.append(el('div', {}, el('span', {class: 'key'}, k + ': '), String(v)));
  }
  return out;
}
function figures(obj) {
  const dl = el('dl', {class: 'figures'});
  for (const [k, v] of Object.entries(obj || {})) {
    if (v !== null && typeof v === 'object') continue;
    dl.append(el('div', {}, el('dt', {}, k), el('dd', {}, typeof v === 'number' ? fmtCount(v) : String(v))));
  }
  return dl;
}
function errorBox(e) {
  return el('p', {class: 'error'}, e instanceof ApiError ? e.code + ': ' + e.message : String(e));
}

// ---- Sign in.
function showSignIn(message) {
  $('sign-in').hidden = false;
  $('main').hidden = true;
  $('sign-in-error').textContent = message || '';
  $('token').focus();
}
function signIn() {
  const token = $('token').value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  $('token').value = '';
  $('sign-in').hidden = true;
  $('main').hidden = false;
  route();
}
function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  $('who').textContent = '';
  showSignIn();
}

// ---- Pages. Each render starts a new generation: a page's polling stops when another starts.
let generation = 0;
const previous = new Map();  // channel name -> {sends, deliveries, t}: rates from counters

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

async function identity(channel) {
  const q = channel === undefined ? '' : '?channel=' + encodeURIComponent(channel);
  const who = await api('GET', '/v1/identity' + q);
  $('who').textContent = who.identity ? 'signed in as ' + who.identity : '';
  $('sign-out').hidden = false;
  return who;
}

function handleAuth(e, main) {
  if (e instanceof ApiError && e.status === 401) {
    showSignIn(e.message);
    return true;
  }
  clear(main);
  main.append(errorBox(e));
  return false;
}

async function overview(main, gen) {
  await identity();
  const channelsCard = el('section', {class: 'card', id: 'channels'});
  const guestsCard = el('section', {class: 'card', id: 'guests-summary'});
  const serverCard = el('section', {class: 'card', id: 'server'});
  clear(main);
  main.append(el('h1', {}, 'Overview'), el('h2', {}, 'Channels'), channelsCard,
              el('h2', {}, 'Guests'), guestsCard, el('h2', {}, 'Server'), serverCard);
  while (gen === generation) {
    try {
      renderChannels(channelsCard, await api('GET', '/v1/channels'));
    } catch (e) {
      if (handleAuth(e, main)) return;
    }
    renderGuestSummary(guestsCard, await api('GET', '/v1/guests').catch((e) => e));
    renderServer(serverCard, await api('GET', '/v1/server').catch((e) => e));
    await sleep(POLL_MS);
  }
}

function renderChannels(card, data) {
  const now = performance.now();
  const rows = (data.channels || []).slice().sort((a, b) => (a.name < b.name ? -1 : 1));
  const table = el('table', {},
    el('thead', {}, el('tr', {}, el('th', {}, 'channel'), el('th', {}, 'kind'),
      el('th', {}, 'durability'), el('th', {class: 'num'}, 'depth'),
      el('th', {class: 'num'}, 'in flight'), el('th', {class: 'num'}, 'oldest'),
      el('th', {class: 'num'}, 'send rate'), el('th', {class: 'num'}, 'deliver rate'))));
  const body = el('tbody');
  for (const c of rows) {
    const before = previous.get(c.name);
    let send = null, deliver = null;
    if (before && now > before.t) {
      const dt = (now - before.t) / 1000;
      send = Math.max(0, (c['sends-total'] - before.sends) / dt);
      deliver = Math.max(0, (c['deliveries-total'] - before.deliveries) / dt);
    }
    previous.set(c.name, {sends: c['sends-total'], deliveries: c['deliveries-total'], t: now});
    const s = c.settings || {};
    body.append(el('tr', {'data-channel': c.name},
      el('td', {class: 'name'}, el('a', {href: channelHref(c.name)}, c.name),
         c['is-dead-letter'] ? el('span', {class: 'tag'}, 'dead letters') : null),
      el('td', {}, s.kind || ''), el('td', {}, s.durability || ''),
      el('td', {class: 'num depth'}, fmtCount(c.depth)),
      el('td', {class: 'num'}, fmtCount(c['in-flight'])),
      el('td', {class: 'num'}, fmtAge(c['oldest-age-ms'])),
      el('td', {class: 'num'}, fmtRate(send)), el('td', {class: 'num'}, fmtRate(deliver))));
  }
  table.append(body);
  clear(card);
  card.append(rows.length ? table : el('p', {class: 'muted'}, 'No channels yet.'));
}

function renderGuestSummary(card, data) {
  clear(card);
  if (data instanceof Error) {
    card.append(errorBox(data));
    return;
  }
  const guests = data.guests || [];
  const refused = data['refused-guests'] || [];
  if (!guests.length && !refused.length) {
    card.append(el('p', {class: 'muted'}, 'No guests configured.'));
    return;
  }
  const list = el('ul');
  for (const g of guests) {
    list.append(el('li', {}, el('a', {href: '#/guests'}, g.name), ' ',
      el('span', {class: 'ok'}, 'running'), ', ' + fmtCount(g['instances-running']) + ' instance(s)'));
  }
  for (const r of refused) {
    list.append(el('li', {}, r.name + ' ', el('span', {class: 'error'}, 'refused')));
  }
  card.append(list);
}

function renderServer(card, data) {
  clear(card);
  if (data instanceof Error) {
    card.append(errorBox(data));
    return;
  }
  card.append(figures(data));
  for (const part of ['broker', 'memory']) {
    if (data[part] && typeof data[part] === 'object') {
      card.append(el('h2', {}, part), figures(data[part]));
    }
  }
}

// A destructive action asks first, in the page.
function confirmPanel(holder, text, label, action) {
  clear(holder);
  const status = el('span');
  const yes = el('button', {type: 'button', class: 'danger', id: 'confirm-yes'}, label);
  const no = el('button', {type: 'button', id: 'confirm-no'}, 'Cancel');
  no.addEventListener('click', () => clear(holder));
  yes.addEventListener('click', async () => {
    yes.disabled = true;
    try {
      const result = await action();
      clear(holder);
      holder.append(el('p', {class: 'ok', id: 'action-result'}, result));
    } catch (e) {
      clear(holder);
      holder.append(errorBox(e));
    }
  });
  holder.append(el('div', {class: 'confirm'}, el('p', {}, text), el('div', {class: 'row'}, yes, no, status)));
}

async function channelPage(main, gen, name) {
  const who = await identity(name);
  const stats = await api('GET', channelPath(name));
  clear(main);
  const s = stats.settings || {};
  const holder = el('div', {id: 'confirm'});
  const messages = el('section', {class: 'card', id: 'messages'});
  const deadLetters = el('section', {class: 'card', id: 'dead-letters'});
  const mayBrowse = who.receive || who.manage;
  // The dead letters are the messages of the dead-letter channel (its own, for one).
  const dlq = stats['is-dead-letter'] ? name : ((stats.settings || {})['dead-letter-channel'] || name + '.dlq');
  const refresh = async () => {
    if (gen !== generation || !mayBrowse) return;
    browse(messages, channelPath(name) + '/messages', await floorOf(name), false);
    browse(deadLetters, channelPath(name) + '/dead-letters', await floorOf(dlq), true);
  };
  const actions = el('div', {class: 'row', id: 'actions'});
  if (who.manage) {
    actions.append(
      el('button', {type: 'button', id: 'btn-replay', onclick: () => confirmPanel(holder,
        'Replay every available dead letter of ' + name + ' back to its source channel?',
        'Replay dead letters', async () => {
          const r = await api('POST', channelPath(name) + '/dead-letters/replay', {});
          refresh();
          return 'Moved ' + r.moved + ' message(s) from ' + r['dead-letter-channel'] + '.';
        })}, 'Replay dead letters'),
      el('button', {type: 'button', id: 'btn-purge', class: 'danger', onclick: () => confirmPanel(holder,
        'Purge ' + name + '? Every available message is settled in every subscription. This cannot be undone.',
        'Purge', async () => {
          const r = await api('POST', channelPath(name) + '/purge');
          refresh();
          return 'Purged ' + r.purged + ' message(s).';
        })}, 'Purge'),
      el('button', {type: 'button', id: 'btn-delete', class: 'danger', onclick: () => confirmPanel(holder,
        'Delete channel ' + name + ' with its messages and subscriptions? This cannot be undone.',
        'Delete channel', async () => {
          await api('DELETE', channelPath(name));
          setTimeout(() => { location.hash = '#/'; }, 800);
          return 'Deleted ' + name + '.';
        })}, 'Delete'));
  } else {
    actions.append(el('span', {class: 'muted'}, 'Read only: changing this channel needs the manage grant.'));
  }
  const subs = el('table', {id: 'subscriptions'},
    el('thead', {}, el('tr', {}, el('th', {}, 'subscription'), el('th', {}, 'durable'),
      el('th', {class: 'num'}, 'lag'), el('th', {class: 'num'}, 'in flight'),
      el('th', {class: 'num'}, 'available'), el('th', {class: 'num'}, 'next'))));
  const subsBody = el('tbody');
  for (const sub of stats.subscriptions || []) {
    subsBody.append(el('tr', {},
      el('td', {class: 'name'}, sub.name === '' ? '(shared)' : sub.name),
      el('td', {}, sub.durable ? 'yes' : 'no'), el('td', {class: 'num'}, fmtCount(sub.lag)),
      el('td', {class: 'num'}, fmtCount(sub['in-flight'])),
      el('td', {class: 'num'}, fmtCount(sub.available)), el('td', {class: 'num'}, fmtCount(sub.next))));
  }
  subs.append(subsBody);
  const settings = figures(s);
  main.append(
    el('h1', {}, 'Channel ', el('span', {id: 'channel-name'}, name)),
    el('section', {class: 'card'}, figures({
      kind: s.kind, durability: s.durability, depth: stats.depth, 'in-flight': stats['in-flight'],
      'oldest message': fmtAge(stats['oldest-age-ms']), 'sends-total': stats['sends-total'],
      'deliveries-total': stats['deliveries-total'], 'dead-letters-total': stats['dead-letters-total'],
    }), actions, holder),
    el('h2', {}, 'Settings'), el('section', {class: 'card', id: 'settings'}, settings),
    el('h2', {}, 'Subscriptions'), el('section', {class: 'card'}, subs),
    el('h2', {}, 'Messages'), messages,
    el('h2', {}, 'Dead letters'), deadLetters);
  if (mayBrowse) {
    refresh();
  } else {
    const none = 'Browsing needs the receive or manage grant on this channel.';
    messages.append(el('p', {class: 'muted'}, none));
    deadLetters.append(el('p', {class: 'muted'}, none));
  }
}

// Where a channel's unsettled messages start: the lowest floor of its subscriptions. Browsing
// reads the log, which keeps settled messages until retention removes them; the pages start here
// so that they show what is still to be delivered (and, for a dead-letter channel, not what was
// replayed already).
async function floorOf(channel) {
  try {
    const st = await api('GET', channelPath(channel));
    const floors = (st.subscriptions || []).map((sub) => sub.floor || 0);
    return floors.length ? Math.min(...floors) : (st['first-seq'] || 0);
  } catch (e) {
    return 0;  // no such channel yet (no dead letter so far), or no grant to read its figures
  }
}

async function browse(card, path, from, dead, floor) {
  if (floor === undefined) floor = from;
  clear(card);
  let page;
  try {
    page = await api('GET', path + '?from=' + from + '&max=' + PAGE);
  } catch (e) {
    card.append(errorBox(e));
    return;
  }
  const list = page.messages || [];
  if (!list.length) {
    card.append(el('p', {class: 'muted'}, from > floor ? 'No more messages.' : (dead ? 'No dead letters.' : 'No messages.')));
  } else {
    const head = dead
      ? ['seq', 'reason', 'origin', 'attempts', 'dead-lettered at', 'data', 'metadata']
      : ['seq', 'format', 'data', 'metadata'];
    const table = el('table', {class: 'messages'},
      el('thead', {}, el('tr', {}, head.map((h) => el('th', {}, h)))));
    const body = el('tbody');
    for (const m of list) {
      const md = m.metadata || {};
      const cells = [el('td', {class: 'num'}, String(m.sequence))];
      if (dead) {
        cells.push(el('td', {class: 'reason'}, md['witmq-dlq-reason'] || ''),
          el('td', {class: 'name origin'}, md['witmq-dlq-source']
            ? el('a', {href: channelHref(md['witmq-dlq-source'])}, md['witmq-dlq-source'])
            : '', md['witmq-dlq-source-sequence'] !== undefined ? ' #' + md['witmq-dlq-source-sequence'] : ''),
          el('td', {class: 'num'}, md['witmq-dlq-attempts'] || ''),
          el('td', {}, fmtTime(md['witmq-dlq-time'])));
      } else {
        cells.push(el('td', {}, m.format || ''));
      }
      cells.push(el('td', {class: 'data-cell'}, dataView(m)),
                 el('td', {}, metadataView(md, (k) => k.startsWith('witmq-dlq-'))));
      body.append(el('tr', {'data-sequence': String(m.sequence)}, cells));
    }
    table.append(body);
    card.append(table);
  }
  const nav = el('div', {class: 'row'});
  if (floor > 0) {
    nav.append(el('span', {class: 'muted'}, 'From sequence ' + floor + ': the earlier messages are settled.'));
  }
  if (from > floor) {
    nav.append(el('button', {type: 'button', onclick: () => browse(card, path, floor, dead, floor)}, 'First page'));
  }
  if (list.length === PAGE) {
    nav.append(el('button', {type: 'button', onclick: () => browse(card, path, page.next, dead, floor)}, 'Next page'));
  }
  card.append(nav);
}

async function guestsPage(main, gen) {
  await identity();
  const card = el('section', {class: 'card', id: 'guests'});
  clear(main);
  main.append(el('h1', {}, 'Guests'), card);
  const cols = ['instances-running', 'batches', 'messages-handled', 'handler-errors', 'traps',
                'budget-exhaustions', 'memory-limit-hits', 'time-limit-hits', 'instantiations'];
  while (gen === generation) {
    let data;
    try {
      data = await api('GET', '/v1/guests');
    } catch (e) {
      if (handleAuth(e, main)) return;
      return;
    }
    clear(card);
    const guests = data.guests || [];
    const refused = data['refused-guests'] || [];
    const table = el('table', {},
      el('thead', {}, el('tr', {}, el('th', {}, 'guest'), el('th', {}, 'module'), el('th', {}, 'state'),
        cols.map((c) => el('th', {class: 'num'}, c)))));
    const body = el('tbody');
    for (const g of guests) {
      body.append(el('tr', {'data-guest': g.name}, el('td', {class: 'name'}, g.name),
        el('td', {class: 'name'}, g.module || ''), el('td', {class: 'ok'}, 'running'),
        cols.map((c) => el('td', {class: 'num'}, fmtCount(g[c])))));
    }
    for (const r of refused) {
      body.append(el('tr', {'data-guest': r.name}, el('td', {class: 'name'}, r.name),
        el('td', {class: 'name'}, r.module || ''),
        el('td', {class: 'error', colspan: String(cols.length + 1)}, 'refused: ' + r.reason)));
    }
    table.append(body);
    card.append(guests.length || refused.length ? table : el('p', {class: 'muted'}, 'No guests configured.'));
    await sleep(POLL_MS);
  }
}

async function route() {
  const gen = ++generation;
  const main = $('main');
  if ($('sign-in').hidden === false) return;
  const hash = location.hash || '#/';
  try {
    if (hash.startsWith('#/channel/')) {
      let name;
      try {
        name = decodeURIComponent(hash.slice('#/channel/'.length));
      } catch (e) {
        throw new Error('the address names no channel');
      }
      await channelPage(main, gen, name);
    } else if (hash === '#/guests') {
      await guestsPage(main, gen);
    } else {
      await overview(main, gen);
    }
  } catch (e) {
    if (gen === generation) handleAuth(e, main);
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('sign-in-button').addEventListener('click', signIn);
  $('token').addEventListener('keydown', (e) => { if (e.key === 'Enter') signIn(); });
  $('sign-out').addEventListener('click', signOut);
  window.addEventListener('hashchange', route);
  route();
});
