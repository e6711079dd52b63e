// RahatBack dashboard: inline actions over fetch, live progress over
// EventSource. Hand-written, no dependencies. Every request goes to the
// same-origin proxy /ui/v1, which adds the session's bearer token; state
// changes carry the page's CSRF token in X-CSRF-Token.

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? '';
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

// api calls the REST API through the proxy. It resolves {ok, status, data};
// a 401 sends the browser to the sign-in page.
export async function api(method, path, body) {
  const init = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (method !== 'GET') init.headers['X-CSRF-Token'] = csrf;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch('/ui/v1' + path, init);
  } catch (e) {
    return { ok: false, status: 0, data: { message: 'The server cannot be reached: ' + e.message } };
  }
  if (res.status === 401) {
    location.assign('/login?next=' + encodeURIComponent(location.pathname + location.search));
    return new Promise(() => {});
  }
  let data = null;
  const text = await res.text();
  try { data = text ? JSON.parse(text) : null; } catch { data = { message: text }; }
  return { ok: res.ok, status: res.status, data };
}

// --- times in the browser's time zone

const fmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const fmtSeconds = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
function localizeTimes(root = document) {
  for (const el of $$('time[datetime]', root)) {
    const d = new Date(el.getAttribute('datetime'));
    if (!isNaN(d)) {
      el.textContent = (el.hasAttribute('data-seconds') ? fmtSeconds : fmt).format(d);
      el.title = d.toISOString();
    }
  }
}

// --- small UI helpers

function toast(text, kind = 'error') {
  let box = $('#toast');
  if (!box) {
    box = document.createElement('p');
    box.id = 'toast';
    box.setAttribute('role', 'alert');
    $('main').prepend(box);
  }
  box.className = kind;
  box.textContent = text;
  // A button far down a list (Delete in the history) shows its error, such
  // as the API's 409 for a backup later backups of its chain need, here.
  box.scrollIntoView?.({ block: 'nearest' });
}

// confirmDialog shows the page's <dialog id="confirm-dialog"> and resolves
// true when the user confirms.
export function confirmDialog(text, okLabel = 'Yes') {
  const dlg = $('#confirm-dialog');
  $('.confirm-text', dlg).textContent = text;
  $('.confirm-ok', dlg).textContent = okLabel;
  dlg.returnValue = '';
  dlg.showModal();
  $('button[value="cancel"]', dlg).focus();
  return new Promise(resolve => dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true }));
}

function busy(button, on, label) {
  if (on) {
    button.dataset.label = button.textContent;
    button.disabled = true;
    button.innerHTML = '<span class="spinner" aria-hidden="true"></span>';
    button.append(label ?? button.dataset.label);
  } else {
    button.disabled = false;
    button.textContent = button.dataset.label;
  }
}

// --- forms that talk to the API

// formBody turns a form's named fields into the JSON body the API expects:
// checkboxes are booleans, data-type="number" numbers, data-type="json"
// parsed JSON, data-type="lines" a list of its non-empty lines,
// data-type="count" a number or, when empty, null (which clears it),
// data-type="nullable" its value or, when empty, null;
// data-omit-empty fields, and empty numbers and JSON, are left out.
export function formBody(form) {
  const body = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled || el.type === 'submit' || el.type === 'button') continue;
    if (el.closest('[data-show-for]')?.hidden) continue;
    if (el.type === 'radio' && !el.checked) continue;
    if (el.type === 'checkbox') { body[el.name] = el.checked; continue; }
    const v = el.value;
    if (v === '' && (el.hasAttribute('data-omit-empty') || el.dataset.type === 'number' || el.dataset.type === 'json')) continue;
    if (el.dataset.type === 'count') body[el.name] = v === '' ? null : Number(v);
    else if (el.dataset.type === 'nullable') body[el.name] = v === '' ? null : v;
    else if (el.dataset.type === 'number') body[el.name] = Number(v);
    else if (el.dataset.type === 'lines') body[el.name] = v.split('\n').map(x => x.trim()).filter(Boolean);
    else if (el.dataset.type === 'json') {
      try { body[el.name] = JSON.parse(v); } catch { body[el.name] = v; }
    } else body[el.name] = v;
  }
  return body;
}

function clearErrors(form) {
  for (const el of $$('[data-error-for]', form)) el.textContent = '';
  for (const el of $$('[aria-invalid]', form)) el.removeAttribute('aria-invalid');
  const msg = $('[data-form-message]', form);
  if (msg) { msg.hidden = true; msg.textContent = ''; }
}

// showErrors puts each field's error next to its field (SPEC §3's
// "fields"), the message above the form, and focuses the first bad field.
export function showErrors(form, data) {
  const fields = data?.fields ?? {};
  const unplaced = [];
  for (const [name, text] of Object.entries(fields)) {
    const slot = $(`[data-error-for="${CSS.escape(name)}"]`, form);
    const input = form.elements.namedItem?.(name);
    if (slot) {
      slot.textContent = text;
      slot.id ||= 'err-' + name;
    } else unplaced.push(`${name} ${text}`);
    if (input && input.setAttribute) {
      input.setAttribute('aria-invalid', 'true');
      if (slot) input.setAttribute('aria-describedby', slot.id);
    }
  }
  const msg = $('[data-form-message]', form);
  // The API's "invalid fields: a, b" says nothing the marked fields don't.
  const placed = Object.keys(fields).length > 0 && unplaced.length === 0;
  const text = placed ? 'Please correct the fields marked below.' : [data?.message, ...unplaced].filter(Boolean).join('; ');
  if (msg && text) { msg.textContent = text; msg.hidden = false; }
  else if (text && !Object.keys(fields).length) toast(text);
  // Focus the first bad field in the order the form shows them.
  ($('[aria-invalid="true"]', form) ?? msg)?.focus?.();
}

function initApiForms() {
  for (const form of $$('form[data-api]')) {
    form.addEventListener('submit', async e => {
      e.preventDefault();
      clearErrors(form);
      const [method, path] = form.dataset.api.split(' ');
      const submit = $('button[type="submit"]', form);
      busy(submit, true);
      const res = await api(method, path, formBody(form));
      busy(submit, false);
      if (!res.ok) return showErrors(form, res.data);
      location.assign(form.dataset.redirect ?? location.href);
    });
  }
}

// Buttons with data-action="METHOD /path" (and data-confirm) act, then
// reload, or go to data-redirect.
function initActions() {
  document.addEventListener('click', async e => {
    const btn = e.target.closest('[data-action]');
    if (!btn) return;
    e.preventDefault();
    if (btn.dataset.confirm && !(await confirmDialog(btn.dataset.confirm, btn.dataset.confirmOk))) return;
    const [method, path] = btn.dataset.action.split(' ');
    busy(btn, true);
    const res = await api(method, path, btn.dataset.body ? JSON.parse(btn.dataset.body) : undefined);
    busy(btn, false);
    if (!res.ok) return toast(res.data?.message ?? `failed (${res.status})`);
    // A page that shows only the deleted object goes where data-redirect says.
    if (btn.dataset.redirect) location.assign(btn.dataset.redirect);
    else location.reload();
  });
}

// --- agents

function initAgents() {
  const btn = $('[data-enroll]');
  btn?.addEventListener('click', async () => {
    busy(btn, true);
    const res = await api('POST', '/agents/enrollment-tokens');
    busy(btn, false);
    if (!res.ok) return toast(res.data?.message ?? 'could not create a token');
    $('#enroll-command').textContent = res.data.command;
    $('#enroll-expires').textContent = fmt.format(new Date(res.data.expiresAt));
    $('#enroll').hidden = false;
    $('#enroll-command').focus();
  });
  document.addEventListener('click', async e => {
    const b = e.target.closest('[data-copy]');
    if (!b) return;
    const text = $(b.dataset.copy).textContent;
    try {
      await navigator.clipboard.writeText(text);
      b.textContent = 'Copied';
    } catch {
      const range = document.createRange();
      range.selectNodeContents($(b.dataset.copy));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      b.textContent = 'Selected: press Ctrl+C';
    }
  });
}

// --- databases and storage tests


function showTest(out, res) {
  out.classList.remove('ok', 'bad');
  if (!res.ok) {
    out.classList.add('bad');
    out.textContent = res.data?.message ?? `failed (${res.status})`;
    return;
  }
  const d = res.data;
  out.classList.add(d.success ? 'ok' : 'bad');
  out.textContent = d.success ? `✓ Connected${d.version ? ': ' + d.version : ''}${d.message && !d.version ? ': ' + d.message : ''}`
    : `✗ ${d.message}`;
}

async function runTest(button, out, path, body, form) {
  out.classList.remove('ok', 'bad');
  out.innerHTML = '<span class="spinner" aria-hidden="true"></span>Testing…';
  busy(button, true, 'Testing…');
  if (form) clearErrors(form);
  const res = await api('POST', path, body);
  busy(button, false);
  if (!res.ok && res.data?.fields && form) {
    showErrors(form, res.data);
    out.textContent = '';
    return;
  }
  showTest(out, res);
}

function initDatabases() {
  const form = $('form[data-db-form]');
  if (form) {
    const type = $('[data-port-follows]', form);
    const port = form.elements.port;
    // Each type's default port comes with its option (the engines' Spec).
    const defaultPorts = [...type.options].map((o) => Number(o.dataset.port));
    // Fields of one engine (MongoDB's authSource, replicaSet, tls; SQL
    // Server's instance, encrypt and notice) show for that engine only,
    // and are cleared for the others. A select has no empty choice, so it
    // is disabled instead, which leaves it out of the body.
    const engineFields = () => {
      for (const f of form.querySelectorAll('[data-engine-only]')) {
        const on = f.dataset.engineOnly === type.value;
        f.hidden = !on;
        for (const el of f.querySelectorAll('select')) el.disabled = !on;
        if (!on) for (const el of f.querySelectorAll('input')) { if (el.type === 'checkbox') el.checked = false; else el.value = ''; }
      }
    };
    engineFields();
    type.addEventListener('change', () => {
      // The port follows the type unless the user typed another one.
      if (port.value === '' || defaultPorts.includes(Number(port.value))) {
        port.value = type.selectedOptions[0].dataset.port;
      }
      engineFields();
    });
    const btn = $('[data-test-connection]', form);
    btn.addEventListener('click', () => {
      const body = formBody(form);
      delete body.name;
      if (form.dataset.id) body.databaseId = form.dataset.id;
      runTest(btn, $('#test-result'), '/databases/test-connection', body, form);
    });
  }
  document.addEventListener('click', e => {
    const b = e.target.closest('[data-test-saved]');
    if (b) runTest(b, $(`[data-test-result="${b.dataset.testSaved}"]`), '/databases/test-connection', { databaseId: b.dataset.testSaved });
    const s = e.target.closest('[data-test-storage]');
    if (s) runTest(s, $(`[data-test-result="${s.dataset.testStorage}"]`), '/cloud-storage/test', { cloudStorageId: s.dataset.testStorage });
  });
}

function initStorage() {
  const form = $('form[data-storage-form]');
  if (form) {
    const btn = $('[data-test-storage-form]', form);
    btn.addEventListener('click', () => {
      const body = formBody(form);
      if (form.dataset.id) body.cloudStorageId = form.dataset.id;
      runTest(btn, $('#test-result'), '/cloud-storage/test', body, form);
    });
  }
  const g = $('form[data-google]');
  g?.addEventListener('submit', async e => {
    e.preventDefault();
    clearErrors(g);
    const q = new URLSearchParams({ name: g.elements.name.value, folderId: g.elements.folderId.value });
    const res = await api('GET', '/cloud-storage/google/auth-url?' + q);
    if (!res.ok) return showErrors(g, res.data);
    location.assign(res.data.url);
  });
}

// --- notification channels

function initChannels() {
  const form = $('form[data-channel-form]');
  if (form) {
    // Each type shows its own fields; hidden ones are not sent (formBody).
    const type = $('[data-channel-type]', form);
    const show = () => {
      for (const el of $$('[data-show-for]', form)) el.hidden = !el.dataset.showFor.split(' ').includes(type.value);
    };
    type.addEventListener('change', show);
    show();
  }
  document.addEventListener('click', async e => {
    const b = e.target.closest('[data-test-channel]');
    if (!b) return;
    const id = b.dataset.testChannel;
    const out = $(`[data-test-result="${CSS.escape(id)}"]`);
    out.classList.remove('ok', 'bad');
    out.innerHTML = '<span class="spinner" aria-hidden="true"></span>Sending…';
    busy(b, true, 'Sending…');
    const res = await api('POST', `/notification-channels/${id}/test`);
    busy(b, false);
    const sent = res.ok && res.data?.success;
    out.classList.add(sent ? 'ok' : 'bad');
    out.textContent = sent ? '✓ Test notification sent' : '✗ ' + (res.data?.message ?? `failed (${res.status})`);
    // The row's last success or last error changed with the test.
    const ch = await api('GET', `/notification-channels/${id}`);
    const row = $(`[data-channel="${CSS.escape(id)}"]`);
    if (!ch.ok || !row) return;
    const stamp = at => {
      if (!at) return document.createTextNode('—');
      const t = document.createElement('time');
      t.setAttribute('datetime', at);
      t.textContent = at;
      return t;
    };
    $('[data-last-success]', row).replaceChildren(stamp(ch.data.lastSuccessAt));
    const err = $('[data-last-error]', row);
    if (ch.data.lastError) {
      const msg = document.createElement('div');
      msg.className = 'error small';
      msg.textContent = ch.data.lastError;
      const when = document.createElement('span');
      when.className = 'small';
      when.append(stamp(ch.data.lastErrorAt));
      err.replaceChildren(msg, when);
    } else err.replaceChildren(stamp(null));
    localizeTimes(row);
  });
}

// --- backup jobs: schedule builder with a live preview

const weekdays = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];

function initJobForm() {
  const form = $('form[data-job-form]');
  if (!form) return;
  const type = $('[data-schedule-type]', form);
  const tz = $('[data-timezone]', form);
  const hidden = form.elements.advancedScheduleConfig;
  const rulesBox = $('[data-rules]', form);

  // Time zones: the browser's list, the job's own (or the browser's) selected.
  const current = tz.dataset.value || Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  const zones = new Set(['UTC', ...(Intl.supportedValuesOf?.('timeZone') ?? []), current]);
  tz.replaceChildren(...[...zones].map(z => new Option(z, z, false, z === current)));

  let rules;
  try { rules = JSON.parse(hidden.value).rules; } catch { rules = null; }
  if (!Array.isArray(rules) || !rules.length) rules = [{ daysOfWeek: [1, 2, 3, 4, 5], times: ['02:00'], exclusions: [] }];

  const split = s => s.split(/[\s,]+/).map(x => x.trim()).filter(Boolean);
  function renderRules() {
    rulesBox.replaceChildren();
    rules.forEach((rule, i) => {
      const box = document.createElement('div');
      box.className = 'rule';
      box.innerHTML = `<strong>Rule ${i + 1}</strong>
        <div class="days" role="group" aria-label="Days of week of rule ${i + 1}"></div>
        <label>Times (HH:MM, comma-separated)<input data-k="times"></label>
        <label>Except on dates (YYYY-MM-DD, comma-separated)<input data-k="exclusions" placeholder="2026-12-25"></label>
        <div class="range"><label>From (optional)<input type="date" data-k="startDate"></label>
        <label>Until (optional)<input type="date" data-k="endDate"></label></div>`;
      const days = $('.days', box);
      weekdays.forEach((name, d) => {
        const l = document.createElement('label');
        l.className = 'check';
        const cb = document.createElement('input');
        cb.type = 'checkbox';
        cb.checked = (rule.daysOfWeek ?? []).includes(d);
        cb.addEventListener('change', () => {
          rule.daysOfWeek = weekdays.map((_, k) => k).filter(k => $$('input', days)[k].checked);
          sync();
        });
        l.append(cb, ' ' + name);
        days.append(l);
      });
      $('[data-k="times"]', box).value = (rule.times ?? []).join(', ');
      $('[data-k="exclusions"]', box).value = (rule.exclusions ?? []).join(', ');
      for (const k of ['times', 'exclusions']) {
        $(`[data-k="${k}"]`, box).addEventListener('input', e => { rule[k] = split(e.target.value); sync(); });
      }
      // The first and last day of the rule, in the job's time zone; empty
      // leaves it open.
      for (const k of ['startDate', 'endDate']) {
        const input = $(`[data-k="${k}"]`, box);
        input.value = rule[k] ?? '';
        input.addEventListener('change', e => {
          if (e.target.value) rule[k] = e.target.value; else delete rule[k];
          sync();
        });
      }
      if (rules.length > 1) {
        const rm = document.createElement('button');
        rm.type = 'button';
        rm.className = 'secondary small';
        rm.textContent = 'Remove rule';
        rm.addEventListener('click', () => { rules.splice(i, 1); renderRules(); sync(); });
        box.append(rm);
      }
      rulesBox.append(box);
    });
  }
  function sync() {
    hidden.value = JSON.stringify({ rules });
    preview();
  }
  $('[data-add-rule]', form).addEventListener('click', () => {
    rules.push({ daysOfWeek: [0, 6], times: ['03:00'], exclusions: [] });
    renderRules();
    sync();
  });

  function showFor() {
    for (const el of $$('[data-show-for]', form)) el.hidden = el.dataset.showFor !== type.value;
    $('[data-preview]', form).hidden = type.value === 'manual';
  }

  let timer, seq = 0;
  const list = $('[data-preview-list]', form);
  function preview() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const my = ++seq;
      for (const f of ['cronExpression', 'advancedScheduleConfig', 'timezone', 'scheduleType']) {
        const slot = $(`[data-error-for="${f}"]`, form);
        if (slot) slot.textContent = '';
        form.elements[f]?.removeAttribute?.('aria-invalid');
      }
      if (type.value === 'manual') return list.replaceChildren();
      const body = { scheduleType: type.value, timezone: tz.value, count: 5 };
      if (type.value === 'custom') body.cronExpression = form.elements.cronExpression.value;
      if (type.value === 'advanced') body.advancedScheduleConfig = { rules };
      const res = await api('POST', '/schedules/preview', body);
      if (my !== seq) return;
      if (!res.ok) {
        list.replaceChildren();
        for (const [f, text] of Object.entries(res.data?.fields ?? { scheduleType: res.data?.message })) {
          const slot = $(`[data-error-for="${f}"]`, form) ?? $('[data-error-for="scheduleType"]', form);
          slot.textContent = text;
          form.elements[f]?.setAttribute?.('aria-invalid', 'true');
        }
        return;
      }
      const inZone = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short', timeZone: tz.value });
      list.replaceChildren(...res.data.runs.map(r => {
        const li = document.createElement('li');
        li.dataset.at = r;
        const d = new Date(r);
        li.textContent = `${fmt.format(d)} your time` + (tz.value !== Intl.DateTimeFormat().resolvedOptions().timeZone ? ` (${inZone.format(d)} ${tz.value})` : '');
        return li;
      }));
      if (!res.data.runs.length) list.innerHTML = '<li>never</li>';
    }, 250);
  }

  type.addEventListener('change', () => { showFor(); preview(); });
  tz.addEventListener('change', preview);
  form.elements.cronExpression.addEventListener('input', preview);
  renderRules();
  if (type.value === 'advanced') hidden.value = JSON.stringify({ rules });
  hidden.dataset.omitEmpty = '';
  showFor();
  preview();

  const enc = form.elements.isEncrypted;
  const encFields = [$('#enc-fields', form), $('[data-enc-extra]', form)];
  const toggleEnc = () => { for (const el of encFields) el.hidden = !enc.checked; };
  enc.addEventListener('change', toggleEnc);
  toggleEnc();

  const st = $('[data-storage-type]', form);
  const cloud = $('[data-cloud-field]', form);
  const toggleCloud = () => {
    cloud.hidden = st.value === 'local';
    for (const o of $$('option[data-type]', cloud)) o.hidden = o.dataset.type !== st.value;
    const sel = form.elements.cloudStorageId;
    if (sel.selectedOptions[0]?.hidden) sel.value = '';
    sel.disabled = st.value === 'local';
  };
  st.addEventListener('change', toggleCloud);
  toggleCloud();

  // Notifications: null (the user's default rules) or the job's own,
  // gathered from the unnamed [data-rule] fields into notificationRules.
  const notify = $('[data-job-notify]', form);
  const useDefault = $('[data-notify-default]', notify);
  const own = $('[data-notify-own]', notify);
  const syncRules = () => {
    own.hidden = useDefault.checked;
    const rules = {};
    for (const el of $$('[data-rule]', own)) {
      if (el.type === 'checkbox') rules[el.dataset.rule] = el.checked;
      else if (el.value !== '') rules[el.dataset.rule] = Number(el.value);
    }
    form.elements.notificationRules.value = useDefault.checked ? 'null' : JSON.stringify(rules);
  };
  notify.addEventListener('input', syncRules);
  notify.addEventListener('change', syncRules);
  syncRules();
}

// --- run now

function initRunNow() {
  document.addEventListener('click', async e => {
    const b = e.target.closest('[data-run-job]');
    if (!b) return;
    busy(b, true, 'Starting…');
    const res = await api('POST', `/backups/jobs/${b.dataset.runJob}/run`);
    busy(b, false);
    if (!res.ok) return toast(res.data?.message ?? `failed (${res.status})`);
    const cell = $(`[data-job="${b.dataset.runJob}"] .last-run`);
    if (cell) {
      cell.replaceChildren(runStatus(res.data.historyId, res.data.status));
    }
    if (res.data.status === 'skipped') toast('The run was skipped: no agent was online to take it.');
    refreshSoon();
  });
}

function runStatus(id, status) {
  const span = document.createElement('span');
  span.className = 'run';
  span.dataset.run = id;
  const badge = document.createElement('span');
  badge.dataset.runStatus = '';
  span.append(badge);
  setRun(span, { status, percent: 0, step: '' });
  return span;
}

const terminal = new Set(['success', 'failed', 'cancelled', 'skipped', 'completed']);

// setRun shows a run's status, progress bar and step in one [data-run] element.
function setRun(el, { status, percent, step }) {
  const badge = $('[data-run-status]', el);
  if (status) {
    badge.className = 'badge ' + status;
    badge.textContent = status;
  }
  let bar = $('progress', el);
  let stepEl = $('[data-run-step]', el);
  if (terminal.has(status)) {
    bar?.remove();
    stepEl?.remove();
    return;
  }
  if (!bar) {
    bar = document.createElement('progress');
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute('aria-label', 'Progress');
    el.append(' ', bar);
  }
  if (!stepEl) {
    stepEl = document.createElement('span');
    stepEl.className = 'step';
    stepEl.dataset.runStep = '';
    el.append(' ', stepEl);
  }
  if (percent !== undefined) bar.value = percent;
  if (step !== undefined) stepEl.textContent = step;
}

function updateRun(id, state) {
  for (const el of $$(`[data-run="${CSS.escape(id)}"]`)) setRun(el, state);
}

// --- history: filters, restore, verify

function initHistory() {
  const filter = $('form[data-history-filter], form[data-date-filter]');
  filter?.addEventListener('submit', () => {
    // Dates are the user's own days: send their local midnights.
    const from = filter.elements.fromDate.value;
    const to = filter.elements.toDate.value;
    filter.elements.from.value = from ? new Date(from + 'T00:00').toISOString() : '';
    if (to) {
      const end = new Date(to + 'T00:00');
      end.setDate(end.getDate() + 1);
      filter.elements.to.value = end.toISOString();
    } else filter.elements.to.value = '';
    for (const el of filter.elements) if (el.name && el.value === '') el.disabled = true;
  });

  const rd = $('#restore-dialog');
  let restoreID = null;
  if (rd) {
    const form = $('form', rd);
    const target = form.elements.targetDatabaseId;
    const warn = () => {
      const o = target.selectedOptions[0];
      $('[data-restore-warning]', rd).textContent = o
        ? `This replaces the contents of database “${o.dataset.name}” (${o.dataset.where}) with the backup.`
        : 'No database of the same type to restore into.';
      $('[data-restore-ok]', rd).textContent = o ? `Yes, restore into “${o.dataset.name}”` : 'Restore';
      $('[data-restore-ok]', rd).disabled = !o;
    };
    target.addEventListener('change', warn);
    document.addEventListener('click', e => {
      const b = e.target.closest('[data-restore]');
      if (!b) return;
      restoreID = b.dataset.restore;
      clearErrors(form);
      $('[data-restore-file]', rd).textContent = b.dataset.file || restoreID;
      const src = $(`option[value="${CSS.escape(b.dataset.dbId)}"]`, target);
      for (const o of target.options) o.hidden = src && o.dataset.type !== src.dataset.type;
      if (src) target.value = src.value;
      warn();
      rd.showModal();
      target.focus();
    });
    $('[data-restore-ok]', rd).addEventListener('click', async e => {
      e.preventDefault();
      clearErrors(form);
      const ok = e.currentTarget;
      busy(ok, true, 'Starting…');
      const res = await api('POST', `/backups/history/${restoreID}/restore`, { targetDatabaseId: target.value });
      busy(ok, false);
      warn();
      if (!res.ok) return showErrors(form, res.data);
      rd.close();
      const cell = $(`[data-history="${restoreID}"] [data-label="Restore"]`);
      if (cell) {
        cell.replaceChildren(runStatus(res.data.restoreHistoryId, 'queued'));
      }
      refreshSoon();
    });
  }

  const vd = $('#verify-dialog');
  let verifyID = null;
  if (vd) {
    const form = $('form', vd);
    document.addEventListener('click', e => {
      const b = e.target.closest('[data-verify]');
      if (!b) return;
      verifyID = b.dataset.verify;
      clearErrors(form);
      vd.showModal();
      $('input[name="verificationLevel"]:checked', vd).focus();
    });
    $('[data-verify-ok]', vd).addEventListener('click', async e => {
      e.preventDefault();
      clearErrors(form);
      const level = $('input[name="verificationLevel"]:checked', vd).value;
      const ok = e.currentTarget;
      busy(ok, true); // a second click must not start a second verification
      const res = await api('POST', `/backups/history/${verifyID}/verify`, { verificationLevel: level });
      busy(ok, false);
      if (!res.ok) return showErrors(form, res.data);
      vd.close();
      const cell = $(`[data-verification="${verifyID}"]`);
      if (cell) cell.innerHTML = '<span class="badge running" data-verification-status>verifying…</span>';
    });
  }
}

// --- live updates

let refreshTimers = [];
// refreshSoon re-reads the page and swaps its [data-live] parts, a few times
// over the next seconds: the history is projected from the event stream and
// may lag the event by a moment.
function refreshSoon() {
  if (!$('[data-live]')) return;
  refreshTimers.forEach(clearTimeout);
  refreshTimers = [300, 1500, 4000].map(ms => setTimeout(refresh, ms));
}

async function refresh() {
  let res;
  try {
    res = await fetch(location.href, { credentials: 'same-origin', headers: { Accept: 'text/html' } });
  } catch { return; }
  if (!res.ok || res.redirected) return;
  const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
  for (const el of $$('[data-live][id]')) {
    const fresh = doc.getElementById(el.id);
    if (fresh && fresh.innerHTML !== el.innerHTML) {
      // Keep open <details> open across the swap.
      const open = $$('details[open]', el).map(d => d.closest('[data-history]')?.dataset.history);
      el.innerHTML = fresh.innerHTML;
      for (const id of open) if (id) $(`[data-history="${id}"] details`, el)?.setAttribute('open', '');
      localizeTimes(el);
    }
  }
}

function initLive() {
  // Some state changes send no event (an agent that just stops is
  // offline when its heartbeats are overdue): such parts are re-read.
  for (const el of $$('[data-live][data-poll]')) {
    setInterval(() => { if (!document.hidden) refresh(); }, Number(el.dataset.poll));
  }
  if (!$('[data-live]') || !window.EventSource) return;
  const handlers = [];
  const on = (name, fn) => handlers.push([name, fn]);
  on('backup.queued', p => { updateRun(p.runId, { status: 'queued' }); refreshSoon(); });
  on('backup.started', p => updateRun(p.runId, { status: 'running', step: 'started' }));
  on('backup.progress', p => updateRun(p.runId, { status: 'running', percent: p.percent, step: p.step }));
  on('backup.completed', p => { updateRun(p.runId, { status: 'success' }); refreshSoon(); });
  on('backup.failed', p => { updateRun(p.runId, { status: 'failed' }); refreshSoon(); });
  on('backup.skipped', p => { updateRun(p.runId, { status: 'skipped' }); refreshSoon(); });
  on('backup.lost', p => { updateRun(p.runId, { status: 'failed' }); refreshSoon(); });
  on('backup.deleted', () => refreshSoon());
  on('backup.expired', () => refreshSoon());
  on('restore.queued', () => refreshSoon());
  on('restore.started', p => updateRun(p.restoreId, { status: 'running', step: 'started' }));
  on('restore.progress', p => updateRun(p.restoreId, { status: 'running', percent: p.percent, step: p.step }));
  on('restore.completed', p => { updateRun(p.restoreId, { status: 'success' }); refreshSoon(); });
  on('restore.failed', p => { updateRun(p.restoreId, { status: 'failed' }); refreshSoon(); });
  on('verify.started', p => {
    const cell = $(`[data-verification="${CSS.escape(p.backupId ?? '')}"]`);
    if (cell) cell.innerHTML = '<span class="badge running" data-verification-status>verifying…</span>';
  });
  on('verify.progress', p => {
    const cell = $(`[data-verification="${CSS.escape(p.backupId ?? '')}"]`);
    if (!cell) return;
    const badge = document.createElement('span');
    badge.className = 'badge running';
    badge.dataset.verificationStatus = '';
    badge.textContent = `verifying (${p.level ?? ''}): ${p.step ?? ''}` + (p.percent ? ` ${p.percent}%` : '');
    cell.replaceChildren(badge);
  });
  on('verify.completed', () => refreshSoon());
  on('verify.failed', () => refreshSoon());
  // An agent that comes online reports its host, OS and version: re-read.
  const agent = status => (_, id) => {
    const badge = $(`[data-agent="${CSS.escape(id)}"] [data-agent-status]`);
    if (badge) { badge.className = 'badge ' + status; badge.textContent = status; }
    refreshSoon();
  };
  on('agent.online', agent('online'));
  on('agent.offline', agent('offline'));
  let es = null;
  function open() {
    const src = new EventSource('/ui/v1/events');
    for (const [name, fn] of handlers) {
      src.addEventListener(name, e => {
        let m;
        try { m = JSON.parse(e.data); } catch { return; }
        fn(m.payload ?? {}, m.agentId);
      });
    }
    src.addEventListener('open', () => { document.documentElement.dataset.live = 'connected'; });
    // Should the stream stay closed (a proxy that buffers), poll instead.
    src.addEventListener('error', () => {
      if (src.readyState === EventSource.CLOSED && !window.__rbPoll) {
        window.__rbPoll = setInterval(() => { if ($('progress')) refresh(); }, 3000);
      }
    });
    es = src;
  }
  // A hidden tab gives its stream back (browsers allow six connections
  // per site over HTTP/1.1) and catches up when it is shown again.
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) {
      es?.close();
      es = null;
      delete document.documentElement.dataset.live;
    } else if (!es) {
      open();
      refresh();
    }
  });
  window.addEventListener('pagehide', () => es?.close());
  if (!document.hidden) open();
}

localizeTimes();
initApiForms();
initActions();
initAgents();
initDatabases();
initStorage();
initChannels();
initJobForm();
initRunNow();
initHistory();
initLive();
document.documentElement.dataset.ready = 'true';
