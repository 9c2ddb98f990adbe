// gatewayd panel: submit through /api/v1/pair and follow /api/v1/progress in place.
// Without this script the form still works (POST /setup); this only makes it nicer.
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const panel = $('panel');
  if (!panel) return;
  const form = $('pair-form');
  const submit = $('submit');
  const wifi = panel.dataset.wifi === 'yes';
  const POLL_MS = 800;
  const ADVANCED = ['host', 'brport', 'mqtts_port', 'rootTopic'];
  const WIFI_FAILURES = ['wrong-password', 'network-not-found', 'dhcp-failed'];
  const LABELS = { starting: 'Starting', unpaired: 'Ready to pair', connecting: 'Connecting', online: 'Online',
                   offline: 'Offline' };
  let lastFailureAt = parseFloat(panel.dataset.failureAt) || 0;
  let attemptStarted = null;
  let attemptId = null;
  let attemptSsid = null;

  // ---- form helpers ------------------------------------------------------------------
  document.querySelectorAll('[data-toggle]').forEach((btn) => {
    btn.addEventListener('click', () => {
      const input = $(btn.dataset.toggle);
      const show = input.type === 'password';
      input.type = show ? 'text' : 'password';
      btn.textContent = show ? 'Hide' : 'Show';
    });
  });

  const chosen = () => form.querySelector('input[name=network]:checked');

  function onNetwork() {
    const radio = chosen();
    $('hidden-ssid-box').hidden = !(radio && radio.value === '');
    // "Keep the current network" needs no password, like an open network.
    const open = radio && ['open', 'current'].includes(radio.dataset.security);
    $('psk-field').hidden = Boolean(open);
    if (open) $('psk').value = '';
    $('networks').classList.remove('invalid');
  }

  function networkItem(n) {
    const li = document.createElement('li');
    const label = document.createElement('label');
    label.className = 'net';
    const input = document.createElement('input');
    Object.assign(input, { type: 'radio', name: 'network', value: n.ssid });
    input.dataset.security = n.security;
    const ssid = document.createElement('span');
    ssid.className = 'ssid';
    ssid.textContent = n.ssid; // textContent: an SSID is attacker-chosen text
    label.append(input, ssid);
    if (n.security === 'unsupported') {
      // WEP or enterprise (eduroam): the hub cannot join it, so it is not a choice.
      input.disabled = true;
      label.classList.add('unsupported');
      const note = document.createElement('span');
      note.className = 'note';
      note.textContent = 'not supported';
      note.title = 'WEP or enterprise (e.g. eduroam): the hub cannot join it';
      label.append(note);
    } else if (n.security !== 'open') {
      const lock = document.createElement('span');
      lock.className = 'lock';
      lock.title = String(n.security).toUpperCase();
      label.append(lock);
    }
    const bars = document.createElement('span');
    const s = Number(n.signal) || 0;
    bars.className = `bars b${s >= 75 ? 4 : s >= 50 ? 3 : s >= 25 ? 2 : 1}`;
    bars.setAttribute('aria-label', `signal ${s}%`);
    bars.innerHTML = '<i></i><i></i><i></i><i></i>';
    label.append(bars);
    li.append(label);
    return li;
  }

  async function refreshNetworks() {
    const list = $('networks');
    try {
      const res = await fetch('/api/v1/networks', { cache: 'no-store' });
      if (!res.ok) return;
      const data = await res.json();
      const keep = chosen() ? chosen().value : null;
      const other = list.querySelector('.other').closest('li');
      list.replaceChildren(...data.networks.map(networkItem), other);
      const again = [...list.querySelectorAll('input[name=network]')].find((r) => r.value === keep);
      if (again) again.checked = true;
      onNetwork();
    } catch (e) { /* keep the list we have */ }
  }

  if (wifi) {
    $('networks').addEventListener('change', onNetwork);
    onNetwork();
    $('refresh').hidden = false;
    $('refresh').addEventListener('click', refreshNetworks);
  }

  function clearErrors() {
    $('form-error').hidden = true;
    form.querySelectorAll('.invalid').forEach((el) => el.classList.remove('invalid'));
  }

  function showError(message, field) {
    const box = $('form-error');
    box.textContent = message;
    box.hidden = false;
    let target = null;
    if (field === 'ssid' || field === 'hidden') {
      target = chosen() && chosen().value === '' ? $('hidden_ssid-field') : $('networks');
    } else if (field) {
      target = $(`${field}-field`);
    }
    if (target) {
      target.classList.add('invalid');
      if (ADVANCED.includes(field)) $('advanced').open = true;
      const input = target.querySelector('input');
      if (input && input.type !== 'radio') input.focus({ preventScroll: true });
    }
    box.scrollIntoView({ behavior: 'smooth', block: 'center' });
  }

  function collect() {
    const value = (name) => (form.elements[name] ? form.elements[name].value : '');
    const body = { wsp: value('wsp').trim(), token: value('token') };
    for (const name of ADVANCED) body[name] = value(name).trim();
    if (wifi) {
      const radio = chosen();
      if (!radio) return { error: 'Choose a Wi-Fi network.', field: 'ssid' };
      if (radio.dataset.security === 'current') return { body };  // cloud part only
      body.ssid = radio.value || value('hidden_ssid');
      body.hidden = radio.value === '';
      body.psk = value('psk');
    }
    return { body };
  }

  // ---- progress ----------------------------------------------------------------------
  function setBadge(state) {
    const badge = $('state-badge');
    if (!badge) return;
    badge.textContent = LABELS[state] || state;
    badge.className = `badge state-${state}`;
  }

  // current: the step the attempt is at; how: 'running', 'failed' or 'done' (all finished).
  function setSteps(current, how) {
    const order = ['wifi', 'cloud', 'online'];
    const at = order.indexOf(current);
    $('p-steps').querySelectorAll('li').forEach((li) => {
      const i = order.indexOf(li.dataset.step);
      li.hidden = li.dataset.step === 'wifi' && !attemptSsid;
      if (how === 'done' || i < at) li.className = 'done';
      else if (i === at) li.className = how === 'failed' ? 'failed' : 'active';
      else li.className = '';
    });
  }

  function show(icon, title, text) {
    $('p-icon').className = `icon ${icon}`;
    $('p-title').textContent = title;
    $('p-text').textContent = text;
  }

  // Returns true once the attempt has ended (online or failed).
  function render(p) {
    setBadge(p.state);
    if (p.attempt) attemptSsid = p.attempt.ssid;
    const f = p.last_failure;
    // Is the failure about our attempt? By id when the hub says, else by time (hub clock).
    const fresh = f && (f.attempt && attemptId ? f.attempt === attemptId
      : attemptStarted !== null ? f.at >= attemptStarted : f.at > lastFailureAt);
    if (p.state === 'online') {
      show('ok', 'Your hub is online', attemptSsid
        ? `It joined “${attemptSsid}” and reached the cloud. You can close this page and ` +
          'reconnect your phone to your usual network.'
        : 'It reached the cloud. You can close this page.');
      setSteps('online', 'done');
      $('p-hint').hidden = true;
      return true;
    }
    if (p.state !== 'connecting' && fresh) {
      const wifiStep = WIFI_FAILURES.includes(f.code) ||
        (f.code === 'timeout' && p.step !== 'cloud' && attemptSsid);
      show('fail', 'Pairing failed', f.reason);
      setSteps(wifiStep ? 'wifi' : 'cloud', 'failed');
      $('p-retry').hidden = false;
      $('p-hint').hidden = true;
      lastFailureAt = f.at;
      return true;
    }
    const step = p.step || (attemptSsid ? 'wifi' : 'cloud');
    show('spin', step === 'wifi' ? 'Joining the Wi-Fi network…' : 'Connecting to the cloud…',
      step === 'wifi' && attemptSsid ? `Connecting to “${attemptSsid}”.` : 'This takes a few seconds.');
    setSteps(step, 'running');
    return false;
  }

  let misses = 0;
  async function poll() {
    try {
      const res = await fetch('/api/v1/progress', { cache: 'no-store' });
      const p = await res.json();
      misses = 0;
      $('p-hint').hidden = true;
      if (render(p)) return;
    } catch (e) {
      misses += 1;
      if (misses >= 3) {
        // A hub with one radio drops its hotspot to join the network: the phone loses it.
        const hint = $('p-hint');
        hint.textContent = 'The hub is switching networks. If this page stops updating, ' +
          (attemptSsid ? `connect your phone to “${attemptSsid}”. ` : '') +
          'If pairing fails, the hub opens its own Wi-Fi again and this page shows why.';
        hint.hidden = false;
      }
    }
    setTimeout(poll, misses ? Math.min(4000, POLL_MS * (1 + misses)) : POLL_MS);
  }

  function follow(p) {
    attemptStarted = p.attempt ? p.attempt.started : null;
    attemptId = p.attempt ? p.attempt.id : null;
    attemptSsid = p.attempt ? p.attempt.ssid : null;
    form.hidden = true;
    $('form-error').hidden = true;
    if ($('last-failure')) $('last-failure').hidden = true;
    $('p-retry').hidden = true;
    $('progress').hidden = false;
    window.scrollTo(0, 0);
    if (!render(p)) setTimeout(poll, POLL_MS);
  }

  $('p-retry').addEventListener('click', () => {
    $('progress').hidden = true;
    form.hidden = false;
    setBadge('unpaired');
    submit.disabled = false;
    submit.textContent = 'Connect';
    const psk = $('psk');
    if (psk && !$('psk-field').hidden) psk.focus();
  });

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors();
    const { body, error, field } = collect();
    if (error) { showError(error, field); return; }
    submit.disabled = true;
    submit.textContent = 'Connecting…';
    try {
      const res = await fetch('/api/v1/pair', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'X-Requested-By': 'gatewayd-panel' },
        body: JSON.stringify(body),
      });
      const data = await res.json();
      if (res.ok) { follow(data.progress); return; }
      if (data.error && data.error.code === 'not-in-pairing-mode') { window.location.reload(); return; }
      showError(data.error ? data.error.message : `The hub answered ${res.status}.`,
        data.error && data.error.field);
    } catch (e) {
      showError("The hub did not answer. Check that your phone is still on the hub's Wi-Fi " +
        'and try again.');
    }
    submit.disabled = false;
    submit.textContent = 'Connect';
  });

  // Opened (or reloaded) during an attempt: follow it instead of showing the form.
  if (panel.dataset.state === 'connecting') {
    fetch('/api/v1/progress', { cache: 'no-store' }).then((r) => r.json()).then(follow)
      .catch(() => {});
  }
})();
