// Live viewer: one WebSocket, one JPEG per binary message. The page asks for flow control
// ("start credit=1"): the daemon sends a frame only once the page has said "drawn" for the
// one before, so on a slow link only one frame is ever on its way and what is drawn is
// never seconds old. Each frame follows a text stamp with its number and capture time, and
// the daemon's clock comes first, so the page can say how old a frame is when drawn
// (window.croissant.latencyMs, also in the overlay). Frames are decoded off the main thread
// (createImageBitmap) and drawn to a canvas.
(() => {
  const canvas = document.getElementById('canvas');
  const ctx = canvas.getContext('2d');
  const overlay = document.getElementById('overlay');
  const message = document.getElementById('message');
  const toggle = document.getElementById('toggle');
  const stateText = document.getElementById('state');

  // `[viewer] ws_url` wins; otherwise the URL is relative to the page, so a reverse proxy
  // on another port or a subpath just works.
  const configured = document.querySelector('meta[name="croissant-ws-url"]').content.trim();
  const wsUrl = () => {
    if (configured && !configured.includes('{{')) return configured;
    const url = new URL('ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return url.href;
  };

  let ws = null;
  let wanted = false;
  let retryMs = 500;
  let retryTimer = null;
  let pending = null;
  let decoding = false;
  let lastFrameAt = 0;
  let drawn = [];
  let everOpened = false;
  let stalledSince = 0;
  // The daemon's clock minus ours (ms), from its "clock" message; the newest stamp.
  let clockOffset = 0;
  let startSentAt = 0;
  let stamp = null;
  window.croissant = { frames: 0, reconnects: 0, fps: 0, latencyMs: null, seq: null };

  function setState(text) {
    stateText.textContent = text;
    stateText.className = 'pill ' + (text === 'Live' ? 'ok' : text === 'Camera down' || text.startsWith('Disconnected') ? 'bad' : '');
  }

  function connect() {
    clearTimeout(retryTimer);
    setState('Connecting…');
    const socket = new WebSocket(wsUrl());
    socket.binaryType = 'blob';
    ws = socket;
    socket.onopen = () => {
      if (everOpened) window.croissant.reconnects++;
      everOpened = true;
      retryMs = 500;
      window.croissant.openedAt = performance.now();
      setState('Waiting for the camera…');
      message.textContent = 'Starting the camera…';
      startSentAt = Date.now();
      stamp = null;
      socket.send('start credit=1');
    };
    socket.onmessage = (event) => {
      if (typeof event.data === 'string') {
        onText(event.data);
        return;
      }
      // Newer replaces pending; the replaced one is done with all the same.
      if (pending) done(socket);
      pending = { blob: event.data, stamp, socket };
      stamp = null;
      lastFrameAt = performance.now();
      if (!decoding) drawNext();
    };
    socket.onclose = (event) => {
      if (ws !== socket) return;
      ws = null;
      if (!wanted) return;
      // 1013: too many viewers; 1008: live view off in this mode. Say why, wait longer.
      const refused = event.code === 1013 || event.code === 1008;
      const wait = refused ? Math.max(retryMs, 10000) : retryMs;
      retryMs = Math.min(retryMs * 2, 10000);
      setState(`Disconnected; retrying in ${Math.round(wait / 1000)} s`);
      message.textContent = refused && event.reason
        ? `The camera refused: ${event.reason}.`
        : 'Connection to the camera lost. Reconnecting…';
      retryTimer = setTimeout(connect, wait);
      // A session that ended (logout, expiry) sends to the login form at once.
      if (!refused || event.reason.startsWith('session')) checkSession();
    };
  }

  // A WebSocket refused at the handshake looks like any lost connection. When the session is
  // gone (it expired, or the daemon restarted), go to the login form instead of retrying
  // forever; it brings the user back here.
  async function checkSession() {
    try {
      const res = await fetch('api/status', { cache: 'no-store' });
      if (res.status === 401) location.href = 'login?next=stream';
    } catch (e) { /* the daemon is away: keep retrying */ }
  }

  function onText(text) {
    let message;
    try { message = JSON.parse(text); } catch (e) { return; }
    if (typeof message.clock === 'number') {
      // Half the round trip is the best guess of when the daemon read its clock.
      const now = Date.now();
      clockOffset = message.clock - (startSentAt + now) / 2;
    } else if (typeof message.at === 'number') {
      stamp = message;
    }
  }

  // A frame is drawn (or skipped): the daemon may send the next one.
  function done(socket) {
    if (socket.readyState === WebSocket.OPEN) socket.send('drawn');
  }

  async function drawNext() {
    decoding = true;
    while (pending) {
      const { blob, stamp: frameStamp, socket } = pending;
      pending = null;
      try {
        const bitmap = await createImageBitmap(blob);
        if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
          canvas.width = bitmap.width;
          canvas.height = bitmap.height;
        }
        ctx.drawImage(bitmap, 0, 0);
        bitmap.close();
        const now = performance.now();
        drawn.push(now);
        window.croissant.frames++;
        if (frameStamp) {
          window.croissant.latencyMs = Math.max(0, Math.round(Date.now() + clockOffset - frameStamp.at));
          window.croissant.seq = frameStamp.seq;
        }
        message.textContent = '';
        setState('Live');
      } catch (e) {
        // A frame that does not decode is skipped; the next one replaces it.
      }
      done(socket);
    }
    decoding = false;
  }

  function start() {
    wanted = true;
    toggle.textContent = 'STOP STREAM';
    connect();
  }

  function stop() {
    wanted = false;
    clearTimeout(retryTimer);
    toggle.textContent = 'START STREAM';
    if (ws) {
      if (ws.readyState === WebSocket.OPEN) ws.send('stop');
      ws.close(1000);
      ws = null;
    }
    overlay.textContent = '';
    message.textContent = 'Stopped. Press START STREAM to watch.';
    setState('Idle');
  }

  toggle.addEventListener('click', () => (wanted ? stop() : start()));
  document.getElementById('fullscreen').addEventListener('click', () => {
    const viewer = document.getElementById('viewer');
    if (document.fullscreenElement) document.exitFullscreen();
    else if (viewer.requestFullscreen) viewer.requestFullscreen();
  });

  // Overlay: frames drawn per second over the last two seconds, and how old the newest
  // frame was when drawn (capture to screen), or else how long ago it came.
  setInterval(() => {
    if (!wanted) return;
    const now = performance.now();
    drawn = drawn.filter((t) => now - t < 2000);
    const fps = drawn.length > 1 ? (drawn.length - 1) / ((drawn[drawn.length - 1] - drawn[0]) / 1000) : 0;
    window.croissant.fps = fps;
    const age = lastFrameAt ? Math.round(now - lastFrameAt) : null;
    const latency = window.croissant.latencyMs;
    overlay.textContent = `${fps.toFixed(1)} fps` +
      (latency !== null ? ` · ${latency} ms latency` : age !== null ? ` · ${age} ms` : '');
    const quiet = ws && ws.readyState === WebSocket.OPEN && now - Math.max(lastFrameAt, openedAt()) > 5000;
    if (quiet && !stalledSince) {
      stalledSince = now;
      explainStall();
    } else if (!quiet) {
      stalledSince = 0;
    }
  }, 500);

  function openedAt() { return window.croissant.openedAt || 0; }

  // Ask the daemon why no frames come, and say it plainly.
  async function explainStall() {
    setState('Camera down');
    let text = 'No picture from the camera. Waiting for it to come back…';
    try {
      const res = await fetch('api/status', { cache: 'no-store' });
      const s = await res.json();
      if (s.source.state === 'backoff') text = `The camera stopped (${s.source.last_error || 'no reason given'}). Restarting it…`;
      else if (s.source.state === 'starting') text = 'The camera is starting…';
    } catch (e) { /* the message above stands */ }
    if (stalledSince) message.textContent = text;
  }
})();
