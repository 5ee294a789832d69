// wisp's publish-and-watch page: WHIP to publish, WHEP to watch, live numbers
// from getStats(). Plain browser JavaScript: no build step, no external request.
'use strict';

const $ = id => document.getElementById(id);

const MAX_BACKOFF_MS = 10000;   // retry delays: 1, 2, 4, 8, 10, 10, ... seconds
const GATHER_WAIT_MS = 1000;    // candidates found by then go in the offer; later ones are trickled
const STALL_MS = 2500;          // no new frame for this long: the publisher is gone or paused
const QUALITY = { 360: [640, 360], 720: [1280, 720], 1080: [1920, 1080] };
// Simulcast: three VP8 layers at full, half and quarter resolution.
const SIMULCAST = () => [
  { rid: 'h', maxBitrate: 2500000 },
  { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 600000 },
  { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 150000 },
];
// WHEP extensions (advertised by `Link` headers on the 201).
const SSE_REL = 'urn:ietf:params:whep:ext:core:server-sent-events';
const LAYER_REL = 'urn:ietf:params:whep:ext:core:layer';

// ---- Settings --------------------------------------------------------------

const baseUrl = () => ($('server').value.trim() || location.origin).replace(/\/+$/, '');
const roomName = () => $('room').value.trim();
const bearer = field => {
  const token = $(field).value.trim();
  return token ? { Authorization: 'Bearer ' + token } : {};
};

// ---- HTTP ------------------------------------------------------------------

// What a status means to the person at the keyboard.
function explain(role, status, body) {
  const why = {
    400: 'the server rejected the request (check the room name: 1-64 of A-Z a-z 0-9 _ -)',
    401: `this server needs a valid ${role} token: fill in the ${role} token field`,
    403: `the ${role} token is not valid for this room`,
    404: role === 'watch' ? 'no such room yet' : 'not found: check the server address',
    409: role === 'watch' ? 'the room has no publisher yet' : 'someone is already publishing to this room',
    413: 'the offer is too large',
    415: 'the server did not accept the offer format',
    422: 'the server cannot use this media (try another codec)',
    429: 'too many requests',
    503: 'the server is busy or full',
  }[status] || 'unexpected answer';
  const detail = body && body.trim() ? ` (${body.trim()})` : '';
  return `${status}: ${why}${detail}`;
}

// `Link` header values as [{ url, params }]. fetch() joins repeated headers
// with ", ", so split before each "<" (quoted values may hold commas).
function parseLinks(link) {
  const links = [];
  for (const entry of (link || '').split(/,\s*(?=<)/)) {
    const m = entry.match(/^\s*<([^>]*)>(.*)$/s);
    if (!m) continue;
    const params = {};
    for (const [, key, quoted, bare] of m[2].matchAll(/;\s*([\w-]+)\s*=\s*(?:"([^"]*)"|([^;\s]*))/g)) {
      params[key.toLowerCase()] = quoted ?? bare;
    }
    links.push({ url: m[1], params });
  }
  return links;
}

const hasRel = (l, rel) => (l.params.rel || '').split(/\s+/).includes(rel);

// ICE servers from `Link: <url>; rel="ice-server"; username="u"; credential="p"` headers.
function parseIceServers(link) {
  return parseLinks(link).filter(l => hasRel(l, 'ice-server')).map(({ url, params }) => {
    const server = { urls: url };
    if (params.username) server.username = params.username;
    if (params.credential) server.credential = params.credential;
    return server;
  });
}

const formatRate = bps => bps >= 1e6 ? `${(bps / 1e6).toFixed(2)} Mbit/s` : `${Math.round(bps / 1000)} kbit/s`;
// A layer's picture size from the `layers` event (" 1280×720", as in the stats table), or nothing until wisp knows it.
const formatSize = l => (l.width && l.height ? ` ${l.width}×${l.height}` : '');

// A plain OPTIONS on the endpoint returns the ICE servers before the offer is made.
// Optional: any failure just means "no ICE servers".
const iceCache = new Map();
async function iceServersFor(endpoint, auth) {
  if (!iceCache.has(endpoint)) {
    try {
      const r = await fetch(endpoint, { method: 'OPTIONS', headers: auth });
      if (r.ok) iceCache.set(endpoint, parseIceServers(r.headers.get('Link')));
    } catch (e) { /* unreachable now; the POST will say so */ }
  }
  return iceCache.get(endpoint) || [];
}

const gathered = (pc, ms) => new Promise(done => {
  if (pc.iceGatheringState === 'complete') return done();
  const timer = setTimeout(done, ms);
  pc.addEventListener('icegatheringstatechange', () => {
    if (pc.iceGatheringState === 'complete') { clearTimeout(timer); done(); }
  });
});

// An application/trickle-ice-sdpfrag body (RFC 8840) for candidates found after the offer.
function sdpFragment(offer, candidates, end) {
  const line = re => (offer.match(re) || [])[0];
  const lines = [line(/^a=ice-ufrag:.*$/m), line(/^a=ice-pwd:.*$/m), line(/^m=.*$/m), line(/^a=mid:.*$/m)];
  for (const c of candidates) lines.push('a=' + c.candidate);
  if (end) lines.push('a=end-of-candidates');
  return lines.filter(Boolean).join('\r\n') + '\r\n';
}

// ---- One WHIP or WHEP connection --------------------------------------------

class Connection {
  constructor(role) {
    this.role = role;                       // 'publish' or 'watch'
    this.id = role === 'publish' ? 'pub' : 'watch';
    this.active = false;                    // the user wants this connection
    this.gen = 0;                           // bumps on every (re)connect; stale callbacks check it
    this.pc = null;
    this.session = null;                    // session URL from Location
    this.etag = null;
    this.auth = {};
    this.attempt = 0;                       // for the backoff
    this.timers = [];
    this.last = null;                       // the latest stats sample (tests read it too)
    this.lastFrameAt = 0;
    $(`${this.id}-start`).onclick = () => this.start();
    $(`${this.id}-stop`).onclick = () => this.stop();
    if (role === 'watch') {
      this.events = null;                   // EventSource of the server-sent events extension
      this.layerUrl = null;                 // the layer extension's URL
      this.layers = null;                   // the latest `layers` event: [{ rid, bitrate, current, ... }]
      this.videoMline = null;               // its key: the video m-line index
      this.viewers = undefined;             // the latest `viewercount`
      $('layer').onchange = () => this.pickLayer($('layer').value);
    }
  }

  status(text, kind = '') {
    const el = $(`${this.id}-status`);
    el.textContent = text;
    el.className = 'status ' + kind;
  }

  buttons() {
    $(`${this.id}-start`).disabled = this.active;
    $(`${this.id}-stop`).disabled = !this.active;
  }

  async start() {
    if (this.active) return;
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(roomName())) {
      return this.status('Room names are 1-64 of A-Z a-z 0-9 _ -.', 'err');
    }
    this.active = true;
    this.attempt = 0;
    this.clickedAt = performance.now();
    this.firstFrameMs = null;
    this.buttons();
    if (this.role === 'publish') {
      try {
        this.stream = await captureMedia();
      } catch (e) {
        this.active = false;
        this.buttons();
        return this.status(`Cannot open the ${$('source').value}: ${e.message}`, 'err');
      }
      $('pub-video').srcObject = this.stream;
      for (const t of this.stream.getTracks()) t.onended = () => this.stop('The capture ended.');
    } else {
      this.watchFirstFrame();
    }
    this.every(1000, () => this.tick());
    this.connect();
  }

  async stop(message = 'Stopped.') {
    if (!this.active) return;
    this.active = false;
    this.timers.forEach(clearInterval);
    this.timers = [];
    const deleted = this.hangUp();
    if (this.stream) this.stream.getTracks().forEach(t => t.stop());
    this.stream = null;
    $(`${this.id}-video`).srcObject = null;
    this.buttons();
    this.status(message);
    await deleted;
  }

  every(ms, fn) { this.timers.push(setInterval(fn, ms)); }
  later(ms, fn) { this.timers.push(setTimeout(fn, ms)); }

  // DELETE the session, then close the PeerConnection (keepalive: the DELETE
  // also goes out while the page unloads).
  hangUp() {
    this.gen++;
    const { pc, session } = this;
    this.pc = this.session = null;
    if (this.role === 'watch') this.dropExtensions();
    const deleted = session
      ? fetch(session, { method: 'DELETE', headers: this.auth, keepalive: true }).catch(() => {})
      : Promise.resolve();
    return deleted.finally(() => pc && pc.close());
  }

  // Try again later: 1, 2, 4, 8, then every 10 seconds (or the server's Retry-After, if longer).
  retry(reason, retryAfterS = 0) {
    this.hangUp();
    const backoff = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** this.attempt++);
    const delay = Math.min(MAX_BACKOFF_MS, Math.max(backoff, retryAfterS * 1000));
    this.status(`${reason}. Retrying in ${Math.round(delay / 1000)} s...`, 'warn');
    this.later(delay, () => this.active && this.connect());
  }

  async connect() {
    const gen = ++this.gen;
    const stale = () => gen !== this.gen || !this.active;
    const endpoint = `${baseUrl()}/${this.role === 'publish' ? 'whip' : 'whep'}/${encodeURIComponent(roomName())}`;
    this.auth = bearer(`${this.id}-token`);
    this.status('Connecting...');
    const iceServers = await iceServersFor(endpoint, this.auth);
    if (stale()) return;

    const pc = this.pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', iceServers });
    this.addMedia(pc);
    const late = [];                        // candidates found after the offer was sent
    let offer = null;
    pc.onicecandidate = e => {
      if (!offer || stale()) return;        // still in time for the offer itself
      late.push(e.candidate);
      if (this.session) this.trickle(offer, late.splice(0));
    };
    pc.onconnectionstatechange = () => !stale() && this.onState(pc, gen);

    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, GATHER_WAIT_MS);
    if (stale()) return;
    offer = pc.localDescription.sdp;

    let r, body;
    try {
      r = await fetch(endpoint, {
        method: 'POST', headers: { 'Content-Type': 'application/sdp', ...this.auth }, body: offer,
      });
      body = await r.text();
    } catch (e) {
      if (!stale()) this.retry(`Cannot reach ${baseUrl()} (${e.message})`);
      return;
    }
    if (stale()) {                          // stopped while the POST was on its way
      const loc = r.status === 201 && r.headers.get('Location');
      if (loc) fetch(new URL(loc, endpoint), { method: 'DELETE', headers: this.auth }).catch(() => {});
      return;
    }
    if (r.status !== 201) return this.refused(r, body);

    this.session = new URL(r.headers.get('Location'), endpoint).href;
    this.etag = r.headers.get('ETag');
    const servers = parseIceServers(r.headers.get('Link'));
    if (servers.length) iceCache.set(endpoint, servers);
    try {
      await pc.setRemoteDescription({ type: 'answer', sdp: body });
    } catch (e) {
      return this.stop(`The server's answer did not work: ${e.message}`);
    }
    if (late.length) this.trickle(offer, late.splice(0));
    this.status(this.role === 'publish' ? 'Connecting media...' : 'Connected, waiting for media...');
    if (this.role === 'watch') this.extensions(r.headers.get('Link'), endpoint, gen);
  }

  // The WHEP extensions the server advertises: an event stream (layers,
  // viewer count, publisher active) and the layer picker. Both optional.
  async extensions(link, endpoint, gen) {
    const links = parseLinks(link);
    const sse = links.find(l => hasRel(l, SSE_REL));
    const layer = links.find(l => hasRel(l, LAYER_REL));
    this.layerUrl = layer ? new URL(layer.url, endpoint).href : null;
    $('layer').disabled = !this.layerUrl;
    if (!sse) return;
    const offered = (sse.params.events || '').split(',').map(e => e.trim());
    const wanted = ['active', 'inactive', 'layers', 'viewercount'].filter(e => offered.includes(e));
    let r;
    try {
      r = await fetch(new URL(sse.url, endpoint), {
        method: 'POST', headers: { 'Content-Type': 'application/json', ...this.auth }, body: JSON.stringify(wanted),
      });
    } catch (e) { return; }
    if (gen !== this.gen || r.status !== 201) return;
    const es = this.events = new EventSource(new URL(r.headers.get('Location'), endpoint).href);
    const on = (name, fn) => es.addEventListener(name, e => { if (es === this.events) fn(JSON.parse(e.data)); });
    on('layers', data => {
      this.videoMline = Object.keys(data)[0] ?? null;
      this.layers = this.videoMline === null ? [] : data[this.videoMline];
      this.showLayers();
    });
    on('viewercount', data => { this.viewers = data.viewercount; this.showLayers(); });
    on('active', () => { this.publisherActive = true; this.showLayers(); });
    on('inactive', () => { this.publisherActive = false; this.showLayers(); });
  }

  dropExtensions() {
    if (this.events) this.events.close();
    this.events = this.layerUrl = this.layers = this.videoMline = null;
    this.viewers = undefined;
    $('layer').disabled = true;
    $('layer').value = '';
    $('watch-layer').textContent = '';
  }

  // The layer line: the layer being received, its rate, pinned or automatic,
  // what else is there, and how many watch. The picker lists the layers.
  showLayers() {
    const list = this.layers || [];
    const parts = [];
    const cur = list.find(l => l.current);
    if (cur) {
      const rate = cur.bitrate ? ` at ${formatRate(cur.bitrate)}` : '';
      parts.push(`Layer ${cur.rid}${formatSize(cur)}${rate}, ${cur.pinned ? 'pinned' : 'automatic'}`);
      const target = list.find(l => l.target);
      if (target && target !== cur) parts.push(`switching to ${target.rid}`);
    } else if (list.length) {
      parts.push('Layer: waiting for a keyframe...');
    } else if (this.layers) {
      parts.push('Single layer (the publisher does not send simulcast)');
    }
    if (list.length > 1) {
      parts.push('layers ' + list.map(l => l.rid + formatSize(l) + (l.active ? ` ${formatRate(l.bitrate)}` : ' paused')).join(', '));
    }
    if (this.publisherActive === false) parts.push('publisher gone');
    if (this.viewers !== undefined) parts.push(`${this.viewers} watching`);
    $('watch-layer').textContent = parts.join(' · ');
    const select = $('layer');
    const rids = list.map(l => l.rid);
    const shown = [...select.options].slice(1).map(o => o.value);
    if (rids.length && rids.join() !== shown.join()) {
      const keep = select.value;
      select.replaceChildren(new Option('auto', ''), ...rids.map(r => new Option(r, r)));
      select.value = rids.includes(keep) ? keep : '';
    }
  }

  // Pin a layer (rid) or go back to automatic selection ('').
  async pickLayer(rid) {
    if (!this.layerUrl) return { status: 0 };
    const body = rid ? { rid } : {};
    if (rid && this.videoMline !== null) body.mediaId = this.videoMline;
    let r, text;
    try {
      r = await fetch(this.layerUrl, {
        method: 'POST', headers: { 'Content-Type': 'application/json', ...this.auth }, body: JSON.stringify(body),
      });
      text = await r.text();
    } catch (e) {
      $('watch-layer').textContent = `Cannot change the layer: ${e.message}`;
      return { status: 0 };
    }
    if (!r.ok) $('watch-layer').textContent = `Layer ${rid || 'auto'}: ${explain('watch', r.status, text)}`;
    else $('layer').value = rid;
    return { status: r.status };
  }

  refused(r, body) {
    const msg = explain(this.role, r.status, body);
    const again = this.role === 'watch' ? [404, 409, 429, 503] : [429, 503];
    if (again.includes(r.status)) return this.retry(msg, Number(r.headers.get('Retry-After')) || 0);
    this.stop(msg).then(() => this.status(msg, 'err'));
  }

  // PATCH late candidates (null = end of candidates). Trickle is optional:
  // a server without it still has the offer's candidates and learns the rest from ICE checks.
  async trickle(offer, candidates) {
    if (this.noTrickle || !this.session || !candidates.length) return;
    const end = candidates.includes(null);
    const found = candidates.filter(Boolean);
    const headers = { 'Content-Type': 'application/trickle-ice-sdpfrag', ...this.auth };
    if (this.etag) headers['If-Match'] = this.etag;
    try {
      const r = await fetch(this.session, { method: 'PATCH', headers, body: sdpFragment(offer, found, end) });
      if (r.status === 405 || r.status === 501) this.noTrickle = true;
      if (r.ok && r.headers.get('ETag')) this.etag = r.headers.get('ETag');
    } catch (e) { /* the candidates in the offer may still do */ }
  }

  onState(pc, gen) {
    const state = pc.connectionState;
    if (state === 'connected') {
      if (this.role === 'publish') { this.attempt = 0; this.status('Publishing.', 'ok'); }
    } else if (state === 'failed') {
      this.retry('The connection failed');
    } else if (state === 'disconnected') {
      this.status('Connection interrupted...', 'warn');
      this.later(5000, () => gen === this.gen && pc.connectionState === 'disconnected'
        && this.retry('The connection was lost'));
    }
  }

  addMedia(pc) {
    if (this.role === 'watch') {
      pc.addTransceiver('audio', { direction: 'recvonly' });
      pc.addTransceiver('video', { direction: 'recvonly' });
      const stream = new MediaStream();
      $('watch-video').srcObject = stream;
      pc.ontrack = e => stream.addTrack(e.track);
      return;
    }
    for (const track of this.stream.getTracks()) {
      const init = { direction: 'sendonly', streams: [this.stream] };
      const simulcast = track.kind === 'video' && $('simulcast').checked;
      if (simulcast) init.sendEncodings = SIMULCAST();
      const tr = pc.addTransceiver(track, init);
      if (track.kind === 'video') preferCodec(tr, simulcast ? 'video/VP8' : $('codec').value);
    }
  }

  watchFirstFrame() {
    const video = $('watch-video');
    const mark = () => {
      if (this.active && this.firstFrameMs === null) this.firstFrameMs = Math.round(performance.now() - this.clickedAt);
    };
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(mark);
    else video.addEventListener('loadeddata', mark, { once: true });
  }

  // Once a second: read getStats(), update the panel and the status line.
  async tick() {
    const pc = this.pc;
    if (!pc) return;
    if (pc !== this.statsPc) { this.statsPc = pc; this.last = null; this.prevFrames = 0; }
    const s = await sample(pc, this.role, this.last);
    if (pc !== this.pc) return;
    s.firstFrameMs = this.firstFrameMs;
    this.last = s;
    render(this.id, s);
    if (this.role === 'watch' && s.state === 'connected') {
      if (s.frames > (this.prevFrames || 0)) {
        this.lastFrameAt = performance.now();
        this.attempt = 0;
        this.status('Playing.', 'ok');
      } else if (performance.now() - this.lastFrameAt > STALL_MS) {
        this.status(s.frames ? 'The publisher is gone: waiting for it to come back...'
          : 'Connected: waiting for the publisher to start...', 'warn');
      }
      this.prevFrames = s.frames;
    }
  }
}

// ---- Media ------------------------------------------------------------------

async function captureMedia() {
  const [width, height] = QUALITY[$('quality').value];
  const video = { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: 30 } };
  if ($('source').value === 'screen') {
    return navigator.mediaDevices.getDisplayMedia({ video, audio: true });
  }
  return navigator.mediaDevices.getUserMedia({ video, audio: true });
}

// The video codecs this browser can send, in its own order, restricted to what wisp forwards.
function videoCodecs() {
  const wanted = ['video/VP8', 'video/H264', 'video/VP9', 'video/AV1'];
  const send = (RTCRtpSender.getCapabilities && RTCRtpSender.getCapabilities('video')) || { codecs: [] };
  const have = new Set(send.codecs.map(c => c.mimeType.toLowerCase()));
  return wanted.filter(m => have.has(m.toLowerCase()));
}

// Put one codec first (all its variants, e.g. every H.264 profile) and keep rtx/red/fec.
function preferCodec(transceiver, mime) {
  if (!mime || !transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
  const all = RTCRtpReceiver.getCapabilities('video').codecs;
  const is = c => c.mimeType.toLowerCase() === mime.toLowerCase();
  const helpers = all.filter(c => /rtx|red|ulpfec/i.test(c.mimeType));
  const chosen = all.filter(is);
  if (chosen.length) transceiver.setCodecPreferences([...chosen, ...helpers]);
}

// ---- Stats ------------------------------------------------------------------

// One getStats() sample, with rates computed against the previous one.
async function sample(pc, role, prev) {
  const report = await pc.getStats();
  const s = {
    at: performance.now(), state: pc.connectionState, bytes: 0, frames: 0, fps: null,
    width: null, height: null, lost: 0, jitterMs: null, rttMs: null, codec: null, path: null,
    layers: [],
  };
  const rtpType = role === 'publish' ? 'outbound-rtp' : 'inbound-rtp';
  let pairId = null;
  report.forEach(r => {
    if (r.type === rtpType) {
      s.bytes += (role === 'publish' ? r.bytesSent : r.bytesReceived) || 0;
      if (role === 'watch') s.lost += r.packetsLost || 0;
      if (r.kind === 'video') {
        s.frames += (role === 'publish' ? r.framesEncoded : r.framesDecoded) || 0;
        if (r.frameWidth && r.frameWidth >= (s.width || 0)) { s.width = r.frameWidth; s.height = r.frameHeight; }
        if (role === 'publish' && r.rid) s.layers.push({ rid: r.rid, width: r.frameWidth || 0, height: r.frameHeight || 0 });
        if (r.framesPerSecond !== undefined) s.fps = r.framesPerSecond;
        if (r.jitter !== undefined) s.jitterMs = r.jitter * 1000;
        const codec = r.codecId && report.get(r.codecId);
        if (codec) s.codec = codec.mimeType.replace('video/', '');
        if (role === 'publish' && r.encoderImplementation) s.impl = r.encoderImplementation;
        if (role === 'watch' && r.decoderImplementation) s.impl = r.decoderImplementation;
      }
    }
    if (r.type === 'remote-inbound-rtp' && role === 'publish') {  // the server's receiver reports
      s.lost += r.packetsLost || 0;
      if (r.kind === 'video' && r.jitter !== undefined) s.jitterMs = r.jitter * 1000;
    }
    if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
  });
  const pair = pairId && report.get(pairId);
  if (pair) {
    if (pair.currentRoundTripTime !== undefined) s.rttMs = pair.currentRoundTripTime * 1000;
    const local = report.get(pair.localCandidateId), remote = report.get(pair.remoteCandidateId);
    if (local && remote) s.path = `${local.address}:${local.port} → ${remote.address}:${remote.port}`;
  }
  if (prev) {
    const dt = (s.at - prev.at) / 1000;
    s.kbps = dt > 0 ? Math.max(0, (s.bytes - prev.bytes) * 8 / 1000 / dt) : 0;
    if (s.fps === null && dt > 0) s.fps = Math.max(0, (s.frames - prev.frames) / dt);
  }
  return s;
}

function render(id, s) {
  const fmt = (v, unit = '', digits = 0) => (v === null || v === undefined ? '-' : v.toFixed(digits) + unit);
  const rows = [
    ['State', s.state],
    ['Bitrate', s.kbps === undefined ? '-' : s.kbps >= 1000 ? fmt(s.kbps / 1000, ' Mbit/s', 2) : fmt(s.kbps, ' kbit/s')],
    ['Frame rate', fmt(s.fps, ' fps')],
    ['Resolution', s.width ? `${s.width}×${s.height}` : '-'],
    [id === 'pub' ? 'Frames encoded' : 'Frames decoded', String(s.frames)],
    ['Packets lost', String(s.lost)],
    ['Jitter', fmt(s.jitterMs, ' ms', 1)],
    ['RTT', fmt(s.rttMs, ' ms', 1)],
    ['Codec', s.codec ? s.codec + (s.impl ? ` (${s.impl})` : '') : '-'],
    ['Path', s.path || '-'],
  ];
  if (id === 'watch') rows.push(['First frame', fmt(s.firstFrameMs, ' ms')]);
  if (s.layers && s.layers.length > 1) {
    rows.splice(4, 0, ['Simulcast', s.layers.map(l => `${l.rid} ${l.width ? `${l.width}×${l.height}` : 'off'}`).join(', ')]);
  }
  const dl = $(`${id}-stats`);
  dl.replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement('dt'), dd = document.createElement('dd');
    dt.textContent = k;
    dd.textContent = v;
    return [dt, dd];
  }));
}

// ---- Room list --------------------------------------------------------------

async function refreshRooms() {
  if (document.hidden) return;
  const note = $('rooms-status');
  let rooms;
  try {
    const r = await fetch(`${baseUrl()}/api/rooms`, { headers: bearer('admin-token') });
    if (r.status === 401 || r.status === 403) {
      note.textContent = 'The room list needs the admin token.';
      return;
    }
    if (!r.ok) throw new Error(explain('admin', r.status, await r.text()));
    rooms = await r.json();
  } catch (e) {
    note.textContent = `Cannot load the room list: ${e.message}`;
    return;
  }
  $('room-list').replaceChildren(...rooms.map(room => {
    const li = document.createElement('li');
    const codecs = room.tracks.map(t => t.codec).filter(Boolean).join(', ');
    const state = document.createElement('span');
    state.className = room.publisher_live ? 'live' : 'idle';
    state.textContent = room.publisher_live ? '● live' : '○ waiting';
    const details = document.createElement('small');
    details.textContent = ` ${codecs ? codecs + ', ' : ''}${room.viewers} watching, up ${formatUptime(room.uptime_s)}`;
    li.append(`${room.name} `, state, details);
    li.title = 'Use this room';
    li.onclick = () => { $('room').value = room.name; };
    return li;
  }));
  note.textContent = rooms.length ? '' : 'No rooms yet.';
}

function formatUptime(s) {
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  return `${Math.floor(s / 3600)} h ${Math.floor(s % 3600 / 60)} min`;
}

// ---- Start-up ---------------------------------------------------------------

$('server').value = location.origin.startsWith('http') ? location.origin : '';
$('codec').replaceChildren(...videoCodecs().map(m => new Option(m.replace('video/', ''), m)));
$('simulcast').onchange = () => {                 // simulcast is sent as VP8
  $('codec').disabled = $('simulcast').checked;
  if ($('simulcast').checked && videoCodecs().includes('video/VP8')) $('codec').value = 'video/VP8';
};
const publisher = new Connection('publish');
const viewer = new Connection('watch');
addEventListener('pagehide', () => { publisher.hangUp(); viewer.hangUp(); });
refreshRooms();
setInterval(refreshRooms, 3000);

// For scripts and tests: the two connections and their latest numbers.
window.wisp = { publisher, viewer, refreshRooms, parseIceServers, parseLinks, sdpFragment };
