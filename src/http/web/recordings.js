// Recordings gallery: api/replays, newest first; a segment plays in the <video> above.
(() => {
  const gallery = document.getElementById('gallery');
  const player = document.getElementById('player');
  const video = document.getElementById('video');
  const title = document.getElementById('player-title');
  let shown = '';

  const when = (iso) => new Date(iso).toLocaleString([], { dateStyle: 'medium', timeStyle: 'medium' });
  // URLs from the API are absolute paths; make them relative so a subpath proxy works.
  const rel = (url) => url.replace(/^\//, '');

  function play(segment) {
    title.textContent = `${when(segment.start)}${segment.in_progress ? ' (recording now)' : ''}`;
    player.hidden = false;
    video.src = rel(segment.url);
    video.muted = true;
    video.play().catch(() => {});
    player.scrollIntoView({ behavior: 'smooth', block: 'start' });
    video.focus();
  }

  function card(segment) {
    const li = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'segment';
    button.dataset.filename = segment.filename;
    button.setAttribute('aria-label', `Play recording from ${when(segment.start)}`);
    const thumb = segment.has_thumbnail
      ? `<img src="${rel(segment.thumbnailUrl)}" alt="" loading="lazy" width="320" height="180">`
      : '<div class="no-thumb" aria-hidden="true"></div>';
    button.innerHTML = `
      <div class="thumb">${thumb}${segment.in_progress ? '<span class="badge">● Recording now</span>' : ''}
        <span class="length">${cr.duration(segment.duration)}</span></div>
      <div class="meta"><span class="start">${when(segment.start)}</span><span class="muted">${cr.bytes(segment.bytes)}</span></div>`;
    button.addEventListener('click', () => play(segment));
    li.appendChild(button);
    return li;
  }

  async function refresh() {
    let segments;
    try {
      segments = await cr.json('api/replays');
    } catch (e) {
      document.getElementById('summary').textContent = `Could not load recordings: ${e.message}`;
      return;
    }
    const key = JSON.stringify(segments.map((s) => [s.filename, s.in_progress, s.has_thumbnail, Math.round(s.duration / 10)]));
    if (key !== shown) {
      shown = key;
      gallery.replaceChildren(...segments.map(card));
    }
    document.getElementById('empty').hidden = segments.length > 0;
    const total = segments.reduce((n, s) => n + s.bytes, 0);
    document.getElementById('summary').textContent = segments.length ? `${segments.length} segment${segments.length === 1 ? '' : 's'} · ${cr.bytes(total)}` : '';
  }

  document.getElementById('close-player').addEventListener('click', () => {
    video.pause();
    video.removeAttribute('src');
    video.load();
    player.hidden = true;
  });
  refresh();
  setInterval(refresh, 10000);
})();
