// Live viewer: one WebSocket, text "start"/"stop", one JPEG per binary message.
// Frames are decoded off the main thread (createImageBitmap) and drawn to a canvas; while
// one decodes, newer ones replace the pending one, so a slow device shows the newest frame.
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
  window.croissant = { frames: 0, reconnects: 0, fps: 0 };

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
      socket.send('start');
    };
    socket.onmessage = (event) => {
      if (typeof event.data === 'string') return;
      pending = event.data;
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

  async function drawNext() {
    decoding = true;
    while (pending) {
      const blob = pending;
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
        message.textContent = '';
        setState('Live');
      } catch (e) {
        // A frame that does not decode is skipped; the next one replaces it.
      }
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

  // Overlay: frames drawn per second over the last two seconds, and the newest frame's age.
  setInterval(() => {
    if (!wanted) return;
    const now = performance.now();
    drawn = drawn.filter((t) => now - t < 2000);
    const fps = drawn.length > 1 ? (drawn.length - 1) / ((drawn[drawn.length - 1] - drawn[0]) / 1000) : 0;
    window.croissant.fps = fps;
    const age = lastFrameAt ? Math.round(now - lastFrameAt) : null;
    overlay.textContent = `${fps.toFixed(1)} fps` + (age !== null ? ` · ${age} ms` : '');
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
