// Dashboard: polls api/status and switches the mode with POST settings.
(() => {
  const $ = (id) => document.getElementById(id);
  const stateNames = { stopped: 'Idle', starting: 'Starting', running: 'Running', backoff: 'Restarting' };
  let switching = false;

  function render(s) {
    const healthy = !(s.source.wanted && s.source.state !== 'running');
    $('health').textContent = healthy ? 'Healthy' : (s.source.state === 'backoff' ? 'Camera down' : 'Starting…');
    $('health').className = 'pill ' + (healthy ? 'ok' : 'bad');
    $('camera').textContent = stateNames[s.source.state] || s.source.state;
    $('camera-sub').textContent = s.source.last_error && s.source.state === 'backoff'
      ? s.source.last_error
      : `${s.source.kind}${s.source.pid ? ' · pid ' + s.source.pid : ''}`;
    $('fps').textContent = s.source.fps ? `${s.source.fps} fps` : '—';
    $('resolution').textContent = `${s.source.width}×${s.source.height} @ ${s.source.framerate}`;
    $('viewers').textContent = s.viewers;
    $('recording').innerHTML = s.recording.active ? '<span class="rec">● REC</span>' : 'Off';
    $('segment').textContent = s.recording.segment ? s.recording.segment : `${s.disk.segments} segments kept`;
    const total = s.disk.total_bytes, free = s.disk.free_bytes;
    if (total) {
      const used = (total - free) / total;
      $('disk').textContent = `${cr.bytes(free)} free`;
      $('disk-meter').style.width = `${Math.round(used * 100)}%`;
      $('disk-meter-label').setAttribute('aria-label', `Disk ${Math.round(used * 100)}% used`);
      $('disk-sub').textContent = `${cr.bytes(s.disk.recordings_bytes)} in recordings`;
    }
    if (s.user) {
      $('user').hidden = false;
      $('user-name').textContent = `${s.user.name} (${s.user.role})`;
      const admin = s.user.role === 'admin';
      $('mode-switch').disabled = !admin;
      if (!admin) $('mode-status').textContent = 'Only an admin can switch the mode.';
    }
    $('uptime').textContent = cr.duration(s.uptime);
    $('version').textContent = `version ${s.version}`;
    if (!switching) {
      const radio = $(`mode-${s.mode}`);
      if (radio) radio.checked = true;
    }
  }

  async function refresh() {
    try {
      render(await cr.json('api/status'));
    } catch (e) {
      $('health').textContent = 'Unreachable';
      $('health').className = 'pill bad';
    }
  }

  $('mode-switch').addEventListener('change', async (event) => {
    const mode = event.target.value;
    switching = true;
    $('mode-status').textContent = 'Switching…';
    try {
      const reply = await cr.json('settings', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ mode }),
      });
      $('mode-status').textContent = reply.mode === 'continuous' ? 'Recording continuously.' : 'Camera runs on demand.';
    } catch (e) {
      $('mode-status').textContent = `Could not switch: ${e.message}`;
    }
    switching = false;
    refresh();
  });

  refresh();
  setInterval(refresh, 2000);
})();
